//! Opening a log directory: replays the segments, cuts off a torn or corrupt tail, and
//! rebuilds the index of what is still live.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::format::{self, Record};
use super::index::{Index, Segment, Slot};

/// Extension of segment files.
const SEGMENT_EXT: &str = "seg";
/// Extension of dead-letter files.
const DEAD_EXT: &str = "dlq";
/// Folder of the dead-letter files, inside the log directory.
const DEAD_DIR: &str = "dead";
/// Extension of a dead-letter file being rewritten (`{stem}.dlq.tmp`): renamed over the file
/// once durable, deleted on open when a crash left it behind.
const REWRITE_EXT: &str = "tmp";
/// Extension a segment with an unreadable header is renamed to, and left alone.
const SET_ASIDE_EXT: &str = "corrupt";
/// More entries than one segment can hold (a frame is at least 40 bytes).
const MAX_SEGMENT_ENTRIES: u64 = 1 << 32;
/// Longest file stem made from a destination name before it is shortened with a hash.
const MAX_STEM: usize = 120;

/// The segment file whose first entry is `base`.
pub(super) fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.{SEGMENT_EXT}"))
}

/// The dead-letter file of `destination`: `dead/{destination}.dlq`, with every byte outside
/// `A-Za-z0-9._-` (and a leading dot) written as `%XX`, and long names shortened with a hash.
pub(super) fn dead_path(dir: &Path, destination: &str) -> PathBuf {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut stem = String::with_capacity(destination.len());
    for (i, b) in destination.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0) {
            stem.push(char::from(b));
        } else {
            stem.push('%');
            stem.push(char::from(HEX[usize::from(b >> 4)]));
            stem.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    if stem.is_empty() {
        stem.push('%');
    }
    if stem.len() > MAX_STEM {
        let digest = Sha256::digest(destination.as_bytes());
        stem.truncate(MAX_STEM / 2);
        stem.push('~');
        for b in &digest[..16] {
            stem.push(char::from(HEX[usize::from(b >> 4)]));
            stem.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    dir.join(DEAD_DIR).join(format!("{stem}.{DEAD_EXT}"))
}

/// Where the rewrite of the dead-letter file at `path` is written before it replaces it.
pub(super) fn dead_rewrite_path(path: &Path) -> PathBuf {
    path.with_extension(format!("{DEAD_EXT}.{REWRITE_EXT}"))
}

/// Makes the directory's entries (created, renamed or deleted files) durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        // Windows cannot open a directory as a file; its metadata is journaled.
        let _ = dir;
        Ok(())
    }
}

/// What the log directory holds once replayed.
#[derive(Debug)]
pub(super) struct Recovered {
    pub(super) index: Index,
    pub(super) active: File,
    pub(super) active_base: u64,
    pub(super) active_len: u64,
    pub(super) next_seq: u64,
    /// Bytes of every segment and dead-letter file.
    pub(super) used: u64,
    /// Torn or corrupt records cut off.
    pub(super) cut: u64,
}

/// Replays `dir` (creating it when missing). A record that cannot be read ends its segment:
/// it and everything after it in that file are cut off and logged, the records before it
/// kept. Nothing in the files' content makes this panic.
pub(super) fn recover(
    dir: &Path,
    segment_bytes: u64,
    cache_budget: usize,
    now_ms: u64,
) -> io::Result<Recovered> {
    fs::create_dir_all(dir)?;
    let mut bases = Vec::new();
    for item in fs::read_dir(dir)? {
        let item = item?;
        let name = item.file_name();
        let Some(base) = name.to_str().and_then(parse_segment_name) else {
            continue;
        };
        if item.file_type()?.is_file() {
            bases.push(base);
        }
    }
    bases.sort_unstable();

    let mut replay = Replay::default();
    let mut segments: Vec<(u64, u64)> = Vec::new();
    for &base in &bases {
        if let Some(len) = replay.segment(&segment_path(dir, base), base)? {
            segments.push((base, len));
        }
    }

    // Sequence numbers only grow, also past a segment that was set aside.
    let mut next_seq = replay.max_seq.map_or(0, |seq| seq.saturating_add(1));
    if let Some(&last) = bases.last() {
        next_seq = next_seq.max(last);
    }
    let mut index = Index::new(cache_budget);
    for (i, &(base, bytes)) in segments.iter().enumerate() {
        let mut segment = Segment::new(bytes);
        segment.end = Some(segments.get(i + 1).map_or(next_seq, |(next, _)| *next));
        index.segments.insert(base, segment);
    }
    let reuse = segments
        .last()
        .copied()
        .filter(|(_, bytes)| *bytes < segment_bytes);
    let (active, active_base, active_len) = if let Some((base, bytes)) = reuse {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(segment_path(dir, base))?;
        if let Some(segment) = index.segments.get_mut(&base) {
            segment.end = None;
        }
        (file, base, bytes)
    } else {
        let file = create_segment(dir, next_seq)?;
        index
            .segments
            .insert(next_seq, Segment::new(format::MAGIC_LEN));
        (file, next_seq, format::MAGIC_LEN)
    };
    for (destination, slot) in replay.live.into_values() {
        index.insert(destination, slot, now_ms);
    }
    let used = index.segments.values().map(|s| s.bytes).sum::<u64>() + dead_bytes(dir)?;
    Ok(Recovered {
        index,
        active,
        active_base,
        active_len,
        next_seq,
        used,
        cut: replay.cut,
    })
}

/// A new, empty segment file, durable in its directory.
fn create_segment(dir: &Path, base: u64) -> io::Result<File> {
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .truncate(false)
        .open(segment_path(dir, base))?;
    file.set_len(0)?;
    file.write_all(format::SEGMENT_MAGIC)?;
    file.sync_all()?;
    sync_dir(dir)?;
    Ok(file)
}

/// Bytes of the dead-letter files; deletes the rewrites a crash left behind (the file they
/// were to replace is still whole).
fn dead_bytes(dir: &Path) -> io::Result<u64> {
    let dead = dir.join(DEAD_DIR);
    let items = match fs::read_dir(&dead) {
        Ok(items) => items,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut bytes = 0;
    let mut removed = false;
    for item in items {
        let path = item?.path();
        match path.extension() {
            Some(ext) if ext == DEAD_EXT => bytes += fs::metadata(&path)?.len(),
            Some(ext) if ext == REWRITE_EXT => {
                fs::remove_file(&path)?;
                tracing::warn!(file = %path.display(), "removed an unfinished dead-letter rewrite");
                removed = true;
            }
            _ => {}
        }
    }
    if removed {
        sync_dir(&dead)?;
    }
    Ok(bytes)
}

/// The destinations with a dead-letter file that holds at least one readable record, sorted.
/// A file's name may be shortened, so the name is read from its first record.
pub(super) fn dead_destinations(dir: &Path) -> io::Result<Vec<String>> {
    let items = match fs::read_dir(dir.join(DEAD_DIR)) {
        Ok(items) => items,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for item in items {
        let path = item?.path();
        if path.extension().is_none_or(|ext| ext != DEAD_EXT) {
            continue;
        }
        match first_dead_destination(dir, &path) {
            Ok(Some(destination)) => out.push(destination),
            Ok(None) => {}
            // Deleted since it was listed (cleared meanwhile).
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// The destination named by the first record of the dead-letter file at `path` (in `dir`'s
/// dead-letter folder), if it has a readable one; reads only that record.
fn first_dead_destination(dir: &Path, path: &Path) -> io::Result<Option<String>> {
    use std::io::Read as _;
    let mut file = File::open(path)?;
    let mut head = [0; format::DEAD_MAGIC.len() + format::FRAME_HEADER];
    match file.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let (magic, frame) = head.split_at(format::DEAD_MAGIC.len());
    if magic != format::DEAD_MAGIC {
        return Ok(None);
    }
    let Some(length) = frame.first_chunk::<4>() else {
        return Ok(None);
    };
    let mut data = head.to_vec();
    file.take(u64::from(u32::from_le_bytes(*length)))
        .read_to_end(&mut data)?;
    let Ok(Some((payload, _))) = format::read_frame(&data, format::DEAD_MAGIC.len()) else {
        return Ok(None);
    };
    let Ok((destination, _, _)) = format::dead_key(payload) else {
        return Ok(None);
    };
    // A record of another destination: its name was shortened and collided with this one.
    Ok((dead_path(dir, destination) == path).then(|| destination.to_owned()))
}

/// The state of a replay, segment after segment.
#[derive(Debug, Default)]
struct Replay {
    /// Entries written and not released so far, by sequence number.
    live: BTreeMap<u64, (String, Slot)>,
    max_seq: Option<u64>,
    /// Records cut off, segments set aside.
    cut: u64,
}

impl Replay {
    /// Replays one segment; its length once a bad tail is cut off, or `None` when it was
    /// removed (no header) or set aside (unknown header).
    fn segment(&mut self, path: &Path, base: u64) -> io::Result<Option<u64>> {
        let data = fs::read(path)?;
        if !data.starts_with(format::SEGMENT_MAGIC) {
            if format::SEGMENT_MAGIC.starts_with(&data) {
                // Created and cut short before its header was durable: nothing was in it.
                fs::remove_file(path)?;
                tracing::warn!(file = %path.display(), "removed a spool segment without a header");
            } else {
                let aside = path.with_extension(SET_ASIDE_EXT);
                fs::rename(path, &aside)?;
                tracing::error!(
                    file = %aside.display(),
                    "a spool segment has an unknown header; set aside, its events are not replayed"
                );
                self.cut += 1;
            }
            return Ok(None);
        }
        let mut at = format::SEGMENT_MAGIC.len();
        let error = loop {
            let (payload, next) = match format::read_frame(&data, at) {
                Ok(Some(frame)) => frame,
                Ok(None) => break None,
                Err(error) => break Some(error),
            };
            if let Err(error) = self.record(payload, base, at, next) {
                break Some(error);
            }
            at = next;
        };
        if let Some(error) = error {
            tracing::error!(
                file = %path.display(),
                offset = at,
                dropped = data.len() - at,
                %error,
                "cut a torn or corrupt record off the spool; the records before it are kept"
            );
            let file = OpenOptions::new().write(true).open(path)?;
            file.set_len(at as u64)?;
            file.sync_all()?;
            self.cut += 1;
        }
        Ok(Some(at as u64))
    }

    /// Applies the record at `at..next` of segment `base`.
    fn record(
        &mut self,
        payload: &[u8],
        base: u64,
        at: usize,
        next: usize,
    ) -> Result<(), format::Corrupt> {
        match format::record(payload)? {
            Record::Entry {
                head, destination, ..
            } => {
                // Sequence numbers start at their segment's base (bounded, so that a crafted
                // file cannot make the live bitmap huge).
                if head.seq < base || head.seq - base >= MAX_SEGMENT_ENTRIES {
                    return Err(format::Corrupt::Malformed);
                }
                self.max_seq = self.max_seq.max(Some(head.seq));
                let slot = Slot {
                    seq: head.seq,
                    attempt: head.attempt,
                    written_ms: head.written_ms,
                    due_ms: head.due_ms,
                    segment: base,
                    offset: at as u64,
                    frame_len: next - at,
                    cached: None,
                };
                self.live.insert(head.seq, (destination.to_owned(), slot));
            }
            Record::Release(seq) => {
                self.live.remove(&seq);
            }
            Record::LiveSet { base, count, bits } => {
                let done: Vec<u64> = self
                    .live
                    .range(base..base.saturating_add(u64::from(count)))
                    .map(|(seq, _)| *seq)
                    .filter(|seq| {
                        let i = usize::try_from(seq - base).unwrap_or(usize::MAX);
                        bits.get(i / 8).is_none_or(|byte| byte >> (i % 8) & 1 == 0)
                    })
                    .collect();
                for seq in done {
                    self.live.remove(&seq);
                }
            }
        }
        Ok(())
    }
}

/// `00000000000000000042.seg` → 42.
fn parse_segment_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(SEGMENT_EXT)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// The dead letters of `destination`, oldest first; a torn or corrupt record ends the file.
pub(super) fn read_dead(
    dir: &Path,
    destination: &str,
) -> io::Result<Vec<(crate::WebhookEvent, crate::DeadLetter)>> {
    let path = dead_path(dir, destination);
    let data = match fs::read(&path) {
        Ok(data) => bytes::Bytes::from(data),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    if !data.starts_with(format::DEAD_MAGIC) {
        return Ok(out);
    }
    let mut at = format::DEAD_MAGIC.len();
    loop {
        match format::read_frame(&data, at) {
            Ok(Some((payload, next))) => {
                let payload = data.slice_ref(payload);
                match format::read_dead(&payload) {
                    Ok((name, record, event)) if name == destination => out.push((event, record)),
                    Ok(_) => {}
                    Err(error) => {
                        tracing::error!(file = %path.display(), offset = at, %error, "skipped an unreadable dead letter");
                    }
                }
                at = next;
            }
            Ok(None) => break,
            Err(error) => {
                // A record being appended right now reads as torn; anything else is damage.
                if error != format::Corrupt::Torn {
                    tracing::error!(file = %path.display(), offset = at, %error, "a dead-letter file ends in a corrupt record");
                }
                break;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names() {
        let path = segment_path(Path::new("/x"), 42);
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(name, "00000000000000000042.seg");
        assert_eq!(parse_segment_name(name), Some(42));
        assert_eq!(parse_segment_name("42.seg"), None);
        assert_eq!(parse_segment_name("00000000000000000042.seg.corrupt"), None);
    }

    #[test]
    fn dead_letter_file_names_are_safe() {
        let name = |d: &str| {
            dead_path(Path::new("/x"), d)
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(name("webhooks.github"), "webhooks.github.dlq");
        assert_eq!(name("../etc/passwd"), "%2E.%2Fetc%2Fpasswd.dlq");
        assert_eq!(name(""), "%.dlq");
        let long = name(&"é".repeat(100));
        assert!(long.len() < 200 && long.contains('~'));
        assert_ne!(long, name(&"é".repeat(101)));
    }
}
