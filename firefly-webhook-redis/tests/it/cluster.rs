//! A three-node Redis Cluster: each script stays in one slot, keys spread over the nodes.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use firefly_webhook::{Claim, IdempotencyStore, StoreError};
use firefly_webhook_redis::redis;
use firefly_webhook_redis::{RedisConfig, RedisStore};
use tokio::sync::Barrier;

use crate::common::{DONE, LOCK, PrivateRedis, connection, prefix};

async fn wait_until_ok(nodes: &[PrivateRedis]) {
    for node in nodes {
        let mut conn = connection(&node.url()).await;
        let mut ok = false;
        for _ in 0..200 {
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async(&mut conn)
                .await
                .unwrap();
            if info.contains("cluster_state:ok") {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ok, "cluster node {} did not become ready", node.port);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis on 127.0.0.1:6379; run scripts/test"]
async fn store_works_on_a_redis_cluster() {
    let dir =
        std::env::temp_dir().join(format!("firefly-cluster-{}", uuid::Uuid::new_v4().simple()));
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(PrivateRedis::cluster_node(&dir).await);
    }
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let status = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "redis-cli --cluster create failed");
    wait_until_ok(&nodes).await;

    let prefix = prefix();
    let mut config = RedisConfig::default();
    config.key_prefix.clone_from(&prefix);
    let store = RedisStore::cluster(nodes.iter().map(PrivateRedis::url), config).unwrap();
    store.ping().await.unwrap();

    let long = "z".repeat(300);
    let mut keys: Vec<String> = (0..100).map(|i| format!("github:delivery-{i}")).collect();
    keys.extend(["", "a{b}c", "}{", long.as_str()].map(str::to_owned));
    for k in &keys {
        let Claim::Acquired(token) = store.claim(k, LOCK).await.unwrap() else {
            panic!("{k:?} must acquire")
        };
        assert!(matches!(
            store.claim(k, LOCK).await.unwrap(),
            Claim::InProgress { .. }
        ));
        store.complete(k, &token, DONE).await.unwrap();
        assert_eq!(store.claim(k, LOCK).await.unwrap(), Claim::Completed);
        assert_eq!(store.record_failure(k, "boom", DONE).await.unwrap(), 1);
    }
    // Events landed on every node: the slots, not a single node, hold them.
    for node in &nodes {
        let mut conn = connection(&node.url()).await;
        let size: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
        assert!(size > 0, "node {} holds no keys", node.port);
    }

    let barrier = Arc::new(Barrier::new(16));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (store, barrier) = (store.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                store.claim("race", LOCK).await.unwrap()
            })
        })
        .collect();
    let mut acquired = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), Claim::Acquired(_)) {
            acquired += 1;
        }
    }
    assert_eq!(acquired, 1);

    // The whole cluster goes away: fail closed, within the command timeout.
    for node in &mut nodes {
        node.kill();
    }
    let err = tokio::time::timeout(Duration::from_secs(30), store.claim("after", LOCK))
        .await
        .expect("the store must answer, not hang")
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");

    drop(store);
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}
