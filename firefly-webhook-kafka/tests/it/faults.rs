//! Broker failure against a PRIVATE broker instance on its own port (the shared one is never
//! stopped).

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use firefly_webhook::Publisher;
use firefly_webhook_kafka::{KafkaConfig, KafkaPublisher};

use crate::common::{event, unique};

/// A broker process that is killed when dropped, whatever happens in the test.
struct PrivateBroker {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateBroker {
    fn binary() -> PathBuf {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka-broker");
        let out = Command::new(script)
            .arg("path")
            .output()
            .expect("scripts/kafka-broker path");
        assert!(out.status.success(), "kafka-broker path failed");
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn start_on(port: u16) -> Self {
        let dir = std::env::temp_dir().join(unique("kafka-private"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut broker = Self {
            port,
            dir,
            child: None,
        };
        broker.start();
        broker
    }

    fn start(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("broker.log"))
            .unwrap();
        // The broker reads ./.env and these variables: run it from an empty folder without them.
        let child = Command::new(Self::binary())
            .current_dir(&self.dir)
            .env_remove("STORAGE_ENGINE")
            .env_remove("LISTENER_URL")
            .env_remove("ADVERTISED_LISTENER_URL")
            .env_remove("CLUSTER_ID")
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start private broker");
        self.child = Some(child);
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("private broker did not listen on {}", self.port);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "private broker log: {}",
                self.dir.join("broker.log").display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs kafka on 127.0.0.1:9092; run scripts/test"]
async fn broker_down_fails_fast_and_publishing_recovers_after_restart() {
    crate::common::trace();
    let mut broker = PrivateBroker::start_on(PrivateBroker::free_port());
    let mut config = KafkaConfig::from_brokers(broker.brokers());
    config.delivery_timeout = Duration::from_secs(3);
    config.partitions = 1;
    if let Ok(debug) = std::env::var("KAFKA_DEBUG") {
        config = config.set("debug", debug);
    }
    let publisher = std::sync::Arc::new(KafkaPublisher::new(config).unwrap());
    let topic = unique("down");
    let t = topic.clone();
    let ingest = firefly_webhook::IngestService::new(std::sync::Arc::clone(&publisher))
        .publish_timeout(Duration::from_secs(5))
        .routing(firefly_webhook::Routing::custom(move |_| t.clone()));
    let webhook = || crate::ingest::post(firefly_webhook::Bytes::from_static(b"{}"));
    let outer = Duration::from_secs(30);

    tokio::time::timeout(outer, publisher.publish(&topic, event("github")))
        .await
        .unwrap()
        .unwrap();

    broker.stop();
    let err = tokio::time::timeout(outer, publisher.publish(&topic, event("github")))
        .await
        .expect("publish must fail within the delivery timeout, not hang")
        .unwrap_err();
    assert!(err.is_retryable(), "a 503 kind of error: {err:?}");
    assert!(publisher.health().await.is_err());
    // What the provider sees meanwhile: 503 with Retry-After, never 202.
    let (status, headers, _) = tokio::time::timeout(outer, crate::ingest::call(&ingest, webhook()))
        .await
        .expect("the gateway answers within its publish timeout");
    assert_eq!(
        status,
        firefly_webhook::http::StatusCode::SERVICE_UNAVAILABLE
    );
    assert!(headers.contains_key("retry-after"));

    broker.start();
    let recovered = tokio::time::timeout(Duration::from_secs(90), async {
        loop {
            match publisher.publish(&topic, event("github")).await {
                Ok(()) => return,
                Err(err) => {
                    eprintln!("not yet: {err}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    })
    .await;
    assert!(
        recovered.is_ok(),
        "publishing recovers with the same publisher"
    );
    publisher.health().await.unwrap();
    // The same gateway accepts webhooks again without a restart.
    let (status, _, receipt) = crate::ingest::call(&ingest, webhook()).await;
    assert_eq!(
        status,
        firefly_webhook::http::StatusCode::ACCEPTED,
        "{receipt}"
    );
}
