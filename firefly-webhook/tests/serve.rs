//! `serve::Server` over real sockets: timeouts, the connection cap, peer addresses, shutdown.
//!
//! Deadlines here are generous upper bounds (a slow CI machine must not fail them); what is
//! checked is that a connection ends, not when exactly.
#![cfg(feature = "serve")]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::routing::{get, post};
use firefly_webhook::ingest::PeerAddr;
use firefly_webhook::serve::Server;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Far beyond any limit under test: a test that waits this long has failed.
const PATIENCE: Duration = Duration::from_secs(10);
const GET: &[u8] = b"GET / HTTP/1.1\r\nhost: test\r\n\r\n";

fn app() -> Router {
    Router::new()
        .route("/", get(|| async { "hello" }))
        .route("/echo", post(|body: Bytes| async move { body }))
}

/// A route at `/` that reports on the receiver when a request reached it, then answers "done"
/// after `hold`, or never.
fn entered(hold: Option<Duration>) -> (Router, mpsc::Receiver<()>) {
    let (tx, rx) = mpsc::channel(8);
    let app = Router::new().route(
        "/",
        get(move || {
            let tx = tx.clone();
            async move {
                let _ = tx.send(()).await;
                match hold {
                    Some(hold) => tokio::time::sleep(hold).await,
                    None => std::future::pending().await,
                }
                "done"
            }
        }),
    );
    (app, rx)
}

struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Running {
    /// Fires the shutdown signal and waits (at most [`PATIENCE`]) for `serve_until` to return.
    async fn shutdown(mut self) -> Duration {
        let started = Instant::now();
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(PATIENCE, &mut self.task)
            .await
            .expect("serve_until did not return")
            .unwrap();
        started.elapsed()
    }
}

async fn start(server: impl FnOnce(Server) -> Server, app: Router) -> Running {
    let server = server(Server::new(TcpListener::bind("127.0.0.1:0").await.unwrap()));
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve_until(app, async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        stop: Some(stop),
        task,
    }
}

/// Reads until the server closes the connection; panics if it does not within [`PATIENCE`].
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut read = Vec::new();
    let outcome = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut read)).await;
    let Ok(result) = outcome else {
        panic!(
            "the server kept the connection open; read so far: {:?}",
            String::from_utf8_lossy(&read)
        )
    };
    // A reset counts as closed too.
    let _ = result;
    read
}

/// Reads one response head and body (`content-length` framed).
async fn read_response(stream: &mut TcpStream) -> String {
    let mut read = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(PATIENCE, async {
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&read));
            read.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&read);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |v| v.parse::<usize>().unwrap());
                if body.len() >= len {
                    return;
                }
            }
        }
    })
    .await
    .expect("no response");
    String::from_utf8(read).unwrap()
}

#[tokio::test]
async fn serves_http1() {
    let server = start(|s| s, app()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(GET).await.unwrap();
    let response = read_response(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("hello"), "{response}");
    server.shutdown().await;
}

#[tokio::test]
async fn serves_http2_with_prior_knowledge() {
    let server = start(|s| s, app()).await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let request = Request::get(format!("http://{}/", server.addr))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response: Response<_> = send.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "hello");
    drop(send);
    let _ = conn.await;
    server.shutdown().await;
}

#[tokio::test]
async fn stuck_requests_get_408_over_http1_and_http2() {
    let (app, _entered) = entered(None);
    let server = start(|s| s.request_timeout(Duration::from_millis(300)), app).await;
    // HTTP/1: the connection's timer ends the request.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(GET).await.unwrap();
    let response = read_response(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(
        response.contains(r#""code":"request_timeout""#),
        "{response}"
    );
    // HTTP/2: each stream's own timer.
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    for _ in 0..2 {
        let request = Request::get(format!("http://{}/", server.addr))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response: Response<_> = send.send_request(request).await.unwrap();
        assert_eq!(response.status(), 408);
    }
    drop(send);
    let _ = conn.await;
    server.shutdown().await;
}

#[tokio::test]
async fn http2_streams_beyond_the_limit_wait() {
    let (app, mut entered) = entered(None);
    let server = start(
        |s| {
            s.max_concurrent_streams(1)
                .graceful_shutdown_timeout(Duration::from_millis(300))
        },
        app,
    )
    .await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let request = || {
        let mut send = send.clone();
        let request = Request::get(format!("http://{}/", server.addr))
            .body(Full::new(Bytes::new()))
            .unwrap();
        tokio::spawn(async move { send.send_request(request).await })
    };
    let first = request();
    entered.recv().await.unwrap();
    let _second = request();
    let early = tokio::time::timeout(Duration::from_millis(300), entered.recv()).await;
    assert!(early.is_err(), "a second stream ran beside the first");
    // Cancelling the first (RST_STREAM) frees its slot.
    first.abort();
    tokio::time::timeout(PATIENCE, entered.recv())
        .await
        .expect("the second stream never ran")
        .unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let server = start(|s| s.header_read_timeout(Duration::from_millis(300)), app()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nhost: test\r\n")
        .await
        .unwrap();
    // ...and the next header line never comes.
    let answer = read_until_closed(&mut stream).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_trickled_head_is_cut_off_at_the_header_timeout() {
    let server = start(
        |s| {
            s.header_read_timeout(Duration::from_millis(300))
                .keep_alive_timeout(Duration::from_secs(30))
        },
        app(),
    )
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(b"POST /echo HTTP/1.1\r\n").await.unwrap();
    // One header line every 50 ms, for far longer than the timeout: bytes keep coming, the
    // head never completes.
    let mut cut = false;
    for i in 0..200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if stream
            .write_all(format!("x-line-{i}: y\r\n").as_bytes())
            .await
            .is_err()
        {
            cut = true;
            break;
        }
    }
    assert!(cut, "a head trickling in for 10 s was never cut off");
    server.shutdown().await;
}

#[tokio::test]
async fn a_slow_head_after_a_request_is_cut_off() {
    let server = start(
        |s| {
            s.header_read_timeout(Duration::from_millis(300))
                .keep_alive_timeout(Duration::from_secs(30))
        },
        app(),
    )
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(GET).await.unwrap();
    let response = read_response(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // The next request's head starts and never ends.
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nhost: test\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn silent_connections_are_cut_off() {
    let server = start(|s| s.header_read_timeout(Duration::from_millis(300)), app()).await;
    // Nothing at all: not even enough bytes to tell HTTP/1 from HTTP/2.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    read_until_closed(&mut silent).await;
    // A partial HTTP/2 preface.
    let mut partial = TcpStream::connect(server.addr).await.unwrap();
    partial.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    read_until_closed(&mut partial).await;
    server.shutdown().await;
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let server = start(
        |s| {
            s.header_read_timeout(Duration::from_secs(30))
                .keep_alive_timeout(Duration::from_millis(300))
        },
        app(),
    )
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(GET).await.unwrap();
    let response = read_response(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(read_until_closed(&mut stream).await.is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn idle_http1_connections_also_close_at_the_header_timeout() {
    // Hyper's header timer starts as soon as a keep-alive connection waits for a request.
    let server = start(
        |s| {
            s.header_read_timeout(Duration::from_millis(300))
                .keep_alive_timeout(Duration::from_secs(30))
        },
        app(),
    )
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(GET).await.unwrap();
    let response = read_response(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    read_until_closed(&mut stream).await;
    server.shutdown().await;
}

/// Sends `request` on a new connection and reads the answer until the server closes it.
async fn exchange(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may stop reading and answer before the whole head is written.
    let _ = stream.write_all(request.as_bytes()).await;
    String::from_utf8_lossy(&read_until_closed(&mut stream).await).into_owned()
}

#[tokio::test]
async fn oversized_heads_get_431() {
    let server = start(|s| s.max_header_bytes(8 * 1024).max_headers(10), app()).await;

    let value = "x".repeat(16 * 1024);
    let big = format!("GET / HTTP/1.1\r\nhost: test\r\nx-big: {value}\r\n\r\n");
    let answer = exchange(server.addr, &big).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    let headers = "x-many: 1\r\n".repeat(20);
    let many = format!("GET / HTTP/1.1\r\nhost: test\r\n{headers}\r\n");
    let answer = exchange(server.addr, &many).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    server.shutdown().await;
}

#[tokio::test]
async fn the_default_header_count_cap_is_100() {
    let server = start(|s| s, app()).await;
    // `host` and 99 more: the most the default allows.
    let at_cap = format!(
        "GET / HTTP/1.1\r\nhost: test\r\n{}connection: close\r\n\r\n",
        "x-many: 1\r\n".repeat(98)
    );
    let answer = exchange(server.addr, &at_cap).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let over = format!(
        "GET / HTTP/1.1\r\nhost: test\r\n{}\r\n",
        "x-many: 1\r\n".repeat(100)
    );
    let answer = exchange(server.addr, &over).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    server.shutdown().await;
}

#[tokio::test]
async fn slow_bodies_get_408_and_the_connection_closes() {
    let server = start(|s| s.request_timeout(Duration::from_millis(300)), app()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nhost: test\r\ncontent-length: 100\r\n\r\nx")
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"request_timeout""#), "{answer}");
    server.shutdown().await;
}

#[tokio::test]
async fn requests_carry_the_peer_address() {
    let seen = Router::new().route(
        "/",
        get(|req: Request<axum::body::Body>| async move {
            let peer = req.extensions().get::<PeerAddr>().map(|p| p.0);
            #[cfg(feature = "axum")]
            {
                let connect_info = req
                    .extensions()
                    .get::<axum::extract::ConnectInfo<SocketAddr>>()
                    .map(|c| c.0);
                assert_eq!(connect_info, peer);
            }
            peer.map(|p| p.to_string()).unwrap_or_default()
        }),
    );
    let server = start(|s| s, seen).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let local = stream.local_addr().unwrap();
    stream.write_all(GET).await.unwrap();
    let response = read_response(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with(&local.to_string()), "{response}");
    server.shutdown().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_until_one_closes() {
    let server = start(
        |s| {
            s.max_connections(2)
                .header_read_timeout(Duration::from_secs(30))
        },
        app(),
    )
    .await;
    let mut held = vec![
        TcpStream::connect(server.addr).await.unwrap(),
        TcpStream::connect(server.addr).await.unwrap(),
    ];
    // The kernel completes the handshake; the server does not take the connection yet.
    let mut waiting = TcpStream::connect(server.addr).await.unwrap();
    waiting.write_all(GET).await.unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(300), waiting.read(&mut byte)).await;
    assert!(early.is_err(), "answered beyond the limit: {early:?}");

    // A flood on top neither crashes the server nor gets ahead of the queue for good.
    let mut flood = Vec::new();
    for _ in 0..50 {
        flood.push(TcpStream::connect(server.addr).await.unwrap());
    }
    drop(flood);

    held.pop();
    let response = read_response(&mut waiting).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    drop(waiting);
    drop(held);

    // And a fresh client is served once the others are gone.
    let mut fresh = TcpStream::connect(server.addr).await.unwrap();
    fresh.write_all(GET).await.unwrap();
    let response = read_response(&mut fresh).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    server.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_is_bounded_with_a_stuck_request() {
    let (app, mut entered) = entered(None);
    let server = start(
        |s| {
            s.graceful_shutdown_timeout(Duration::from_millis(300))
                .request_timeout(Duration::from_secs(3600))
        },
        app,
    )
    .await;
    let mut stuck = TcpStream::connect(server.addr).await.unwrap();
    stuck.write_all(GET).await.unwrap();
    entered.recv().await.unwrap();

    let took = server.shutdown().await;
    assert!(took < PATIENCE, "{took:?}");
    // The stuck connection was dropped without an answer.
    assert!(read_until_closed(&mut stuck).await.is_empty());
}

#[tokio::test]
async fn shutdown_lets_requests_in_progress_finish() {
    let (app, mut entered) = entered(Some(Duration::from_millis(300)));
    let server = start(|s| s, app).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(GET).await.unwrap();
    entered.recv().await.unwrap();
    let shutdown = tokio::spawn(server.shutdown());
    let response = read_response(&mut stream).await;
    assert!(response.ends_with("done"), "{response}");
    shutdown.await.unwrap();
    // The connection is not kept alive past the shutdown.
    assert!(read_until_closed(&mut stream).await.is_empty());
}
