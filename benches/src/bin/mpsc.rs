//! The hand-off ceiling: a bare axum handler that reads the body, hands it to a task through a
//! bounded tokio `mpsc` channel (the task drops it) and answers `202`. What any in-process
//! pipeline costs at least: the bare handler plus one channel send, one wake-up and one task.
//! Listens on `FIREFLY_LISTEN` (default `127.0.0.1:8080`).

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use tokio::sync::mpsc;

/// The same allocator as the gateway, so that the comparison is of the code, not of the
/// allocators.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn accept(State(tx): State<mpsc::Sender<Bytes>>, body: Bytes) -> impl IntoResponse {
    let size = body.len();
    if tx.send(body).await.is_err() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/json")],
            String::new(),
        );
    }
    (
        StatusCode::ACCEPTED,
        [(header::CONTENT_TYPE, "application/json")],
        format!(r#"{{"status":"accepted","payloadSize":{size}}}"#),
    )
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listen = std::env::var("FIREFLY_LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let (tx, mut rx) = mpsc::channel::<Bytes>(10_000);
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let app = Router::new()
        .route("/api/v1/webhook/{provider}", post(accept))
        .with_state(tx);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    eprintln!("mpsc listening on {listen}");
    axum::serve(listener, app).await
}
