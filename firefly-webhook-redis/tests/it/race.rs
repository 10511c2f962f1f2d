//! Many workers race for one key.

use std::sync::Arc;

use firefly_webhook::{Claim, IdempotencyStore};
use tokio::sync::Barrier;

use crate::common::{DONE, LOCK, cleanup, prefix, store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis on 127.0.0.1:6379; run scripts/test"]
async fn thirty_two_tasks_one_winner() {
    let prefix = prefix();
    // Four stores stand for four worker processes, each with its own connections.
    let stores: Vec<_> = (0..4).map(|_| store(&prefix)).collect();
    let barrier = Arc::new(Barrier::new(32));
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let store = stores[i % stores.len()].clone();
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                (i, store.claim("evt_race", LOCK).await.unwrap())
            })
        })
        .collect();

    let mut winners = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            (i, Claim::Acquired(token)) => winners.push((i, token)),
            (_, Claim::InProgress { retry_after }) => {
                let left = retry_after.expect("redis knows the lock's PTTL");
                assert!(left <= LOCK);
            }
            (_, Claim::Completed) => panic!("nothing completed yet"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one claim acquires");

    let (winner, token) = winners.pop().unwrap();
    stores[winner % stores.len()]
        .complete("evt_race", &token, DONE)
        .await
        .unwrap();

    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let store = stores[i % stores.len()].clone();
            tokio::spawn(async move { store.claim("evt_race", LOCK).await.unwrap() })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), Claim::Completed);
    }
    cleanup(&prefix).await;
}
