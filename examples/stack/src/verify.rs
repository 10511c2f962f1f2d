//! `FIREFLY_VERIFY_<P>` and friends → [`Verifiers`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use firefly_webhook::event::provider_name;
use firefly_webhook::verify::{
    CloudEventsOrigin, HttpsFetcher, Scheme, SchemeOptions, SecretSet, Verifiers,
};
use http::HeaderName;

use crate::env::{EnvError, Vars, parse_bool};
use crate::fetch::NativeTlsFetcher;

const VERIFY: &str = "FIREFLY_VERIFY_";
const SECRET: &str = "FIREFLY_SECRET_";
const PROVIDER: &str = "FIREFLY_PROVIDER_";
const TOLERANCE: &str = "FIREFLY_TOLERANCE_";
const HEADER: &str = "FIREFLY_HEADER_";
const VERIFY_TOKEN: &str = "FIREFLY_VERIFY_TOKEN_";
const ALLOWED_ORIGIN: &str = "FIREFLY_ALLOWED_ORIGIN_";
const ALLOWED_RATE: &str = "FIREFLY_ALLOWED_RATE_";
const PUBLISH_HANDSHAKES: &str = "FIREFLY_PUBLISH_HANDSHAKES";
const PUBLIC_URL: &str = "FIREFLY_PUBLIC_URL";
pub(crate) const REQUIRE: &str = "FIREFLY_REQUIRE_VERIFICATION";

/// Builds the verifier registry from the variables:
///
/// | variable                              | meaning                                                         |
/// |---------------------------------------|-----------------------------------------------------------------|
/// | `FIREFLY_VERIFY_<P>=<scheme>`         | verify provider `<P>` with `<scheme>` (a [`Scheme`] name)       |
/// | `FIREFLY_SECRET_<P>=<s1>[,<s2>…]`     | its secrets, comma-separated, tried in order (rotation)         |
/// | `FIREFLY_PROVIDER_<P>=<name>`         | optional: the provider's real name, e.g. `my-app`               |
/// | `FIREFLY_TOLERANCE_<P>=<seconds>`     | optional: timestamp tolerance, for timestamped schemes          |
/// | `FIREFLY_HEADER_<P>=<header>`         | optional: the header of `api-key` / `hmac-sha256`               |
/// | `FIREFLY_PUBLIC_URL=<url>`            | external base URL (required by schemes that sign the URL:       |
/// |                                       | `twilio`, `square`, `hubspot`)                                  |
/// | `FIREFLY_REQUIRE_VERIFICATION=true`   | providers without a verifier get 401 `unknown_provider`         |
/// | `FIREFLY_VERIFY_TOKEN_<P>=<t1>[,…]`   | `meta`: the verify token(s) of the `GET hub.challenge` handshake |
/// | `FIREFLY_ALLOWED_ORIGIN_<P>=<o>[,…]`  | answer the CloudEvents `OPTIONS` handshake for these origins (`*`: any) |
/// | `FIREFLY_ALLOWED_RATE_<P>=<n>`        | optional: its `WebHook-Allowed-Rate` (requests per minute)      |
/// | `FIREFLY_PUBLISH_HANDSHAKES=true`     | publish handshake requests too (default: answer only)           |
///
/// Schemes with a handshake (see [`Scheme::handshake`]) answer it as part of the scheme. For
/// the public-key schemes (`discord`, `telnyx`, `sendgrid`, `standard-webhooks` with `whpk_`
/// keys) `FIREFLY_SECRET_<P>` holds the public keys; `FIREFLY_VERIFY_TOKEN_` is not a provider.
/// `sns` and `paypal` fetch the provider's certificate over HTTPS (and `sns` confirms
/// subscriptions by fetching their `SubscribeURL`) with one shared [`NativeTlsFetcher`]: the
/// platform's TLS and trust store, 5 s and 64 KB per fetch, no redirects; for them
/// `FIREFLY_SECRET_<P>` holds the accepted topic ARNs (`sns`) or webhook ids (`paypal`).
///
/// `<P>` is the provider name upper-cased, with `-` and `.` written as `_`; it maps back to the
/// lower-cased name, so `FIREFLY_VERIFY_MY_APP` configures provider `my_app`. For a name
/// containing `-` or `.`, set `FIREFLY_PROVIDER_MY_APP=my-app`.
///
/// Anything inconsistent is an error naming the variable (never a secret).
pub(crate) fn verifiers(vars: &Vars) -> Result<Verifiers, EnvError> {
    let mut verifiers = Verifiers::new();
    if let Some(value) = vars.get(REQUIRE) {
        verifiers = verifiers.require_verification(parse_bool(REQUIRE, value)?);
    }
    let public_url = vars
        .get(PUBLIC_URL)
        .map(|v| parse_public_url(v))
        .transpose()?;
    if let Some(url) = &public_url {
        verifiers = verifiers.public_url(url.clone());
    }
    if let Some(value) = vars.get(PUBLISH_HANDSHAKES) {
        verifiers = verifiers.publish_handshakes(parse_bool(PUBLISH_HANDSHAKES, value)?);
    }

    // Every per-provider variable must belong to a FIREFLY_VERIFY_<P>: catches typos.
    for key in vars.keys() {
        for prefix in [
            SECRET,
            PROVIDER,
            TOLERANCE,
            HEADER,
            VERIFY_TOKEN,
            ALLOWED_ORIGIN,
            ALLOWED_RATE,
        ] {
            if let Some(suffix) = key.strip_prefix(prefix)
                && !vars.contains_key(&format!("{VERIFY}{suffix}"))
            {
                return Err(EnvError::new(
                    key,
                    format!("is set but {VERIFY}{suffix} is not"),
                ));
            }
        }
    }

    let mut seen: HashMap<String, String> = HashMap::new();
    // Made once, when the first scheme needs it, and shared.
    let mut fetcher: Option<Arc<dyn HttpsFetcher>> = None;
    for (key, scheme) in vars {
        let Some(suffix) = key.strip_prefix(VERIFY) else {
            continue;
        };
        if key.starts_with(VERIFY_TOKEN) {
            continue;
        }
        let (provider, verifier) =
            provider(vars, suffix, scheme, public_url.is_some(), &mut fetcher)?;
        if let Some(previous) = seen.insert(provider.clone(), key.clone()) {
            return Err(EnvError::new(
                key,
                format!("provider `{provider}` is already configured by {previous}"),
            ));
        }
        verifiers = verifiers.provider(&provider, verifier);
        if let Some(origins) = cloudevents_origin(vars, suffix)? {
            verifiers = verifiers.handshake(&provider, origins);
        }
    }
    Ok(verifiers)
}

/// `FIREFLY_ALLOWED_ORIGIN_<P>` and `FIREFLY_ALLOWED_RATE_<P>`: the CloudEvents `OPTIONS`
/// handshake.
fn cloudevents_origin(
    vars: &BTreeMap<String, String>,
    suffix: &str,
) -> Result<Option<CloudEventsOrigin>, EnvError> {
    let origin_var = format!("{ALLOWED_ORIGIN}{suffix}");
    let rate_var = format!("{ALLOWED_RATE}{suffix}");
    let Some(origins) = vars.get(&origin_var) else {
        if vars.contains_key(&rate_var) {
            return Err(EnvError::new(
                &rate_var,
                format!("is set but {origin_var} is not"),
            ));
        }
        return Ok(None);
    };
    let list: Vec<&str> = origins.split(',').map(str::trim).collect();
    if list
        .iter()
        .any(|o| o.is_empty() || o.contains(char::is_whitespace))
    {
        return Err(EnvError::new(
            &origin_var,
            "expected `*` or origins (host names) separated by commas",
        ));
    }
    let mut handshake = if list == ["*"] {
        CloudEventsOrigin::any()
    } else {
        CloudEventsOrigin::allow(list.iter().map(|o| (*o).to_owned()))
    };
    if let Some(rate) = vars.get(&rate_var) {
        let rate = rate
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|r| *r > 0)
            .ok_or_else(|| EnvError::new(&rate_var, "expected requests per minute, at least 1"))?;
        handshake = handshake.rate(rate);
    }
    Ok(Some(handshake))
}

fn provider(
    vars: &BTreeMap<String, String>,
    suffix: &str,
    scheme: &str,
    has_public_url: bool,
    fetcher: &mut Option<Arc<dyn HttpsFetcher>>,
) -> Result<(String, Box<dyn firefly_webhook::SignatureVerifier>), EnvError> {
    let verify_var = format!("{VERIFY}{suffix}");
    let scheme: Scheme = scheme.parse().map_err(|e| {
        let names: Vec<&str> = Scheme::ALL.iter().map(|s| s.name()).collect();
        EnvError::new(
            &verify_var,
            format!("{e}; expected one of {}", names.join(", ")),
        )
    })?;
    if scheme.signs_url() && !has_public_url {
        return Err(EnvError::new(
            &verify_var,
            format!("scheme `{scheme}` signs the request URL: set {PUBLIC_URL}"),
        ));
    }

    let provider_var = format!("{PROVIDER}{suffix}");
    let provider = match vars.get(&provider_var) {
        Some(name) => provider_name(name.trim()).ok_or_else(|| {
            EnvError::new(
                &provider_var,
                "not a provider name: use 1-64 characters of a-z, 0-9, '.', '_' and '-'",
            )
        })?,
        None => provider_name(suffix).ok_or_else(|| {
            EnvError::new(
                &verify_var,
                format!("`{suffix}` is not a provider name; set {provider_var}"),
            )
        })?,
    };

    let secret_var = format!("{SECRET}{suffix}");
    let raw = vars
        .get(&secret_var)
        .ok_or_else(|| EnvError::new(&secret_var, format!("is required by {verify_var}")))?;
    let parts: Vec<&str> = raw.split(',').map(str::trim).collect();
    if parts.iter().any(|s| s.is_empty()) {
        return Err(EnvError::new(
            &secret_var,
            "empty secret: give one or more secrets separated by commas",
        ));
    }
    let mut options = SchemeOptions::new(parts.into_iter().collect::<SecretSet>());

    let tolerance_var = format!("{TOLERANCE}{suffix}");
    if let Some(v) = vars.get(&tolerance_var) {
        if !scheme.is_timestamped() {
            return Err(EnvError::new(
                &tolerance_var,
                format!("scheme `{scheme}` has no timestamp"),
            ));
        }
        let seconds = v
            .trim()
            .parse::<u64>()
            .map_err(|_| EnvError::new(&tolerance_var, "expected a whole number of seconds"))?;
        options = options.tolerance(Duration::from_secs(seconds));
    }

    let header_var = format!("{HEADER}{suffix}");
    if let Some(v) = vars.get(&header_var) {
        if !scheme.has_header_option() {
            return Err(EnvError::new(
                &header_var,
                format!("scheme `{scheme}` has a fixed header"),
            ));
        }
        let header = HeaderName::from_bytes(v.trim().as_bytes())
            .map_err(|_| EnvError::new(&header_var, "not a valid header name"))?;
        options = options.header(header);
    }

    let token_var = format!("{VERIFY_TOKEN}{suffix}");
    if let Some(v) = vars.get(&token_var) {
        if scheme != Scheme::Meta {
            return Err(EnvError::new(
                &token_var,
                format!("scheme `{scheme}` has no verify token (only `meta` does)"),
            ));
        }
        let tokens: Vec<&str> = v.split(',').map(str::trim).collect();
        if tokens.iter().any(|t| t.is_empty()) {
            return Err(EnvError::new(
                &token_var,
                "empty token: give one or more tokens separated by commas",
            ));
        }
        options = options.verify_token(tokens.into_iter().collect::<SecretSet>());
    }
    if scheme.needs_fetcher() {
        options = options.fetcher(shared_fetcher(fetcher, &verify_var, scheme)?);
    }

    // Options were checked above, so what is left is about the secrets.
    let verifier = scheme
        .verifier(options)
        .map_err(|e| EnvError::new(&secret_var, e.to_string()))?;
    Ok((provider, verifier))
}

/// The HTTPS client of the schemes that fetch certificates: made by the first one, shared by
/// the others.
fn shared_fetcher(
    fetcher: &mut Option<Arc<dyn HttpsFetcher>>,
    verify_var: &str,
    scheme: Scheme,
) -> Result<Arc<dyn HttpsFetcher>, EnvError> {
    if let Some(shared) = fetcher {
        return Ok(Arc::clone(shared));
    }
    let made = NativeTlsFetcher::new().map_err(|e| {
        EnvError::new(
            verify_var,
            format!("scheme `{scheme}` needs an HTTPS client, and TLS failed: {e}"),
        )
    })?;
    Ok(Arc::clone(fetcher.insert(Arc::new(made))))
}

fn parse_public_url(value: &str) -> Result<String, EnvError> {
    let url = value.trim().trim_end_matches('/');
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(['?', '#', ' ']) => Ok(url.to_owned()),
        _ => Err(EnvError::new(
            PUBLIC_URL,
            "expected an http(s) base URL without query, e.g. https://hooks.example.com",
        )),
    }
}

#[cfg(test)]
mod tests {
    use firefly_webhook::WebhookEvent;
    use firefly_webhook::verify::{ManualClock, VerifyError};

    use super::*;

    fn build(vars: &[(&str, &str)]) -> Result<Verifiers, EnvError> {
        verifiers(&crate::env::collect(vars.iter().copied()))
    }

    fn err(vars: &[(&str, &str)]) -> String {
        build(vars).unwrap_err().to_string()
    }

    #[test]
    fn every_scheme_builds() {
        for scheme in Scheme::ALL.iter().map(|s| s.name()) {
            let secret = match scheme {
                "standard-webhooks" | "svix" => "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "basic" => "user:pass",
                "teams" => "vqF0En+Z0ucuRTM/01o2GuhMH3hKKk/N2bOmlM31zaA=",
                "discord" | "telnyx" => "iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w=",
                "sendgrid" => SENDGRID_KEY,
                "sns" => "arn:aws:sns:us-east-1:123456789012:orders",
                "paypal" => "1JE4291016473214C",
                _ => "s3cret",
            };
            let v = build(&[
                ("FIREFLY_VERIFY_ACME", scheme),
                ("FIREFLY_SECRET_ACME", secret),
                ("FIREFLY_PUBLIC_URL", "https://hooks.example.com/"),
            ])
            .unwrap_or_else(|e| panic!("{scheme}: {e}"));
            assert_eq!(v.providers(), ["acme"], "{scheme}");
            assert_eq!(v.public_url_str(), Some("https://hooks.example.com"));
        }
    }

    /// `sns` and `paypal` get the HTTPS client (it used to refuse them at start-up).
    #[test]
    fn certificate_schemes_get_the_https_client() {
        let v = build(&[
            ("FIREFLY_VERIFY_SNS", "sns"),
            (
                "FIREFLY_SECRET_SNS",
                "arn:aws:sns:us-east-1:123456789012:orders, arn:aws:sns:eu-west-1:123456789012:b",
            ),
            ("FIREFLY_VERIFY_PAYPAL", "paypal"),
            ("FIREFLY_SECRET_PAYPAL", "1JE4291016473214C"),
        ])
        .unwrap();
        assert_eq!(v.providers(), ["paypal", "sns"]);
        // SNS comes with its subscription confirmation (answered by a fetch).
        assert!(v.handshake_of("sns").is_some());
        // A message whose certificate is not cached yet asks for a fetch first.
        let message = serde_json::json!({
            "Type": "Notification", "MessageId": "m", "Message": "{}",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:orders",
            "Timestamp": "2023-11-14T22:13:20.000Z", "SignatureVersion": "2", "Signature": "AAAA",
            "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem",
        });
        let event = WebhookEvent::new("sns", serde_json::to_vec(&message).unwrap());
        assert!(v.prepare_event(&event).is_some());
        assert_eq!(
            v.verify_event(&event),
            Err(VerifyError::CertificateUnavailable)
        );
        let message = err(&[
            ("FIREFLY_VERIFY_SNS", "sns"),
            ("FIREFLY_SECRET_SNS", "sup3r"),
        ]);
        assert!(
            message.starts_with("FIREFLY_SECRET_SNS: secret #0 is invalid: not a topic ARN"),
            "{message}"
        );
    }

    const SENDGRID_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA==";

    #[test]
    fn handshake_settings() {
        let v = build(&[
            ("FIREFLY_VERIFY_META", "meta"),
            ("FIREFLY_SECRET_META", "app-secret"),
            ("FIREFLY_VERIFY_TOKEN_META", "new-token, old-token"),
            ("FIREFLY_VERIFY_GRID", "api-key"),
            ("FIREFLY_SECRET_GRID", "k"),
            ("FIREFLY_ALLOWED_ORIGIN_GRID", "eventgrid.azure.net"),
            ("FIREFLY_ALLOWED_RATE_GRID", "120"),
            ("FIREFLY_VERIFY_SLACK", "slack"),
            ("FIREFLY_SECRET_SLACK", "x"),
            ("FIREFLY_PUBLISH_HANDSHAKES", "true"),
        ])
        .unwrap();
        assert_eq!(
            v.providers(),
            ["grid", "meta", "slack"],
            "the token is no provider"
        );
        assert!(v.is_publishing_handshakes());
        for provider in ["meta", "grid", "slack"] {
            assert!(v.handshake_of(provider).is_some(), "{provider}");
        }
        assert_eq!(
            v.handshake_of("meta").unwrap().methods(),
            [http::Method::GET]
        );
        assert_eq!(
            v.handshake_of("grid").unwrap().methods(),
            [http::Method::OPTIONS]
        );
        // Meta without a verify token verifies POSTs and answers no handshake.
        let v = build(&[
            ("FIREFLY_VERIFY_META", "meta"),
            ("FIREFLY_SECRET_META", "s"),
        ])
        .unwrap();
        assert!(v.handshake_of("meta").is_none());
        assert!(!v.is_publishing_handshakes());
    }

    #[test]
    fn handshake_misconfiguration_names_the_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[
                    ("FIREFLY_VERIFY_G", "github"),
                    ("FIREFLY_SECRET_G", "sup3r"),
                    ("FIREFLY_VERIFY_TOKEN_G", "t0ken"),
                ],
                "FIREFLY_VERIFY_TOKEN_G: scheme `github` has no verify token",
            ),
            (
                &[("FIREFLY_VERIFY_TOKEN_M", "t0ken")],
                "FIREFLY_VERIFY_TOKEN_M: is set but FIREFLY_VERIFY_M is not",
            ),
            (
                &[
                    ("FIREFLY_VERIFY_M", "meta"),
                    ("FIREFLY_SECRET_M", "sup3r"),
                    ("FIREFLY_VERIFY_TOKEN_M", "a,,b"),
                ],
                "FIREFLY_VERIFY_TOKEN_M: empty token",
            ),
            (
                &[
                    ("FIREFLY_VERIFY_G", "api-key"),
                    ("FIREFLY_SECRET_G", "sup3r"),
                    ("FIREFLY_ALLOWED_RATE_G", "5"),
                ],
                "FIREFLY_ALLOWED_RATE_G: is set but FIREFLY_ALLOWED_ORIGIN_G is not",
            ),
            (
                &[
                    ("FIREFLY_VERIFY_G", "api-key"),
                    ("FIREFLY_SECRET_G", "sup3r"),
                    ("FIREFLY_ALLOWED_ORIGIN_G", "a.example"),
                    ("FIREFLY_ALLOWED_RATE_G", "0"),
                ],
                "FIREFLY_ALLOWED_RATE_G: expected requests per minute",
            ),
            (
                &[
                    ("FIREFLY_VERIFY_G", "api-key"),
                    ("FIREFLY_SECRET_G", "sup3r"),
                    ("FIREFLY_ALLOWED_ORIGIN_G", "a.example,,b"),
                ],
                "FIREFLY_ALLOWED_ORIGIN_G: expected `*` or origins",
            ),
            (
                &[("FIREFLY_PUBLISH_HANDSHAKES", "often")],
                "FIREFLY_PUBLISH_HANDSHAKES: expected true or false",
            ),
            (
                &[
                    ("FIREFLY_VERIFY_D", "discord"),
                    ("FIREFLY_SECRET_D", "sup3r"),
                ],
                "FIREFLY_SECRET_D: secret #0 is invalid: not an ed25519 public key",
            ),
        ];
        for (vars, expected) in cases {
            let message = err(vars);
            assert!(message.starts_with(expected), "{message}");
            assert!(
                !message.contains("sup3r") && !message.contains("t0ken"),
                "{message}"
            );
        }
    }

    #[test]
    fn names_map_to_providers() {
        let v = build(&[
            ("FIREFLY_VERIFY_MY_APP", "gitlab"),
            ("FIREFLY_SECRET_MY_APP", "a"),
            ("FIREFLY_VERIFY_OTHER", "GitLab"),
            ("FIREFLY_SECRET_OTHER", "b"),
            ("FIREFLY_PROVIDER_OTHER", "other.v2"),
            ("PATH", "/usr/bin"),
            ("FIREFLY_LOG", "debug"),
        ])
        .unwrap();
        assert_eq!(v.providers(), ["my_app", "other.v2"]);
        assert!(!v.is_required());
    }

    #[test]
    fn secrets_rotate_in_order() {
        let v = build(&[
            ("FIREFLY_VERIFY_GITLAB", "gitlab"),
            ("FIREFLY_SECRET_GITLAB", " new , old "),
        ])
        .unwrap();
        let mut h = http::HeaderMap::new();
        h.insert("x-gitlab-token", "old".parse().unwrap());
        let event = WebhookEvent::new("gitlab", "{}").with_headers(h);
        assert_eq!(v.verify_event(&event).unwrap().unwrap().secret_index(), 1);
    }

    #[test]
    fn options_apply() {
        let v = build(&[
            ("FIREFLY_VERIFY_SLACK", "slack"),
            ("FIREFLY_SECRET_SLACK", "x"),
            ("FIREFLY_TOLERANCE_SLACK", "30"),
            ("FIREFLY_VERIFY_KEYED", "api-key"),
            ("FIREFLY_SECRET_KEYED", "k"),
            ("FIREFLY_HEADER_KEYED", "X-Token"),
            ("FIREFLY_REQUIRE_VERIFICATION", "TRUE"),
        ])
        .unwrap();
        assert!(v.is_required());
        let mut h = http::HeaderMap::new();
        h.insert("x-token", "k".parse().unwrap());
        let event = WebhookEvent::new("keyed", "").with_headers(h);
        assert!(v.verify_event(&event).unwrap().is_some());
        assert_eq!(
            v.verify_event(&WebhookEvent::new("nobody", "")),
            Err(VerifyError::UnknownProvider)
        );
    }

    #[test]
    fn tolerances_apply_to_the_new_timestamped_schemes() {
        // A Twitch message signed (badly) 60 s before it was received: outside a 30 s window,
        // inside the default 10 minutes (where the signature is what fails).
        let clock = || ManualClock::at_unix(1_700_000_060);
        let mut h = http::HeaderMap::new();
        h.insert("twitch-eventsub-message-id", "m-1".parse().unwrap());
        h.insert(
            "twitch-eventsub-message-timestamp",
            "2023-11-14T22:13:20Z".parse().unwrap(),
        );
        h.insert(
            "twitch-eventsub-message-signature",
            format!("sha256={}", "00".repeat(32)).parse().unwrap(),
        );
        let event = WebhookEvent::new("twitch", "{}").with_headers(h);
        let strict = build(&[
            ("FIREFLY_VERIFY_TWITCH", "twitch"),
            ("FIREFLY_SECRET_TWITCH", "s"),
            ("FIREFLY_TOLERANCE_TWITCH", "30"),
        ])
        .unwrap()
        .clock(clock());
        assert_eq!(
            strict.verify_event(&event),
            Err(VerifyError::TimestampOutOfTolerance)
        );
        let default = build(&[
            ("FIREFLY_VERIFY_TWITCH", "twitch"),
            ("FIREFLY_SECRET_TWITCH", "s"),
        ])
        .unwrap()
        .clock(clock());
        assert_eq!(
            default.verify_event(&event),
            Err(VerifyError::InvalidSignature)
        );
        // The message id is signed, so it keys idempotency.
        assert_eq!(default.delivery_id(&event).as_deref(), Some("m-1"));
    }

    #[test]
    fn new_schemes_name_their_misconfiguration() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[
                    ("FIREFLY_VERIFY_H", "hubspot"),
                    ("FIREFLY_SECRET_H", "sup3r"),
                ],
                "FIREFLY_VERIFY_H: scheme `hubspot` signs the request URL: set FIREFLY_PUBLIC_URL",
            ),
            (
                &[
                    ("FIREFLY_VERIFY_T", "teams"),
                    ("FIREFLY_SECRET_T", "sup3r!"),
                ],
                "FIREFLY_SECRET_T: secret #0 is invalid: not a Teams security token",
            ),
            (
                &[
                    ("FIREFLY_VERIFY_M", "meta"),
                    ("FIREFLY_SECRET_M", "sup3r"),
                    ("FIREFLY_TOLERANCE_M", "5"),
                ],
                "FIREFLY_TOLERANCE_M: scheme `meta` has no timestamp",
            ),
        ];
        for (vars, expected) in cases {
            let message = err(vars);
            assert!(message.starts_with(expected), "{message}");
            assert!(!message.contains("sup3r"), "{message}");
        }
    }

    #[test]
    fn misconfiguration_names_the_variable_and_hides_secrets() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("FIREFLY_VERIFY_X", "nope")],
                "FIREFLY_VERIFY_X: unknown scheme `nope`",
            ),
            (
                &[("FIREFLY_VERIFY_X", "github")],
                "FIREFLY_SECRET_X: is required by FIREFLY_VERIFY_X",
            ),
            (
                &[("FIREFLY_VERIFY_X", "github"), ("FIREFLY_SECRET_X", "a,,b")],
                "FIREFLY_SECRET_X: empty secret",
            ),
            (
                &[("FIREFLY_SECRET_GITHUB", "sup3r")],
                "FIREFLY_SECRET_GITHUB: is set but FIREFLY_VERIFY_GITHUB is not",
            ),
            (
                &[
                    ("FIREFLY_VERIFY_T", "twilio"),
                    ("FIREFLY_SECRET_T", "sup3r"),
                ],
                "FIREFLY_VERIFY_T: scheme `twilio` signs the request URL: set FIREFLY_PUBLIC_URL",
            ),
            (
                &[
                    ("FIREFLY_VERIFY_S", "svix"),
                    ("FIREFLY_SECRET_S", "whsec_sup3r!"),
                ],
                "FIREFLY_SECRET_S: secret #0 is invalid",
            ),
            (
                &[
                    ("FIREFLY_VERIFY_G", "github"),
                    ("FIREFLY_SECRET_G", "sup3r"),
                    ("FIREFLY_TOLERANCE_G", "5"),
                ],
                "FIREFLY_TOLERANCE_G: scheme `github` has no timestamp",
            ),
            (
                &[
                    ("FIREFLY_VERIFY_G", "stripe"),
                    ("FIREFLY_SECRET_G", "sup3r"),
                    ("FIREFLY_TOLERANCE_G", "5m"),
                ],
                "FIREFLY_TOLERANCE_G: expected a whole number of seconds",
            ),
            (
                &[
                    ("FIREFLY_VERIFY_G", "api-key"),
                    ("FIREFLY_SECRET_G", "sup3r"),
                    ("FIREFLY_HEADER_G", "bad header"),
                ],
                "FIREFLY_HEADER_G: not a valid header name",
            ),
            (
                &[("FIREFLY_VERIFY_G", "basic"), ("FIREFLY_SECRET_G", "sup3r")],
                "FIREFLY_SECRET_G: secret #0 is invalid: basic credentials must be `user:password`",
            ),
            (
                &[
                    ("FIREFLY_VERIFY_G", "gitlab"),
                    ("FIREFLY_SECRET_G", "sup3r"),
                    ("FIREFLY_PROVIDER_G", "a/b"),
                ],
                "FIREFLY_PROVIDER_G: not a provider name",
            ),
            (
                &[
                    ("FIREFLY_VERIFY_A", "gitlab"),
                    ("FIREFLY_SECRET_A", "sup3r"),
                    ("FIREFLY_VERIFY_B", "gitlab"),
                    ("FIREFLY_SECRET_B", "sup3r"),
                    ("FIREFLY_PROVIDER_B", "a"),
                ],
                "FIREFLY_VERIFY_B: provider `a` is already configured by FIREFLY_VERIFY_A",
            ),
            (
                &[("FIREFLY_REQUIRE_VERIFICATION", "maybe")],
                "FIREFLY_REQUIRE_VERIFICATION: expected true or false",
            ),
            (
                &[("FIREFLY_PUBLIC_URL", "hooks.example.com")],
                "FIREFLY_PUBLIC_URL: expected an http(s) base URL",
            ),
        ];
        for (vars, expected) in cases {
            let message = err(vars);
            assert!(message.starts_with(expected), "{message}");
            assert!(!message.contains("sup3r"), "{message}");
        }
    }
}
