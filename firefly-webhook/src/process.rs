//! The [`WebhookProcessor`] trait users implement, and what it returns.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::dead_letter::FailureCategory;
use crate::done::{Done, DoneOk};
use crate::event::WebhookEvent;
use crate::subscribe::Position;
use crate::verify::VerifyError;
use futures_util::future::BoxFuture;

use crate::BoxError;

/// Your business logic: called once per webhook (idempotency and retries are handled around it).
///
/// ```
/// use firefly_webhook::process::{Context, Outcome, ProcessError, WebhookProcessor};
/// use firefly_webhook::{WebhookEvent, async_trait};
///
/// struct Billing;
///
/// #[async_trait]
/// impl WebhookProcessor for Billing {
///     async fn process(&self, event: &WebhookEvent, _ctx: &Context) -> Result<Outcome, ProcessError> {
///         if event.provider != "stripe" {
///             return Ok(Outcome::skipped("not a billing event"));
///         }
///         let _json: serde_json::Value = serde_json::from_slice(&event.body)
///             .map_err(ProcessError::permanent)?; // malformed: dead-letter at once
///         Ok(Outcome::Processed)
///     }
/// }
/// ```
#[async_trait]
pub trait WebhookProcessor: Send + Sync + 'static {
    /// Handles one event.
    async fn process(&self, event: &WebhookEvent, ctx: &Context) -> Result<Outcome, ProcessError>;

    // The hooks' defaults are written out with the signatures `#[async_trait]` gives (override
    // them with `async fn` in an `#[async_trait]` impl): their futures are then zero-sized, so
    // a processor that keeps them costs no allocation for them per attempt.

    /// Called before each attempt. An error counts as the attempt's failure. Does nothing by
    /// default.
    fn before_process<'s, 'e, 'c, 'async_trait>(
        &'s self,
        _event: &'e WebhookEvent,
        _ctx: &'c Context,
    ) -> BoxFuture<'async_trait, Result<(), ProcessError>>
    where
        's: 'async_trait,
        'e: 'async_trait,
        'c: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(DoneOk::new())
    }

    /// Called after a successful attempt. Does nothing by default.
    fn after_process<'s, 'e, 'c, 'o, 'async_trait>(
        &'s self,
        _event: &'e WebhookEvent,
        _ctx: &'c Context,
        _outcome: &'o Outcome,
    ) -> BoxFuture<'async_trait, ()>
    where
        's: 'async_trait,
        'e: 'async_trait,
        'c: 'async_trait,
        'o: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(Done)
    }

    /// Called after a failed attempt (before the retry decision). Does nothing by default.
    fn on_error<'s, 'e, 'c, 'r, 'async_trait>(
        &'s self,
        _event: &'e WebhookEvent,
        _ctx: &'c Context,
        _error: &'r ProcessError,
    ) -> BoxFuture<'async_trait, ()>
    where
        's: 'async_trait,
        'e: 'async_trait,
        'c: 'async_trait,
        'r: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(Done)
    }
}

// Each method hands on the inner processor's future, without boxing it once more.
// (The signatures are the ones `#[async_trait]` gives the trait's methods.)
impl<P: WebhookProcessor + ?Sized> WebhookProcessor for Arc<P> {
    fn process<'s, 'e, 'c, 'async_trait>(
        &'s self,
        event: &'e WebhookEvent,
        ctx: &'c Context,
    ) -> BoxFuture<'async_trait, Result<Outcome, ProcessError>>
    where
        's: 'async_trait,
        'e: 'async_trait,
        'c: 'async_trait,
        Self: 'async_trait,
    {
        (**self).process(event, ctx)
    }

    fn before_process<'s, 'e, 'c, 'async_trait>(
        &'s self,
        event: &'e WebhookEvent,
        ctx: &'c Context,
    ) -> BoxFuture<'async_trait, Result<(), ProcessError>>
    where
        's: 'async_trait,
        'e: 'async_trait,
        'c: 'async_trait,
        Self: 'async_trait,
    {
        (**self).before_process(event, ctx)
    }

    fn after_process<'s, 'e, 'c, 'o, 'async_trait>(
        &'s self,
        event: &'e WebhookEvent,
        ctx: &'c Context,
        outcome: &'o Outcome,
    ) -> BoxFuture<'async_trait, ()>
    where
        's: 'async_trait,
        'e: 'async_trait,
        'c: 'async_trait,
        'o: 'async_trait,
        Self: 'async_trait,
    {
        (**self).after_process(event, ctx, outcome)
    }

    fn on_error<'s, 'e, 'c, 'r, 'async_trait>(
        &'s self,
        event: &'e WebhookEvent,
        ctx: &'c Context,
        error: &'r ProcessError,
    ) -> BoxFuture<'async_trait, ()>
    where
        's: 'async_trait,
        'e: 'async_trait,
        'c: 'async_trait,
        'r: 'async_trait,
        Self: 'async_trait,
    {
        (**self).on_error(event, ctx, error)
    }
}

/// A processor from a closure that returns a future.
///
/// The closure borrows the event and the context; nothing is cloned per call. Take what the
/// future needs before it starts (cloning `event.body` is cheap: it is reference counted):
///
/// ```
/// use firefly_webhook::process::{Outcome, processor_fn};
///
/// let processor = processor_fn(|event, ctx| {
///     let (body, attempt) = (event.body.clone(), ctx.attempt);
///     async move {
///         println!("{} bytes, attempt {attempt}", body.len());
///         Ok(Outcome::Processed)
///     }
/// });
/// # let _ = processor;
/// ```
pub fn processor_fn<F, Fut>(f: F) -> ProcessorFn<F>
where
    F: Fn(&WebhookEvent, &Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Outcome, ProcessError>> + Send,
{
    ProcessorFn { f }
}

/// See [`processor_fn`].
#[derive(Clone, Copy)]
pub struct ProcessorFn<F> {
    f: F,
}

impl<F> fmt::Debug for ProcessorFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessorFn").finish_non_exhaustive()
    }
}

#[async_trait]
impl<F, Fut> WebhookProcessor for ProcessorFn<F>
where
    F: Fn(&WebhookEvent, &Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Outcome, ProcessError>> + Send,
{
    async fn process(&self, event: &WebhookEvent, ctx: &Context) -> Result<Outcome, ProcessError> {
        (self.f)(event, ctx).await
    }
}

/// What processing an event amounted to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The event's effect happened.
    Processed,
    /// The event was deliberately not acted on.
    Skipped {
        /// Why.
        reason: String,
    },
}

impl Outcome {
    /// A skipped outcome.
    pub fn skipped(reason: impl Into<String>) -> Self {
        Self::Skipped {
            reason: reason.into(),
        }
    }
}

/// A failed attempt: transient (retry) or permanent (dead-letter now).
///
/// It is transparent: `Display` and `source()` are those of the error it wraps, so an error
/// reporter prints each message once.
#[derive(Debug)]
pub struct ProcessError {
    kind: ErrorKind,
    category: FailureCategory,
    source: BoxError,
    decision: Option<RetryDecision>,
}

/// What a retry policy decided after the last failed attempt, carried on the
/// [`ProcessError`] that leaves the stack so the worker settles the delivery accordingly.
///
/// [`RetryPolicy`](crate::worker::RetryPolicy) sets it when it stops retrying in process; a
/// stack without one leaves it unset and the worker asks its own policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryDecision {
    /// The attempt that failed last (1-based).
    pub attempt: u32,
    /// `Some(delay)`: redeliver after `delay` through the transport; `None`: dead-letter.
    pub retry_in: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorKind {
    Transient {
        retry_after: Option<Duration>,
    },
    Permanent,
    /// Not a failure of the event: try again later without counting an attempt.
    Deferred {
        retry_after: Duration,
    },
}

impl ProcessError {
    /// A failure that may pass on retry (the default for unclassified errors).
    pub fn transient(err: impl Into<BoxError>) -> Self {
        Self {
            kind: ErrorKind::Transient { retry_after: None },
            category: FailureCategory::Processing,
            source: err.into(),
            decision: None,
        }
    }

    /// A transient failure that should not be retried before `delay` (e.g. a 429's Retry-After).
    pub fn retry_after(err: impl Into<BoxError>, delay: Duration) -> Self {
        Self {
            kind: ErrorKind::Transient {
                retry_after: Some(delay),
            },
            category: FailureCategory::Processing,
            source: err.into(),
            decision: None,
        }
    }

    /// The event could not be attempted now for a reason outside it (another worker holds its
    /// lock, the idempotency store is down): redeliver after `delay` without counting an
    /// attempt.
    pub fn deferred(err: impl Into<BoxError>, delay: Duration) -> Self {
        Self {
            kind: ErrorKind::Deferred { retry_after: delay },
            category: FailureCategory::Processing,
            source: err.into(),
            decision: None,
        }
    }

    /// A failure retrying cannot fix: the event is dead-lettered at once.
    pub fn permanent(err: impl Into<BoxError>) -> Self {
        Self {
            kind: ErrorKind::Permanent,
            category: FailureCategory::Unrecoverable,
            source: err.into(),
            decision: None,
        }
    }

    /// Overrides the dead-letter category.
    #[must_use]
    pub fn with_category(mut self, category: FailureCategory) -> Self {
        self.category = category;
        self
    }

    /// Records what the retry policy decided (see [`RetryDecision`]).
    #[must_use]
    pub fn with_decision(mut self, decision: RetryDecision) -> Self {
        self.decision = Some(decision);
        self
    }

    /// Records what the retry policy decided, in place (for `tower::retry::Policy`
    /// implementations, which see the error by reference).
    pub fn record_decision(&mut self, decision: RetryDecision) {
        self.decision = Some(decision);
    }

    /// What the retry policy decided, if one ran.
    pub fn decision(&self) -> Option<RetryDecision> {
        self.decision
    }

    /// Whether this failure must not be retried.
    pub fn is_permanent(&self) -> bool {
        self.kind == ErrorKind::Permanent
    }

    /// Whether the attempt was put off without counting (see [`deferred`](Self::deferred)).
    pub fn is_deferred(&self) -> bool {
        matches!(self.kind, ErrorKind::Deferred { .. })
    }

    /// The retry delay asked for, if any.
    pub fn retry_after_hint(&self) -> Option<Duration> {
        match self.kind {
            ErrorKind::Transient { retry_after } => retry_after,
            ErrorKind::Deferred { retry_after } => Some(retry_after),
            ErrorKind::Permanent => None,
        }
    }

    /// The dead-letter category.
    pub fn category(&self) -> FailureCategory {
        self.category
    }

    /// The underlying error.
    pub fn source_ref(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.source
    }

    /// A short name for the error's kind, recorded on dead letters.
    pub fn error_type(&self) -> &'static str {
        match (self.kind, self.category) {
            (_, FailureCategory::Validation) => "validation",
            (_, FailureCategory::Timeout) => "timeout",
            (ErrorKind::Permanent, _) => "permanent",
            (ErrorKind::Transient { .. } | ErrorKind::Deferred { .. }, _) => "transient",
        }
    }
}

impl fmt::Display for ProcessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.source, f)
    }
}

impl std::error::Error for ProcessError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.source()
    }
}

impl From<BoxError> for ProcessError {
    fn from(err: BoxError) -> Self {
        Self::transient(err)
    }
}

impl From<VerifyError> for ProcessError {
    fn from(err: VerifyError) -> Self {
        Self::permanent(err).with_category(FailureCategory::Validation)
    }
}

/// The request flowing through the worker's tower stack: the event and its [`Context`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Job {
    /// The event (shared: retries clone the job, not the body).
    pub event: Arc<WebhookEvent>,
    /// What the worker knows about this attempt.
    pub ctx: Context,
}

impl Job {
    /// A job for `event` with `ctx`.
    pub fn new(event: impl Into<Arc<WebhookEvent>>, ctx: Context) -> Self {
        Self {
            event: event.into(),
            ctx,
        }
    }
}

impl AsRef<WebhookEvent> for Job {
    fn as_ref(&self) -> &WebhookEvent {
        &self.event
    }
}

/// What the worker knows about the delivery being processed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Context {
    /// 1 on the first attempt.
    pub attempt: u32,
    /// The destination the event was consumed from (shared with the delivery: cloning a
    /// context copies no text).
    pub destination: Arc<str>,
    /// Where the delivery sits in its transport.
    pub position: Position,
    /// The idempotency key of the event (shared, like the destination).
    pub idempotency_key: Arc<str>,
    /// When the gateway received the event.
    pub received_at: OffsetDateTime,
    /// The token of the idempotency lock held for this attempt, set by the
    /// [`IdempotencyLayer`](crate::idempotency::IdempotencyLayer) (`None` without one).
    ///
    /// The layer renews the lock while the processor runs and stops the processor when the
    /// lock is lost, but a write already in flight can still land after that. A processor
    /// whose effect must not happen twice can store the token with its write and refuse a
    /// write under an older one (for example, in the same transaction, compare it with the
    /// token recorded for the event).
    pub fencing_token: Option<FencingToken>,
}

impl Context {
    /// A context for a first attempt (useful in tests of processors).
    pub fn new(
        destination: impl Into<Arc<str>>,
        position: Position,
        idempotency_key: impl Into<Arc<str>>,
        received_at: OffsetDateTime,
    ) -> Self {
        Self {
            attempt: 1,
            destination: destination.into(),
            position,
            idempotency_key: idempotency_key.into(),
            received_at,
            fencing_token: None,
        }
    }

    /// The same context with `token` as its [`fencing_token`](Self::fencing_token).
    #[must_use]
    pub fn with_fencing_token(mut self, token: FencingToken) -> Self {
        self.fencing_token = Some(token);
        self
    }
}

/// Proof of ownership of an idempotency lock: a random value stored with the lock.
///
/// [`IdempotencyStore::claim`](crate::idempotency::IdempotencyStore::claim) hands one out;
/// every later operation on the lock (renew, complete, release) is refused unless it presents
/// the token the lock holds now, so a worker whose lock expired cannot act on a newer owner's
/// claim.
///
/// Cloning one (the idempotency layer hands a copy to the processor) is a reference count.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct FencingToken(Arc<str>);

impl FencingToken {
    /// A new random token (128 bits). Tokens only need to be unique, not secret, so a fast
    /// non-cryptographic generator is enough.
    pub fn random() -> Self {
        // 32 lowercase hex digits, most significant first: `uuid`'s simple encoding of the
        // 128 bits, written into a stack buffer (no formatting machinery, no UTF-8 check).
        let mut text = [0u8; uuid::fmt::Simple::LENGTH];
        let bits = uuid::Uuid::from_u128(fastrand::u128(..));
        Self(Arc::from(&*bits.simple().encode_lower(&mut text)))
    }

    /// Wraps a token read back from a store.
    pub fn new(token: impl Into<String>) -> Self {
        Self(Arc::from(token.into()))
    }

    /// The token's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FencingToken({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_tokens_are_32_lowercase_hex_digits() {
        let (a, b) = (FencingToken::random(), FencingToken::random());
        assert_ne!(a, b);
        for token in [&a, &b] {
            assert_eq!(token.as_str().len(), 32);
            assert!(
                token
                    .as_str()
                    .bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
            );
        }
        assert_eq!(FencingToken::new("abc").as_str(), "abc");
    }
}
