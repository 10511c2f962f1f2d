//! The `MemoryStore` reference semantics, on Redis: fencing, release, awkward keys.

use std::time::Duration;

use firefly_webhook::{Claim, FencingToken, IdempotencyStore, StoreError};
use firefly_webhook_redis::redis::AsyncCommands;
use sha2::{Digest, Sha256};

use firefly_webhook_redis::redis;

use crate::common::{
    DONE, LOCK, PrivateRedis, URL, cleanup, connection, key, prefix, store, wait_gone,
};

#[tokio::test]
#[ignore = "needs redis on 127.0.0.1:6379; run scripts/test"]
async fn claim_complete_then_completed() {
    let prefix = prefix();
    let store = store(&prefix);
    let Claim::Acquired(token) = store.claim("k", LOCK).await.unwrap() else {
        panic!("first claim must acquire");
    };
    assert!(matches!(
        store.claim("k", LOCK).await.unwrap(),
        Claim::InProgress {
            retry_after: Some(_)
        }
    ));
    store.complete("k", &token, DONE).await.unwrap();
    assert_eq!(store.claim("k", LOCK).await.unwrap(), Claim::Completed);
    // A second complete finds no lock: fenced, like the memory store.
    assert!(matches!(
        store.complete("k", &token, DONE).await,
        Err(StoreError::Fenced)
    ));
    cleanup(&prefix).await;
}

#[tokio::test]
#[ignore = "needs redis on 127.0.0.1:6379; run scripts/test"]
async fn expired_lock_is_taken_over_and_the_stale_owner_is_fenced() {
    let prefix = prefix();
    let store = store(&prefix);
    let Claim::Acquired(stale) = store.claim("k", Duration::from_millis(100)).await.unwrap() else {
        panic!("first claim must acquire");
    };
    // The owner "crashes": it never completes, and its lock runs out.
    assert!(wait_gone(URL, &key(&prefix, "processing", "k")).await);
    assert!(
        matches!(
            store.complete("k", &stale, DONE).await,
            Err(StoreError::Fenced)
        ),
        "an expired lock cannot be completed"
    );

    let Claim::Acquired(fresh) = store.claim("k", LOCK).await.unwrap() else {
        panic!("an expired lock must be claimable");
    };
    assert_ne!(stale, fresh);
    assert!(matches!(
        store.complete("k", &stale, DONE).await,
        Err(StoreError::Fenced)
    ));
    assert!(matches!(
        store.release("k", &stale).await,
        Err(StoreError::Fenced)
    ));
    // The stale owner's attempts left the new owner's lock alone.
    let mut conn = connection(URL).await;
    let owner: String = conn.get(key(&prefix, "processing", "k")).await.unwrap();
    assert_eq!(owner, fresh.as_str());

    store.complete("k", &fresh, DONE).await.unwrap();
    assert_eq!(store.claim("k", LOCK).await.unwrap(), Claim::Completed);
    cleanup(&prefix).await;
}

#[tokio::test]
#[ignore = "needs redis on 127.0.0.1:6379; run scripts/test"]
async fn release_lets_the_next_claim_acquire() {
    let prefix = prefix();
    let store = store(&prefix);
    let Claim::Acquired(token) = store.claim("k", LOCK).await.unwrap() else {
        panic!()
    };
    assert!(matches!(
        store.release("k", &FencingToken::random()).await,
        Err(StoreError::Fenced)
    ));
    store.release("k", &token).await.unwrap();
    assert!(matches!(
        store.release("k", &token).await,
        Err(StoreError::Fenced)
    ));
    assert!(matches!(
        store.claim("k", LOCK).await.unwrap(),
        Claim::Acquired(_)
    ));
    assert!(matches!(
        store.complete("never-claimed", &token, DONE).await,
        Err(StoreError::Fenced)
    ));
    cleanup(&prefix).await;
}

#[tokio::test]
#[ignore = "needs redis on 127.0.0.1:6379; run scripts/test"]
async fn awkward_keys_keep_a_well_formed_hash_tag() {
    let prefix = prefix();
    let store = store(&prefix);
    let long = "x".repeat(500);
    let mut conn = connection(URL).await;
    for k in [
        "",
        "a{b}c",
        "}{",
        "sha256:abc",
        long.as_str(),
        "stripe:evt_1 ünïcode",
    ] {
        let Claim::Acquired(token) = store.claim(k, LOCK).await.unwrap() else {
            panic!("{k:?} must acquire");
        };
        let processing = key(&prefix, "processing", k);
        // One `{` and one `}`, the tag at the end: all three keys hash to one cluster slot.
        assert_eq!(processing.matches('{').count(), 1, "{processing}");
        assert_eq!(processing.matches('}').count(), 1, "{processing}");
        assert!(processing.ends_with('}'));
        let owner: String = conn.get(&processing).await.unwrap();
        assert_eq!(owner, token.as_str());
        store.complete(k, &token, DONE).await.unwrap();
        assert_eq!(store.claim(k, LOCK).await.unwrap(), Claim::Completed);
    }
    // A key that looks like the hash of "a{b}c" is hashed again, so it does not collide.
    let looks_hashed = format!("sha256:{:x}", Sha256::digest(b"a{b}c"));
    assert!(matches!(
        store.claim(&looks_hashed, LOCK).await.unwrap(),
        Claim::Acquired(_)
    ));
    cleanup(&prefix).await;
}

#[tokio::test]
#[ignore = "needs redis on 127.0.0.1:6379; run scripts/test"]
async fn an_events_keys_share_one_cluster_slot() {
    // A private cluster-enabled node answers CLUSTER KEYSLOT (a standalone server refuses it).
    let dir = std::env::temp_dir().join(format!("firefly-redis-{}", uuid::Uuid::new_v4().simple()));
    let server = PrivateRedis::cluster_node(&dir).await;
    let mut conn = connection(&server.url()).await;
    let long = "y".repeat(300);
    let mut slots = std::collections::HashSet::new();
    for k in [
        "stripe:evt_1",
        "",
        "a{b}c",
        "}{",
        long.as_str(),
        "github:0f1e",
    ] {
        let slot = |name: String| {
            let mut conn = conn.clone();
            async move {
                let slot: u16 = redis::cmd("CLUSTER")
                    .arg("KEYSLOT")
                    .arg(name)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                slot
            }
        };
        let processing = slot(key("firefly:webhooks", "processing", k)).await;
        assert_eq!(
            processing,
            slot(key("firefly:webhooks", "processed", k)).await,
            "{k:?}"
        );
        assert_eq!(
            processing,
            slot(key("firefly:webhooks", "failures", k)).await,
            "{k:?}"
        );
        slots.insert(processing);
    }
    // Different events spread over different slots.
    assert!(slots.len() > 1);
    let _: () = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
