//! Events the control plane refused to store, kept on the relay's disk for
//! an operator instead of being forgotten (`dead-letters.log` in the spool
//! directory). Records (`crate::record`) hold a protobuf DeadLetter each,
//! appended and fsynced before the spool lets the events go.
//! The relay never resends nor deletes them; `GET /v1/dead-letters` on the
//! admin listener lists them and `kubechat_relay_dead_letter_events` counts
//! them (an alert rule in docs/operations.md fires on any).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use kubechat_protocol::events::DeadLetter;
use prost::Message;

use crate::spool::SpoolError;

/// The dead-letter file of one relay.
pub(crate) struct DeadLetters {
    path: PathBuf,
    file: Mutex<File>,
    count: AtomicU64,
}

fn read_all(path: &Path) -> std::io::Result<Vec<DeadLetter>> {
    let mut data = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut data)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    }
    Ok(crate::record::decode_all(&data, |p| DeadLetter::decode(p).ok()).0)
}

impl DeadLetters {
    /// Opens (or creates) `dir/dead-letters.log`, counting what it holds.
    pub(crate) fn open(dir: &Path) -> Result<Self, SpoolError> {
        let path = dir.join("dead-letters.log");
        let held = read_all(&path).map_err(|e| SpoolError::new(&path, e))?;
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(|e| SpoolError::new(&path, e))?;
        Ok(Self { path, file: Mutex::new(file), count: AtomicU64::new(held.len() as u64) })
    }

    /// Appends `letters` and syncs them to disk (blocking: call it off the
    /// async runtime). Only once this succeeded may the spool forget them.
    pub(crate) fn append(&self, letters: &[DeadLetter]) -> std::io::Result<()> {
        let mut buf = Vec::new();
        for d in letters {
            crate::record::encode(&d.encode_to_vec(), &mut buf);
        }
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let before = file.metadata()?.len();
        let written = file.write_all(&buf).and_then(|()| file.sync_data());
        if written.is_err() {
            // No torn record may stay in front of later ones.
            let _ = file.set_len(before);
        }
        written?;
        self.count.fetch_add(letters.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// How many dead letters the file holds.
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The newest `limit` dead letters, oldest first.
    pub(crate) fn newest(&self, limit: usize) -> std::io::Result<Vec<DeadLetter>> {
        let mut all = read_all(&self.path)?;
        let skip = all.len().saturating_sub(limit);
        Ok(all.split_off(skip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubechat_protocol::events::Event;

    fn letter(i: u32) -> DeadLetter {
        DeadLetter {
            event: Some(Event { id: format!("e{i}"), tenant: "t".into(), ..Default::default() }),
            reason: format!("no tenant t ({i})"),
            rejected_at_ms: i64::from(i),
        }
    }

    #[test]
    fn dead_letters_are_kept_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = DeadLetters::open(dir.path()).expect("open");
        d.append(&[letter(1), letter(2)]).expect("append");
        d.append(&[letter(3)]).expect("append");
        assert_eq!(d.count(), 3);
        drop(d);
        let d = DeadLetters::open(dir.path()).expect("reopen");
        assert_eq!(d.count(), 3);
        let newest = d.newest(2).expect("read");
        assert_eq!(
            newest.iter().map(|l| l.reason.as_str()).collect::<Vec<_>>(),
            ["no tenant t (2)", "no tenant t (3)"]
        );
        assert_eq!(newest[1].event.as_ref().map(|e| e.id.as_str()), Some("e3"));
    }
}
