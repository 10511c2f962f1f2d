//! `firefly dlq`: list, show, replay and purge dead letters on Kafka, RabbitMQ or the disk
//! transport.
//!
//! The transport-specific reading and removal is the adapters' (`firefly_webhook_kafka::dlq`,
//! `firefly_webhook_amqp::dlq`) and the core's (`firefly_webhook::spool::DiskBroker`); this
//! module selects, paces, reports and asks.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use clap::{Args, Subcommand, ValueEnum};
use firefly_webhook::spool::{DeadLetterKey, DiskBroker, DiskConfig, SpoolError};
use firefly_webhook::wire::WireHeader;
use firefly_webhook::{DeadLetter, EventId, FailureCategory, Publisher as _, WebhookEvent};
use firefly_webhook_amqp::AmqpConfig;
use firefly_webhook_amqp::dlq as amqp;
use firefly_webhook_kafka::KafkaConfig;
use firefly_webhook_kafka::dlq as kafka;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::dates::parse_rfc3339;
use crate::exit::{Exit, Fatal};

/// The client name the command line shows to brokers.
const CLIENT_NAME: &str = "firefly-cli";

/// How many characters of the last error a table row shows.
const REASON_WIDTH: usize = 48;

const KAFKA_REMOVAL: &str = "\
On Kafka a topic cannot delete records. What was replayed or purged is recorded as the
committed offset of a consumer group of its own (--group, default firefly-dlq-replay): per
partition of the dead-letter topic, everything before that offset is done, and `list` shows
only what lies beyond it. So only a leading run of each partition can be removed: with a
filter, matching records behind one that stays (does not match, or failed) are left in place
and counted as blocked; handle the records in front of them first. Resetting the group's
offsets brings dead letters back. Run one replay or purge per dead-letter topic at a time.

On RabbitMQ every message can be removed on its own: messages not replayed or purged go back
to the dead-letter queue, in order, when the command ends.

On the disk transport (--transport disk) the dead letters are files in the data directory,
which one process at a time may open: stop the gateway and workers using it first (the
command refuses a directory in use). A replayed event goes back into the directory's log,
and the worker takes it when it runs again; replayed and purged dead letters are removed in
batches (at least every second), each an atomic rewrite of the destination's dead-letter
file, a replayed one only after its copy is on disk. A replay killed in between (kill -9,
or Ctrl-C twice) leaves the last batch in both places: at least once, which the worker's
idempotency absorbs; never in neither. The disk log has no message attributes, so its
replays carry no replayedat mark.";

fn removal_help() -> String {
    format!("{KAFKA_REMOVAL}\n\n{}", crate::EXIT_CODES)
}

#[derive(Debug, Args)]
pub(crate) struct DlqArgs {
    #[command(flatten)]
    target: Target,

    #[command(subcommand)]
    command: DlqCommand,
}

/// Which broker and which dead-letter queues.
#[derive(Debug, Args)]
#[command(next_help_heading = "Broker")]
struct Target {
    /// The broker [default: FIREFLY_TRANSPORT].
    #[arg(long, global = true, value_enum)]
    transport: Option<Transport>,

    /// Kafka bootstrap servers [default: FIREFLY_KAFKA_BROKERS, else 127.0.0.1:9092].
    #[arg(long, global = true, value_name = "HOST:PORT,...")]
    brokers: Option<String>,

    /// RabbitMQ URL [default: FIREFLY_AMQP_URL, else amqp://guest:guest@127.0.0.1:5672/%2f].
    #[arg(long, global = true, value_name = "AMQP_URL")]
    url: Option<String>,

    /// A destination (topic, routing key) whose dead letters to read; repeatable [default on
    /// Kafka: every destination with a dead-letter topic; on disk: every destination with dead
    /// letters; on RabbitMQ: FIREFLY_DESTINATIONS, else the FIREFLY_PROVIDERS allowlist].
    #[arg(long = "destination", global = true, value_name = "NAME")]
    destinations: Vec<String>,

    /// Kafka: the consumer group whose committed offsets mark what was replayed or purged
    /// [default: firefly-dlq-replay].
    #[arg(long, global = true, value_name = "GROUP")]
    group: Option<String>,

    /// Kafka: the dead-letter topic of a topic, `{topic}` standing for it [default:
    /// {topic}.dlq].
    #[arg(long, global = true, value_name = "TEMPLATE")]
    dead_letter_topic: Option<String>,

    /// RabbitMQ: the prefix of the queue names [default: firefly.webhooks.].
    #[arg(long, global = true, value_name = "PREFIX")]
    queue_prefix: Option<String>,

    /// Disk: the gateway's data directory; no gateway or worker may have it open [default:
    /// FIREFLY_DATA_DIR, else ./firefly-data].
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Transport {
    /// Kafka: `{topic}.dlq` topics.
    Kafka,
    /// RabbitMQ: `{queue}.dlq` queues.
    Amqp,
    /// The disk transport: `dead/` in the data directory (stop the gateway first).
    Disk,
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// Count the dead letters and show the first ones.
    List {
        /// How many to show in the table (all are counted).
        #[arg(long, default_value_t = 20, value_name = "N")]
        limit: usize,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Show one dead letter: why it failed, the request it was, and its body.
    Show {
        /// The event id (from `list`, or the gateway's receipt).
        event_id: EventId,
        /// Print only the body, byte for byte.
        #[arg(long)]
        raw: bool,
    },
    /// Republish dead letters to their destination, each removed from the dead-letter queue
    /// once the broker confirmed its copy.
    ///
    /// A replayed event keeps its id, body and headers, starts again at attempt 1 and carries a
    /// `replayedat` mark (`ce_replayedat` on Kafka, `cloudEvents:replayedat` on RabbitMQ; the
    /// disk transport stores no message attributes, so there it carries none). Ctrl-C stops
    /// after the current event: nothing is ever removed before its copy was confirmed (on
    /// disk: written and synced), so an event is at worst in both places, a duplicate the
    /// worker's idempotency absorbs.
    #[command(after_long_help = removal_help())]
    Replay {
        /// Say what would be replayed; publish and remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Replay at most this many events.
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
        /// Replay at most this many events per second.
        #[arg(long, value_name = "EVENTS_PER_SECOND", value_parser = parse_rate)]
        rate: Option<f64>,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Remove dead letters without replaying them (asks first unless --yes).
    #[command(after_long_help = removal_help())]
    Purge {
        /// Don't ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
        /// Say what would be purged; remove nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        filter: FilterArgs,
    },
}

/// Which dead letters a command applies to; all of them by default.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Selection")]
struct FilterArgs {
    /// Only this provider's.
    #[arg(long)]
    provider: Option<String>,
    /// Only this failure category: validation, processing, timeout or unrecoverable.
    #[arg(long, value_parser = parse_category)]
    category: Option<FailureCategory>,
    /// Only those dead-lettered at or after this time (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = parse_rfc3339)]
    since: Option<OffsetDateTime>,
    /// Only those dead-lettered before this time (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = parse_rfc3339)]
    until: Option<OffsetDateTime>,
}

fn parse_category(value: &str) -> Result<FailureCategory, String> {
    value.trim().to_ascii_lowercase().parse().map_err(|_| {
        format!(
            "unknown category `{value}`; expected validation, processing, timeout or unrecoverable"
        )
    })
}

fn parse_rate(value: &str) -> Result<f64, String> {
    value
        .parse::<f64>()
        .ok()
        .filter(|r| r.is_finite() && *r > 0.0)
        .ok_or_else(|| format!("`{value}` is not a positive number of events per second"))
}

impl FilterArgs {
    fn matches(&self, entry: &Entry) -> bool {
        let provider = self.provider.as_deref().is_none_or(|wanted| {
            entry
                .provider
                .as_deref()
                .is_some_and(|p| p.eq_ignore_ascii_case(wanted))
        });
        let category = self
            .category
            .is_none_or(|wanted| entry.failure.as_ref().is_some_and(|f| f.category == wanted));
        let at = entry.failure.as_ref().map(|f| f.rejected_at);
        let since = self
            .since
            .is_none_or(|since| at.is_some_and(|at| at >= since));
        let until = self
            .until
            .is_none_or(|until| at.is_some_and(|at| at < until));
        provider && category && since && until
    }
}

/// A dead letter as the command line shows it, whichever the transport.
#[derive(Debug)]
struct Entry {
    id: Option<EventId>,
    provider: Option<String>,
    destination: String,
    failure: Option<DeadLetter>,
    /// Where it sits, e.g. `github.dlq/2@41` or `#7`.
    position: String,
    event: Result<WebhookEvent, String>,
    body: Bytes,
    headers: Vec<WireHeader>,
}

/// Builds an [`Entry`] from either adapter's `DeadLettered` (same fields, different types).
macro_rules! entry {
    ($letter:expr) => {{
        let letter = $letter;
        Entry {
            id: letter.id(),
            provider: letter.provider().map(str::to_owned),
            destination: letter.destination.clone(),
            failure: letter.dead_letter.clone(),
            position: letter.position.to_string(),
            event: match &letter.event {
                Ok(event) => Ok(event.clone()),
                Err(e) => Err(e.to_string()),
            },
            body: letter.body.clone(),
            headers: letter.headers.clone(),
        }
    }};
}

impl Entry {
    fn id_text(&self) -> String {
        self.id.map_or_else(|| "-".to_owned(), |id| id.to_string())
    }

    /// The fields a table row and `list --json` show.
    fn summary(&self) -> Value {
        let f = self.failure.as_ref();
        json!({
            "eventId": self.id.map(|id| id.to_string()),
            "provider": self.provider,
            "destination": self.destination,
            "category": f.map(|f| f.category.as_str()),
            "attempts": f.map(|f| f.attempts),
            "lastError": f.map(|f| f.reason.as_str()),
            "errorType": f.map(|f| f.error_type.as_str()),
            "deadLetteredAt": f.map(|f| crate::dates::format(f.rejected_at)),
            "position": self.position,
        })
    }

    /// Everything, for `show --json`.
    fn detail(&self) -> Value {
        let mut out = self.summary();
        let event = match &self.event {
            Ok(e) => json!({
                "path": e.path,
                "method": e.method.as_str(),
                "query": e.query,
                "receivedAt": crate::dates::format(e.received_at),
                "contentType": e.content_type,
                "correlationId": e.correlation_id,
                "sourceIp": e.source_ip.map(|ip| ip.to_string()),
                "headers": e.headers.iter()
                    .map(|(n, v)| json!([n.as_str(), String::from_utf8_lossy(v.as_bytes())]))
                    .collect::<Vec<_>>(),
            }),
            Err(reason) => json!({ "undecodable": reason }),
        };
        out["event"] = event;
        out["messageHeaders"] = self
            .headers
            .iter()
            .map(|(n, v)| json!([n, String::from_utf8_lossy(v)]))
            .collect();
        match serde_json::from_slice::<Value>(&self.body) {
            Ok(body) => out["body"] = body,
            Err(_) => {
                if let Ok(text) = std::str::from_utf8(&self.body) {
                    out["bodyText"] = json!(text);
                } else {
                    use base64::Engine as _;
                    out["bodyBase64"] =
                        json!(base64::engine::general_purpose::STANDARD.encode(&self.body));
                }
            }
        }
        out
    }
}

/// What replaying one dead letter came to, when it did not stop the command.
enum Step {
    Done,
    /// It stays in the dead-letter queue, for this reason.
    Failed(String),
}

/// A dead-letter store on one transport.
#[async_trait]
trait Source: Send + Sync {
    type Pass: Pass;

    /// The destinations to read when none are named.
    async fn destinations(&self) -> Result<Vec<String>, Fatal>;

    async fn open(&self, destination: &str, dry_run: bool) -> Result<Self::Pass, Fatal>;
}

/// One pass over one destination's dead letters (an adapter's cursor).
#[async_trait]
trait Pass: Send {
    type Letter: Send + Sync;

    /// The dead-letter topic or queue.
    fn queue(&self) -> String;
    /// How many dead letters the pass should find (an estimate on Kafka).
    fn len(&self) -> u64;
    async fn next(&mut self) -> Result<Option<(Entry, Self::Letter)>, Fatal>;
    fn is_removable(&self, letter: &Self::Letter) -> bool;
    async fn replay(&mut self, letter: &Self::Letter) -> Result<Step, Fatal>;
    async fn remove(&mut self, letter: &Self::Letter) -> Result<(), Fatal>;
    async fn close(self);
}

struct KafkaSource(kafka::DeadLetters);

#[async_trait]
impl Source for KafkaSource {
    type Pass = kafka::Cursor;

    async fn destinations(&self) -> Result<Vec<String>, Fatal> {
        self.0
            .destinations()
            .await
            .map_err(|e| Fatal::broker("cannot list the dead-letter topics", &e))
    }

    async fn open(&self, destination: &str, dry_run: bool) -> Result<kafka::Cursor, Fatal> {
        let cursor = self.0.open(destination).await.map_err(|e| {
            Fatal::broker(&format!("cannot read {}", self.0.topic(destination)), &e)
        })?;
        Ok(cursor.dry_run(dry_run))
    }
}

#[async_trait]
impl Pass for kafka::Cursor {
    type Letter = kafka::DeadLettered;

    fn queue(&self) -> String {
        self.topic().to_owned()
    }

    fn len(&self) -> u64 {
        kafka::Cursor::len(self)
    }

    async fn next(&mut self) -> Result<Option<(Entry, kafka::DeadLettered)>, Fatal> {
        let letter = kafka::Cursor::next(self)
            .await
            .map_err(|e| Fatal::broker(&format!("reading {} failed", self.topic()), &e))?;
        Ok(letter.map(|l| (entry!(&l), l)))
    }

    fn is_removable(&self, letter: &kafka::DeadLettered) -> bool {
        kafka::Cursor::is_removable(self, letter)
    }

    async fn replay(&mut self, letter: &kafka::DeadLettered) -> Result<Step, Fatal> {
        match kafka::Cursor::replay(self, letter).await {
            Ok(()) => Ok(Step::Done),
            Err(e @ (kafka::Error::Publish(_) | kafka::Error::Undecodable(_))) => {
                Ok(Step::Failed(crate::chain(&e)))
            }
            Err(e) => Err(Fatal::broker("replaying stopped", &e)),
        }
    }

    async fn remove(&mut self, letter: &kafka::DeadLettered) -> Result<(), Fatal> {
        kafka::Cursor::remove(self, letter)
            .await
            .map_err(|e| Fatal::broker("purging stopped", &e))
    }

    async fn close(self) {
        kafka::Cursor::close(self).await;
    }
}

struct AmqpSource {
    dead_letters: amqp::DeadLetters,
    destinations: Option<Vec<String>>,
}

#[async_trait]
impl Source for AmqpSource {
    type Pass = amqp::Cursor;

    async fn destinations(&self) -> Result<Vec<String>, Fatal> {
        self.destinations.clone().ok_or_else(|| {
            Fatal::usage(
                "RabbitMQ cannot list its queues over AMQP: name the destinations with \
                 --destination (or set FIREFLY_DESTINATIONS or FIREFLY_PROVIDERS)",
            )
        })
    }

    async fn open(&self, destination: &str, dry_run: bool) -> Result<amqp::Cursor, Fatal> {
        let cursor = self.dead_letters.open(destination).await.map_err(|e| {
            let queue = self.dead_letters.queue(destination);
            Fatal::broker(&format!("cannot read {queue}"), &e)
        })?;
        Ok(cursor.dry_run(dry_run))
    }
}

#[async_trait]
impl Pass for amqp::Cursor {
    type Letter = amqp::DeadLettered;

    fn queue(&self) -> String {
        amqp::Cursor::queue(self).to_owned()
    }

    fn len(&self) -> u64 {
        amqp::Cursor::len(self)
    }

    async fn next(&mut self) -> Result<Option<(Entry, amqp::DeadLettered)>, Fatal> {
        let letter = amqp::Cursor::next(self)
            .await
            .map_err(|e| Fatal::broker(&format!("reading {} failed", self.queue()), &e))?;
        Ok(letter.map(|l| (entry!(&l), l)))
    }

    fn is_removable(&self, letter: &amqp::DeadLettered) -> bool {
        amqp::Cursor::is_removable(self, letter)
    }

    async fn replay(&mut self, letter: &amqp::DeadLettered) -> Result<Step, Fatal> {
        match amqp::Cursor::replay(self, letter).await {
            Ok(()) => Ok(Step::Done),
            Err(e @ (amqp::Error::Publish(_) | amqp::Error::Undecodable(_))) => {
                Ok(Step::Failed(crate::chain(&e)))
            }
            Err(e) => Err(Fatal::broker("replaying stopped", &e)),
        }
    }

    async fn remove(&mut self, letter: &amqp::DeadLettered) -> Result<(), Fatal> {
        amqp::Cursor::remove(self, letter)
            .await
            .map_err(|e| Fatal::broker("purging stopped", &e))
    }

    async fn close(self) {
        amqp::Cursor::close(self).await;
    }
}

/// Replayed or purged dead letters removed at once at most; also removed when a second has
/// passed since the last removal, and when the pass ends.
const DISK_REMOVE_BATCH: usize = 256;
/// How long replayed or purged dead letters wait at most for their batch's removal.
const DISK_REMOVE_EVERY: Duration = Duration::from_secs(1);

/// The dead letters of a disk transport's data directory, opened by this process.
struct DiskSource {
    broker: DiskBroker,
}

impl DiskSource {
    async fn open(dir: PathBuf, max_bytes: Option<u64>) -> Result<Self, Fatal> {
        // Opening creates what is missing: a mistyped path would become an empty log.
        if !dir.is_dir() {
            return Err(Fatal::usage(format!(
                "{} is not a directory: name the gateway's data directory with --data-dir (or \
                 FIREFLY_DATA_DIR)",
                dir.display()
            )));
        }
        let mut config = DiskConfig::new(&dir);
        if let Some(bytes) = max_bytes {
            config.max_bytes = bytes;
        }
        match DiskBroker::connect(config).await {
            Ok(broker) => Ok(Self { broker }),
            Err(SpoolError::Locked(dir)) => Err(Fatal::failed(format!(
                "{} is in use by another process (a gateway or worker on the disk transport): \
                 stop it, then run this again",
                dir.display()
            ))),
            Err(e) => Err(Fatal::broker("cannot open the disk transport", &e)),
        }
    }
}

#[async_trait]
impl Source for DiskSource {
    type Pass = DiskPass;

    async fn destinations(&self) -> Result<Vec<String>, Fatal> {
        self.broker
            .dead_letter_destinations()
            .await
            .map_err(|e| Fatal::broker("cannot list the dead-letter files", &e))
    }

    async fn open(&self, destination: &str, dry_run: bool) -> Result<DiskPass, Fatal> {
        let letters = self.broker.dead_letters(destination).await.map_err(|e| {
            Fatal::broker(
                &format!("cannot read the dead letters of {destination}"),
                &e,
            )
        })?;
        Ok(DiskPass {
            broker: self.broker.clone(),
            destination: destination.to_owned(),
            queue: self.broker.config().dir.join("dead").display().to_string(),
            len: letters.len() as u64,
            letters: letters.into_iter(),
            read: 0,
            dry_run,
            done: Vec::new(),
            removed_at: Instant::now(),
        })
    }
}

/// One pass over a destination's dead letters on disk: read at once, removed in batches.
struct DiskPass {
    broker: DiskBroker,
    destination: String,
    queue: String,
    len: u64,
    letters: std::vec::IntoIter<(WebhookEvent, DeadLetter)>,
    read: u64,
    dry_run: bool,
    /// Replayed (their copy is on disk) or purged, not removed yet.
    done: Vec<DeadLetterKey>,
    removed_at: Instant,
}

/// A dead letter on disk: the event and which record it is.
struct DiskLetter {
    event: WebhookEvent,
    key: DeadLetterKey,
}

impl DiskPass {
    /// Removes the dead letters done with so far.
    async fn remove_done(&mut self) -> Result<(), Fatal> {
        self.removed_at = Instant::now();
        if self.done.is_empty() {
            return Ok(());
        }
        self.broker
            .remove_dead_letters(&self.destination, &self.done)
            .await
            .map_err(|e| Fatal::broker("removing replayed or purged dead letters failed", &e))?;
        self.done.clear();
        Ok(())
    }

    async fn done_with(&mut self, letter: &DiskLetter) -> Result<(), Fatal> {
        self.done.push(letter.key);
        if self.done.len() >= DISK_REMOVE_BATCH || self.removed_at.elapsed() >= DISK_REMOVE_EVERY {
            self.remove_done().await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Pass for DiskPass {
    type Letter = DiskLetter;

    fn queue(&self) -> String {
        self.queue.clone()
    }

    fn len(&self) -> u64 {
        self.len
    }

    async fn next(&mut self) -> Result<Option<(Entry, DiskLetter)>, Fatal> {
        let Some((event, failure)) = self.letters.next() else {
            // The end of the pass: errors still reach the command.
            self.remove_done().await?;
            return Ok(None);
        };
        self.read += 1;
        let entry = Entry {
            id: Some(event.id),
            provider: Some(event.provider.clone()),
            destination: self.destination.clone(),
            position: format!("#{}", self.read),
            body: event.body.clone(),
            event: Ok(event.clone()),
            headers: Vec::new(),
            failure: Some(failure.clone()),
        };
        let key = DeadLetterKey::of(&event, &failure);
        Ok(Some((entry, DiskLetter { event, key })))
    }

    fn is_removable(&self, _letter: &DiskLetter) -> bool {
        true
    }

    async fn replay(&mut self, letter: &DiskLetter) -> Result<Step, Fatal> {
        if self.dry_run {
            return Ok(Step::Done);
        }
        // A new entry: attempt 1, due now. `Ok` once it is on disk.
        let publish = self
            .broker
            .publisher()
            .publish(&self.destination, letter.event.clone())
            .await;
        match publish {
            Ok(()) => {
                self.done_with(letter).await?;
                Ok(Step::Done)
            }
            Err(e) => Ok(Step::Failed(crate::chain(&e))),
        }
    }

    async fn remove(&mut self, letter: &DiskLetter) -> Result<(), Fatal> {
        if self.dry_run {
            return Ok(());
        }
        self.done_with(letter).await
    }

    async fn close(mut self) {
        // After a limit or Ctrl-C; what stays here is in both places (replayed) or still
        // listed (purged), and the next run handles it again.
        if let Err(fatal) = self.remove_done().await {
            eprintln!("firefly: {fatal}");
        }
    }
}

pub(crate) async fn run(args: DlqArgs, json: bool) -> Result<Exit, Fatal> {
    let target = args.target;
    let settings = std::cell::OnceCell::new();
    let settings = || {
        settings
            .get_or_init(|| stack::Settings::from_env(stack::Defaults::GATEWAY))
            .as_ref()
            .map_err(|e| Fatal::usage(e.to_string()))
    };
    let transport = match target.transport {
        Some(t) => t,
        None => match settings()?.transport.name() {
            "kafka" => Transport::Kafka,
            "amqp" => Transport::Amqp,
            "disk" => Transport::Disk,
            _ => {
                return Err(Fatal::usage(
                    "choose a broker with --transport kafka|amqp|disk (or FIREFLY_TRANSPORT): on \
                     the memory transport dead letters live inside the gateway's process",
                ));
            }
        },
    };
    let named = (!target.destinations.is_empty()).then(|| target.destinations.clone());
    match transport {
        Transport::Kafka => {
            let brokers = match &target.brokers {
                Some(b) => b.clone(),
                None => settings()?.kafka_brokers.clone(),
            };
            let mut config = KafkaConfig::from_brokers(brokers);
            CLIENT_NAME.clone_into(&mut config.client_id);
            if let Some(template) = &target.dead_letter_topic {
                config.dead_letter_topic.clone_from(template);
            }
            let mut dead_letters = kafka::DeadLetters::connect(config)
                .await
                .map_err(|e| Fatal::broker("kafka", &e))?;
            if let Some(group) = &target.group {
                dead_letters = dead_letters.group(group.as_str());
            }
            let source = KafkaSource(dead_letters);
            let destinations = match named {
                Some(d) => d,
                None => source.destinations().await?,
            };
            command(&source, destinations, args.command, json).await
        }
        Transport::Amqp => {
            let url = match &target.url {
                Some(u) => u.clone(),
                None => settings()?.amqp_url.0.clone(),
            };
            let mut config = AmqpConfig::from_url(url);
            CLIENT_NAME.clone_into(&mut config.connection_name);
            if let Some(prefix) = &target.queue_prefix {
                config.queue_prefix.clone_from(prefix);
            }
            let dead_letters = amqp::DeadLetters::connect(config)
                .await
                .map_err(|e| Fatal::broker("rabbitmq", &e))?;
            let destinations = match named {
                Some(d) => Some(d),
                None => settings()?.destinations.clone(),
            };
            let source = AmqpSource {
                dead_letters,
                destinations,
            };
            let destinations = source.destinations().await?;
            command(&source, destinations, args.command, json).await
        }
        Transport::Disk => {
            let dir = match &target.data_dir {
                Some(d) => d.clone(),
                None => settings()?.data_dir.clone(),
            };
            // The gateway's budget, when its environment is here to say it.
            let max_bytes = settings().ok().and_then(|s| s.spool_max_bytes);
            let source = DiskSource::open(dir, max_bytes).await?;
            let destinations = match named {
                Some(d) => d,
                None => source.destinations().await?,
            };
            command(&source, destinations, args.command, json).await
        }
    }
}

async fn command<S: Source>(
    source: &S,
    destinations: Vec<String>,
    command: DlqCommand,
    json: bool,
) -> Result<Exit, Fatal> {
    match command {
        DlqCommand::List { filter, limit } => {
            list(source, &destinations, &filter, limit, json).await
        }
        DlqCommand::Show { event_id, raw } => {
            show(source, &destinations, event_id, raw, json).await
        }
        DlqCommand::Replay {
            filter,
            dry_run,
            limit,
            rate,
        } => {
            let plan = Plan {
                action: Action::Replay,
                dry_run,
                limit,
                rate,
                json,
            };
            let outcome = sweep(source, &destinations, &filter, &plan).await;
            report(&plan, &outcome);
            outcome.exit()
        }
        DlqCommand::Purge {
            filter,
            yes,
            dry_run,
        } => purge(source, &destinations, &filter, yes, dry_run, json).await,
    }
}

async fn list<S: Source>(
    source: &S,
    destinations: &[String],
    filter: &FilterArgs,
    limit: usize,
    json: bool,
) -> Result<Exit, Fatal> {
    let mut per_destination = Vec::with_capacity(destinations.len());
    let mut shown = Vec::new();
    let mut total = 0_u64;
    for destination in destinations {
        let mut pass = source.open(destination, true).await?;
        let queue = pass.queue();
        let mut count = 0_u64;
        while let Some((entry, _)) = pass.next().await? {
            if filter.matches(&entry) {
                count += 1;
                if shown.len() < limit {
                    shown.push(entry);
                }
            }
        }
        pass.close().await;
        total += count;
        per_destination.push((destination.clone(), queue, count));
    }
    if json {
        let out = json!({
            "count": total,
            "destinations": per_destination.iter().map(|(d, q, n)| json!({
                "destination": d, "queue": q, "count": n,
            })).collect::<Vec<_>>(),
            "deadLetters": shown.iter().map(Entry::summary).collect::<Vec<_>>(),
        });
        println!("{out}");
        return Ok(Exit::Ok);
    }
    for (destination, queue, count) in &per_destination {
        println!(
            "{destination}: {count} dead letter{} in {queue}",
            plural(*count)
        );
    }
    if destinations.is_empty() {
        println!("no dead-letter queues found");
    }
    if shown.is_empty() {
        return Ok(Exit::Ok);
    }
    println!();
    print_table(&shown);
    let shown_count = shown.len() as u64;
    if total > shown_count {
        println!("… {} more (--limit to show more)", total - shown_count);
    }
    Ok(Exit::Ok)
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn print_table(entries: &[Entry]) {
    let header = [
        "EVENT ID",
        "PROVIDER",
        "DESTINATION",
        "CATEGORY",
        "ATTEMPTS",
        "LAST ERROR",
        "DEAD-LETTERED AT",
    ];
    let rows: Vec<[String; 7]> = entries
        .iter()
        .map(|e| {
            let f = e.failure.as_ref();
            [
                e.id_text(),
                e.provider.clone().unwrap_or_else(|| "-".into()),
                e.destination.clone(),
                f.map_or_else(|| "-".into(), |f| f.category.to_string()),
                f.map_or_else(|| "-".into(), |f| f.attempts.to_string()),
                f.map_or_else(|| "-".into(), |f| truncate(&f.reason, REASON_WIDTH)),
                f.map_or_else(|| "-".into(), |f| crate::dates::format(f.rejected_at)),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            out.push_str(cell);
            if i + 1 < cells.len() {
                out.extend(std::iter::repeat_n(
                    ' ',
                    w.saturating_sub(cell.chars().count()),
                ));
            }
        }
        println!("{out}");
    };
    line(&header);
    for row in &rows {
        line(&row.iter().map(String::as_str).collect::<Vec<_>>());
    }
}

/// At most `width` characters of `text` on one line.
fn truncate(text: &str, width: usize) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= width {
        return one_line;
    }
    let mut out: String = one_line.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

async fn show<S: Source>(
    source: &S,
    destinations: &[String],
    id: EventId,
    raw: bool,
    json: bool,
) -> Result<Exit, Fatal> {
    let mut found = None;
    for destination in destinations {
        let mut pass = source.open(destination, true).await?;
        while let Some((entry, _)) = pass.next().await? {
            if entry.id == Some(id) {
                found = Some((entry, pass.queue()));
                break;
            }
        }
        pass.close().await;
        if found.is_some() {
            break;
        }
    }
    let Some((entry, queue)) = found else {
        return Err(Fatal::not_found(format!(
            "no dead letter with event id {id} in {}",
            if destinations.is_empty() {
                "any dead-letter queue".to_owned()
            } else {
                destinations.join(", ")
            }
        )));
    };
    if raw {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        out.write_all(&entry.body)
            .and_then(|()| out.flush())
            .map_err(|e| Fatal::failed(format!("cannot write the body: {e}")))?;
        return Ok(Exit::Ok);
    }
    if json {
        let mut detail = entry.detail();
        detail["queue"] = json!(queue);
        println!("{detail}");
        return Ok(Exit::Ok);
    }
    print_entry(&entry, &queue);
    Ok(Exit::Ok)
}

fn print_entry(entry: &Entry, queue: &str) {
    let field = |name: &str, value: &dyn std::fmt::Display| println!("{name:<19}{value}");
    field("event id", &entry.id_text());
    field("provider", &entry.provider.as_deref().unwrap_or("-"));
    field("destination", &entry.destination);
    field("dead-letter queue", &queue);
    field("position", &entry.position);
    if let Some(f) = &entry.failure {
        field("category", &f.category);
        field("attempts", &f.attempts);
        field("last error", &format!("{} ({})", f.reason, f.error_type));
        field("dead-lettered at", &crate::dates::format(f.rejected_at));
    }
    match &entry.event {
        Ok(e) => {
            let target = e
                .query
                .as_ref()
                .map_or_else(|| e.path.clone(), |q| format!("{}?{q}", e.path));
            field("request", &format!("{} {target}", e.method));
            field("received at", &crate::dates::format(e.received_at));
            if let Some(ip) = e.source_ip {
                field("source ip", &ip);
            }
            field("correlation id", &e.correlation_id);
            if let Some(ct) = &e.content_type {
                field("content type", ct);
            }
            field("headers", &e.headers.len());
            for (name, value) in &e.headers {
                println!("  {name}: {}", String::from_utf8_lossy(value.as_bytes()));
            }
        }
        Err(reason) => field("undecodable", reason),
    }
    println!("body ({} bytes)", entry.body.len());
    match serde_json::from_slice::<Value>(&entry.body) {
        Ok(value) => println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string())
        ),
        Err(_) => println!("{}", String::from_utf8_lossy(&entry.body)),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Replay,
    Purge,
}

impl Action {
    fn past(self) -> &'static str {
        match self {
            Self::Replay => "replayed",
            Self::Purge => "purged",
        }
    }
}

/// How to go over the dead letters.
struct Plan {
    action: Action,
    dry_run: bool,
    limit: Option<u64>,
    rate: Option<f64>,
    json: bool,
}

/// Counts for one destination, or all.
#[derive(Debug, Default, Clone)]
struct Tally {
    handled: u64,
    skipped: u64,
    blocked: u64,
    failed: u64,
}

impl Tally {
    fn add(&mut self, other: &Self) {
        self.handled += other.handled;
        self.skipped += other.skipped;
        self.blocked += other.blocked;
        self.failed += other.failed;
    }
}

struct Outcome {
    per_destination: Vec<(String, String, Tally)>,
    failures: Vec<(String, String, String)>,
    interrupted: bool,
    fatal: Option<Fatal>,
}

impl Outcome {
    fn total(&self) -> Tally {
        let mut total = Tally::default();
        for (_, _, t) in &self.per_destination {
            total.add(t);
        }
        total
    }

    fn exit(self) -> Result<Exit, Fatal> {
        if let Some(fatal) = self.fatal {
            return Err(fatal);
        }
        if self.interrupted {
            return Ok(Exit::Interrupted);
        }
        Ok(if self.total().failed > 0 {
            Exit::Failed
        } else {
            Exit::Ok
        })
    }
}

/// Ctrl-C: the first stops the command after the current event, the second at once.
fn interrupts() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = tx.send(true);
            eprintln!("\nfirefly: stopping after the current event (Ctrl-C again to quit now)");
        }
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(i32::from(Exit::Interrupted.code()));
        }
    });
    rx
}

/// Replays or purges the dead letters `filter` selects, destination after destination.
async fn sweep<S: Source>(
    source: &S,
    destinations: &[String],
    filter: &FilterArgs,
    plan: &Plan,
) -> Outcome {
    let mut sweeper = Sweeper {
        filter,
        plan,
        stop: interrupts(),
        pace: plan.rate.map(|rate| {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick
        }),
        handled: 0,
        failures: Vec::new(),
    };
    let mut per_destination = Vec::with_capacity(destinations.len());
    let mut end = End::Done;
    for destination in destinations {
        let mut pass = match source.open(destination, plan.dry_run).await {
            Ok(pass) => pass,
            Err(fatal) => {
                end = End::Fatal(fatal);
                break;
            }
        };
        let queue = pass.queue();
        let bar = progress(plan, destination, pass.len());
        let (tally, pass_end) = sweeper.pass(&mut pass, destination, &bar).await;
        pass.close().await;
        bar.finish_and_clear();
        per_destination.push((destination.clone(), queue, tally));
        end = pass_end;
        if !matches!(end, End::Done) {
            break;
        }
    }
    let (interrupted, fatal) = match end {
        End::Done | End::Limited => (false, None),
        End::Interrupted => (true, None),
        End::Fatal(fatal) => (false, Some(fatal)),
    };
    Outcome {
        per_destination,
        failures: sweeper.failures,
        interrupted,
        fatal,
    }
}

/// Why a pass over one destination ended.
enum End {
    /// Every dead letter was seen.
    Done,
    /// The limit was reached.
    Limited,
    /// Ctrl-C.
    Interrupted,
    /// A broker error.
    Fatal(Fatal),
}

/// The state of a replay or purge across destinations.
struct Sweeper<'a> {
    filter: &'a FilterArgs,
    plan: &'a Plan,
    stop: watch::Receiver<bool>,
    pace: Option<tokio::time::Interval>,
    /// Handled across destinations, for the limit.
    handled: u64,
    /// Event id, destination, reason.
    failures: Vec<(String, String, String)>,
}

impl Sweeper<'_> {
    async fn pass<P: Pass>(
        &mut self,
        pass: &mut P,
        destination: &str,
        bar: &ProgressBar,
    ) -> (Tally, End) {
        let mut tally = Tally::default();
        loop {
            if *self.stop.borrow() {
                return (tally, End::Interrupted);
            }
            if self.plan.limit.is_some_and(|l| self.handled >= l) {
                return (tally, End::Limited);
            }
            let next = tokio::select! {
                biased;
                _ = self.stop.wait_for(|s| *s) => continue,
                next = pass.next() => next,
            };
            let (entry, letter) = match next {
                Ok(Some(next)) => next,
                Ok(None) => return (tally, End::Done),
                Err(fatal) => return (tally, End::Fatal(fatal)),
            };
            bar.inc(1);
            if bar.position() > bar.length().unwrap_or(0) {
                bar.set_length(bar.position());
            }
            if !self.filter.matches(&entry) {
                tally.skipped += 1;
                continue;
            }
            if !pass.is_removable(&letter) {
                tally.blocked += 1;
                continue;
            }
            if let Some(tick) = &mut self.pace {
                tokio::select! {
                    biased;
                    _ = self.stop.wait_for(|s| *s) => continue,
                    _ = tick.tick() => {}
                }
            }
            let done = match self.plan.action {
                Action::Replay => pass.replay(&letter).await,
                Action::Purge => pass.remove(&letter).await.map(|()| Step::Done),
            };
            match done {
                Ok(Step::Done) => {
                    tally.handled += 1;
                    self.handled += 1;
                }
                Ok(Step::Failed(reason)) => {
                    tally.failed += 1;
                    self.failures
                        .push((entry.id_text(), destination.to_owned(), reason));
                }
                Err(fatal) => return (tally, End::Fatal(fatal)),
            }
            bar.set_message(format!(
                "{} {} · skipped {} · failed {}",
                self.plan.action.past(),
                tally.handled,
                tally.skipped + tally.blocked,
                tally.failed
            ));
        }
    }
}

fn progress(plan: &Plan, destination: &str, len: u64) -> ProgressBar {
    if plan.json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix:.bold} [{bar:30}] {pos}/{len} {msg} ({eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(destination.to_owned());
    bar
}

fn report(plan: &Plan, outcome: &Outcome) {
    let total = outcome.total();
    let verb = plan.action.past();
    if plan.json {
        let destinations: Vec<_> = outcome
            .per_destination
            .iter()
            .map(|(d, q, t)| {
                json!({
                    "destination": d, "queue": q, verb: t.handled,
                    "skipped": t.skipped, "blocked": t.blocked, "failed": t.failed,
                })
            })
            .collect();
        let failures: Vec<_> = outcome
            .failures
            .iter()
            .map(|(id, d, reason)| json!({"eventId": id, "destination": d, "error": reason}))
            .collect();
        let out = json!({
            "action": match plan.action { Action::Replay => "replay", Action::Purge => "purge" },
            "dryRun": plan.dry_run,
            "interrupted": outcome.interrupted,
            verb: total.handled,
            "skipped": total.skipped,
            "blocked": total.blocked,
            "failed": total.failed,
            "destinations": destinations,
            "failures": failures,
            "error": outcome.fatal.as_ref().map(ToString::to_string),
        });
        println!("{out}");
        return;
    }
    let would = if plan.dry_run { "would be " } else { "" };
    for (destination, queue, t) in &outcome.per_destination {
        println!(
            "{destination} ({queue}): {} {would}{verb}, {} skipped, {} failed{}",
            t.handled,
            t.skipped + t.blocked,
            t.failed,
            blocked_note(t.blocked)
        );
    }
    for (id, destination, reason) in &outcome.failures {
        println!("  failed: {id} ({destination}): {reason}");
    }
    println!(
        "total: {} {would}{verb}, {} skipped, {} failed{}",
        total.handled,
        total.skipped + total.blocked,
        total.failed,
        blocked_note(total.blocked)
    );
    if outcome.interrupted {
        println!("interrupted: what is not {verb} stays in the dead-letter queue");
    }
}

fn blocked_note(blocked: u64) -> String {
    if blocked == 0 {
        String::new()
    } else {
        format!(
            " ({blocked} of the skipped are blocked behind a record that stays: see `firefly dlq replay --help`)"
        )
    }
}

async fn purge<S: Source>(
    source: &S,
    destinations: &[String],
    filter: &FilterArgs,
    yes: bool,
    dry_run: bool,
    json: bool,
) -> Result<Exit, Fatal> {
    let rehearsal = Plan {
        action: Action::Purge,
        dry_run: true,
        limit: None,
        rate: None,
        json,
    };
    let planned = sweep(source, destinations, filter, &rehearsal).await;
    if dry_run || planned.fatal.is_some() || planned.interrupted {
        report(&rehearsal, &planned);
        return planned.exit();
    }
    let count = planned.total().handled;
    if count == 0 {
        report(&rehearsal, &planned);
        return Ok(Exit::Ok);
    }
    if !yes {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Err(Fatal::usage(format!(
                "refusing to purge {count} dead letter{} without --yes: standard input is not a terminal",
                plural(count)
            )));
        }
        let breakdown: Vec<String> = planned
            .per_destination
            .iter()
            .filter(|(_, _, t)| t.handled > 0)
            .map(|(d, _, t)| format!("{d}: {}", t.handled))
            .collect();
        eprint!(
            "Purge {count} dead letter{} ({})? They are removed without being replayed. [y/N] ",
            plural(count),
            breakdown.join(", ")
        );
        let mut answer = String::new();
        stdin
            .read_line(&mut answer)
            .map_err(|e| Fatal::usage(format!("cannot read the answer: {e}")))?;
        if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
            eprintln!("nothing purged");
            return Ok(Exit::Ok);
        }
    }
    let plan = Plan {
        action: Action::Purge,
        dry_run: false,
        limit: None,
        rate: None,
        json,
    };
    let outcome = sweep(source, destinations, filter, &plan).await;
    report(&plan, &outcome);
    outcome.exit()
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn entry(provider: &str, category: FailureCategory, at: OffsetDateTime) -> Entry {
        let mut failure = DeadLetter::new("boom", category, 3, "permanent", "github");
        failure.rejected_at = at;
        let event = WebhookEvent::new(provider, "{}");
        Entry {
            id: Some(event.id),
            provider: Some(provider.to_owned()),
            destination: "github".into(),
            failure: Some(failure),
            position: "github.dlq/0@1".into(),
            body: event.body.clone(),
            event: Ok(event),
            headers: Vec::new(),
        }
    }

    #[test]
    fn filters_combine() {
        let at = datetime!(2026-01-02 03:04:05 UTC);
        let e = entry("github", FailureCategory::Timeout, at);
        assert!(FilterArgs::default().matches(&e));
        let by = |f: FilterArgs| f.matches(&e);
        assert!(by(FilterArgs {
            provider: Some("GitHub".into()),
            ..FilterArgs::default()
        }));
        assert!(!by(FilterArgs {
            provider: Some("stripe".into()),
            ..FilterArgs::default()
        }));
        assert!(by(FilterArgs {
            category: Some(FailureCategory::Timeout),
            since: Some(at),
            until: Some(datetime!(2026-01-02 03:04:06 UTC)),
            ..FilterArgs::default()
        }));
        assert!(!by(FilterArgs {
            until: Some(at),
            ..FilterArgs::default()
        }));
        assert!(!by(FilterArgs {
            category: Some(FailureCategory::Validation),
            ..FilterArgs::default()
        }));
    }

    #[test]
    fn arguments_parse() {
        assert_eq!(parse_category("Timeout").unwrap(), FailureCategory::Timeout);
        assert!(parse_category("bad").is_err());
        assert!((parse_rate("2.5").unwrap() - 2.5).abs() < f64::EPSILON);
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("nan").is_err());
    }

    #[test]
    fn rows_stay_on_one_line() {
        assert_eq!(truncate("a\nb", 10), "a b");
        assert_eq!(truncate("abcdef", 4), "abc…");
    }

    #[test]
    fn json_shows_every_field() {
        let e = entry(
            "github",
            FailureCategory::Unrecoverable,
            OffsetDateTime::now_utc(),
        );
        let summary = e.summary();
        for key in [
            "eventId",
            "provider",
            "destination",
            "category",
            "attempts",
            "lastError",
            "deadLetteredAt",
        ] {
            assert!(!summary[key].is_null(), "{key}");
        }
        let detail = e.detail();
        assert_eq!(detail["body"], json!({}));
        assert_eq!(detail["event"]["method"], "POST");
    }
}
