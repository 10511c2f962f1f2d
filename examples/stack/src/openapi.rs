//! The gateway's OpenAPI 3.1 document, assembled from what the libraries generate.

use firefly_webhook::IngestService;
use firefly_webhook::http::StatusCode;
use utoipa::openapi::path::{HttpMethod, OperationBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{
    ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathItem, PathsBuilder, ResponseBuilder,
};

use crate::telemetry::{LIVE_PATH, METRICS_PATH, OPENAPI_PATH, READY_PATH};

/// Answers the [server](firefly_webhook::serve::Server) gives before or around ingest.
const SERVER_ANSWERS: &[(StatusCode, &str, &str)] = &[(
    StatusCode::REQUEST_TIMEOUT,
    "request_timeout",
    "the whole request took longer than FIREFLY_REQUEST_TIMEOUT",
)];

/// The OpenAPI document of an application that serves `ingest`, the health endpoints at
/// [`LIVE_PATH`] and [`READY_PATH`], this document at [`OPENAPI_PATH`] and, when `metrics`,
/// the Prometheus metrics at [`METRICS_PATH`].
pub fn openapi(ingest: &IngestService, metrics: bool) -> OpenApi {
    let mut doc = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("firefly-webhook gateway")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Receives webhooks, publishes them to a broker and answers 202 once the \
                     broker confirmed.",
                )),
        )
        .build();
    doc.merge(ingest.openapi(SERVER_ANSWERS));
    doc.merge(firefly_webhook::health::openapi(LIVE_PATH, READY_PATH));

    let text = |description: &str, content_type: &str, schema| {
        ResponseBuilder::new().description(description).content(
            content_type,
            ContentBuilder::new().schema(Some(schema)).build(),
        )
    };
    let mut paths = PathsBuilder::new().path(
        OPENAPI_PATH,
        PathItem::new(
            HttpMethod::Get,
            OperationBuilder::new()
                .operation_id(Some("openapi"))
                .tag("meta")
                .summary(Some("This document"))
                .response(
                    "200",
                    text(
                        "The OpenAPI 3.1 document.",
                        "application/json",
                        ObjectBuilder::new().schema_type(Type::Object),
                    ),
                ),
        ),
    );
    if metrics {
        paths = paths.path(
            METRICS_PATH,
            PathItem::new(
                HttpMethod::Get,
                OperationBuilder::new()
                    .operation_id(Some("metrics"))
                    .tag("metrics")
                    .summary(Some("Prometheus metrics"))
                    .response(
                        "200",
                        text(
                            "Every metric in the Prometheus text format (version 0.0.4).",
                            "text/plain",
                            ObjectBuilder::new().schema_type(Type::String),
                        ),
                    ),
            ),
        );
    }
    doc.paths.merge(paths.build());
    doc
}

#[cfg(test)]
mod tests {
    use firefly_webhook::memory::MemoryBroker;

    use super::*;

    #[test]
    fn every_endpoint_is_described() {
        let ingest = IngestService::new(MemoryBroker::new(1).publisher());
        let doc: serde_json::Value =
            serde_json::from_str(&openapi(&ingest, true).to_json().unwrap()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        for path in [
            "/api/v1/webhook/{provider}",
            LIVE_PATH,
            READY_PATH,
            METRICS_PATH,
            OPENAPI_PATH,
        ] {
            assert!(doc["paths"][path].is_object(), "{path}");
        }
        let timeout = &doc["paths"]["/api/v1/webhook/{provider}"]["post"]["responses"]["408"];
        let text = timeout.to_string();
        assert!(text.contains("request_timeout") && text.contains("body_timeout"));
        let doc = openapi(&ingest, false);
        assert!(doc.paths.get_path_item(METRICS_PATH).is_none());
    }
}
