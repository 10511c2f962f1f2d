//! The OpenAPI description of the ingest endpoint (feature `openapi`), generated from the
//! configured service, the [`Receipt`] and the rejection [catalogue](Rejection::CATALOGUE).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use http::StatusCode;
use utoipa::ToSchema;
use utoipa::openapi::path::PathItemBuilder;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{AllOfBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, HeaderBuilder, OpenApi, OpenApiBuilder, PathsBuilder, Ref,
    Required, ResponseBuilder,
};

use super::rejection::ErrorBody;
use super::{IngestService, Receipt, Rejection};
use crate::event::{TRACEPARENT, TRACESTATE};

impl IngestService {
    /// An OpenAPI 3.1 description of `POST {prefix}/{provider}` as this service is
    /// configured: its prefix, the allowlisted provider names, the body limit, the `202`
    /// [`Receipt`] and every rejection status with the `code` values it can carry.
    ///
    /// `extra` adds answers (status, `code`, when) that the server in front of the service
    /// gives, such as `408 request_timeout` from [`serve::Server`](crate::serve); merge the
    /// result into the application's own document with [`OpenApi::merge`].
    ///
    /// ```
    /// use firefly_webhook::{IngestService, memory::MemoryBroker};
    ///
    /// let ingest = IngestService::new(MemoryBroker::new(10).publisher()).providers(["github"]);
    /// let json = ingest.openapi(&[]).to_json().unwrap();
    /// assert!(json.contains("/api/v1/webhook/{provider}"));
    /// ```
    pub fn openapi(&self, extra: &[(StatusCode, &str, &str)]) -> OpenApi {
        let config = &self.inner.config;
        let path = format!("{}/{{provider}}", config.prefix);

        let mut name = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[A-Za-z0-9._-]{1,64}$"))
            .description(Some(
                "1-64 characters of a-z, 0-9, '.', '_' and '-' (upper case is folded to lower \
                 case); names ending in `.dlq`, containing `.retry.` or starting with `_` are \
                 reserved",
            ));
        if let Some(allowed) = &config.providers {
            let mut names: Vec<&str> = allowed.iter().map(String::as_str).collect();
            names.sort_unstable();
            name = name.enum_values(Some(names));
        }
        let provider = ParameterBuilder::new()
            .name("provider")
            .parameter_in(ParameterIn::Path)
            .required(Required::True)
            .description(Some(
                "The provider: the event's provider and default destination.",
            ))
            .schema(Some(name));
        let header = |name: &str, description: &str| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(description))
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        };

        let body = RequestBodyBuilder::new()
            .description(Some(format!(
                "The webhook, any content type, at most {} bytes; kept byte for byte.",
                config.max_body_bytes
            )))
            .required(Some(Required::True))
            .content(
                "*/*",
                ContentBuilder::new()
                    .schema(Some(
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary))),
                    ))
                    .build(),
            )
            .build();

        let mut operation = OperationBuilder::new()
            .operation_id(Some("ingestWebhook"))
            .tag("ingest")
            .summary(Some("Receive a webhook"))
            .description(Some(
                "Answers 202 with a receipt once the broker confirmed the event; any other \
                 answer is a JSON rejection whose `code` says why.",
            ))
            .parameter(provider)
            .parameter(header(
                TRACEPARENT,
                "W3C trace context: the event continues this trace (malformed: a new trace).",
            ))
            .parameter(header(
                TRACESTATE,
                "W3C trace state, passed on with the trace.",
            ))
            .parameter(header(
                "X-Request-ID",
                "Becomes the event's correlation id (1-200 visible ASCII characters).",
            ))
            .parameter(header(
                "X-Correlation-ID",
                "The correlation id when there is no X-Request-ID.",
            ))
            .request_body(Some(body))
            .response(
                "202",
                ResponseBuilder::new()
                    .description("Accepted: the broker confirmed the event.")
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name(Receipt::name())))
                            .build(),
                    ),
            );

        let mut by_status: BTreeMap<u16, Vec<(&str, &str)>> = BTreeMap::new();
        for (status, code, when) in Rejection::CATALOGUE.iter().chain(extra) {
            by_status
                .entry(status.as_u16())
                .or_default()
                .push((code, when));
        }
        for (status, answers) in by_status {
            operation =
                operation.response(status.to_string(), rejection_response(status, &answers));
        }

        // Providers with an endpoint handshake, by the method it arrives with.
        let mut handshakes: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        if let Some(verifiers) = &config.verifiers {
            for name in verifiers.providers() {
                let Some(handshake) = verifiers.handshake_of(name) else {
                    continue;
                };
                let methods = handshake.methods();
                if methods.is_empty() {
                    handshakes.entry("POST").or_default().push(name);
                }
                for method in methods {
                    handshakes.entry(method.as_str()).or_default().push(name);
                }
            }
        }
        let handshake_answer = |providers: &[&str]| {
            ResponseBuilder::new().description(format!(
                "The provider's endpoint handshake, answered in the provider's own format \
                 (JSON, text/plain or headers only) and not published: {}.",
                providers.join(", ")
            ))
        };
        if let Some(providers) = handshakes.get("POST") {
            operation = operation.response("200", handshake_answer(providers));
        }
        let mut item = PathItemBuilder::new().operation(HttpMethod::Post, operation.build());
        for (method, http_method, id) in [
            ("GET", HttpMethod::Get, "answerHandshakeGet"),
            ("OPTIONS", HttpMethod::Options, "answerHandshakeOptions"),
        ] {
            let Some(providers) = handshakes.get(method) else {
                continue;
            };
            let mut op = OperationBuilder::new()
                .operation_id(Some(id))
                .tag("ingest")
                .summary(Some(format!("Answer a provider's {method} handshake")))
                .description(Some(format!(
                    "Only for providers configured with a handshake that arrives with {method} \
                     ({}); any other provider gets 405. Nothing is published.",
                    providers.join(", ")
                )))
                .parameter(
                    ParameterBuilder::new()
                        .name("provider")
                        .parameter_in(ParameterIn::Path)
                        .required(Required::True)
                        .schema(Some(
                            ObjectBuilder::new()
                                .schema_type(Type::String)
                                .enum_values(Some(providers.clone())),
                        )),
                )
                .response("200", handshake_answer(providers));
            for status in [400, 403, 405] {
                let answers: Vec<(&str, &str)> = Rejection::CATALOGUE
                    .iter()
                    .filter(|(s, code, _)| {
                        s.as_u16() == status
                            && matches!(
                                *code,
                                "malformed_handshake" | "handshake_refused" | "method_not_allowed"
                            )
                    })
                    .map(|(_, code, when)| (*code, *when))
                    .collect();
                op = op.response(status.to_string(), rejection_response(status, &answers));
            }
            item = item.operation(http_method, op.build());
        }

        let components = ComponentsBuilder::new()
            .schema_from::<Receipt>()
            .schema_from::<ErrorBody<'static>>()
            .build();
        OpenApiBuilder::new()
            .paths(PathsBuilder::new().path(path, item.build()))
            .components(Some(components))
            .build()
    }
}

/// One status: the rejection body, its `code` limited to the codes of that status.
fn rejection_response(status: u16, answers: &[(&str, &str)]) -> ResponseBuilder {
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Rejected");
    let mut description = format!("{reason}.");
    for (code, when) in answers {
        let _ = write!(description, " `{code}`: {when}.");
    }
    let mut codes: Vec<&str> = answers.iter().map(|(code, _)| *code).collect();
    codes.dedup();
    let schema = AllOfBuilder::new()
        .item(Ref::from_schema_name(ErrorBody::name()))
        .item(
            ObjectBuilder::new().property(
                "code",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(codes)),
            ),
        );
    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new().schema(Some(schema)).build(),
    );
    let string = || ObjectBuilder::new().schema_type(Type::String);
    match status {
        405 => {
            response = response.header(
                "Allow",
                HeaderBuilder::new()
                    .schema(string())
                    .description(Some("POST"))
                    .build(),
            );
        }
        408 => {
            response = response.header(
                "Connection",
                HeaderBuilder::new()
                    .schema(string())
                    .description(Some("`close` when the body timed out"))
                    .build(),
            );
        }
        429 | 503 => {
            response = response.header(
                "Retry-After",
                HeaderBuilder::new()
                    .schema(
                        ObjectBuilder::new()
                            .schema_type(Type::Integer)
                            .minimum(Some(1)),
                    )
                    .description(Some("Whole seconds to wait before retrying."))
                    .build(),
            );
        }
        _ => {}
    }
    response
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::memory::MemoryBroker;

    #[test]
    fn handshakes_add_their_methods() {
        use crate::verify::{
            CloudEventsOrigin, GitHub, MetaVerifyToken, Slack, SlackUrlVerification, Verifiers,
            WithHandshake,
        };
        let verifiers = Verifiers::new()
            .provider(
                "slack",
                WithHandshake::new(Slack::new("s"), SlackUrlVerification),
            )
            .provider(
                "meta",
                WithHandshake::new(GitHub::new("s"), MetaVerifyToken::new("t")),
            )
            .provider("grid", GitHub::new("s"))
            .handshake("grid", CloudEventsOrigin::any());
        let ingest = IngestService::new(MemoryBroker::new(1).publisher()).verifiers(verifiers);
        let doc: Value = serde_json::from_str(&ingest.openapi(&[]).to_json().unwrap()).unwrap();
        let path = &doc["paths"]["/api/v1/webhook/{provider}"];
        assert!(
            path["post"]["responses"]["200"]["description"]
                .as_str()
                .unwrap()
                .contains("slack")
        );
        assert_eq!(
            path["get"]["parameters"][0]["schema"]["enum"],
            serde_json::json!(["meta"])
        );
        assert_eq!(
            path["options"]["parameters"][0]["schema"]["enum"],
            serde_json::json!(["grid"])
        );
        for method in ["get", "options"] {
            for status in ["200", "400", "403", "405"] {
                assert!(
                    path[method]["responses"][status].is_object(),
                    "{method} {status}"
                );
            }
        }
        assert_eq!(
            path["get"]["responses"]["403"]["content"]["application/json"]["schema"]["allOf"][1]["properties"]
                ["code"]["enum"],
            serde_json::json!(["handshake_refused"])
        );
    }

    #[test]
    fn every_code_is_described_under_its_status() {
        let ingest = IngestService::new(MemoryBroker::new(1).publisher())
            .prefix("/hooks")
            .providers(["stripe", "github"]);
        let extra = [(StatusCode::REQUEST_TIMEOUT, "request_timeout", "too slow")];
        let doc: Value = serde_json::from_str(&ingest.openapi(&extra).to_json().unwrap()).unwrap();
        let op = &doc["paths"]["/hooks/{provider}"]["post"];
        assert_eq!(
            op["parameters"][0]["schema"]["enum"],
            serde_json::json!(["github", "stripe"])
        );
        assert!(op["responses"]["202"]["content"]["application/json"].is_object());
        for (status, code, _) in Rejection::CATALOGUE.iter().chain(&extra) {
            let codes = &op["responses"][status.as_str()]["content"]["application/json"]["schema"]
                ["allOf"][1]["properties"]["code"]["enum"];
            assert!(
                codes.as_array().unwrap().iter().any(|c| c == code),
                "{status} {code}: {codes}"
            );
        }
        assert!(op["responses"]["429"]["headers"]["Retry-After"].is_object());
        // No handshake configured: POST only.
        assert!(op["responses"]["200"].is_null());
        let path = doc["paths"]["/hooks/{provider}"].as_object().unwrap();
        assert_eq!(path.keys().collect::<Vec<_>>(), ["post"]);
        // The schemas name the fields the service writes.
        let schemas = &doc["components"]["schemas"];
        let receipt = schemas["Receipt"]["properties"].as_object().unwrap();
        for field in [
            "eventId",
            "status",
            "provider",
            "destination",
            "sourceIp",
            "payloadSize",
            "headerCount",
            "receivedAt",
            "processedAt",
            "responseTimeMs",
            "receivedPayload",
        ] {
            assert!(receipt.contains_key(field), "{field}");
        }
        let rejection = schemas["Rejection"]["properties"].as_object().unwrap();
        let written: Value = {
            use http_body_util::BodyExt as _;
            let body = Rejection::Unavailable {
                event_id: crate::EventId::new(),
                retry_after: std::time::Duration::from_secs(1),
            }
            .into_response()
            .into_body()
            .collect();
            let bytes = futures_util::FutureExt::now_or_never(body)
                .unwrap()
                .unwrap()
                .to_bytes();
            serde_json::from_slice(&bytes).unwrap()
        };
        for key in written.as_object().unwrap().keys() {
            assert!(rejection.contains_key(key), "{key}");
        }
    }
}
