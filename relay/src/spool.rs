//! The relay's append-only event spool on disk: every audit and usage event
//! is written (and fsynced) here before it is sent, replayed after reconnects
//! and restarts, and deleted only once the control plane acknowledged it.
//!
//! Layout: `seg-<n>.log` files of records (`crate::record`) whose payload is
//! a protobuf Event. A crash can leave a torn record
//! at the end of the last segment; it is detected by its checksum and cut
//! off on open. A segment is deleted once every event in it is acknowledged
//! and it is no longer the one being written. Writes are group-committed by
//! one writer thread (one fsync per batch; an event waits at most 5 ms for
//! others to share it).
//!
//! The spool is bounded: past `max_bytes` it reports itself full (audited
//! requests are then refused by the caller); other events may still use a
//! 10% reserve beyond it, and past that they are counted and dropped.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use kubechat_protocol::events::Event;
use prost::Message;
use tokio::sync::Notify;

/// Largest segment before the writer starts a new one.
const SEGMENT_BYTES: u64 = 4 << 20;
/// Longest an event waits for others to share its batch's fsync.
const LINGER: std::time::Duration = std::time::Duration::from_millis(5);
/// Most events one batch writes.
const MAX_BATCH: usize = 4096;

/// Why the spool could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("event spool {path}: {source}")]
pub struct SpoolError {
    path: String,
    #[source]
    source: std::io::Error,
}

impl SpoolError {
    /// The error `source` about `path`.
    pub(crate) fn new(path: &Path, source: std::io::Error) -> Self {
        Self { path: path.display().to_string(), source }
    }
}

fn err(path: &Path, source: std::io::Error) -> SpoolError {
    SpoolError::new(path, source)
}

struct Segment {
    bytes: u64,
    /// Ids written here and not yet acknowledged.
    pending: HashSet<String>,
}

#[derive(Default)]
struct Shared {
    segments: BTreeMap<u64, Segment>,
    active: u64,
    total_bytes: u64,
    /// Written and synced, not yet handed to the publisher.
    unsent: VecDeque<(u64, Event)>,
    /// Handed out, awaiting an answer: id → segment.
    in_flight: std::collections::HashMap<String, u64>,
    /// Events the writer has queued but not yet made durable.
    queued_bytes: u64,
    /// Why the last write failed, until one succeeds again.
    write_error: Option<String>,
}

/// The segment number of events the disk refused: they are kept in memory
/// (and published), counted against the limit, but belong to no file.
const IN_MEMORY: u64 = 0;

/// The spool. Cheap to share (`Arc`).
pub(crate) struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    shared: Mutex<Shared>,
    writer: Mutex<Option<mpsc::SyncSender<Event>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The segment being written. Lock order: never take `shared` while
    /// holding this one.
    active_file: Mutex<File>,
    /// Batches the disk refused since start.
    write_failures: std::sync::atomic::AtomicU64,
    /// Notified when events become available to send.
    pub(crate) ready: Notify,
}

fn record(e: &Event) -> Vec<u8> {
    let mut out = Vec::with_capacity(crate::record::HEADER + e.encoded_len());
    crate::record::encode(&e.encode_to_vec(), &mut out);
    out
}

/// Largest quantity one merged usage event carries.
const MAX_MERGED_QUANTITY: f64 = 1e6;

/// The usage events of one batch that differ only in id, time and request
/// (same tenant, cluster, relay, type, and UTC hour, hence month) become
/// one event whose quantity is their sum, in the place of the first, with
/// the latest time. Billing sums quantities per month, so the ledger is the
/// same with one row instead of one a request; the merged event keeps the
/// first one's id, so a replay is still stored once. Audit events are never
/// merged.
fn merge_usage(batch: Vec<Event>) -> Vec<Event> {
    use kubechat_protocol::events::event::Body;
    type Key = (String, String, String, i32, i64);
    let mut out: Vec<Event> = Vec::with_capacity(batch.len());
    let mut open: std::collections::HashMap<Key, usize> = std::collections::HashMap::new();
    for e in batch {
        let Some(Body::Usage(u)) = &e.body else {
            out.push(e);
            continue;
        };
        let key = (e.tenant.clone(), e.cluster.clone(), e.relay.clone(), u.r#type, e.time_ms.div_euclid(3_600_000));
        let quantity = u.quantity;
        if let Some(&at) = open.get(&key)
            && let Some(Body::Usage(into)) = &mut out[at].body
            && into.quantity + quantity <= MAX_MERGED_QUANTITY
        {
            into.quantity += quantity;
            let merged = &mut out[at];
            merged.time_ms = merged.time_ms.max(e.time_ms);
            if merged.request_id != e.request_id {
                merged.request_id.clear();
            }
            continue;
        }
        open.insert(key, out.len());
        out.push(e);
    }
    out
}

/// Reads the valid records of a segment; returns them and the byte length of
/// the valid prefix (a torn or corrupt tail is not included).
fn read_segment(path: &Path) -> Result<(Vec<Event>, u64), SpoolError> {
    let mut data = Vec::new();
    File::open(path).and_then(|mut f| f.read_to_end(&mut data)).map_err(|e| err(path, e))?;
    let (events, valid) = crate::record::decode_all(&data, |p| Event::decode(p).ok());
    Ok((events, valid as u64))
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("seg-{n:012}.log"))
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, loading every unacknowledged
    /// event left by a previous run, and starts the writer thread.
    pub(crate) fn open(dir: &Path, max_bytes: u64) -> Result<Arc<Self>, SpoolError> {
        std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
        let mut shared = Shared::default();
        let mut numbers: Vec<u64> = std::fs::read_dir(dir)
            .map_err(|e| err(dir, e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_prefix("seg-")?.strip_suffix(".log")?.parse().ok()
            })
            .collect();
        numbers.sort_unstable();
        for n in &numbers {
            let path = segment_path(dir, *n);
            let (events, valid) = read_segment(&path)?;
            if events.is_empty() {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            // Cut a torn tail so later appends (none: a new segment is
            // started) and re-reads see only whole records.
            let f = OpenOptions::new().write(true).open(&path).map_err(|e| err(&path, e))?;
            f.set_len(valid).map_err(|e| err(&path, e))?;
            let mut seg = Segment { bytes: valid, pending: HashSet::new() };
            for e in events {
                seg.pending.insert(e.id.clone());
                shared.unsent.push_back((*n, e));
            }
            shared.total_bytes += valid;
            shared.segments.insert(*n, seg);
        }
        shared.active = numbers.last().map_or(1, |n| n + 1);
        let active_path = segment_path(dir, shared.active);
        let file = OpenOptions::new().create(true).append(true).open(&active_path).map_err(|e| err(&active_path, e))?;
        shared.segments.insert(shared.active, Segment { bytes: 0, pending: HashSet::new() });
        let (tx, rx) = mpsc::sync_channel(65_536);
        let spool = Arc::new(Self {
            dir: dir.to_path_buf(),
            max_bytes,
            shared: Mutex::new(shared),
            writer: Mutex::new(Some(tx)),
            writer_thread: Mutex::new(None),
            active_file: Mutex::new(file),
            write_failures: std::sync::atomic::AtomicU64::new(0),
            ready: Notify::new(),
        });
        let s = spool.clone();
        let thread = std::thread::Builder::new()
            .name("kubechat-spool".into())
            .spawn(move || s.write_loop(rx))
            .map_err(|e| err(dir, e))?;
        *spool.writer_thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(thread);
        if !spool.lock().unsent.is_empty() {
            spool.ready.notify_one();
        }
        Ok(spool)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes on disk and queued for it.
    pub(crate) fn bytes(&self) -> u64 {
        let s = self.lock();
        s.total_bytes + s.queued_bytes
    }

    /// Bytes on disk (or held in memory after a refused write), without
    /// what is still queued: queued usage events may merge when written,
    /// so this is the count that only grows until events are answered.
    pub(crate) fn written_bytes(&self) -> u64 {
        self.lock().total_bytes
    }

    /// Events waiting for an acknowledgement (on disk, sent or not).
    pub(crate) fn pending(&self) -> usize {
        self.lock().segments.values().map(|s| s.pending.len()).sum()
    }

    /// Past the limit: requests that must be audited are to be refused.
    pub(crate) fn is_full(&self) -> bool {
        self.bytes() >= self.max_bytes
    }

    /// Why the disk refused the last write, while it does: requests that
    /// must be audited are to be refused then too.
    pub(crate) fn write_error(&self) -> Option<String> {
        self.lock().write_error.clone()
    }

    /// Batches the disk refused since start.
    pub(crate) fn write_failures(&self) -> u64 {
        self.write_failures.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The configured limit.
    pub(crate) fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Queues `event` for the disk. `false` when even the reserve beyond
    /// the limit is used up (the caller counts the drop).
    pub(crate) fn append(&self, event: Event) -> bool {
        let size = event.encoded_len() as u64 + 8;
        {
            let mut s = self.lock();
            if s.total_bytes + s.queued_bytes + size > self.max_bytes + self.max_bytes / 10 {
                return false;
            }
            s.queued_bytes += size;
        }
        let sent =
            self.writer.lock().unwrap_or_else(|p| p.into_inner()).as_ref().is_some_and(|w| w.try_send(event).is_ok());
        if !sent {
            self.lock().queued_bytes -= size;
        }
        sent
    }

    fn write_loop(self: Arc<Self>, rx: mpsc::Receiver<Event>) {
        while let Ok(first) = rx.recv() {
            // Linger a moment so one fsync takes many requests' events: each
            // costs the kernel a journal commit, and nobody waits on it (a
            // request's record is written after it ended). A sleep, not a
            // wait per event: waking this thread for each would cost more.
            std::thread::sleep(LINGER);
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(more) => batch.push(more),
                    // Drained, or closed: write what we have.
                    Err(_) => break,
                }
            }
            // Counted by what was queued, before usage events merge.
            let queued: u64 = batch.iter().map(|e| e.encoded_len() as u64 + 8).sum();
            let batch = merge_usage(batch);
            let mut buf = Vec::new();
            for e in &batch {
                buf.extend_from_slice(&record(e));
            }
            // The batch is still counted in `queued_bytes`, so the active
            // segment cannot be rotated away underneath this write.
            let written_before = {
                let s = self.lock();
                s.segments.get(&s.active).map_or(0, |seg| seg.bytes)
            };
            let ok = {
                let mut file = self.active_file.lock().unwrap_or_else(|p| p.into_inner());
                let ok = file.write_all(&buf).and_then(|()| file.sync_data());
                if ok.is_err() {
                    // No torn record may stay in front of later ones.
                    let _ = file.set_len(written_before);
                }
                ok
            };
            let mut s = self.lock();
            s.queued_bytes = s.queued_bytes.saturating_sub(queued);
            if let Err(e) = ok {
                // Not lost: kept in memory and still published; requests
                // that must be audited are refused until the disk takes
                // writes again (a restart before then would lose these).
                self.write_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(error = %e, dir = %self.dir.display(), events = batch.len(), "cannot write the event spool; keeping these events in memory and refusing audited requests until it can");
                // Counted like a segment, so the limit and its reserve bound
                // the memory too; answering them frees it (`collect`).
                s.write_error = Some(e.to_string());
                s.total_bytes += queued;
                let held = s.segments.entry(IN_MEMORY).or_insert_with(|| Segment { bytes: 0, pending: HashSet::new() });
                held.bytes += queued;
                for ev in &batch {
                    held.pending.insert(ev.id.clone());
                }
                for ev in batch {
                    s.unsent.push_back((IN_MEMORY, ev));
                }
                drop(s);
                self.ready.notify_one();
                continue;
            }
            s.write_error = None;
            let active = s.active;
            s.total_bytes += buf.len() as u64;
            if let Some(seg) = s.segments.get_mut(&active) {
                seg.bytes += buf.len() as u64;
                for e in &batch {
                    seg.pending.insert(e.id.clone());
                }
            }
            for e in batch {
                s.unsent.push_back((active, e));
            }
            if s.segments.get(&active).is_some_and(|seg| seg.bytes >= SEGMENT_BYTES) {
                self.rotate(&mut s);
            }
            drop(s);
            self.ready.notify_one();
        }
    }

    /// Starts a new active segment (the old one is deleted once answered).
    fn rotate(&self, s: &mut Shared) {
        let next = s.active + 1;
        let path = segment_path(&self.dir, next);
        match OpenOptions::new().create(true).append(true).open(&path) {
            Ok(f) => {
                *self.active_file.lock().unwrap_or_else(|p| p.into_inner()) = f;
                s.active = next;
                s.segments.insert(next, Segment { bytes: 0, pending: HashSet::new() });
                self.collect(s);
            }
            Err(e) => tracing::error!(error = %e, path = %path.display(), "cannot start a new spool segment"),
        }
    }

    /// Up to `max` events not yet sent (nor in flight).
    pub(crate) fn take(&self, max: usize) -> Vec<Event> {
        let mut s = self.lock();
        let n = max.min(s.unsent.len());
        let batch: Vec<(u64, Event)> = s.unsent.drain(..n).collect();
        let mut out = Vec::with_capacity(batch.len());
        for (seg, e) in batch {
            s.in_flight.insert(e.id.clone(), seg);
            out.push(e);
        }
        out
    }

    /// Puts events whose sending failed back at the front, in order.
    pub(crate) fn put_back(&self, events: Vec<Event>) {
        let mut s = self.lock();
        for e in events.into_iter().rev() {
            if let Some(seg) = s.in_flight.remove(&e.id) {
                s.unsent.push_front((seg, e));
            }
        }
    }

    /// The control plane answered for these ids (stored, duplicate or
    /// rejected as malformed): forget them, deleting finished segments.
    pub(crate) fn acknowledge<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let mut s = self.lock();
        for id in ids {
            if let Some(seg) = s.in_flight.remove(id)
                && let Some(segment) = s.segments.get_mut(&seg)
            {
                segment.pending.remove(id);
            }
        }
        self.collect(&mut s);
        // A fully answered active segment with nothing being written is
        // replaced too, so a relay that caught up holds no bytes.
        let active_done = s.segments.get(&s.active).is_some_and(|seg| seg.bytes > 0 && seg.pending.is_empty());
        if active_done && s.queued_bytes == 0 {
            self.rotate(&mut s);
        }
    }

    fn collect(&self, s: &mut Shared) {
        let done: Vec<u64> =
            s.segments.iter().filter(|(n, seg)| **n != s.active && seg.pending.is_empty()).map(|(n, _)| *n).collect();
        for n in done {
            if let Some(seg) = s.segments.remove(&n) {
                s.total_bytes = s.total_bytes.saturating_sub(seg.bytes);
            }
            let _ = std::fs::remove_file(segment_path(&self.dir, n));
        }
    }

    /// Stops the writer once what is queued is written, and waits for it
    /// (blocking: call it off the async runtime).
    pub(crate) fn close(&self) {
        self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        let thread = self.writer_thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use kubechat_protocol::events::event::Body;
    use kubechat_protocol::events::{UsageBody, UsageType};

    use super::*;

    fn event(i: u32) -> Event {
        Event { id: format!("id-{i}"), time_ms: i64::from(i), tenant: "t".into(), ..Default::default() }
    }

    async fn wait_unsent(s: &Spool, n: usize) {
        for _ in 0..500 {
            if s.lock().unsent.len() >= n {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        panic!("events never reached the disk");
    }

    fn usage(id: &str, cluster: &str, kind: UsageType, time_ms: i64) -> Event {
        Event {
            id: id.into(),
            time_ms,
            tenant: "t".into(),
            cluster: cluster.into(),
            relay: "r".into(),
            request_id: format!("req-{id}"),
            body: Some(Body::Usage(UsageBody { r#type: kind as i32, quantity: 1.0 })),
        }
    }

    fn quantity(e: &Event) -> f64 {
        match &e.body {
            Some(Body::Usage(u)) => u.quantity,
            _ => 0.0,
        }
    }

    #[test]
    fn usage_events_of_one_batch_merge_into_one_per_tenant_cluster_type_and_hour() {
        let hour = 3_600_000;
        let audit =
            Event { id: "audit".into(), tenant: "t".into(), body: Some(Body::Audit(Default::default())), ..event(0) };
        let batch = vec![
            usage("a", "c1", UsageType::ApiRequest, 10 * hour + 5),
            audit.clone(),
            usage("b", "c1", UsageType::ApiRequest, 10 * hour + 9),
            usage("c", "c2", UsageType::ApiRequest, 10 * hour + 6),
            usage("d", "c1", UsageType::CommandExecuted, 10 * hour + 7),
            // The next hour may be the next month: not merged with the first.
            usage("e", "c1", UsageType::ApiRequest, 11 * hour),
            usage("f", "c1", UsageType::ApiRequest, 10 * hour + 1),
        ];
        let merged = merge_usage(batch);
        let ids: Vec<&str> = merged.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["a", "audit", "c", "d", "e"], "in the place of the first of each group");
        assert_eq!(quantity(&merged[0]), 3.0, "a, b and f");
        assert_eq!(merged[0].time_ms, 10 * hour + 9, "the latest time");
        assert_eq!(merged[0].request_id, "", "several requests: none named");
        assert_eq!(merged[1], audit, "audit events are never merged");
        assert_eq!((quantity(&merged[2]), merged[2].request_id.as_str()), (1.0, "req-c"));
        assert_eq!(merged.iter().map(quantity).sum::<f64>(), 6.0, "nothing counted twice or lost");
    }

    #[tokio::test]
    async fn the_spool_keeps_the_sum_of_usage_whatever_merges() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Spool::open(dir.path(), 1 << 20).expect("open");
        for i in 0..200 {
            assert!(s.append(usage(&format!("u{i}"), "c1", UsageType::ApiRequest, 1_000)));
        }
        let mut total = 0.0;
        let mut events = 0;
        loop {
            let got = s.take(1000);
            events += got.len();
            total += got.iter().map(quantity).sum::<f64>();
            if total >= 200.0 {
                break;
            }
            // Each written batch notifies (a permit is kept if nobody waits).
            tokio::time::timeout(std::time::Duration::from_secs(10), s.ready.notified())
                .await
                .expect("the usage events never reached the disk");
        }
        assert_eq!(total, 200.0);
        assert!(events <= 200, "{events} events for 200 uses");
        s.close();
    }

    #[tokio::test]
    async fn events_survive_a_restart_until_acknowledged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Spool::open(dir.path(), 1 << 20).expect("open");
        for i in 0..10 {
            assert!(s.append(event(i)));
        }
        wait_unsent(&s, 10).await;
        let sent = s.take(4);
        assert_eq!(sent.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["id-0", "id-1", "id-2", "id-3"]);
        s.acknowledge(sent.iter().map(|e| e.id.as_str()));
        s.close();
        drop(s);
        // Reopened: the acknowledged ones may come back (their segment is
        // still in use), the others must.
        let s = Spool::open(dir.path(), 1 << 20).expect("reopen");
        let again: Vec<String> = s.take(100).into_iter().map(|e| e.id).collect();
        for i in 4..10 {
            assert!(again.contains(&format!("id-{i}")), "{again:?}");
        }
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_and_the_rest_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Spool::open(dir.path(), 1 << 20).expect("open");
        for i in 0..3 {
            assert!(s.append(event(i)));
        }
        wait_unsent(&s, 3).await;
        s.close();
        drop(s);
        let seg = std::fs::read_dir(dir.path()).expect("dir").filter_map(|e| e.ok()).next().expect("a segment").path();
        let mut f = OpenOptions::new().append(true).open(&seg).expect("open");
        f.write_all(&[0, 0, 0, 50, 1, 2, 3, 4, 5]).expect("torn write");
        drop(f);
        let s = Spool::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(s.take(100).len(), 3);
    }

    #[tokio::test]
    async fn acknowledged_segments_are_deleted_and_the_limit_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Spool::open(dir.path(), 2000).expect("open");
        let mut accepted = 0;
        for i in 0..1000 {
            if s.append(event(i)) {
                accepted += 1;
            }
        }
        assert!(accepted < 1000, "the reserve beyond the limit is bounded");
        wait_unsent(&s, accepted).await;
        assert!(s.is_full());
        let all = s.take(10_000);
        s.acknowledge(all.iter().map(|e| e.id.as_str()));
        assert_eq!(s.pending(), 0);
        assert!(!s.is_full(), "answered events free their space");
        assert_eq!(s.bytes(), 0);
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1, "only the fresh active segment remains");
    }

    #[tokio::test]
    async fn a_disk_that_refuses_writes_loses_nothing_and_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Spool::open(dir.path(), 1 << 20).expect("open");
        assert!(s.append(event(1)));
        wait_unsent(&s, 1).await;
        // The disk is full from now on.
        let real = segment_path(dir.path(), s.lock().active);
        *s.active_file.lock().expect("lock") = OpenOptions::new().write(true).open("/dev/full").expect("/dev/full");
        assert!(s.append(event(2)));
        wait_unsent(&s, 2).await;
        assert!(s.write_error().is_some_and(|e| e.contains("No space left")), "{:?}", s.write_error());
        assert_eq!(s.write_failures(), 1);
        // Both are still published, and answering them is fine.
        let batch = s.take(10);
        assert_eq!(batch.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["id-1", "id-2"]);
        s.acknowledge(batch.iter().map(|e| e.id.as_str()));
        // Answered in full, the segment was replaced by a new file: the
        // writes go on there and the refusal ends.
        assert_ne!(segment_path(dir.path(), s.lock().active), real);
        assert!(s.append(event(3)));
        wait_unsent(&s, 1).await;
        assert_eq!(s.write_error(), None);
        s.close();
    }
}
