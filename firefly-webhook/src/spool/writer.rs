//! The one thread that writes: group commit, with a few syncs in flight on a slow disk.
//!
//! Requests queue on a channel. The writer takes everything queued, encodes it into one
//! buffer and writes it with one `write`; then one `fdatasync` makes the batch durable. Batches
//! complete in the order they were written: each is indexed and its waiters woken only once
//! its own sync and those of every batch before it returned. While a batch syncs, the next
//! queues up, so syncs per second stay bounded however many requests there are.
//!
//! Who syncs depends on how long syncs take. On a quick disk (recent syncs under
//! [`INLINE_SYNC_BELOW`] on average) the writer syncs each batch itself: no hand-off, the least
//! CPU. On a slow one it hands batches to [`SYNCS_IN_FLIGHT`] sync threads and goes on writing
//! the next ones: a disk (and ext4's journal) completes overlapping `fdatasync` calls in about
//! the time of one (measured here, 64 KiB writes: 1 thread 290–500 syncs/s, 2 threads 430–850,
//! 4 threads 810–1,240), so a request that arrives while a sync runs no longer waits for it to
//! end before its own starts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::format::{self, EntryHead};
use super::index::{Segment, Slot};
use super::log::{Shared, WriteFailed, now_ms};
use super::recover::{dead_path, dead_rewrite_path, segment_path, sync_dir};
use crate::event::EventId;

/// Requests taken into one batch at most; bounds the buffer of one write.
const MAX_BATCH: usize = 4096;
/// How often the gauges are refreshed while nothing is written.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// Batches whose sync is in flight at most (see the module docs).
pub(super) const SYNCS_IN_FLIGHT: usize = 4;
/// While recent syncs took less than this on average, the writer syncs a batch itself when
/// none is in flight: on a disk that fast, handing batches to another thread costs more CPU
/// than the overlap saves (measured on the 2-core machine: 110,000–121,000 spooled events/s
/// syncing in place against 90,000–92,000 through the threads, at about 4,500 syncs/s; the
/// threads win five to seven times over when syncs take milliseconds).
const INLINE_SYNC_BELOW: Duration = Duration::from_micros(500);
/// While batches are in flight, drained segments are deleted (which waits for every sync in
/// flight) at most this often.
const COLLECT_EVERY: Duration = Duration::from_millis(250);

/// One change to the log.
#[derive(Debug)]
pub(super) enum Op {
    /// A new entry; `reserved` bytes of the budget are already counted for it.
    Append {
        destination: String,
        event: Bytes,
        attempt: u32,
        due_ms: u64,
        reserved: u64,
    },
    /// The entry with this sequence number is done with (the index already forgot it).
    Release { seq: u64 },
    /// A dead-letter record (a whole frame) for `destination`'s dead-letter file.
    Dead { destination: String, frame: Vec<u8> },
    /// Deletes `destination`'s dead-letter file.
    ClearDead { destination: String },
    /// Rewrites `destination`'s dead-letter file without the records of `keys` (event id,
    /// dead-lettered at in Unix ns) and sends how many it removed.
    RemoveDead {
        destination: String,
        keys: HashSet<(EventId, i128)>,
        removed: Option<oneshot::Sender<u64>>,
    },
}

/// Ops written together, and who waits for them to be durable.
#[derive(Debug)]
pub(super) struct Request {
    pub(super) ops: Vec<Op>,
    pub(super) done: Option<oneshot::Sender<Result<(), WriteFailed>>>,
}

/// The writer's own state: the segment being written and the open dead-letter files.
#[derive(Debug)]
pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) dir: PathBuf,
    pub(super) segment_bytes: u64,
    pub(super) active: File,
    pub(super) active_base: u64,
    pub(super) active_len: u64,
    pub(super) next_seq: u64,
    pub(super) buf: Vec<u8>,
    pub(super) dead: HashMap<String, File>,
    /// Bytes added to the directory since the budget was last settled.
    pub(super) written: u64,
    pub(super) reported: Option<Instant>,
    /// The sync threads, while [`run`](Self::run) runs.
    pub(super) syncs: Option<Syncs>,
    /// When drained segments were last looked for.
    pub(super) collected: Option<Instant>,
    /// The active segment as the sync threads share it: its base and a handle.
    pub(super) sync_file: Option<(u64, Arc<File>)>,
}

/// A batch written to the page cache, waiting for its sync.
#[derive(Debug)]
pub(super) struct Written {
    /// Its place in write order.
    number: u64,
    /// The segment it was written to.
    file: Arc<File>,
    now: u64,
    appended: Vec<(String, Slot)>,
    /// The segment's base and length after it.
    segment: (u64, u64),
    done: Vec<oneshot::Sender<Result<(), WriteFailed>>>,
}

/// What the sync threads share: the batches synced out of order, and how many are in flight.
#[derive(Debug)]
struct Flight {
    /// The number of the next batch to complete.
    next: u64,
    synced: BTreeMap<u64, (Written, io::Result<()>)>,
    outstanding: usize,
    /// Set by the first failed sync: that batch and every later one fail.
    failed: Option<WriteFailed>,
}

/// Completes synced batches in write order.
#[derive(Debug)]
struct Pipeline {
    flight: Mutex<Flight>,
    /// Recent syncs' duration, in microseconds (a moving average).
    sync_micros: AtomicU64,
    /// Signalled whenever batches complete.
    completed: Condvar,
    shared: Arc<Shared>,
}

impl Pipeline {
    /// Syncs `file` and keeps the moving average of how long syncs take.
    fn sync(&self, file: &File) -> io::Result<()> {
        let started = Instant::now();
        let result = file.sync_data();
        let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let _ = self
            .sync_micros
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |avg| {
                Some(avg - avg / 8 + took / 8)
            });
        result
    }

    fn lock(&self) -> MutexGuard<'_, Flight> {
        // Every critical section leaves the state consistent before it can panic.
        self.flight.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the outcome of `written`'s sync and completes every batch now in order.
    fn synced(&self, written: Written, result: io::Result<()>) {
        let mut flight = self.lock();
        flight.synced.insert(written.number, (written, result));
        loop {
            let next = flight.next;
            let Some((written, result)) = flight.synced.remove(&next) else {
                break;
            };
            flight.next += 1;
            flight.outstanding -= 1;
            self.complete(&mut flight, written, &result);
        }
        drop(flight);
        self.completed.notify_all();
    }

    /// Indexes a durable batch and wakes its waiters; fails it if it, or any batch before
    /// it, did not sync.
    fn complete(&self, flight: &mut Flight, written: Written, result: &io::Result<()>) {
        if let (None, Err(error)) = (&flight.failed, result) {
            tracing::error!(
                %error,
                "the spool could not sync to disk; it accepts nothing more until restarted"
            );
            self.shared.failed.store(true, Ordering::Release);
            flight.failed = Some(WriteFailed::new(io::Error::new(
                error.kind(),
                error.to_string(),
            )));
        }
        if let Some(failed) = &flight.failed {
            for done in written.done {
                let _ = done.send(Err(failed.clone()));
            }
            self.shared.notify.notify_waiters();
            return;
        }
        {
            let mut index = self.shared.lock();
            for (destination, mut slot) in written.appended {
                let cached = slot.cached.as_ref().map_or(0, Bytes::len);
                if !index.reserve_cache(cached) {
                    slot.cached = None;
                }
                index.insert(destination, slot, written.now);
            }
            let (base, len) = written.segment;
            if let Some(segment) = index.segments.get_mut(&base) {
                segment.bytes = segment.bytes.max(len);
            }
        }
        for done in written.done {
            let _ = done.send(Ok(()));
        }
        self.shared.notify.notify_waiters();
    }
}

/// The sync threads and the way to them.
#[derive(Debug)]
pub(super) struct Syncs {
    pipeline: Arc<Pipeline>,
    tx: Option<Sender<Written>>,
    threads: Vec<thread::JoinHandle<()>>,
    /// Batches handed to them so far.
    submitted: u64,
}

impl Syncs {
    fn start(shared: &Arc<Shared>) -> io::Result<Self> {
        let pipeline = Arc::new(Pipeline {
            flight: Mutex::new(Flight {
                next: 0,
                synced: BTreeMap::new(),
                outstanding: 0,
                failed: None,
            }),
            completed: Condvar::new(),
            sync_micros: AtomicU64::new(0),
            shared: Arc::clone(shared),
        });
        let (tx, rx) = mpsc::channel::<Written>();
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::with_capacity(SYNCS_IN_FLIGHT);
        for _ in 0..SYNCS_IN_FLIGHT {
            let (pipeline, rx) = (Arc::clone(&pipeline), Arc::clone(&rx));
            let thread = thread::Builder::new()
                .name("firefly-spool-sync".to_owned())
                .spawn(move || {
                    loop {
                        // One thread waits on the channel, the others on the lock.
                        let next = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
                        let Ok(written) = next else { return };
                        let result = pipeline.sync(&written.file);
                        pipeline.synced(written, result);
                    }
                })?;
            threads.push(thread);
        }
        Ok(Self {
            pipeline,
            tx: Some(tx),
            threads,
            submitted: 0,
        })
    }

    /// Syncs a written batch: here, when nothing is in flight and syncs are quick (see
    /// [`INLINE_SYNC_BELOW`]); else on a sync thread, after waiting until fewer than
    /// [`SYNCS_IN_FLIGHT`] are in flight.
    fn submit(&mut self, mut written: Written) -> io::Result<()> {
        let quick = self.pipeline.sync_micros.load(Ordering::Relaxed)
            < u64::try_from(INLINE_SYNC_BELOW.as_micros()).unwrap_or(u64::MAX);
        let inline = {
            let mut flight = self.pipeline.lock();
            let inline = quick && flight.outstanding == 0;
            if inline {
                flight.outstanding += 1;
            }
            inline
        };
        if inline {
            written.number = self.submitted;
            self.submitted += 1;
            let result = self.pipeline.sync(&written.file);
            self.pipeline.synced(written, result);
            return self.wait_until(SYNCS_IN_FLIGHT);
        }
        self.wait_until(SYNCS_IN_FLIGHT - 1)?;
        written.number = self.submitted;
        self.submitted += 1;
        self.pipeline.lock().outstanding += 1;
        match &self.tx {
            Some(tx) if tx.send(written).is_ok() => Ok(()),
            _ => Err(io::Error::other("the sync threads are gone")),
        }
    }

    /// Waits until at most `n` batches are in flight; fails once a sync failed.
    fn wait_until(&self, n: usize) -> io::Result<()> {
        let mut flight = self.pipeline.lock();
        while flight.outstanding > n && flight.failed.is_none() {
            flight = self
                .pipeline
                .completed
                .wait(flight)
                .unwrap_or_else(PoisonError::into_inner);
        }
        match &flight.failed {
            Some(failed) => Err(io::Error::other(failed.clone())),
            None => Ok(()),
        }
    }

    fn in_flight(&self) -> usize {
        self.pipeline.lock().outstanding
    }

    /// Lets the batches in flight complete and stops the threads.
    fn stop(mut self) {
        self.tx = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Writer {
    /// Writes batches until every sender is gone or a write fails.
    pub(super) fn run(mut self, rx: &Receiver<Request>) {
        if let Err(error) = self.collect() {
            self.fail(&error, Vec::new());
            return;
        }
        match Syncs::start(&self.shared) {
            Ok(syncs) => self.syncs = Some(syncs),
            Err(error) => {
                self.fail(&error, Vec::new());
                return;
            }
        }
        self.serve(rx);
        // Whatever is in flight completes (or fails) before the directory is let go.
        if let Some(syncs) = self.syncs.take() {
            syncs.stop();
        }
        self.report(true);
    }

    fn serve(&mut self, rx: &Receiver<Request>) {
        self.settle(0);
        self.report(true);
        loop {
            let first = match rx.recv_timeout(REPORT_EVERY) {
                Ok(request) => request,
                Err(RecvTimeoutError::Timeout) => {
                    self.report(true);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            if let Err(error) = self.commit(&mut batch) {
                self.fail(&error, batch);
                // Requests still queued fail when the channel closes with this thread.
                return;
            }
            if self.shared.failed.load(Ordering::Acquire) {
                // A sync failed: the pipeline failed its batch and every later one.
                return;
            }
        }
        // Every sender is gone: complete what is in flight, then look for drained segments.
        if self.drain().is_ok() {
            let _ = self.collect();
        }
    }

    /// Waits until every batch in flight has completed.
    fn drain(&self) -> io::Result<()> {
        self.syncs
            .as_ref()
            .map_or(Ok(()), |syncs| syncs.wait_until(0))
    }

    /// After a failed write or sync nothing written since the last sync can be trusted (the
    /// kernel may have dropped the dirty pages), so the log stops; on restart it recovers
    /// from what is on disk.
    fn fail(&self, error: &io::Error, batch: Vec<Request>) {
        tracing::error!(
            dir = %self.dir.display(),
            %error,
            "the spool could not write to disk; it accepts nothing more until restarted"
        );
        self.shared.failed.store(true, Ordering::Release);
        let failed = WriteFailed::new(io::Error::new(error.kind(), error.to_string()));
        for request in batch {
            if let Some(done) = request.done {
                let _ = done.send(Err(failed.clone()));
            }
        }
        self.shared.notify.notify_waiters();
    }

    fn commit(&mut self, batch: &mut [Request]) -> io::Result<()> {
        let now = now_ms();
        // Dead letters first: the release of a dead-lettered entry must never be durable
        // before its dead-letter record is.
        self.write_dead(batch)?;
        let mut appended = Vec::new();
        let mut reserved = 0;
        for request in batch.iter_mut() {
            for op in request.ops.drain(..) {
                match op {
                    Op::Append {
                        destination,
                        event,
                        attempt,
                        due_ms,
                        reserved: r,
                    } => {
                        reserved += r;
                        let len = format::entry_len(&destination, &event) as u64;
                        if self.end() > format::MAGIC_LEN && self.end() + len > self.segment_bytes {
                            self.roll()?;
                        }
                        let offset = self.end();
                        let head = EntryHead {
                            seq: self.next_seq,
                            written_ms: now,
                            due_ms,
                            attempt,
                        };
                        let frame_len = format::entry(&mut self.buf, &head, &destination, &event)
                            .map_err(io::Error::other)?;
                        self.next_seq += 1;
                        appended.push((
                            destination,
                            Slot {
                                seq: head.seq,
                                attempt,
                                written_ms: now,
                                due_ms,
                                segment: self.active_base,
                                offset,
                                frame_len,
                                cached: Some(event),
                            },
                        ));
                    }
                    Op::Release { seq } => {
                        format::release(&mut self.buf, seq);
                    }
                    Op::Dead { .. } | Op::ClearDead { .. } | Op::RemoveDead { .. } => {}
                }
            }
        }
        self.write()?;
        let done: Vec<_> = batch.iter_mut().filter_map(|r| r.done.take()).collect();
        if !appended.is_empty() || !done.is_empty() {
            let written = Written {
                number: 0,
                file: self.sync_file()?,
                now,
                appended,
                segment: (self.active_base, self.active_len),
                done,
            };
            match &mut self.syncs {
                Some(syncs) => syncs.submit(written)?,
                None => return Err(io::Error::other("the sync threads are gone")),
            }
        }
        // Releases alone wait for the next sync: nobody waits for them.
        self.maybe_collect()?;
        self.settle(reserved);
        self.report(false);
        Ok(())
    }

    /// The active segment, as a handle the sync threads can hold.
    fn sync_file(&mut self) -> io::Result<Arc<File>> {
        match &self.sync_file {
            Some((base, file)) if *base == self.active_base => Ok(Arc::clone(file)),
            _ => {
                let file = Arc::new(self.active.try_clone()?);
                self.sync_file = Some((self.active_base, Arc::clone(&file)));
                Ok(file)
            }
        }
    }

    /// Deletes drained segments: right away when nothing is in flight, else at most every
    /// [`COLLECT_EVERY`], after waiting for what is in flight (entries of a batch in flight
    /// are not indexed yet, so their segment would look drained).
    fn maybe_collect(&mut self) -> io::Result<()> {
        let in_flight = self.syncs.as_ref().map_or(0, Syncs::in_flight);
        if in_flight > 0
            && self
                .collected
                .is_some_and(|at| at.elapsed() < COLLECT_EVERY)
        {
            return Ok(());
        }
        self.drain()?;
        self.collected = Some(Instant::now());
        self.collect()
    }

    /// Writes and syncs the batch's dead-letter records, clears and removals, in request
    /// order.
    fn write_dead(&mut self, batch: &mut [Request]) -> io::Result<()> {
        let mut dead: Vec<(String, Vec<u8>)> = Vec::new();
        for op in batch.iter_mut().flat_map(|request| &mut request.ops) {
            match op {
                Op::Dead { destination, frame } => {
                    match dead.iter_mut().find(|(d, _)| d == destination) {
                        Some((_, frames)) => frames.extend_from_slice(frame),
                        None => dead.push((destination.clone(), std::mem::take(frame))),
                    }
                }
                Op::ClearDead { destination } => {
                    self.flush_dead(&mut dead, destination)?;
                    self.clear_dead(destination)?;
                }
                Op::RemoveDead {
                    destination,
                    keys,
                    removed,
                } => {
                    self.flush_dead(&mut dead, destination)?;
                    let count = self.remove_dead(destination, keys)?;
                    if let Some(removed) = removed.take() {
                        let _ = removed.send(count);
                    }
                }
                Op::Append { .. } | Op::Release { .. } => {}
            }
        }
        for (destination, frames) in &dead {
            self.append_dead(destination, frames)?;
        }
        Ok(())
    }

    /// Appends the records of `destination` gathered so far, before a clear or removal.
    fn flush_dead(
        &mut self,
        dead: &mut Vec<(String, Vec<u8>)>,
        destination: &str,
    ) -> io::Result<()> {
        if let Some(i) = dead.iter().position(|(d, _)| d == destination) {
            let (destination, frames) = dead.swap_remove(i);
            self.append_dead(&destination, &frames)?;
        }
        Ok(())
    }

    /// Where the next record goes in the active segment.
    fn end(&self) -> u64 {
        self.active_len + self.buf.len() as u64
    }

    /// Writes the buffer to the active segment (to the page cache: a sync thread syncs it).
    fn write(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.active.write_all(&self.buf)?;
        self.active_len += self.buf.len() as u64;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Writes the buffer to the active segment and syncs it, here and now.
    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.write()?;
        self.active.sync_data()
    }

    /// Seals the active segment and starts the next one at the next sequence number.
    fn roll(&mut self) -> io::Result<()> {
        self.flush()?;
        let base = self.next_seq;
        let path = segment_path(&self.dir, base);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(&path)?;
        file.write_all(format::SEGMENT_MAGIC)?;
        file.sync_data()?;
        sync_dir(&self.dir)?;
        self.written += format::MAGIC_LEN;
        {
            let mut index = self.shared.lock();
            if let Some(segment) = index.segments.get_mut(&self.active_base) {
                segment.end = Some(base);
                segment.bytes = self.active_len;
            }
            index.segments.insert(base, Segment::new(format::MAGIC_LEN));
        }
        self.active = file;
        self.active_base = base;
        self.active_len = format::MAGIC_LEN;
        Ok(())
    }

    /// Deletes the sealed segments without live entries, after writing the live sets of the
    /// older segments that stay (see [`Index::deletable`](super::index::Index::deletable)).
    fn collect(&mut self) -> io::Result<()> {
        let (doomed, carry) = self.shared.lock().deletable();
        if doomed.is_empty() {
            return Ok(());
        }
        for set in &carry {
            format::live_set(&mut self.buf, set.base, set.count, &set.bits);
        }
        self.flush()?;
        let mut freed = 0;
        for base in &doomed {
            match fs::remove_file(segment_path(&self.dir, *base)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            if let Some(segment) = self.shared.lock().segments.remove(base) {
                freed += segment.bytes;
            }
        }
        sync_dir(&self.dir)?;
        self.shared.used.fetch_sub(freed, Ordering::AcqRel);
        self.shared.full.store(false, Ordering::Release);
        tracing::debug!(segments = doomed.len(), freed, "spool segments deleted");
        Ok(())
    }

    fn dead_file(&mut self, destination: &str) -> io::Result<&mut File> {
        if !self.dead.contains_key(destination) {
            let file = open_dead(&dead_path(&self.dir, destination))?;
            self.dead.insert(destination.to_owned(), file);
        }
        self.dead
            .get_mut(destination)
            .ok_or_else(|| io::Error::other("dead-letter file vanished"))
    }

    fn append_dead(&mut self, destination: &str, frames: &[u8]) -> io::Result<()> {
        let before = self.dead_file(destination)?.metadata()?.len();
        let file = self.dead_file(destination)?;
        file.write_all(frames)?;
        file.sync_data()?;
        let after = file.metadata()?.len();
        self.written += after.saturating_sub(before);
        Ok(())
    }

    fn clear_dead(&mut self, destination: &str) -> io::Result<()> {
        self.dead.remove(destination);
        let path = dead_path(&self.dir, destination);
        let len = match fs::metadata(&path) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        fs::remove_file(&path)?;
        if let Some(parent) = path.parent() {
            sync_dir(parent)?;
        }
        self.shared.used.fetch_sub(len, Ordering::AcqRel);
        self.shared.full.store(false, Ordering::Release);
        Ok(())
    }

    /// Rewrites `destination`'s dead-letter file without the records of `keys`: the rest goes
    /// to a new file, synced, then renamed over the old one and the rename synced. A crash
    /// before the rename leaves the old file whole (and the new one is deleted on open), one
    /// after it the new file: never a mix, never a record lost that was not asked for. A
    /// file left without records is deleted. Returns how many records it removed.
    fn remove_dead(
        &mut self,
        destination: &str,
        keys: &HashSet<(EventId, i128)>,
    ) -> io::Result<u64> {
        let path = dead_path(&self.dir, destination);
        let data = match fs::read(&path) {
            Ok(data) => data,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        if !data.starts_with(format::DEAD_MAGIC) {
            return Ok(0);
        }
        let mut kept = Vec::with_capacity(data.len());
        kept.extend_from_slice(format::DEAD_MAGIC);
        let (mut at, mut removed, mut left) = (format::DEAD_MAGIC.len(), 0, 0_u64);
        // A torn or corrupt tail ends the file, as it does for readers and appends.
        while let Ok(Some((payload, next))) = format::read_frame(&data, at) {
            let doomed = format::dead_key(payload)
                .is_ok_and(|(name, id, at_ns)| name == destination && keys.contains(&(id, at_ns)));
            if doomed {
                removed += 1;
            } else {
                kept.extend_from_slice(&data[at..next]);
                left += 1;
            }
            at = next;
        }
        if removed == 0 {
            return Ok(0);
        }
        if left == 0 {
            self.clear_dead(destination)?;
            return Ok(removed);
        }
        // The cached handle would go on appending to the file being replaced.
        self.dead.remove(destination);
        let rewrite = dead_rewrite_path(&path);
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&rewrite)?;
        file.write_all(&kept)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&rewrite, &path)?;
        if let Some(parent) = path.parent() {
            sync_dir(parent)?;
        }
        let freed = (data.len() - kept.len()) as u64;
        self.shared.used.fetch_sub(freed, Ordering::AcqRel);
        self.shared.full.store(false, Ordering::Release);
        Ok(removed)
    }

    /// Counts what was written beyond what publishers reserved against the budget.
    fn settle(&mut self, reserved: u64) {
        let written = std::mem::take(&mut self.written);
        if written >= reserved {
            self.shared
                .used
                .fetch_add(written - reserved, Ordering::AcqRel);
        } else {
            self.shared
                .used
                .fetch_sub(reserved - written, Ordering::AcqRel);
        }
    }

    fn report(&mut self, force: bool) {
        if !force
            && self
                .reported
                .is_some_and(|at| at.elapsed() < REPORT_EVERY / 10)
        {
            return;
        }
        self.reported = Some(Instant::now());
        self.shared.report();
    }
}

/// Opens a dead-letter file for appending: creates it with its magic, or cuts a torn tail
/// off an existing one so that new records stay readable.
fn open_dead(path: &Path) -> io::Result<File> {
    let parent = path.parent().unwrap_or(Path::new("."));
    if !parent.exists() {
        fs::create_dir_all(parent)?;
        if let Some(grandparent) = parent.parent() {
            sync_dir(grandparent)?;
        }
    }
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)?;
    let mut data = Vec::new();
    file.read_to_end(&mut data)?;
    if data.len() < format::DEAD_MAGIC.len() || !data.starts_with(format::DEAD_MAGIC) {
        if !data.is_empty() {
            tracing::error!(
                file = %path.display(),
                "dead-letter file has no valid header; starting it anew"
            );
        }
        file.set_len(0)?;
        file.write_all(format::DEAD_MAGIC)?;
        file.sync_data()?;
        sync_dir(parent)?;
        return Ok(file);
    }
    let mut at = format::DEAD_MAGIC.len();
    loop {
        match format::read_frame(&data, at) {
            Ok(Some((_, next))) => at = next,
            Ok(None) => break,
            Err(error) => {
                tracing::error!(
                    file = %path.display(),
                    offset = at,
                    dropped = data.len() - at,
                    %error,
                    "cut a torn or corrupt record off a dead-letter file"
                );
                file.set_len(at as u64)?;
                file.sync_data()?;
                break;
            }
        }
    }
    Ok(file)
}
