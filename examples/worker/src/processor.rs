//! The service's business logic: the only code that knows what a webhook means.
//! It is the same whichever broker delivers the events.

use std::sync::atomic::{AtomicU64, Ordering};

use firefly_webhook::process::{Context, Outcome, ProcessError, WebhookProcessor};
use firefly_webhook::{WebhookEvent, async_trait};

/// Counts GitHub pushes and Stripe payments; everything else is skipped.
#[derive(Debug, Default)]
pub(crate) struct OrderProcessor {
    pub(crate) pushes: AtomicU64,
    pub(crate) payments: AtomicU64,
}

#[async_trait]
impl WebhookProcessor for OrderProcessor {
    async fn process(&self, event: &WebhookEvent, ctx: &Context) -> Result<Outcome, ProcessError> {
        // Malformed JSON will never parse: dead-letter it at once instead of retrying.
        let json: serde_json::Value =
            serde_json::from_slice(&event.body).map_err(ProcessError::permanent)?;

        match (event.provider.as_str(), event.header("x-github-event")) {
            ("github", Some("push")) => {
                self.pushes.fetch_add(1, Ordering::Relaxed);
                tracing::info!(key = %ctx.idempotency_key, "push to {}", json["repository"]["full_name"]);
            }
            ("stripe", _) if json["type"] == "payment_intent.succeeded" => {
                // A real service would call its database here; an error from it is transient
                // (the default) and retried with backoff.
                self.payments.fetch_add(1, Ordering::Relaxed);
                tracing::info!(key = %ctx.idempotency_key, "payment {}", json["data"]["object"]["id"]);
            }
            _ => return Ok(Outcome::skipped("not an event this service handles")),
        }
        Ok(Outcome::Processed)
    }

    async fn on_error(&self, event: &WebhookEvent, ctx: &Context, error: &ProcessError) {
        tracing::warn!(event_id = %event.id, attempt = ctx.attempt, %error, "processing failed");
    }
}
