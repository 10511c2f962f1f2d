//! A private Kafka-protocol broker on a free loopback port, for tests that stop brokers or put
//! something in front of them (the shared one on 9092 is never stopped).

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use crate::common::unique;

/// A free loopback port.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn wait_listening(port: u16, what: &str) {
    for _ in 0..200 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on {port}");
}

/// A temporary folder, removed on drop unless the test failed (its logs are kept then).
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(unique(prefix));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept for inspection: {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A broker process that is killed when dropped, whatever happens in the test.
pub(crate) struct PrivateBroker {
    port: u16,
    advertised: u16,
    child: Option<Child>,
    // Last: removed after the process is gone.
    dir: TempDir,
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

    /// A broker on a free port.
    pub(crate) fn start() -> Self {
        let port = free_port();
        Self::start_advertising(port, port)
    }

    /// A broker listening on `port` that tells clients to connect to `advertised` (a TLS
    /// terminator in front of it, say).
    pub(crate) fn start_advertising(port: u16, advertised: u16) -> Self {
        let mut broker = Self {
            port,
            advertised,
            child: None,
            dir: TempDir::new("kafka-private"),
        };
        broker.start_again();
        broker
    }

    /// Starts the broker (again) on the same port; in-memory storage starts empty.
    pub(crate) fn start_again(&mut self) {
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!("tcp://127.0.0.1:{}", self.advertised);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.0.join("broker.log"))
            .unwrap();
        // The broker reads ./.env and these variables: run it from an empty folder without them.
        let child = Command::new(Self::binary())
            .current_dir(&self.dir.0)
            .env_remove("STORAGE_ENGINE")
            .env_remove("LISTENER_URL")
            .env_remove("ADVERTISED_LISTENER_URL")
            .env_remove("CLUSTER_ID")
            .args(["broker", "--listener-url", &listener])
            .args(["--advertised-listener-url", &advertised])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start private broker");
        self.child = Some(child);
        wait_listening(self.port, "private broker");
    }

    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `bootstrap.servers` for this broker.
    pub(crate) fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.advertised)
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.stop();
    }
}
