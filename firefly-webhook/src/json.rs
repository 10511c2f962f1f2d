//! JSON responses shared by the HTTP-facing services (ingest, health).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde::Serialize;

/// The body of every JSON response this crate writes.
pub(crate) type JsonBody = Full<Bytes>;

/// A response with `status` and `body` serialised as JSON.
pub(crate) fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response<JsonBody> {
    // Receipts are ~400 bytes: one allocation instead of a chain of reallocations.
    let mut bytes = Vec::with_capacity(512);
    // Serialising these plain structs cannot fail; fall back to an empty object regardless.
    if serde_json::to_writer(&mut bytes, body).is_err() {
        bytes.clear();
        bytes.extend_from_slice(b"{}");
    }
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
