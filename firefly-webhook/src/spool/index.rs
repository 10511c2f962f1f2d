//! What the log holds, in memory: the live entries by destination, delayed retries, and per
//! segment which of its entries are still live.
//!
//! Only the writer adds and releases entries, after the records saying so are durable, so the
//! index never shows an entry a crash could lose. Consumers take entries out (handed out) and
//! give them back.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;

use bytes::Bytes;

/// A live entry: where its record is and, while the cache has room, its event bytes.
#[derive(Debug)]
pub(super) struct Slot {
    pub(super) seq: u64,
    pub(super) attempt: u32,
    /// Unix milliseconds.
    pub(super) written_ms: u64,
    /// Unix milliseconds; 0 or past: deliverable.
    pub(super) due_ms: u64,
    /// Base sequence number of the segment holding the record.
    pub(super) segment: u64,
    /// Offset of the record's frame in that segment.
    pub(super) offset: u64,
    /// Length of the frame.
    pub(super) frame_len: usize,
    /// The encoded event, when kept in memory.
    pub(super) cached: Option<Bytes>,
}

impl Slot {
    /// Where to find its event.
    pub(super) fn locator(&self) -> Locator {
        Locator {
            cached: self.cached.clone(),
            segment: self.segment,
            offset: self.offset,
            frame_len: self.frame_len,
        }
    }
}

/// Where an entry's event is: in memory, or at an offset of a segment.
#[derive(Debug, Clone)]
pub(super) struct Locator {
    pub(super) cached: Option<Bytes>,
    pub(super) segment: u64,
    pub(super) offset: u64,
    pub(super) frame_len: usize,
}

/// One segment file.
#[derive(Debug)]
pub(super) struct Segment {
    /// One past its last sequence number once it is sealed; `None` while it is written.
    pub(super) end: Option<u64>,
    /// Size of the file.
    pub(super) bytes: u64,
    live: u64,
    /// Bit `i`: entry `base + i` is live.
    bits: Vec<u64>,
}

impl Segment {
    /// A segment of `bytes`, no live entries yet.
    pub(super) fn new(bytes: u64) -> Self {
        Self {
            end: None,
            bytes,
            live: 0,
            bits: Vec::new(),
        }
    }

    fn set(&mut self, i: u64, live: bool) {
        let (word, bit) = (usize::try_from(i / 64).unwrap_or(usize::MAX), i % 64);
        if word >= self.bits.len() {
            if !live {
                return;
            }
            self.bits.resize(word + 1, 0);
        }
        if live {
            self.bits[word] |= 1 << bit;
        } else {
            self.bits[word] &= !(1 << bit);
        }
    }

    /// The live bits of `count` entries, little-endian bytes, as a live-set record holds them.
    fn live_bytes(&self, count: u64) -> Vec<u8> {
        let len = usize::try_from(count.div_ceil(8)).unwrap_or(usize::MAX);
        let mut out: Vec<u8> = self.bits.iter().flat_map(|w| w.to_le_bytes()).collect();
        out.resize(len, 0);
        out
    }
}

/// Which entries of a segment may still be live, as a live-set record says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LiveSet {
    pub(super) base: u64,
    pub(super) count: u32,
    /// Bit `i` (little-endian bytes): entry `base + i` is live.
    pub(super) bits: Vec<u8>,
}

/// Where a consumer resumes its round robin over destinations.
#[derive(Debug)]
pub(super) enum Cursor {
    /// Over every destination: after this name.
    After(Option<String>),
    /// Over a consumer's own list: at this index.
    Index(usize),
}

/// Everything the log holds, behind the log's one lock.
#[derive(Debug)]
pub(super) struct Index {
    /// Deliverable entries per destination, oldest first. Never holds an empty queue.
    queues: BTreeMap<String, VecDeque<Slot>>,
    /// Entries not due yet, by (due, seq).
    delayed: BTreeMap<(u64, u64), (String, Slot)>,
    /// Per destination: queued, delayed and handed-out entries.
    pending: HashMap<String, usize>,
    handed_out: usize,
    /// Every live entry's write time, by sequence number: the oldest is first.
    live: BTreeMap<u64, u64>,
    pub(super) segments: BTreeMap<u64, Segment>,
    cache_used: usize,
    cache_budget: usize,
}

impl Index {
    pub(super) fn new(cache_budget: usize) -> Self {
        Self {
            queues: BTreeMap::new(),
            delayed: BTreeMap::new(),
            pending: HashMap::new(),
            handed_out: 0,
            live: BTreeMap::new(),
            segments: BTreeMap::new(),
            cache_used: 0,
            cache_budget,
        }
    }

    /// Whether `len` more bytes of events fit in the cache; if so they are counted.
    pub(super) fn reserve_cache(&mut self, len: usize) -> bool {
        if self.cache_used + len <= self.cache_budget {
            self.cache_used += len;
            true
        } else {
            false
        }
    }

    /// Adds a live entry whose record is durable. Its segment must be known.
    pub(super) fn insert(&mut self, destination: String, slot: Slot, now_ms: u64) {
        if let Some(segment) = self.segments.get_mut(&slot.segment) {
            segment.live += 1;
            segment.set(slot.seq.saturating_sub(slot.segment), true);
        }
        self.live.insert(slot.seq, slot.written_ms);
        *self.pending.entry(destination.clone()).or_default() += 1;
        if slot.due_ms > now_ms {
            self.delayed
                .insert((slot.due_ms, slot.seq), (destination, slot));
        } else {
            self.enqueue(destination, slot, false);
        }
    }

    fn enqueue(&mut self, destination: String, slot: Slot, front: bool) {
        let queue = self.queues.entry(destination).or_default();
        if front {
            queue.push_front(slot);
        } else {
            queue.push_back(slot);
        }
    }

    /// Moves the delayed entries due by `now_ms` to their queues; whether any moved.
    pub(super) fn promote_due(&mut self, now_ms: u64) -> bool {
        let mut moved = false;
        while let Some(first) = self.delayed.first_entry() {
            if first.key().0 > now_ms {
                break;
            }
            let (destination, slot) = first.remove();
            self.enqueue(destination, slot, false);
            moved = true;
        }
        moved
    }

    /// When the next delayed entry is due, Unix milliseconds.
    pub(super) fn next_due(&self) -> Option<u64> {
        self.delayed.keys().next().map(|(due, _)| *due)
    }

    /// Hands out the next entry of `names` (every destination when `None`), round robin
    /// from `cursor`, so that one busy destination cannot starve the others.
    pub(super) fn pop(
        &mut self,
        names: Option<&[String]>,
        cursor: &mut Cursor,
    ) -> Option<(String, Slot)> {
        let name = match (names, cursor) {
            (Some(names), Cursor::Index(next)) => {
                let found = (0..names.len())
                    .map(|i| (*next + i) % names.len())
                    .find(|&i| self.queues.contains_key(&names[i]))?;
                *next = (found + 1) % names.len();
                names[found].clone()
            }
            (_, cursor) => {
                let name = self.next_name(cursor)?;
                *cursor = Cursor::After(Some(name.clone()));
                name
            }
        };
        let slot = self.pop_front(&name)?;
        Some((name, slot))
    }

    fn next_name(&self, cursor: &Cursor) -> Option<String> {
        let after = match cursor {
            Cursor::After(Some(last)) => Bound::Excluded(last.as_str()),
            _ => Bound::Unbounded,
        };
        self.queues
            .range::<str, _>((after, Bound::Unbounded))
            .next()
            .or_else(|| self.queues.iter().next())
            .map(|(name, _)| name.clone())
    }

    fn pop_front(&mut self, name: &str) -> Option<Slot> {
        let queue = self.queues.get_mut(name)?;
        let slot = queue.pop_front()?;
        if queue.is_empty() {
            self.queues.remove(name);
        }
        self.handed_out += 1;
        Some(slot)
    }

    /// Hands out up to `window` entries of each destination, oldest first, and `total` in
    /// all, starting after `cursor`.
    pub(super) fn take(
        &mut self,
        window: usize,
        total: usize,
        cursor: &mut Cursor,
    ) -> Vec<(String, Vec<Slot>)> {
        let mut out = Vec::new();
        let mut left = total;
        let destinations = self.queues.len();
        for _ in 0..destinations {
            if left == 0 {
                break;
            }
            let Some(name) = self.next_name(cursor) else {
                break;
            };
            *cursor = Cursor::After(Some(name.clone()));
            let mut slots = Vec::new();
            while slots.len() < window && left > 0 {
                match self.pop_front(&name) {
                    Some(slot) => slots.push(slot),
                    None => break,
                }
                left -= 1;
            }
            out.push((name, slots));
        }
        out
    }

    /// Gives a handed-out entry back, to the front of its queue, as `attempt`.
    pub(super) fn requeue(&mut self, destination: String, mut slot: Slot, attempt: u32) {
        self.handed_out -= 1;
        slot.attempt = attempt;
        self.enqueue(destination, slot, true);
    }

    /// Gives handed-out entries back to the front of their queue, keeping their order.
    pub(super) fn requeue_all(&mut self, destination: &str, slots: Vec<Slot>) {
        for slot in slots.into_iter().rev() {
            let attempt = slot.attempt;
            self.requeue(destination.to_owned(), slot, attempt);
        }
    }

    /// Forgets a handed-out entry whose release is durable.
    pub(super) fn release(&mut self, destination: &str, slot: &Slot) {
        self.handed_out -= 1;
        if let Some(n) = self.pending.get_mut(destination) {
            *n -= 1;
            if *n == 0 {
                self.pending.remove(destination);
            }
        }
        self.live.remove(&slot.seq);
        if let Some(cached) = &slot.cached {
            self.cache_used -= cached.len();
        }
        if let Some(segment) = self.segments.get_mut(&slot.segment) {
            segment.live = segment.live.saturating_sub(1);
            segment.set(slot.seq.saturating_sub(slot.segment), false);
        }
    }

    /// The sealed segments without live entries, to delete; and, when a segment older than
    /// one of them stays, the live sets of every segment that stays older than the newest of
    /// them (base, count, bits), to write first: the release records in a deleted segment may
    /// be all that says an entry of an older one is done with.
    pub(super) fn deletable(&self) -> (Vec<u64>, Vec<LiveSet>) {
        let doomed: Vec<u64> = self
            .segments
            .iter()
            .filter(|(_, s)| s.live == 0 && s.end.is_some())
            .map(|(base, _)| *base)
            .collect();
        let Some(&newest) = doomed.last() else {
            return (doomed, Vec::new());
        };
        let carry = self
            .segments
            .range(..newest)
            .filter(|(_, s)| s.live > 0)
            .filter_map(|(base, s)| {
                let count = s.end? - base;
                Some(LiveSet {
                    base: *base,
                    count: u32::try_from(count).ok()?,
                    bits: s.live_bytes(count),
                })
            })
            .collect();
        (doomed, carry)
    }

    /// Events queued, delayed or handed out for `destination`.
    pub(super) fn pending(&self, destination: &str) -> usize {
        self.pending.get(destination).copied().unwrap_or(0)
    }

    /// Entries handed out and not settled, plus entries waiting for their time.
    pub(super) fn in_flight(&self) -> usize {
        self.handed_out + self.delayed.len()
    }

    /// Live entries.
    pub(super) fn events(&self) -> usize {
        self.live.len()
    }

    /// Write time of the oldest live entry, Unix milliseconds.
    pub(super) fn oldest_ms(&self) -> Option<u64> {
        self.live.values().next().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(seq: u64, segment: u64) -> Slot {
        Slot {
            seq,
            attempt: 1,
            written_ms: seq,
            due_ms: 0,
            segment,
            offset: 0,
            frame_len: 10,
            cached: None,
        }
    }

    #[test]
    fn releases_empty_segments_and_carries_older_live_sets() {
        let mut index = Index::new(0);
        for base in [0, 4, 8] {
            index.segments.insert(base, Segment::new(100));
        }
        for seq in 0..10 {
            let segment = seq / 4 * 4;
            index.insert(
                if seq % 2 == 0 { "a" } else { "b" }.into(),
                slot(seq, segment),
                0,
            );
        }
        index.segments.get_mut(&0).unwrap().end = Some(4);
        index.segments.get_mut(&4).unwrap().end = Some(8);
        let taken = index.take(10, 100, &mut Cursor::After(None));
        assert_eq!(taken.len(), 2);
        for (destination, slots) in taken {
            for slot in slots {
                if slot.segment == 4 || slot.seq == 1 {
                    index.release(&destination, &slot);
                } else {
                    index.requeue(destination.clone(), slot, 1);
                }
            }
        }
        let (doomed, carry) = index.deletable();
        assert_eq!(doomed, [4]);
        // Segment 0 stays with entries 0, 2, 3 live: bits 0b1101.
        assert_eq!(
            carry,
            [LiveSet {
                base: 0,
                count: 4,
                bits: vec![0b1101]
            }]
        );
        assert_eq!(index.events(), 5);
        assert_eq!(index.pending("a"), 3);
        assert_eq!(index.oldest_ms(), Some(0));
    }

    #[test]
    fn take_is_oldest_first_per_destination_and_round_robin() {
        let mut index = Index::new(0);
        index.segments.insert(0, Segment::new(0));
        for (seq, name) in ["b", "a", "b", "a", "c"].into_iter().enumerate() {
            index.insert(name.into(), slot(seq as u64, 0), 0);
        }
        let taken = index.take(1, 2, &mut Cursor::After(Some("a".into())));
        let seqs: Vec<_> = taken.iter().map(|(n, s)| (n.as_str(), s[0].seq)).collect();
        assert_eq!(seqs, [("b", 0), ("c", 4)]);
        for (name, slots) in taken {
            index.requeue_all(&name, slots);
        }
        let (name, first) = index.pop(None, &mut Cursor::After(None)).unwrap();
        assert_eq!((name.as_str(), first.seq), ("a", 1));
    }
}
