//! Futures that are ready at once and hold nothing: boxing one (as an `#[async_trait]` method
//! must return it) allocates nothing, where an `async` block that has nothing to do still takes
//! a byte, and so an allocation, for its state.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Ready at once with `()`.
pub(crate) struct Done;

impl Future for Done {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Ready(())
    }
}

/// Ready at once with `Ok(())`.
pub(crate) struct DoneOk<E>(PhantomData<fn() -> E>);

impl<E> DoneOk<E> {
    pub(crate) fn new() -> Self {
        Self(PhantomData)
    }
}

impl<E> Future for DoneOk<E> {
    type Output = Result<(), E>;

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt as _;
    use futures_util::future::BoxFuture;

    #[test]
    fn boxed_they_take_no_memory_and_are_ready() {
        assert_eq!(size_of::<Done>(), 0);
        assert_eq!(size_of::<DoneOk<std::io::Error>>(), 0);
        let done: BoxFuture<'static, ()> = Box::pin(Done);
        assert_eq!(done.now_or_never(), Some(()));
        let ok: BoxFuture<'static, Result<(), std::io::Error>> = Box::pin(DoneOk::new());
        assert!(matches!(ok.now_or_never(), Some(Ok(()))));
    }
}
