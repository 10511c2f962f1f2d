//! [`Server`]: serve a tower `Service` (an axum `Router`, an [`IngestService`]) over HTTP/1 and
//! HTTP/2 with every limit a public endpoint needs switched on.
//!
//! `axum::serve` builds hyper without a timer, so a client that sends its headers one line at a
//! time, or its body one byte at a time, keeps a connection forever, and nothing caps how many
//! connections are open. [`Server`] enforces, with these defaults:
//!
//! | limit | default | past it |
//! | --- | --- | --- |
//! | [`header_read_timeout`](Server::header_read_timeout) | 10 s | the connection is closed |
//! | [`keep_alive_timeout`](Server::keep_alive_timeout) | 60 s | the idle connection is closed |
//! | [`request_timeout`](Server::request_timeout) | 60 s | 408 `request_timeout` (JSON) |
//! | [`max_connections`](Server::max_connections) | 10,000 | new connections wait in the accept backlog |
//! | [`max_concurrent_streams`](Server::max_concurrent_streams) | 100 | HTTP/2 clients queue their streams |
//! | [`max_header_bytes`](Server::max_header_bytes) | 16 KiB | 431, or an HTTP/2 stream reset |
//! | [`max_headers`](Server::max_headers) | 100 | 431 (HTTP/1) |
//! | [`graceful_shutdown_timeout`](Server::graceful_shutdown_timeout) | 30 s | open connections are dropped |
//!
//! HTTP/2 connections are also PINGed after 20 s of silence and closed when the PING goes
//! unanswered for 20 s, so a vanished peer does not hold its streams. Keep
//! [`max_connections`](Server::max_connections) below the process's file-descriptor limit
//! (`ulimit -n`): past that, accepting pauses until descriptors free up. The request timeout
//! bounds the whole request, body included, whatever the service; [`IngestService`] also has
//! its own, shorter [body timeout](crate::IngestService::body_timeout).
//!
//! Each request carries the peer address as [`PeerAddr`] and, with the `axum` feature, as
//! axum's `ConnectInfo<SocketAddr>` (what `into_make_service_with_connect_info` gives), so
//! [`IngestService`] sees the client address either way.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use firefly_webhook::{IngestLayer, memory::MemoryBroker, serve::Server};
//! use std::time::Duration;
//!
//! # async fn run() -> std::io::Result<()> {
//! let broker = MemoryBroker::new(10_000);
//! let app = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(IngestLayer::new(broker.publisher()));
//!
//! Server::bind("127.0.0.1:8080")
//!     .await?
//!     .request_timeout(Duration::from_secs(30))
//!     .serve_until(app, async {
//!         let _ = tokio::signal::ctrl_c().await;
//!     })
//!     .await;
//! # Ok(())
//! # }
//! ```
//!
//! [`IngestService`]: crate::IngestService

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http::{Request, Response, StatusCode, Version};
use http_body::Body;
use http_body_util::Either;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tower::timeout::error::Elapsed;
use tower::{Service, ServiceBuilder};

use crate::BoxError;
use crate::ingest::PeerAddr;
use crate::json::{JsonBody, json_response};

/// HTTP/2 PING after this much silence, so a vanished peer is noticed.
const PING_INTERVAL: Duration = Duration::from_secs(20);
/// How long an HTTP/2 PING may go unanswered before the connection is closed.
const PING_TIMEOUT: Duration = Duration::from_secs(20);
/// The smallest HTTP/1 read buffer hyper accepts.
const MIN_H1_BUFFER: usize = 8 * 1024;
/// How long to wait before accepting again after the process ran out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
/// hyper's own cap on HTTP/1 header fields. Set explicitly, hyper sizes each request's
/// parse buffers at run time; left unset, it uses fixed inline buffers of this size.
const HYPER_MAX_HEADERS: usize = 100;

/// An HTTP/1 and HTTP/2 server that enforces header, idle and request timeouts, a connection
/// cap and a bounded graceful shutdown. See the [module docs](self) for the defaults.
#[derive(Debug)]
#[must_use = "a server does nothing until `serve` or `serve_until` is awaited"]
pub struct Server {
    listener: TcpListener,
    limits: Limits,
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    header_read_timeout: Duration,
    keep_alive_timeout: Duration,
    request_timeout: Duration,
    max_connections: usize,
    max_concurrent_streams: u32,
    max_header_bytes: usize,
    max_headers: usize,
    graceful_shutdown_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_concurrent_streams: 100,
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            graceful_shutdown_timeout: Duration::from_secs(30),
        }
    }
}

impl Server {
    /// A server accepting on `listener`, with the default limits.
    pub fn new(listener: TcpListener) -> Self {
        Self {
            listener,
            limits: Limits::default(),
        }
    }

    /// Binds a TCP listener to `addr` (`"0.0.0.0:8080"`, a `SocketAddr`, ...).
    pub async fn bind(addr: impl ToSocketAddrs) -> io::Result<Self> {
        Ok(Self::new(TcpListener::bind(addr).await?))
    }

    /// The address the server listens on (the real port when bound to port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// How long a client may take to send a request's headers (default 10 s); then the
    /// connection is closed.
    ///
    /// It runs from accepting the connection to its first request (HTTP/1 and HTTP/2), and over
    /// HTTP/1 from the end of each request to the next request's complete head, so an idle
    /// HTTP/1 connection is closed after the shorter of this and
    /// [`keep_alive_timeout`](Self::keep_alive_timeout) (as with hyper's own header timer).
    /// One timer per connection enforces it, not one per request.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.limits.header_read_timeout = timeout;
        self
    }

    /// How long a connection may stay open with no request in progress (default 60 s); then it
    /// is closed gracefully (HTTP/2: `GOAWAY`). A response body still streaming after its
    /// handler returned is finished first.
    pub fn keep_alive_timeout(mut self, timeout: Duration) -> Self {
        self.limits.keep_alive_timeout = timeout;
        self
    }

    /// How long one request may take from its headers to its response's headers (default
    /// 60 s), reading the request body included. Past it the service's future is dropped and
    /// the client gets `408 Request Timeout` with
    /// `{"status":"rejected","code":"request_timeout","message":…}`; over HTTP/1 a request body
    /// left unread closes the connection after the answer. A response body streaming after its
    /// headers is not bounded by it.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.limits.request_timeout = timeout;
        self
    }

    /// The most connections open at once (default 10,000; at least 1). At the limit the server
    /// stops accepting: new connections wait in the operating system's accept backlog until an
    /// open one closes, and are then served in order. The server neither drops nor answers
    /// them early; once the backlog itself is full, the operating system decides (Linux
    /// ignores the handshake and the client retries).
    pub fn max_connections(mut self, max: usize) -> Self {
        self.limits.max_connections = max.clamp(1, Semaphore::MAX_PERMITS);
        self
    }

    /// The most HTTP/2 streams (requests) one connection may have open at once (default 100;
    /// hyper's own default is 200).
    pub fn max_concurrent_streams(mut self, max: u32) -> Self {
        self.limits.max_concurrent_streams = max;
        self
    }

    /// The largest request head in bytes (default 16 KiB): HTTP/2's `max_header_list_size`,
    /// and HTTP/1's read buffer (at least 8 KiB), which bounds the request line and headers.
    /// Larger heads get `431` (HTTP/1) or a stream reset (HTTP/2).
    pub fn max_header_bytes(mut self, max: usize) -> Self {
        self.limits.max_header_bytes = max;
        self
    }

    /// The most header fields in one HTTP/1 request (default 100); more get `431`. HTTP/2 is
    /// bounded by [`max_header_bytes`](Self::max_header_bytes).
    pub fn max_headers(mut self, max: usize) -> Self {
        self.limits.max_headers = max;
        self
    }

    /// How long [`serve_until`](Self::serve_until) waits, once its signal fired, for requests
    /// in progress (default 30 s); then the connections still open are dropped.
    pub fn graceful_shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.limits.graceful_shutdown_timeout = timeout;
        self
    }

    /// Serves `service` until the process ends.
    pub async fn serve<S, B>(self, service: S)
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.serve_until(service, std::future::pending()).await;
    }

    /// Serves `service` until `signal` completes; then stops accepting, lets requests in
    /// progress finish (idle connections close at once, HTTP/2 ones get `GOAWAY`) for at most
    /// [`graceful_shutdown_timeout`](Self::graceful_shutdown_timeout), drops what is left and
    /// returns.
    ///
    /// Accept errors never end it: a connection that failed before it was accepted is skipped,
    /// and running out of file descriptors pauses accepting briefly.
    pub async fn serve_until<S, B, F>(self, service: S, signal: F)
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
        F: Future<Output = ()> + Send,
    {
        let Self { listener, limits } = self;
        let builder = Arc::new(builder(&limits));
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        let (closing, closing_rx) = watch::channel(false);
        let mut connections = JoinSet::new();
        let mut signal = std::pin::pin!(signal);

        loop {
            while connections.try_join_next().is_some() {}
            // At the limit, stop accepting: the backlog holds newcomers until a slot frees.
            #[allow(clippy::expect_used, reason = "an invariant")]
            let permit = tokio::select! {
                () = &mut signal => break,
                permit = Arc::clone(&permits).acquire_owned() => {
                    permit.expect("the connection semaphore is never closed")
                }
            };
            let accepted = tokio::select! {
                () = &mut signal => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(err) if is_connection_error(&err) => continue,
                Err(err) => {
                    tracing::error!(error = &err as &dyn std::error::Error, "accept failed");
                    tokio::select! {
                        () = &mut signal => break,
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    }
                }
            };
            connections.spawn(connection(
                Arc::clone(&builder),
                stream,
                peer,
                service.clone(),
                limits,
                closing_rx.clone(),
                permit,
            ));
        }

        drop(listener);
        let _ = closing.send(true);
        let drained = tokio::time::timeout(limits.graceful_shutdown_timeout, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                connections = connections.len(),
                "graceful shutdown timed out; dropping the open connections"
            );
            connections.shutdown().await;
        }
    }
}

fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // The head deadline is `Activity`'s (one timer per connection), not hyper's (a timer
        // allocated and registered for every request).
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes.max(MIN_H1_BUFFER));
    if limits.max_headers != HYPER_MAX_HEADERS {
        builder.http1().max_headers(limits.max_headers);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(PING_INTERVAL)
        .keep_alive_timeout(PING_TIMEOUT);
    builder
}

/// Errors about one connection that went away before it was accepted.
fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Serves one connection until it ends, goes idle or the server shuts down.
async fn connection<S, B>(
    builder: Arc<auto::Builder<TokioExecutor>>,
    stream: TcpStream,
    peer: SocketAddr,
    service: S,
    limits: Limits,
    mut closing: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    // Webhook answers are small: send them without waiting for more to coalesce.
    let _ = stream.set_nodelay(true);
    let activity = Activity::default();
    let idle = activity.idle(limits.header_read_timeout, limits.keep_alive_timeout);
    let seen = activity.clone();
    let reads = activity.clone();
    let watch = activity.clone();
    let service = ServiceBuilder::new()
        .map_request(move |mut req: Request<Incoming>| {
            seen.saw(req.version());
            req.extensions_mut().insert(PeerAddr(peer));
            #[cfg(feature = "axum")]
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            req
        })
        .map_future(move |future| {
            let busy = activity.begin();
            async move {
                let result = future.await;
                drop(busy);
                result
            }
        })
        .map_result(answer_failures::<B>)
        .timeout(limits.request_timeout)
        .service(service);

    let stream = Watched {
        io: stream,
        activity: reads,
    };
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service));
    let shutdown = async move {
        let _ = closing.wait_for(|closing| *closing).await;
    };
    // Polled only when their own timer or signal fires, not each time the connection wakes.
    let stop = async {
        tokio::select! {
            () = idle => Stop::Idle,
            () = shutdown => Stop::Shutdown,
        }
    };
    let mut conn = std::pin::pin!(conn);
    let ended = match Until::new(conn.as_mut(), stop).await {
        Ok(result) => Some(result),
        Err(Stop::Idle) if watch.read_since_touch() => {
            // Part of a request head came, not all of it in time: close at once (a graceful
            // shutdown would wait for the rest of it).
            return;
        }
        Err(Stop::Idle | Stop::Shutdown) => None,
    };
    let result = if let Some(result) = ended {
        result
    } else {
        conn.as_mut().graceful_shutdown();
        conn.await
    };
    if let Err(err) = result {
        // Clients hang up, time out and send garbage all the time.
        tracing::debug!(%peer, error = &*err as &dyn std::error::Error, "connection ended");
    }
}

/// Why a connection is being closed.
enum Stop {
    /// No request in time ([`Activity::idle`]).
    Idle,
    /// The server is shutting down.
    Shutdown,
}

/// Runs `main` until it completes (`Ok`) or `stop` does (`Err`), polling `stop` only when its
/// own waker fired: a connection wakes several times per request, and polling its idle timer
/// and the shutdown signal each time (what `select!` does) costs more than the request's
/// routing.
struct Until<M, S> {
    main: M,
    stop: Pin<Box<S>>,
    signal: Arc<Signal>,
    /// Wakes `signal`: what `stop` is polled with.
    stop_waker: Waker,
    /// The task waker last registered in `signal`.
    registered: Option<Waker>,
}

/// Set when `stop` should be polled again; wakes the task then.
#[derive(Default)]
struct Signal {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<M, S> Until<M, S> {
    fn new(main: M, stop: S) -> Self {
        let signal = Arc::new(Signal::default());
        // Poll `stop` once at the start.
        signal.woken.store(true, Ordering::Relaxed);
        Self {
            main,
            stop: Box::pin(stop),
            stop_waker: Waker::from(Arc::clone(&signal)),
            signal,
            registered: None,
        }
    }
}

impl<M, S> Future for Until<M, S>
where
    M: Future + Unpin,
    S: Future,
{
    type Output = Result<M::Output, S::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        // Cleared before `stop` is polled, and the task waker registered again after each
        // wake-up (waking takes it): a wake-up that comes meanwhile sets the flag again and
        // finds a waker.
        let woken = this.signal.woken.load(Ordering::Acquire)
            && this.signal.woken.swap(false, Ordering::AcqRel);
        if woken
            || !this
                .registered
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
        {
            this.signal.task.register(cx.waker());
            this.registered = Some(cx.waker().clone());
        }
        if woken
            && let Poll::Ready(stopped) = this
                .stop
                .as_mut()
                .poll(&mut std::task::Context::from_waker(&this.stop_waker))
        {
            return Poll::Ready(Err(stopped));
        }
        Pin::new(&mut this.main).poll(cx).map(Ok)
    }
}

/// Answers the request timeout with `408`, and a failing service with `500` (rather than
/// hyper's reaction to a service error: closing the connection without an answer).
#[allow(clippy::unnecessary_wraps, reason = "the shape `map_result` takes")]
fn answer_failures<B>(
    result: Result<Response<B>, BoxError>,
) -> Result<Response<Either<B, JsonBody>>, NotReady> {
    let (status, code, message) = match result {
        Ok(response) => return Ok(response.map(Either::Left)),
        Err(err) if err.is::<Elapsed>() => (
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request took too long",
        ),
        Err(err) => {
            tracing::error!(error = &*err as &dyn std::error::Error, "service failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "the server failed to answer",
            )
        }
    };
    let body = serde_json::json!({ "status": "rejected", "code": code, "message": message });
    Ok(json_response(status, &body).map(Either::Right))
}

/// The service failed before it was called (`poll_ready`); hyper closes the connection.
#[derive(Debug, thiserror::Error)]
#[error("the service is not ready")]
struct NotReady(#[from] BoxError);

/// The requests of one connection: a few uncontended atomic updates per request, and one
/// timer per connection (it wakes when a deadline is due, and at least every
/// `min(header_read_timeout, keep_alive_timeout)`), instead of a timer per request. It
/// enforces the head deadline and the idle timeout.
#[derive(Clone)]
struct Activity(Arc<Requests>);

#[derive(Debug)]
struct Requests {
    /// When the connection was accepted: `last` counts from here.
    opened: tokio::time::Instant,
    in_progress: AtomicUsize,
    /// Microseconds from `opened` to the latest start or end of a request; `u64::MAX` until
    /// the first request starts.
    last: AtomicU64,
    /// Whether the requests come over HTTP/2 (known from the first one).
    http2: AtomicBool,
    /// Whether bytes arrived since the latest start or end of a request (or since the
    /// connection opened): when the connection goes idle with this set, a head is half-read.
    read: AtomicBool,
}

/// One request in progress; dropping it ends it.
struct Busy(Activity);

impl Default for Activity {
    fn default() -> Self {
        Self(Arc::new(Requests {
            opened: tokio::time::Instant::now(),
            in_progress: AtomicUsize::new(0),
            last: AtomicU64::new(u64::MAX),
            http2: AtomicBool::new(false),
            read: AtomicBool::new(false),
        }))
    }
}

impl Activity {
    /// Notes the protocol of a request (the first one settles it).
    fn saw(&self, version: Version) {
        if version == Version::HTTP_2 && !self.0.http2.load(Ordering::Relaxed) {
            self.0.http2.store(true, Ordering::Relaxed);
        }
    }

    fn begin(&self) -> Busy {
        self.0.in_progress.fetch_add(1, Ordering::AcqRel);
        self.touch();
        Busy(self.clone())
    }

    /// Bytes arrived from the client.
    fn on_read(&self) {
        if !self.0.read.load(Ordering::Relaxed) {
            self.0.read.store(true, Ordering::Relaxed);
        }
    }

    /// Whether bytes arrived since the latest start or end of a request.
    fn read_since_touch(&self) -> bool {
        self.0.read.load(Ordering::Relaxed)
    }

    fn touch(&self) {
        self.0.read.store(false, Ordering::Relaxed);
        let since = self.0.opened.elapsed().as_micros();
        self.0.last.store(
            u64::try_from(since).unwrap_or(u64::MAX - 1),
            Ordering::Release,
        );
    }

    /// Completes once the connection has had no request in progress for `keep_alive`, or no
    /// first request within `head`. Over HTTP/1 the next request's head must also have
    /// arrived within `head` of the previous request's end (as hyper's own header timer
    /// would, which starts as soon as a keep-alive connection waits for a request).
    fn idle(&self, head: Duration, keep_alive: Duration) -> impl Future<Output = ()> + use<> {
        let requests = Arc::clone(&self.0);
        // The timer wakes at least this often: every deadline that appears after it was armed
        // (a request ends) is at least this far away, so none is missed.
        let step = head.min(keep_alive);
        async move {
            loop {
                let last = requests.last.load(Ordering::Acquire);
                if requests.in_progress.load(Ordering::Acquire) > 0 {
                    // Requests in progress have their own timeout: look again later.
                    tokio::time::sleep(step).await;
                    continue;
                }
                let deadline = if last == u64::MAX {
                    requests.opened + head
                } else {
                    let wait = if requests.http2.load(Ordering::Relaxed) {
                        keep_alive
                    } else {
                        keep_alive.min(head)
                    };
                    requests.opened + Duration::from_micros(last) + wait
                };
                let now = tokio::time::Instant::now();
                if now < deadline {
                    tokio::time::sleep_until(deadline.min(now + step)).await;
                    continue;
                }
                // Due, unless a request started or ended meanwhile.
                if requests.in_progress.load(Ordering::Acquire) == 0
                    && requests.last.load(Ordering::Acquire) == last
                {
                    return;
                }
            }
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.0.in_progress.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connection's socket, telling its [`Activity`] when bytes arrive.
struct Watched {
    io: TcpStream,
    activity: Activity,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.on_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
