//! The baseline: a bare axum handler that reads the whole body and answers `202` with a small
//! JSON document. Listens on `FIREFLY_LISTEN` (default `127.0.0.1:8080`).

use axum::Router;
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;

/// The same allocator as the gateway, so that the comparison is of the code, not of the
/// allocators.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn accept(body: Bytes) -> impl IntoResponse {
    (
        StatusCode::ACCEPTED,
        [(header::CONTENT_TYPE, "application/json")],
        format!(r#"{{"status":"accepted","payloadSize":{}}}"#, body.len()),
    )
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listen = std::env::var("FIREFLY_LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let app = Router::new().route("/api/v1/webhook/{provider}", post(accept));
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    eprintln!("bare listening on {listen}");
    axum::serve(listener, app).await
}
