//! Reading a request body within the size limit and the shared byte budget.

use std::pin::pin;

use bytes::{Buf, Bytes};
use http_body::Body;
use http_body_util::BodyExt;

use super::budget::Held;

/// Why a body could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ReadError {
    /// More than the limit arrived.
    TooLarge,
    /// The budget could not cover the bytes that arrived.
    Budget,
    /// The body stream failed.
    Read,
}

/// Reads `body` whole, holding in `held` at least as many budget bytes as are buffered.
///
/// `held` may already cover the declared length; then a body that keeps its word never touches
/// the budget again. A single-chunk body is passed on without a copy; several chunks are copied
/// into one buffer, whose capacity is what the budget is charged for.
pub(super) async fn read<B: Body>(
    body: B,
    limit: usize,
    held: &mut Held,
) -> Result<Bytes, ReadError> {
    let mut body = pin!(body);
    let mut first: Option<Bytes> = None;
    let mut buf: Vec<u8> = Vec::new();
    let mut len = 0usize;
    while let Some(frame) = body.as_mut().frame().await {
        let Ok(mut data) = frame.map_err(|_| ReadError::Read)?.into_data() else {
            continue; // trailers
        };
        let n = data.remaining();
        if n == 0 {
            continue;
        }
        len = len
            .checked_add(n)
            .filter(|&l| l <= limit)
            .ok_or(ReadError::TooLarge)?;
        if first.is_none() && buf.capacity() == 0 {
            if !held.grow_to(len) {
                return Err(ReadError::Budget);
            }
            first = Some(data.copy_to_bytes(n));
            continue;
        }
        if len > buf.capacity() {
            // Double (within the limit) so that a long chunked body is not copied per chunk;
            // settle for the exact size when the budget cannot spare the double.
            let doubled = buf.capacity().saturating_mul(2).clamp(len, limit.max(len));
            let capacity = if held.grow_to(doubled) {
                doubled
            } else if held.grow_to(len) {
                len
            } else {
                return Err(ReadError::Budget);
            };
            let capacity = capacity.max(held.amount().min(limit));
            buf.reserve_exact(capacity - buf.len());
        }
        if let Some(first) = first.take() {
            buf.extend_from_slice(&first);
        }
        while data.has_remaining() {
            let chunk = data.chunk();
            let taken = chunk.len();
            buf.extend_from_slice(chunk);
            data.advance(taken);
        }
    }
    Ok(match first {
        Some(only) => only,
        None => Bytes::from(buf),
    })
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use futures_util::FutureExt;
    use http_body::Frame;
    use http_body_util::{Full, StreamBody};

    use super::super::budget::Budget;
    use super::*;

    fn chunks(
        sizes: &[usize],
    ) -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>>> {
        let frames: Vec<_> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                #[allow(clippy::cast_possible_truncation)]
                let byte = b'a' + (i % 26) as u8;
                Ok(Frame::data(Bytes::from(vec![byte; n])))
            })
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    fn read_now<B: Body>(body: B, limit: usize, held: &mut Held) -> Result<Bytes, ReadError> {
        read(body, limit, held).now_or_never().unwrap()
    }

    #[test]
    fn one_chunk_is_not_copied() {
        let budget = Budget::new(100);
        let mut held = budget.try_take(0).unwrap();
        let data = Bytes::from_static(b"hello");
        let read = read_now(Full::new(data.clone()), 10, &mut held).unwrap();
        assert_eq!(read.as_ptr(), data.as_ptr());
        assert_eq!(held.amount(), 5);
    }

    #[test]
    fn chunks_are_joined_in_order_and_charged() {
        let budget = Budget::new(1000);
        let mut held = budget.try_take(0).unwrap();
        let read = read_now(chunks(&[3, 0, 4, 5]), 100, &mut held).unwrap();
        assert_eq!(&read[..], b"aaaccccddddd");
        assert!((12..=100).contains(&held.amount()), "{}", held.amount());
        assert_eq!(budget.used(), held.amount());
    }

    #[test]
    fn declared_length_is_used_as_is() {
        let budget = Budget::new(1000);
        let mut held = budget.try_take(12).unwrap();
        let read = read_now(chunks(&[3, 4, 5]), 100, &mut held).unwrap();
        assert_eq!(read.len(), 12);
        assert_eq!(held.amount(), 12, "no growth when the body keeps its word");
    }

    #[test]
    fn limit_and_budget() {
        let budget = Budget::new(1000);
        let mut held = budget.try_take(0).unwrap();
        assert_eq!(
            read_now(chunks(&[6, 5]), 10, &mut held),
            Err(ReadError::TooLarge)
        );
        let small = Budget::new(8);
        let mut held = small.try_take(0).unwrap();
        assert_eq!(
            read_now(chunks(&[4, 4, 4]), 100, &mut held),
            Err(ReadError::Budget)
        );
        assert!(held.amount() <= 8);
        drop(held);
        // Exactly the budget fits, even when doubling would not.
        let mut held = small.try_take(0).unwrap();
        let read = read_now(chunks(&[3, 3, 2]), 100, &mut held).unwrap();
        assert_eq!(read.len(), 8);
        drop(held);
        assert_eq!(small.used(), 0);
    }
}
