//! claim + complete pairs per second against the Redis on 127.0.0.1:6379.
//!
//! `cargo bench -p firefly-webhook-redis --bench claims [name filter]`, with
//! `FIREFLY_BENCH_SECS` (default 3), `FIREFLY_BENCH_ROUNDS` (default 3) and `FIREFLY_REDIS_URL`.
//!
//! Each round runs `redis-benchmark -h 127.0.0.1 -t set -n 200000 -c 50 -q` (when it is on the
//! PATH and the URL is the default) and then every target with 1, 16 and 64 concurrent tasks;
//! the summary gives medians and the ratio of the best pair rate to the SET rate.
//!
//! Besides `RedisStore` with 1, 2 and 4 connections it measures a naive baseline: the same two
//! scripts through `deadpool_redis::Pool::get()` per call, which costs the pool's recycle
//! `PING` on every checkout.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use firefly_webhook::{Claim, IdempotencyStore};
use firefly_webhook_redis::deadpool_redis::{self, Runtime};
use firefly_webhook_redis::redis::{self, AsyncCommands};
use firefly_webhook_redis::{RedisConfig, RedisStore};

const LOCK: Duration = Duration::from_secs(30);
const DONE: Duration = Duration::from_secs(120);

/// The naive design: one pool checkout per call, `redis::Script` for EVALSHA.
struct Naive {
    pool: deadpool_redis::Pool,
    claim: redis::Script,
    complete: redis::Script,
    prefix: String,
}

impl Naive {
    async fn pair(&self, key: &str) {
        let processing = format!("{}:processing:{{{key}}}", self.prefix);
        let processed = format!("{}:processed:{{{key}}}", self.prefix);
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut conn = self.pool.get().await.unwrap();
        let reply: Vec<i64> = self
            .claim
            .key(&processing)
            .key(&processed)
            .arg(&token)
            .arg(30_000)
            .invoke_async(&mut conn)
            .await
            .unwrap();
        drop(conn);
        assert_eq!(reply, [1]);
        let mut conn = self.pool.get().await.unwrap();
        let ok: i64 = self
            .complete
            .key(&processing)
            .key(&processed)
            .arg(&token)
            .arg(120_000)
            .invoke_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(ok, 1);
    }
}

/// Builds a target for a key prefix.
type MakeTarget = Box<dyn Fn(String) -> Target>;

enum Target {
    Store(RedisStore),
    Naive(Naive),
}

impl Target {
    async fn pair(&self, key: &str) {
        match self {
            Self::Store(store) => {
                let Claim::Acquired(token) = store.claim(key, LOCK).await.unwrap() else {
                    panic!("fresh key must acquire")
                };
                store.complete(key, &token, DONE).await.unwrap();
            }
            Self::Naive(naive) => naive.pair(key).await,
        }
    }
}

async fn run(target: Arc<Target>, tasks: usize, secs: u64) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (target, stop, done) = (target.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    target.pair(&format!("evt-{t}-{i}")).await;
                    i += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.await.unwrap();
    }
    #[allow(clippy::cast_precision_loss)]
    let rate = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    rate
}

async fn cleanup(url: &str, prefix: &str) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut keys = Vec::new();
    {
        let mut iter = conn
            .scan_match::<_, String>(format!("{prefix}:*"))
            .await
            .unwrap();
        while let Some(k) = iter.next_item().await {
            keys.push(k.unwrap());
        }
    }
    for chunk in keys.chunks(1000) {
        let _: () = conn.del(chunk).await.unwrap();
    }
}

/// `redis-benchmark -t set` on 127.0.0.1:6379: its requests per second, if it ran.
fn redis_benchmark() -> Option<f64> {
    let out = std::process::Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            "6379",
            "-t",
            "set",
            "-n",
            "200000",
            "-c",
            "50",
            "-q",
        ])
        .output()
        .ok()?;
    // `-q` still prints progress lines separated by `\r`; the summary is the last one.
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = text.split(['\r', '\n']).rfind(|l| l.starts_with("SET: "))?;
    println!(
        "  redis-benchmark -t set -n 200000 -c 50 -q: {}",
        summary.trim()
    );
    summary
        .strip_prefix("SET: ")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn main() {
    // `cargo test --all-targets` runs bench binaries too: only measure under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("claims: run with `cargo bench -p firefly-webhook-redis --bench claims`");
        return;
    }
    let url =
        std::env::var("FIREFLY_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let secs = std::env::var("FIREFLY_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let rounds: usize = std::env::var("FIREFLY_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let targets: Vec<(String, MakeTarget)> = targets(&url)
        .into_iter()
        .filter(|(name, _)| filter.as_ref().is_none_or(|f| name.contains(f.as_str())))
        .collect();
    let compare = url == "redis://127.0.0.1:6379";

    // Rounds interleave the targets (and redis-benchmark) so that load from other processes on
    // the machine spreads over all of them; the table reports the median of the rounds.
    let mut set_rates = Vec::new();
    let mut rates: BTreeMap<(usize, usize), Vec<f64>> = BTreeMap::new();
    for round in 1..=rounds {
        println!("round {round}/{rounds}");
        if compare && let Some(rate) = redis_benchmark() {
            set_rates.push(rate);
        }
        for (i, (name, make)) in targets.iter().enumerate() {
            for tasks in [1, 16, 64] {
                let rate = rt.block_on(async {
                    let prefix = format!("firefly-bench:{}", uuid::Uuid::new_v4().simple());
                    let target = Arc::new(make(prefix.clone()));
                    target.pair("warm-up").await;
                    let rate = run(target, tasks, secs).await;
                    cleanup(&url, &prefix).await;
                    rate
                });
                println!("  {name:<28} {tasks:>4} tasks {rate:>10.0} pairs/s");
                rates.entry((i, tasks)).or_default().push(rate);
            }
        }
    }

    println!();
    println!(
        "{:<28} {:>6} {:>10} {:>10} {:>10}   (claim+complete pairs/s over {rounds} rounds of {secs} s)",
        "target", "tasks", "median", "min", "max"
    );
    let mut best = (0.0, String::new());
    for ((i, tasks), mut r) in rates {
        r.sort_by(f64::total_cmp);
        let median = r[r.len() / 2];
        let name = &targets[i].0;
        println!(
            "{name:<28} {tasks:>6} {median:>10.0} {:>10.0} {:>10.0}",
            r[0],
            r[r.len() - 1]
        );
        if median > best.0 {
            best = (median, format!("{name}, {tasks} tasks"));
        }
    }
    if !set_rates.is_empty() {
        set_rates.sort_by(f64::total_cmp);
        let set = set_rates[set_rates.len() / 2];
        println!(
            "redis-benchmark SET median {set:.0} req/s (runs: {set_rates:.0?}); best median {:.0} pairs/s ({}) = {:.2} x SET in pairs, {:.2} x in commands",
            best.0,
            best.1,
            best.0 / set,
            2.0 * best.0 / set
        );
    }
}

fn targets(url: &str) -> Vec<(String, MakeTarget)> {
    let mut targets: Vec<(String, MakeTarget)> = Vec::new();
    for pool_size in [1, 2, 4] {
        let url = url.to_owned();
        targets.push((
            format!("RedisStore pool_size={pool_size}"),
            Box::new(move |prefix| {
                let mut config = RedisConfig::from_url(url.clone());
                config.pool_size = pool_size;
                config.key_prefix = prefix;
                Target::Store(RedisStore::new(config).unwrap())
            }),
        ));
    }
    let naive_url = url.to_owned();
    targets.push((
        "naive pool.get() max=16".into(),
        Box::new(move |prefix| {
            let pool = deadpool_redis::Config::from_url(naive_url.clone())
                .builder()
                .unwrap()
                .max_size(16)
                .runtime(Runtime::Tokio1)
                .build()
                .unwrap();
            Target::Naive(Naive {
                pool,
                claim: redis::Script::new(
                    "if redis.call('EXISTS', KEYS[2]) == 1 then return {2} end \
                     if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {1} end \
                     return {0, redis.call('PTTL', KEYS[1])}",
                ),
                complete: redis::Script::new(
                    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end \
                     redis.call('SET', KEYS[2], '1', 'PX', ARGV[2]) \
                     redis.call('DEL', KEYS[1]) return 1",
                ),
                prefix,
            })
        }),
    ));
    targets
}
