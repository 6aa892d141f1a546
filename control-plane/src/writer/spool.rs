//! The writer's spool on local disk: what a draining control plane could
//! not commit before its grace period ran out (the database unreachable),
//! kept in a file and committed by the next start on the same directory.
//!
//! One file per drain, `writes-<uuid v7>.json` (so they sort in the order
//! they were written): written to a temporary name, fsynced, renamed, and
//! the directory fsynced, so a file is there whole or not at all. A file is
//! deleted only after its writes committed. Committing one twice is
//! harmless (audit events and usage events are stored once per id; last
//! uses keep the latest), so a spooled batch whose commit did go through
//! after all is not counted twice.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Write;

/// The format's version; a file of another version is set aside, not read.
/// Fields added later are read as their defaults from older files (every
/// field of [`Write`] and of its audit entry has one), so only a change that
/// older files cannot be read under needs a new version.
const VERSION: u32 = 1;

#[derive(Serialize)]
struct Spooled<'a> {
    version: u32,
    writes: &'a [&'a Write],
}

#[derive(Deserialize)]
struct Loaded {
    version: u32,
    writes: Vec<Write>,
}

/// A new file, readable and writable by this user only (the files hold
/// audit records, token ids and session id hashes).
fn create_private(path: &Path, append: bool) -> io::Result<File> {
    let mut o = fs::OpenOptions::new();
    o.create(true).write(true);
    if append {
        o.append(true);
    } else {
        o.truncate(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path)
}

/// Creates `dir` if need be and checks that a file can be written, synced
/// and removed there (at start: an unwritable spool would otherwise show
/// only at the drain that needs it).
pub fn check_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let probe = dir.join(format!(".probe-{}", uuid::Uuid::now_v7()));
    let mut f = create_private(&probe, false)?;
    f.write_all(b"probe")?;
    f.sync_all()?;
    drop(f);
    fs::remove_file(&probe)
}

/// Writes `writes` to a new file in `dir` (created if need be), durably.
pub(crate) fn save(dir: &Path, writes: &[&Write]) -> io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    write_as(dir, &format!("writes-{}.json", uuid::Uuid::now_v7()), writes)
}

/// Replaces the spooled file at `path` with one of `writes` only (what its
/// interrupted commit left), durably, under the same name: it keeps its
/// place, and the writes already committed or set aside are not tried
/// again (which would set aside again, twice in the dead letters).
pub(crate) fn replace(path: &Path, writes: &[&Write]) -> io::Result<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not a spool file", path.display())));
    };
    write_as(dir, name, writes)
}

/// Writes `writes` as `dir/name`: a temporary file, synced, renamed.
fn write_as(dir: &Path, name: &str, writes: &[&Write]) -> io::Result<PathBuf> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let body = serde_json::to_vec(&Spooled { version: VERSION, writes }).map_err(io::Error::other)?;
    let mut f = create_private(&tmp, false)?;
    f.write_all(&body)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, &path)?;
    // The file is there whole; only its name may not survive a power loss
    // if the directory cannot be synced. Not a reason to call it lost.
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %dir.display(), error = %e, "the spool directory could not be synced");
    }
    Ok(path)
}

/// The spooled files in `dir`, oldest first, with their writes. A file
/// that cannot be read is renamed `*.unreadable` (kept for an operator, and
/// logged), so that it is not tried at every start.
pub(crate) fn load(dir: &Path) -> Vec<(PathBuf, Vec<Write>)> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::error!(dir = %dir.display(), error = %e, "cannot read the writer's spool directory");
            return Vec::new();
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("writes-") && n.ends_with(".json"))
        })
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            // Perhaps passing (EIO, EACCES): left as it is for the next start.
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "a spooled batch of writes cannot be read now; it is left for the next start");
                continue;
            }
        };
        let loaded = serde_json::from_slice::<Loaded>(&bytes).map_err(|e| e.to_string()).and_then(|l| {
            if l.version == VERSION { Ok(l.writes) } else { Err(format!("version {} is not {VERSION}", l.version)) }
        });
        match loaded {
            Ok(writes) => out.push((path, writes)),
            Err(e) => {
                let aside = path.with_extension("json.unreadable");
                let renamed = fs::rename(&path, &aside);
                tracing::error!(
                    file = %path.display(),
                    error = %e,
                    set_aside = renamed.is_ok(),
                    "a spooled batch of writes cannot be read; it is left for an operator and not committed"
                );
            }
        }
    }
    out
}

/// The file, in a spool directory, of the writes the database refused for
/// what they hold: one JSON line each, `{"timeMs", "error", "write"}`.
pub(crate) const DEAD_LETTERS: &str = "dead-letters.jsonl";

/// The most the dead letters may grow to: past it a refused write is
/// logged whole instead (the file shares the spool's volume, which a drain
/// must still be able to write to).
pub(crate) const DEAD_LETTERS_MAX: u64 = 64 << 20;

/// Appends `write`, refused with `why`, to the dead letters in `dir`
/// (created if need be), durably; an error if that would take the file
/// past `max` bytes.
pub(crate) fn set_aside(dir: &Path, write: &Write, why: &str, max: u64) -> io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let path = dir.join(DEAD_LETTERS);
    let time_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    let mut line = serde_json::to_vec(&serde_json::json!({"timeMs": time_ms, "error": why, "write": write}))
        .map_err(io::Error::other)?;
    line.push(b'\n');
    let mut f = create_private(&path, true)?;
    let size = f.metadata()?.len();
    if size + line.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::StorageFull,
            format!("{} holds {size} bytes, at its cap of {max}; read and remove it", path.display()),
        ));
    }
    f.write_all(&line)?;
    f.sync_all()?;
    Ok(path)
}

/// Deletes a file whose writes committed.
pub(crate) fn remove(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        // Committed again at the next start: harmless (stored once per id).
        tracing::warn!(file = %path.display(), error = %e, "a committed spool file could not be deleted");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_batch_loads_as_it_was_and_a_torn_file_is_set_aside() {
        let dir = tempfile::tempdir().expect("dir");
        let spool = dir.path().join("spool");
        let writes = [
            Write::TokenUsed { token_id: "k1".into(), at: 5 },
            Write::Audit {
                tenant: "t1".into(),
                entry: Box::new(crate::audit::AuditEntry { id: "e1".into(), ..Default::default() }),
            },
        ];
        let first = save(&spool, &writes.iter().collect::<Vec<_>>()).expect("save");
        let second = save(&spool, &writes[..1].iter().collect::<Vec<_>>()).expect("save");
        std::fs::write(spool.join("writes-torn.json"), b"{\"version\":1,\"wri").expect("torn");
        let loaded = load(&spool);
        let paths: Vec<&PathBuf> = loaded.iter().map(|(p, _)| p).collect();
        assert_eq!(paths, [&first, &second], "oldest first, the torn one left out");
        assert!(
            matches!(&loaded[0].1[..], [Write::TokenUsed { at: 5, .. }, Write::Audit { entry, .. }] if entry.id == "e1")
        );
        assert!(spool.join("writes-torn.json.unreadable").exists(), "set aside for an operator");
        remove(&first);
        assert_eq!(load(&spool).len(), 1);
        // No temporary file is left behind.
        let names: Vec<String> = std::fs::read_dir(&spool)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .collect();
        assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    }

    /// A file in the format this version writes, as a later version will
    /// find it: it loads, a field it does not know is ignored, and one it
    /// lacks reads as its default.
    #[test]
    fn a_file_in_the_first_format_loads_with_unknown_fields_ignored_and_missing_ones_defaulted() {
        let dir = tempfile::tempdir().expect("dir");
        let file = r#"{"version":1,"writes":[
            {"type":"audit","tenant":"t1","entry":{"id":"e1","timeMs":5,"kind":"decision","user":"kubechat:user:a@b.c","addedLater":1}},
            {"type":"usage","id":"u1","tenant":"t1","cluster":"c1","usage_type":"api_request","quantity":2.5,"time_ms":7},
            {"type":"meter","tenant":"t1","usage_type":"command_executed","quantity":1.0,"time_ms":1},
            {"type":"tokenUsed","token_id":"k1","at":3},
            {"type":"sessionSeen","id_hash":"h1","at_ms":4}
        ]}"#;
        std::fs::write(dir.path().join("writes-0.json"), file).expect("write");
        let loaded = load(dir.path());
        assert_eq!(loaded.len(), 1, "the file loads");
        let w = &loaded[0].1;
        assert!(
            matches!(&w[0], Write::Audit { tenant, entry } if tenant == "t1" && entry.id == "e1" && entry.time_ms == 5 && entry.namespace.is_empty())
        );
        assert!(matches!(&w[1], Write::Usage { id, quantity, time_ms: 7, .. } if id == "u1" && *quantity == 2.5));
        assert!(matches!(&w[2], Write::Meter { cluster, .. } if cluster.is_empty()), "a missing field: its default");
        assert!(matches!(&w[3], Write::TokenUsed { token_id, at: 3 } if token_id == "k1"));
        assert!(matches!(&w[4], Write::SessionSeen { id_hash, at_ms: 4 } if id_hash == "h1"));
    }

    #[cfg(unix)]
    #[test]
    fn spool_files_are_private_and_an_unwritable_directory_is_found_at_once() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("dir");
        let w = [Write::TokenUsed { token_id: "k1".into(), at: 5 }];
        let path = save(dir.path(), &w.iter().collect::<Vec<_>>()).expect("save");
        assert_eq!(std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
        let letters = set_aside(dir.path(), &w[0], "refused", DEAD_LETTERS_MAX).expect("set aside");
        assert_eq!(std::fs::metadata(&letters).expect("meta").permissions().mode() & 0o777, 0o600);
        check_dir(&dir.path().join("fresh")).expect("a fresh directory is writable");
        let locked = dir.path().join("locked");
        std::fs::create_dir(&locked).expect("mkdir");
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o500)).expect("chmod");
        // Root may write anyway (CI might run as root): only then is it fine.
        let root = std::fs::write(locked.join("x"), b"x").is_ok();
        assert_eq!(check_dir(&locked).is_ok(), root, "an unwritable directory is an error at start");
    }

    /// The dead letters grow to their cap and no further: the write that
    /// would pass it is an error (the writer then logs it whole), and what
    /// the file holds stays whole lines.
    #[test]
    fn the_dead_letters_stop_at_their_cap() {
        let dir = tempfile::tempdir().expect("dir");
        let w = Write::TokenUsed { token_id: "k1".into(), at: 5 };
        let path = set_aside(dir.path(), &w, "refused", 1 << 20).expect("first");
        let line = std::fs::metadata(&path).expect("meta").len();
        let cap = 3 * line + line / 2;
        set_aside(dir.path(), &w, "refused", cap).expect("second");
        set_aside(dir.path(), &w, "refused", cap).expect("third");
        let full = set_aside(dir.path(), &w, "refused", cap).expect_err("a fourth passes the cap");
        assert_eq!(full.kind(), io::ErrorKind::StorageFull);
        assert!(full.to_string().contains("read and remove it"), "{full}");
        let held = std::fs::read_to_string(&path).expect("read");
        assert_eq!(held.lines().count(), 3);
        assert!(held.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()), "{held}");
    }
}
