//! Every metric name this crate emits (through the [`metrics`](https://docs.rs/metrics)
//! facade), and its labels, defined once.
//!
//! Nothing is recorded unless the application installs a recorder (for example
//! `metrics-exporter-prometheus`). The adapter crates (Kafka, RabbitMQ, Redis) emit the names
//! defined here too, so that each name and its labels are defined once for the workspace.

/// Label: the provider name.
pub const PROVIDER: &str = "provider";
/// Label: the outcome of a verification, `verified` or the rejection code.
pub const OUTCOME: &str = "outcome";
/// Label: which secret matched (its label, or its index in the set).
pub const SECRET: &str = "secret";
/// Label: the machine-readable code of an ingest rejection (`rate_limited`, `overloaded`, …).
pub const CODE: &str = "code";
/// The [`PROVIDER`] label value of ingest metrics for providers that are neither in the
/// allowlist nor configured with a verifier (without an allowlist: past the first
/// [`MAX_PROVIDER_LABELS`] names), so that clients cannot mint label values.
pub const OTHER_PROVIDER: &str = "other";
/// Without a provider allowlist, how many distinct unconfigured provider names ingest metrics
/// label by name before reporting the rest as [`OTHER_PROVIDER`].
pub const MAX_PROVIDER_LABELS: usize = 100;
/// Label: the HTTP status code of an ingest answer (`202`, `429`, …) in
/// [`INGEST_REQUESTS_TOTAL`]; the JSON body's `status` (`accepted`, `rejected`) in
/// [`INGEST_RECEIPTS_TOTAL`].
pub const STATUS: &str = "status";
/// Label: the name of a readiness check (the transport's, `idempotency`, …).
pub const CHECK: &str = "check";
/// Label: a destination (topic, queue) of a transport.
pub const DESTINATION: &str = "destination";
/// Label: the transport behind the ingest publisher (`memory`, `kafka`, `amqp`; see
/// [`IngestService::transport_name`](crate::IngestService::transport_name)).
pub const TRANSPORT: &str = "transport";
/// Label: which of a destination's queues a [`QUEUE_DEPTH`] series counts: [`QUEUE_MAIN`],
/// [`QUEUE_RETRY`] (every retry tier together) or [`QUEUE_DEAD_LETTER`].
pub const QUEUE: &str = "queue";
/// [`QUEUE`] value: the queue the worker consumes.
pub const QUEUE_MAIN: &str = "main";
/// [`QUEUE`] value: the retry queues, where retries wait for their delay.
pub const QUEUE_RETRY: &str = "retry";
/// [`QUEUE`] value: the dead-letter queue.
pub const QUEUE_DEAD_LETTER: &str = "dead_letter";
/// Label: a consumer group (Kafka's `group.id`).
pub const GROUP: &str = "group";
/// Label: a partition number of a destination (Kafka).
pub const PARTITION: &str = "partition";
/// Label: an idempotency store operation (`claim`, `renew`, `complete`, `release`,
/// `record_failure`, `ping`, `failures`).
pub const OP: &str = "op";
/// Label of the spool metrics: which durable log they are about, `spool` (a `Spool` in front
/// of a broker) or `disk` (the `DiskBroker` transport); feature `spool`.
pub const LOG: &str = "log";

/// Counter, labels [`PROVIDER`]: deliveries the worker started on.
pub const RECEIVED_TOTAL: &str = "firefly_webhook_received_total";
/// Counter, labels [`PROVIDER`]: events whose effect happened.
pub const PROCESSED_TOTAL: &str = "firefly_webhook_processed_total";
/// Counter, labels [`PROVIDER`]: deliveries skipped because their key was already processed.
pub const DUPLICATES_TOTAL: &str = "firefly_webhook_duplicates_total";
/// Counter, labels [`PROVIDER`]: deliveries whose processing failed (after in-process retries).
pub const FAILED_TOTAL: &str = "firefly_webhook_failed_total";
/// Counter, labels [`PROVIDER`]: retries scheduled, in process or through the transport.
pub const RETRIED_TOTAL: &str = "firefly_webhook_retried_total";
/// Counter, labels [`PROVIDER`]: events written to the dead-letter destination.
pub const DEAD_LETTERED_TOTAL: &str = "firefly_webhook_dead_lettered_total";
/// Histogram (seconds), labels [`PROVIDER`]: time from the start of processing to its result.
pub const PROCESSING_SECONDS: &str = "firefly_webhook_processing_seconds";
/// Counter, labels [`PROVIDER`], [`OUTCOME`]: signature verifications.
pub const VERIFICATIONS_TOTAL: &str = "firefly_webhook_verifications_total";
/// Counter, labels [`PROVIDER`] (or [`OTHER_PROVIDER`]), [`CODE`]: requests the ingest service
/// refused, one per response (see [`Rejection`](crate::Rejection) for the codes).
pub const INGEST_REJECTED_TOTAL: &str = "firefly_ingest_rejected_total";
/// Counter, labels [`PROVIDER`] (bounded as [`OTHER_PROVIDER`] says), [`STATUS`] (the HTTP
/// status), [`CODE`] (`accepted`, or the rejection code): every answer of the ingest service.
pub const INGEST_REQUESTS_TOTAL: &str = "firefly_ingest_requests_total";
/// Counter, labels [`STATUS`] (`accepted` or `rejected`, the JSON body's `status`): every
/// answer of the ingest service, by the kind of body it carried.
pub const INGEST_RECEIPTS_TOTAL: &str = "firefly_ingest_receipts_total";
/// Histogram (bytes), labels [`PROVIDER`]: sizes of the request bodies ingest read whole.
pub const INGEST_BODY_BYTES: &str = "firefly_ingest_body_bytes";
/// Histogram (seconds), labels [`TRANSPORT`], [`OUTCOME`] (`ok`, `unavailable`, `overloaded`,
/// `timed_out`, `rejected`): time from handing an event to the publisher to its answer (or the
/// publish timeout).
pub const INGEST_PUBLISH_SECONDS: &str = "firefly_ingest_publish_seconds";
/// Gauge: ingest requests admitted and not yet answered (see
/// [`IngestService::max_in_flight`](crate::IngestService::max_in_flight)).
pub const INGEST_REQUESTS_IN_FLIGHT: &str = "firefly_ingest_requests_in_flight";
/// Gauge, labels [`CHECK`]: 1 when the check passed at the last
/// [`Readiness`](crate::health::Readiness) run, up or degraded (the probe answers 200), 0 when
/// it failed (the probe answers 503). [`READY_DEGRADED`] tells the degraded ones apart.
pub const READY: &str = "firefly_ready";
/// Gauge, labels [`CHECK`]: 1 when the check passed degraded at the last
/// [`Readiness`](crate::health::Readiness) run (ready, but working around a problem: for
/// example a spool holding events while the broker is down), 0 otherwise.
pub const READY_DEGRADED: &str = "firefly_ready_degraded";
/// Gauge, labels [`TRANSPORT`], [`DESTINATION`], [`QUEUE`]: events ready in a destination's
/// queues, for transports that can tell (RabbitMQ: polled with a passive declare every
/// `AmqpConfig::depth_interval`; messages delivered and not yet acknowledged are not counted).
/// The memory broker reports [`MEMORY_QUEUE_EVENTS`] instead; Kafka reports [`CONSUMER_LAG`].
pub const QUEUE_DEPTH: &str = "firefly_queue_depth";
/// Counter, labels [`TRANSPORT`]: polls of a queue's depth that failed (the queue is missing,
/// the broker did not answer); consumption goes on regardless.
pub const QUEUE_DEPTH_ERRORS_TOTAL: &str = "firefly_queue_depth_errors_total";
/// Gauge, labels [`TRANSPORT`], [`GROUP`], [`DESTINATION`] (the topic), [`PARTITION`]: how
/// far a consumer group is behind the newest event of a partition, in events (Kafka: from
/// librdkafka's statistics every `KafkaConfig::lag_interval`, for the partitions assigned to
/// the reporting member).
pub const CONSUMER_LAG: &str = "firefly_consumer_lag";
/// Gauge, labels [`TRANSPORT`]: events handed to the transport's producer and not yet
/// acknowledged by the broker, over every producer of the process (Kafka: librdkafka's
/// `msg_cnt`, every `KafkaConfig::lag_interval`).
pub const PRODUCER_QUEUE_DEPTH: &str = "firefly_producer_queue_depth";
/// Gauge: the state of the publish
/// [`CircuitBreaker`](crate::publish::CircuitBreaker): 0 closed, 1 open, 2 half-open.
pub const PUBLISH_BREAKER_STATE: &str = "firefly_publish_breaker_state";
/// Gauge: bytes a [`MemoryBroker`](crate::memory::MemoryBroker) holds: queued, in-flight,
/// delayed-retry and dead-lettered events (see
/// [`MemoryBroker::bytes`](crate::memory::MemoryBroker::bytes)).
pub const MEMORY_QUEUE_BYTES: &str = "firefly_memory_queue_bytes";
/// Gauge: events a [`MemoryBroker`](crate::memory::MemoryBroker) holds (queued, in flight and
/// waiting for a delayed retry; dead letters aside).
pub const MEMORY_QUEUE_EVENTS: &str = "firefly_memory_queue_events";
/// Gauge: dead letters a [`MemoryBroker`](crate::memory::MemoryBroker) keeps (see
/// [`MemoryBroker::dead_letter_count`](crate::memory::MemoryBroker::dead_letter_count)).
pub const MEMORY_DEAD_LETTERS: &str = "firefly_memory_dead_letters";
/// Counter: dead letters a [`MemoryBroker`](crate::memory::MemoryBroker) dropped from its ring,
/// because it was full or to make room for new events.
pub const MEMORY_DEAD_LETTERS_EVICTED_TOTAL: &str = "firefly_memory_dead_letters_evicted_total";
/// Gauge, labels [`TRANSPORT`]: events a subscriber holds in memory, over every subscriber of
/// the process: handed to a worker and not settled yet, or waiting in process for a retry
/// (transports that keep retries in process, such as Kafka, report it; a worker's share is
/// at most its concurrency).
pub const CONSUMER_HELD_EVENTS: &str = "firefly_consumer_held_events";
/// Gauge: the state of the [`Worker`](crate::worker::Worker)'s pause breaker (see
/// [`WorkerBuilder::pause_after`](crate::worker::WorkerBuilder::pause_after)): 0 closed
/// (processing), 1 open (paused), 2 half-open (probing with one delivery).
pub const WORKER_BREAKER_STATE: &str = "firefly_worker_breaker_state";
/// Histogram (seconds), labels [`OP`], [`OUTCOME`] (`ok`, `unavailable`, `error`): the round
/// trip of one idempotency store operation (Redis: one script or command), waiting for a
/// pooled connection included.
pub const STORE_SECONDS: &str = "firefly_store_seconds";
/// Counter, labels [`OP`], [`OUTCOME`] (`unavailable`: the store did not answer; `error`: it
/// answered with an error): idempotency store operations that failed, whatever the failure
/// policy then made of them.
pub const STORE_ERRORS_TOTAL: &str = "firefly_store_errors_total";
/// Gauge, label [`LOG`]: live events in a durable log (spooled and not forwarded yet; for the
/// disk transport, published and not acked yet).
pub const SPOOL_EVENTS: &str = "firefly_spool_events";
/// Gauge (bytes), label [`LOG`]: size of the log's files, the figure bounded by
/// `SpoolConfig::max_bytes`.
pub const SPOOL_BYTES: &str = "firefly_spool_bytes";
/// Gauge (seconds), label [`LOG`]: age of the oldest live event (0 when there is none).
pub const SPOOL_OLDEST_AGE_SECONDS: &str = "firefly_spool_oldest_age_seconds";
/// Counter, label [`LOG`]: spooled events the broker confirmed.
pub const SPOOL_FORWARDED_TOTAL: &str = "firefly_spool_forwarded_total";
/// Counter, label [`LOG`]: attempts to forward a spooled event that failed (each is retried,
/// but for the ones the broker rejected, which are dead-lettered).
pub const SPOOL_FORWARD_FAILURES_TOTAL: &str = "firefly_spool_forward_failures_total";
/// Counter, label [`LOG`]: spooled events the broker rejected, written to the spool's dead
/// letters.
pub const SPOOL_DEAD_LETTERED_TOTAL: &str = "firefly_spool_dead_lettered_total";
/// Counter, label [`LOG`]: torn or corrupt records found, logged and cut off when a log was
/// opened.
pub const SPOOL_CUT_TOTAL: &str = "firefly_spool_cut_total";

/// Counters, by name, with their help text.
const COUNTERS: &[(&str, &str)] = &[
    (RECEIVED_TOTAL, "Deliveries the worker started on."),
    (PROCESSED_TOTAL, "Events whose effect happened."),
    (
        DUPLICATES_TOTAL,
        "Deliveries skipped because their key was already processed.",
    ),
    (
        FAILED_TOTAL,
        "Deliveries whose processing failed (after in-process retries).",
    ),
    (
        RETRIED_TOTAL,
        "Retries scheduled, in process or through the transport.",
    ),
    (
        DEAD_LETTERED_TOTAL,
        "Events written to the dead-letter destination.",
    ),
    (VERIFICATIONS_TOTAL, "Signature verifications, by outcome."),
    (INGEST_REJECTED_TOTAL, "Ingest requests refused, by code."),
    (
        INGEST_REQUESTS_TOTAL,
        "Ingest answers, by provider, HTTP status and code.",
    ),
    (
        INGEST_RECEIPTS_TOTAL,
        "Ingest answers, by the status of their JSON body.",
    ),
    (
        MEMORY_DEAD_LETTERS_EVICTED_TOTAL,
        "Dead letters the memory broker dropped from its ring.",
    ),
    (
        QUEUE_DEPTH_ERRORS_TOTAL,
        "Polls of a queue's depth that failed.",
    ),
    (
        STORE_ERRORS_TOTAL,
        "Idempotency store operations that failed, by operation and outcome.",
    ),
    (
        SPOOL_FORWARDED_TOTAL,
        "Spooled events the broker confirmed.",
    ),
    (
        SPOOL_FORWARD_FAILURES_TOTAL,
        "Attempts to forward a spooled event that failed.",
    ),
    (
        SPOOL_DEAD_LETTERED_TOTAL,
        "Spooled events the broker rejected, kept in the spool's dead letters.",
    ),
    (
        SPOOL_CUT_TOTAL,
        "Torn or corrupt log records cut off when a log was opened.",
    ),
];

/// Gauges, by name, with their help text.
const GAUGES: &[(&str, &str)] = &[
    (
        QUEUE_DEPTH,
        "Events waiting in a destination of the transport.",
    ),
    (
        CONSUMER_LAG,
        "Events a consumer group is behind in a partition of a destination.",
    ),
    (
        PRODUCER_QUEUE_DEPTH,
        "Events handed to the producer and not yet acknowledged by the broker.",
    ),
    (
        INGEST_REQUESTS_IN_FLIGHT,
        "Ingest requests admitted and not yet answered.",
    ),
    (
        READY,
        "1 when the readiness check passed (up or degraded) at its last run, 0 when it failed.",
    ),
    (
        READY_DEGRADED,
        "1 when the readiness check passed degraded at its last run, else 0.",
    ),
    (
        PUBLISH_BREAKER_STATE,
        "Publish circuit breaker: 0 closed, 1 open, 2 half-open.",
    ),
    (MEMORY_QUEUE_BYTES, "Bytes the memory broker holds."),
    (
        MEMORY_QUEUE_EVENTS,
        "Events the memory broker holds (dead letters aside).",
    ),
    (MEMORY_DEAD_LETTERS, "Dead letters the memory broker keeps."),
    (
        WORKER_BREAKER_STATE,
        "Worker pause breaker: 0 processing, 1 paused, 2 probing.",
    ),
    (
        CONSUMER_HELD_EVENTS,
        "Events a subscriber holds in memory, in flight or waiting for a retry.",
    ),
    (
        SPOOL_EVENTS,
        "Live events in a durable log (spooled, or not acked on the disk transport).",
    ),
    (SPOOL_BYTES, "Bytes of a durable log's files."),
    (
        SPOOL_OLDEST_AGE_SECONDS,
        "Age of the oldest live event in a durable log, in seconds.",
    ),
];

/// Histograms, by name, with their help text.
const HISTOGRAMS: &[(&str, &str)] = &[
    (
        PROCESSING_SECONDS,
        "Time from the start of processing to its result, in seconds.",
    ),
    (
        INGEST_BODY_BYTES,
        "Sizes of the request bodies ingest read whole, in bytes.",
    ),
    (
        INGEST_PUBLISH_SECONDS,
        "Time the publisher took to confirm or fail, in seconds.",
    ),
    (
        STORE_SECONDS,
        "Round trip of one idempotency store operation, in seconds.",
    ),
];

/// Registers the help text (the Prometheus `# HELP` line) of every metric above with the
/// installed recorder. Call once, after installing it.
pub fn describe() {
    for &(name, help) in COUNTERS {
        metrics::describe_counter!(name, help);
    }
    for &(name, help) in GAUGES {
        metrics::describe_gauge!(name, help);
    }
    for &(name, help) in HISTOGRAMS {
        metrics::describe_histogram!(name, help);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_described_once() {
        let source = include_str!("metric.rs");
        let named: Vec<&str> = source
            .lines()
            .filter_map(|l| l.strip_prefix("pub const "))
            .filter_map(|l| l.split_once("= \"firefly_"))
            .map(|(_, rest)| rest.trim_end_matches("\";"))
            .collect();
        let described: Vec<&str> = [COUNTERS, GAUGES, HISTOGRAMS]
            .concat()
            .iter()
            .map(|(name, _)| name.trim_start_matches("firefly_"))
            .collect();
        for name in &named {
            let times = described.iter().filter(|d| *d == name).count();
            assert_eq!(times, 1, "firefly_{name} described {times} times");
        }
        assert_eq!(named.len(), described.len());
        for (name, _) in COUNTERS {
            assert!(name.ends_with("_total"), "{name}");
        }
    }
}
