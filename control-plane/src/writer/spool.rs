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

/// Writes `writes` to a new file in `dir` (created if need be), durably.
pub(crate) fn save(dir: &Path, writes: &[&Write]) -> io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let name = format!("writes-{}.json", uuid::Uuid::now_v7());
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let body = serde_json::to_vec(&Spooled { version: VERSION, writes }).map_err(io::Error::other)?;
    let mut f = File::create(&tmp)?;
    f.write_all(&body)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()?;
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
        let loaded = fs::read(&path).map_err(|e| e.to_string()).and_then(|b| {
            let l: Loaded = serde_json::from_slice(&b).map_err(|e| e.to_string())?;
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

/// Appends `write`, refused with `why`, to the dead letters in `dir`
/// (created if need be), durably.
pub(crate) fn set_aside(dir: &Path, write: &Write, why: &str) -> io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let path = dir.join(DEAD_LETTERS);
    let time_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    let mut line = serde_json::to_vec(&serde_json::json!({"timeMs": time_ms, "error": why, "write": write}))
        .map_err(io::Error::other)?;
    line.push(b'\n');
    let mut f = fs::OpenOptions::new().create(true).append(true).open(&path)?;
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
}
