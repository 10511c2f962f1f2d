//! One processed event costs two commands: the claim script and the complete script.
//!
//! Method: Redis 7.0 has no per-connection command counter (`CLIENT INFO` `tot-cmds` came in
//! 7.2), and `INFO commandstats` on the shared server also counts the tests running in
//! parallel. So this test starts a private redis-server that nothing else talks to, warms the
//! store up (connection opened, scripts cached), and compares `INFO commandstats` before and
//! after one claim + complete. Commands run inside a script are counted too, so the delta must
//! be exactly: 2 × EVALSHA (the only commands the store sent), the scripts' own EXISTS, SET,
//! GET, SET, DEL, and the observer's first INFO. Any extra command the store sent (a pool
//! PING, a SCRIPT LOAD, a plain GET) would show up in the delta.

use std::collections::BTreeMap;

use firefly_webhook::{Claim, IdempotencyStore};
use firefly_webhook_redis::redis::{self, aio::MultiplexedConnection};
use firefly_webhook_redis::{RedisConfig, RedisStore};

use crate::common::{DONE, LOCK, PrivateRedis, connection};

async fn commandstats(conn: &mut MultiplexedConnection) -> BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

#[tokio::test]
#[ignore = "needs redis on 127.0.0.1:6379; run scripts/test"]
async fn claim_and_complete_cost_two_commands() {
    let server = PrivateRedis::start().await;
    let mut config = RedisConfig::from_url(server.url());
    config.pool_size = 1;
    let store = RedisStore::new(config).unwrap();

    // Warm up: opens the connection and caches both scripts (EVALSHA misses, EVAL loads).
    let Claim::Acquired(token) = store.claim("warm-up", LOCK).await.unwrap() else {
        panic!()
    };
    store.complete("warm-up", &token, DONE).await.unwrap();

    let mut observer = connection(&server.url()).await;
    let before = commandstats(&mut observer).await;
    let Claim::Acquired(token) = store.claim("event", LOCK).await.unwrap() else {
        panic!()
    };
    store.complete("event", &token, DONE).await.unwrap();
    let after = commandstats(&mut observer).await;

    let delta: BTreeMap<String, u64> = after
        .iter()
        .map(|(name, calls)| (name.clone(), calls - before.get(name).copied().unwrap_or(0)))
        .filter(|(_, d)| *d > 0)
        .collect();
    let expected: BTreeMap<String, u64> = [
        ("evalsha", 2), // claim + complete: the two round trips
        ("exists", 1),  // claim script: processed?
        ("set", 2),     // claim script: SET NX PX; complete script: processed marker
        ("get", 1),     // complete script: token check
        ("del", 1),     // complete script: drop the lock
        ("info", 1),    // the observer's first snapshot
    ]
    .into_iter()
    .map(|(n, c)| (n.to_owned(), c))
    .collect();
    assert_eq!(delta, expected);
}
