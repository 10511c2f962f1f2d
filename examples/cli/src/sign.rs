//! Signing a request as each provider does, for every scheme in [`Scheme::ALL`], and what each
//! scheme reads (for `verify`'s diagnosis).
//!
//! The formats are those the verifiers in `firefly_webhook::verify::schemes` check; the
//! round-trip tests below sign with this module and verify with those.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use firefly_webhook::http::{HeaderMap, HeaderName, HeaderValue};
use firefly_webhook::verify::Scheme;
use hmac::{Hmac, Mac};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use sha2::Digest as _;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

const GITHUB_SIGNATURE: &str = "x-hub-signature-256";
const GITHUB_EVENT: &str = "x-github-event";
const GITHUB_DELIVERY: &str = "x-github-delivery";
const STRIPE_SIGNATURE: &str = "stripe-signature";
const SHOPIFY_SIGNATURE: &str = "x-shopify-hmac-sha256";
const SHOPIFY_TOPIC: &str = "x-shopify-topic";
const SHOPIFY_WEBHOOK_ID: &str = "x-shopify-webhook-id";
const SHOPIFY_TRIGGERED_AT: &str = "x-shopify-triggered-at";
const SLACK_SIGNATURE: &str = "x-slack-signature";
const SLACK_TIMESTAMP: &str = "x-slack-request-timestamp";
const WEBHOOK_ID: &str = "webhook-id";
const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
const WEBHOOK_SIGNATURE: &str = "webhook-signature";
const SVIX_ID: &str = "svix-id";
const SVIX_TIMESTAMP: &str = "svix-timestamp";
const SVIX_SIGNATURE: &str = "svix-signature";
const TWILIO_SIGNATURE: &str = "x-twilio-signature";
const TWILIO_IDEMPOTENCY: &str = "i-twilio-idempotency-token";
const GITLAB_TOKEN: &str = "x-gitlab-token";
const GITLAB_EVENT: &str = "x-gitlab-event";
const GITLAB_WEBHOOK_UUID: &str = "x-gitlab-webhook-uuid";
const SQUARE_SIGNATURE: &str = "x-square-hmacsha256-signature";
const PADDLE_SIGNATURE: &str = "paddle-signature";
const LINEAR_SIGNATURE: &str = "linear-signature";
const LINEAR_DELIVERY: &str = "linear-delivery";
const LINEAR_EVENT: &str = "linear-event";
const LINEAR_TIMESTAMP: &str = "webhookTimestamp";
const ZOOM_SIGNATURE: &str = "x-zm-signature";
const ZOOM_TIMESTAMP: &str = "x-zm-request-timestamp";
const INTERCOM_SIGNATURE: &str = "x-hub-signature";
const HMAC_DEFAULT_HEADER: &str = "x-signature";
const API_KEY_DEFAULT_HEADER: &str = "x-api-key";
const AUTHORIZATION: &str = "authorization";
const META_SIGNATURE: &str = "x-hub-signature-256";
const BITBUCKET_SIGNATURE: &str = "x-hub-signature";
const BITBUCKET_EVENT: &str = "x-event-key";
const BITBUCKET_REQUEST: &str = "x-request-uuid";
const TWITCH_ID: &str = "twitch-eventsub-message-id";
const TWITCH_TIMESTAMP: &str = "twitch-eventsub-message-timestamp";
const TWITCH_SIGNATURE: &str = "twitch-eventsub-message-signature";
const TWITCH_TYPE: &str = "twitch-eventsub-message-type";
/// Mailgun signs in the body: the `signature` object of JSON, these fields of a form.
const MAILGUN_SIGNATURE: &str = "signature";
const MAILGUN_TIMESTAMP: &str = "timestamp";
const MAILGUN_TOKEN: &str = "token";
const DOCUSIGN_SIGNATURE: &str = "x-docusign-signature-1";
const DOCUSIGN_DIGEST: &str = "x-authorization-digest";
const HUBSPOT_SIGNATURE: &str = "x-hubspot-signature-v3";
const HUBSPOT_TIMESTAMP: &str = "x-hubspot-request-timestamp";
const BOX_PRIMARY: &str = "box-signature-primary";
const BOX_SECONDARY: &str = "box-signature-secondary";
const BOX_TIMESTAMP: &str = "box-delivery-timestamp";
const BOX_VERSION: &str = "box-signature-version";
const BOX_ALGORITHM: &str = "box-signature-algorithm";
const BOX_DELIVERY: &str = "box-delivery-id";
const TYPEFORM_SIGNATURE: &str = "typeform-signature";
const CALENDLY_SIGNATURE: &str = "calendly-webhook-signature";
const ZENDESK_SIGNATURE: &str = "x-zendesk-webhook-signature";
const ZENDESK_TIMESTAMP: &str = "x-zendesk-webhook-signature-timestamp";
const DISCORD_SIGNATURE: &str = "x-signature-ed25519";
const DISCORD_TIMESTAMP: &str = "x-signature-timestamp";
const TELNYX_SIGNATURE: &str = "telnyx-signature-ed25519";
const TELNYX_TIMESTAMP: &str = "telnyx-timestamp";
const X_SIGNATURE: &str = "x-twitter-webhooks-signature";
const DROPBOX_SIGNATURE: &str = "x-dropbox-signature";
/// Microsoft Graph's proof: every notification in the body's `value` carries it.
const GRAPH_NOTIFICATIONS: &str = "value";
const GRAPH_CLIENT_STATE: &str = "clientState";
/// Twilio's query parameter carrying the SHA-256 of a JSON body.
const TWILIO_BODY_SHA256: &str = "bodySHA256";
const FORM: &str = "application/x-www-form-urlencoded";

/// What the signature is computed over, besides the secret.
#[derive(Debug)]
pub(crate) struct Unsigned<'a> {
    pub(crate) scheme: Scheme,
    /// The header of `hmac-sha256` and `api-key` (their default otherwise).
    pub(crate) header: Option<&'a HeaderName>,
    /// The event type, for the providers that send one in a header.
    pub(crate) event: Option<&'a str>,
    pub(crate) content_type: &'a str,
    /// The URL the gateway considers public (scheme and host), for Twilio and Square.
    pub(crate) public_url: &'a str,
    pub(crate) path: &'a str,
    pub(crate) query: Option<String>,
    pub(crate) body: Vec<u8>,
    pub(crate) now: OffsetDateTime,
    /// The fresh delivery id.
    pub(crate) delivery: Uuid,
}

/// A signed request: the body and query to send (Linear and Twilio may change them) and the
/// headers to add.
#[derive(Debug)]
pub(crate) struct Signed {
    pub(crate) body: Vec<u8>,
    pub(crate) query: Option<String>,
    pub(crate) headers: HeaderMap,
}

/// Why a request cannot be signed: a secret or body the scheme cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SignError(pub(crate) String);

impl std::fmt::Display for SignError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The schemes `sign` signs for: every scheme keyed with a shared secret (not those keyed with a
/// public key, which would need the provider's private key). For Microsoft Graph the "signature"
/// is the `clientState` written into each notification of the body.
pub(crate) const SIGNED: &[Scheme] = &[
    Scheme::GitHub,
    Scheme::Stripe,
    Scheme::Shopify,
    Scheme::Slack,
    Scheme::StandardWebhooks,
    Scheme::Svix,
    Scheme::Twilio,
    Scheme::GitLab,
    Scheme::Square,
    Scheme::Paddle,
    Scheme::Linear,
    Scheme::Zoom,
    Scheme::Intercom,
    Scheme::HmacSha256,
    Scheme::Basic,
    Scheme::ApiKey,
    Scheme::Meta,
    Scheme::Bitbucket,
    Scheme::Twitch,
    Scheme::Mailgun,
    Scheme::Teams,
    Scheme::DocuSign,
    Scheme::HubSpot,
    Scheme::Box,
    Scheme::Typeform,
    Scheme::Calendly,
    Scheme::Zendesk,
    Scheme::X,
    Scheme::Dropbox,
    Scheme::Okta,
    Scheme::MicrosoftGraph,
];

/// Signs `request` with `secret` as `request.scheme`'s provider does.
#[allow(clippy::too_many_lines, reason = "one arm per scheme reads best")]
pub(crate) fn sign(mut request: Unsigned<'_>, secret: &str) -> Result<Signed, SignError> {
    let ts = request.now.unix_timestamp().to_string();
    let key = secret.as_bytes();
    let id = request.delivery.to_string();
    let mut out = Headers::default();
    match request.scheme {
        Scheme::GitHub => {
            let mac = hmac256(key, &[&request.body]);
            out.put(GITHUB_SIGNATURE, format!("sha256={}", hex(&mac)));
            out.put(GITHUB_EVENT, request.event.unwrap_or("ping"));
            out.put(GITHUB_DELIVERY, id);
        }
        Scheme::Stripe => {
            let mac = hmac256(key, &[ts.as_bytes(), b".", &request.body]);
            out.put(STRIPE_SIGNATURE, format!("t={ts},v1={}", hex(&mac)));
        }
        Scheme::Shopify => {
            let mac = hmac256(key, &[&request.body]);
            out.put(SHOPIFY_SIGNATURE, STANDARD.encode(mac));
            out.put(SHOPIFY_TOPIC, request.event.unwrap_or("orders/create"));
            out.put(SHOPIFY_WEBHOOK_ID, id);
            out.put(SHOPIFY_TRIGGERED_AT, crate::dates::format(request.now));
        }
        Scheme::Slack | Scheme::Zoom => {
            let (signature, timestamp) = if request.scheme == Scheme::Slack {
                (SLACK_SIGNATURE, SLACK_TIMESTAMP)
            } else {
                (ZOOM_SIGNATURE, ZOOM_TIMESTAMP)
            };
            let mac = hmac256(key, &[b"v0:", ts.as_bytes(), b":", &request.body]);
            out.put(timestamp, ts.clone());
            out.put(signature, format!("v0={}", hex(&mac)));
        }
        Scheme::StandardWebhooks | Scheme::Svix => {
            let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
            let key = STANDARD.decode(encoded).map_err(|_| {
                SignError("the secret is not a whsec_ key: expected base64 after whsec_".into())
            })?;
            let msg = format!("msg_{}", request.delivery.simple());
            let mac = hmac256(
                &key,
                &[msg.as_bytes(), b".", ts.as_bytes(), b".", &request.body],
            );
            let names = if request.scheme == Scheme::Svix {
                [SVIX_ID, SVIX_TIMESTAMP, SVIX_SIGNATURE]
            } else {
                [WEBHOOK_ID, WEBHOOK_TIMESTAMP, WEBHOOK_SIGNATURE]
            };
            out.put(names[0], msg);
            out.put(names[1], ts.clone());
            out.put(names[2], format!("v1,{}", STANDARD.encode(mac)));
        }
        Scheme::Twilio => {
            let params = if is_form(request.content_type) {
                signed_params(&request.body)
            } else {
                // JSON bodies: the URL carries the body's digest and is signed alone.
                let digest = hex(&sha2::Sha256::digest(&request.body));
                let param = format!("{TWILIO_BODY_SHA256}={digest}");
                request.query = Some(match request.query.take() {
                    Some(q) if !q.is_empty() => format!("{q}&{param}"),
                    _ => param,
                });
                Vec::new()
            };
            let url = url(&request);
            let mac = hmac1(key, &[url.as_bytes(), &params]);
            out.put(TWILIO_SIGNATURE, STANDARD.encode(mac));
            out.put(TWILIO_IDEMPOTENCY, id);
        }
        Scheme::GitLab => {
            out.put(GITLAB_TOKEN, secret);
            out.put(GITLAB_EVENT, request.event.unwrap_or("Push Hook"));
            out.put(GITLAB_WEBHOOK_UUID, id);
        }
        Scheme::Square => {
            let url = url(&request);
            let mac = hmac256(key, &[url.as_bytes(), &request.body]);
            out.put(SQUARE_SIGNATURE, STANDARD.encode(mac));
        }
        Scheme::Paddle => {
            let mac = hmac256(key, &[ts.as_bytes(), b":", &request.body]);
            out.put(PADDLE_SIGNATURE, format!("ts={ts};h1={}", hex(&mac)));
        }
        Scheme::Linear => {
            let millis = request.now.unix_timestamp_nanos() / 1_000_000;
            request.body = with_field(&request.body, LINEAR_TIMESTAMP, &millis.to_string())?;
            let mac = hmac256(key, &[&request.body]);
            out.put(LINEAR_SIGNATURE, hex(&mac));
            out.put(LINEAR_DELIVERY, id);
            out.put(LINEAR_EVENT, request.event.unwrap_or("Issue"));
        }
        Scheme::Intercom => {
            let mac = hmac1(key, &[&request.body]);
            out.put(INTERCOM_SIGNATURE, format!("sha1={}", hex(&mac)));
        }
        Scheme::HmacSha256 => {
            let mac = hmac256(key, &[&request.body]);
            let header = request
                .header
                .map_or(HMAC_DEFAULT_HEADER, HeaderName::as_str);
            out.put(header, format!("sha256={}", hex(&mac)));
        }
        Scheme::Basic => {
            if !secret.contains(':') {
                return Err(SignError(
                    "basic credentials must be `user:password`".into(),
                ));
            }
            out.put(AUTHORIZATION, format!("Basic {}", STANDARD.encode(secret)));
        }
        Scheme::ApiKey => {
            let header = request
                .header
                .map_or(API_KEY_DEFAULT_HEADER, HeaderName::as_str);
            out.put(header, secret);
        }
        Scheme::Meta => {
            let mac = hmac256(key, &[&request.body]);
            out.put(META_SIGNATURE, format!("sha256={}", hex(&mac)));
        }
        Scheme::Bitbucket => {
            let mac = hmac256(key, &[&request.body]);
            out.put(BITBUCKET_SIGNATURE, format!("sha256={}", hex(&mac)));
            out.put(BITBUCKET_EVENT, request.event.unwrap_or("repo:push"));
            out.put(BITBUCKET_REQUEST, id);
        }
        Scheme::Twitch => {
            let at = request.now.to_offset(time::UtcOffset::UTC);
            let stamp = at.format(&Rfc3339).unwrap_or_else(|_| ts.clone());
            let mac = hmac256(key, &[id.as_bytes(), stamp.as_bytes(), &request.body]);
            out.put(TWITCH_ID, id);
            out.put(TWITCH_TIMESTAMP, stamp);
            out.put(TWITCH_SIGNATURE, format!("sha256={}", hex(&mac)));
            out.put(TWITCH_TYPE, "notification");
        }
        Scheme::Mailgun => {
            // Mailgun's tokens are 50 random characters, used once.
            let digest = hex(&sha2::Sha256::digest(request.delivery.as_bytes()));
            let token = &digest[..50];
            let mac = hex(&hmac256(key, &[ts.as_bytes(), token.as_bytes()]));
            request.body = if is_form(request.content_type) {
                let mut body = request.body;
                if !body.is_empty() && !body.ends_with(b"&") {
                    body.push(b'&');
                }
                let fields = form_urlencoded::Serializer::new(String::new())
                    .append_pair(MAILGUN_TIMESTAMP, &ts)
                    .append_pair(MAILGUN_TOKEN, token)
                    .append_pair(MAILGUN_SIGNATURE, &mac)
                    .finish();
                body.extend_from_slice(fields.as_bytes());
                body
            } else {
                let object = serde_json::json!({
                    MAILGUN_TIMESTAMP: ts,
                    MAILGUN_TOKEN: token,
                    MAILGUN_SIGNATURE: mac,
                });
                with_field(&request.body, MAILGUN_SIGNATURE, &object.to_string())?
            };
        }
        Scheme::Teams => {
            let key = STANDARD.decode(secret).map_err(|_| {
                SignError("the secret is not a Teams security token: expected base64".into())
            })?;
            let mac = hmac256(&key, &[&request.body]);
            out.put(AUTHORIZATION, format!("HMAC {}", STANDARD.encode(mac)));
        }
        Scheme::DocuSign => {
            let mac = hmac256(key, &[&request.body]);
            out.put(DOCUSIGN_SIGNATURE, STANDARD.encode(mac));
            out.put(DOCUSIGN_DIGEST, "HMACSHA256");
        }
        Scheme::HubSpot => {
            let millis = (request.now.unix_timestamp_nanos() / 1_000_000).to_string();
            let uri = hubspot_uri(&url(&request));
            let mac = hmac256(
                key,
                &[b"POST", uri.as_bytes(), &request.body, millis.as_bytes()],
            );
            out.put(HUBSPOT_SIGNATURE, STANDARD.encode(mac));
            out.put(HUBSPOT_TIMESTAMP, millis);
        }
        Scheme::Box => {
            let stamp = crate::dates::format(request.now);
            let mac = hmac256(key, &[&request.body, stamp.as_bytes()]);
            out.put(BOX_PRIMARY, STANDARD.encode(mac));
            out.put(BOX_TIMESTAMP, stamp);
            out.put(BOX_VERSION, "1");
            out.put(BOX_ALGORITHM, "HmacSHA256");
            out.put(BOX_DELIVERY, id);
        }
        Scheme::Typeform => {
            let mac = hmac256(key, &[&request.body]);
            out.put(
                TYPEFORM_SIGNATURE,
                format!("sha256={}", STANDARD.encode(mac)),
            );
        }
        Scheme::Calendly => {
            let mac = hmac256(key, &[ts.as_bytes(), b".", &request.body]);
            out.put(CALENDLY_SIGNATURE, format!("t={ts},v1={}", hex(&mac)));
        }
        Scheme::Zendesk => {
            let stamp = crate::dates::format(request.now);
            let mac = hmac256(key, &[stamp.as_bytes(), &request.body]);
            out.put(ZENDESK_SIGNATURE, STANDARD.encode(mac));
            out.put(ZENDESK_TIMESTAMP, stamp);
        }
        Scheme::X => {
            let mac = hmac256(key, &[&request.body]);
            out.put(X_SIGNATURE, format!("sha256={}", STANDARD.encode(mac)));
        }
        Scheme::Dropbox => {
            let mac = hmac256(key, &[&request.body]);
            out.put(DROPBOX_SIGNATURE, hex(&mac));
        }
        Scheme::Okta => out.put(AUTHORIZATION, secret),
        Scheme::MicrosoftGraph => request.body = with_client_state(&request.body, secret)?,
        other if SIGNED_WITH_PRIVATE_KEY.contains(&other) => {
            return Err(SignError(format!(
                "scheme `{other}` is signed with the sender's ed25519 private key: pass \
                 --private-key"
            )));
        }
        other => {
            let names: Vec<&str> = SIGNED.iter().map(|s| s.name()).collect();
            return Err(SignError(format!(
                "scheme `{other}` is not supported by this version of firefly (it signs {})",
                names.join(", ")
            )));
        }
    }
    Ok(Signed {
        body: request.body,
        query: request.query,
        headers: out.finish()?,
    })
}

/// The schemes [`sign_with_private_key`] signs for: the ed25519 ones.
pub(crate) const SIGNED_WITH_PRIVATE_KEY: &[Scheme] = &[
    Scheme::Discord,
    Scheme::Telnyx,
    Scheme::StandardWebhooks,
    Scheme::Svix,
];

/// Signs `request` as `request.scheme`'s provider does with its ed25519 private key: for
/// Discord and Telnyx the 32-byte seed in hex or base64, for Standard Webhooks (`v1a`) and Svix
/// a `whsk_` key (base64 of the seed, or of seed and public key as libsodium writes it).
pub(crate) fn sign_with_private_key(
    request: Unsigned<'_>,
    private_key: &str,
) -> Result<Signed, SignError> {
    use ed25519_dalek::Signer as _;

    let ts = request.now.unix_timestamp().to_string();
    let body = &request.body;
    let mut out = Headers::default();
    match request.scheme {
        Scheme::Discord => {
            let key = ed25519_key(private_key)?;
            let signature = key.sign(&[ts.as_bytes(), body].concat());
            out.put(DISCORD_SIGNATURE, hex(&signature.to_bytes()));
            out.put(DISCORD_TIMESTAMP, ts);
        }
        Scheme::Telnyx => {
            let key = ed25519_key(private_key)?;
            let signature = key.sign(&[ts.as_bytes(), b"|", body].concat());
            out.put(TELNYX_SIGNATURE, STANDARD.encode(signature.to_bytes()));
            out.put(TELNYX_TIMESTAMP, ts);
        }
        Scheme::StandardWebhooks | Scheme::Svix => {
            let encoded = private_key.strip_prefix("whsk_").ok_or_else(|| {
                SignError("the private key is not a whsk_ key: expected whsk_<base64>".into())
            })?;
            let key = ed25519_key(encoded)?;
            let msg = format!("msg_{}", request.delivery.simple());
            let signature = key.sign(&[msg.as_bytes(), b".", ts.as_bytes(), b".", body].concat());
            let names = if request.scheme == Scheme::Svix {
                [SVIX_ID, SVIX_TIMESTAMP, SVIX_SIGNATURE]
            } else {
                [WEBHOOK_ID, WEBHOOK_TIMESTAMP, WEBHOOK_SIGNATURE]
            };
            out.put(names[0], msg);
            out.put(names[1], ts);
            out.put(
                names[2],
                format!("v1a,{}", STANDARD.encode(signature.to_bytes())),
            );
        }
        other => {
            let names: Vec<&str> = SIGNED_WITH_PRIVATE_KEY.iter().map(|s| s.name()).collect();
            return Err(SignError(format!(
                "scheme `{other}` is not signed with a private key (these are: {}); use --secret",
                names.join(", ")
            )));
        }
    }
    Ok(Signed {
        body: request.body,
        query: request.query,
        headers: out.finish()?,
    })
}

/// An ed25519 signing key from its 32-byte seed (hex or base64), or from the 64 bytes of seed
/// and public key, which must match.
fn ed25519_key(text: &str) -> Result<ed25519_dalek::SigningKey, SignError> {
    let invalid = || {
        SignError(
            "not an ed25519 private key: expected 32 bytes (the seed) in hex or base64".into(),
        )
    };
    let text = text.trim();
    let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| invalid())?
    } else {
        STANDARD.decode(text).map_err(|_| invalid())?
    };
    let seed: [u8; 32] = bytes
        .get(..32)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(invalid)?;
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    match bytes.len() {
        32 => Ok(key),
        64 if bytes[32..] == key.verifying_key().as_bytes()[..] => Ok(key),
        _ => Err(invalid()),
    }
}

/// Header values being collected; a value that is not a valid header is reported once.
#[derive(Default)]
struct Headers {
    map: HeaderMap,
    invalid: Option<String>,
}

impl Headers {
    fn put(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            (Ok(name), Ok(value)) => {
                self.map.insert(name, value);
            }
            _ => {
                self.invalid.get_or_insert_with(|| name.to_owned());
            }
        }
    }

    fn finish(self) -> Result<HeaderMap, SignError> {
        match self.invalid {
            None => Ok(self.map),
            Some(name) => Err(SignError(format!(
                "the value of `{name}` cannot be sent as a header (a secret with a line break?)"
            ))),
        }
    }
}

fn url(request: &Unsigned<'_>) -> String {
    let mut url = format!(
        "{}{}",
        request.public_url.trim_end_matches('/'),
        request.path
    );
    if let Some(q) = &request.query {
        url.push('?');
        url.push_str(q);
    }
    url
}

/// The URL HubSpot signs: the request URL with the percent-escapes of its list decoded.
fn hubspot_uri(url: &str) -> String {
    const LISTED: [(&str, char); 12] = [
        ("3A", ':'),
        ("2F", '/'),
        ("3F", '?'),
        ("40", '@'),
        ("21", '!'),
        ("24", '$'),
        ("27", '\''),
        ("28", '('),
        ("29", ')'),
        ("2A", '*'),
        ("2C", ','),
        ("3B", ';'),
    ];
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at + 1..at + 3);
        if let Some((_, c)) = LISTED
            .iter()
            .find(|(code, _)| escape.is_some_and(|e| e.eq_ignore_ascii_case(code)))
        {
            out.push(*c);
            rest = &rest[at + 3..];
        } else {
            out.push('%');
            rest = &rest[at + 1..];
        }
    }
    out.push_str(rest);
    out
}

fn is_form(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(FORM))
}

/// Twilio's signed form parameters: every `name` + `value`, sorted.
fn signed_params(body: &[u8]) -> Vec<u8> {
    let mut pairs: Vec<_> = form_urlencoded::parse(body).collect();
    pairs.sort_unstable();
    let mut out = Vec::with_capacity(body.len());
    for (name, value) in &pairs {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// The JSON object `body` with top-level field `name` set to the JSON `value` (replaced where
/// it is, else appended), keeping every other field as sent and in order.
fn with_field(body: &[u8], name: &str, value: &str) -> Result<Vec<u8>, SignError> {
    let Fields(fields) = serde_json::from_slice(body).map_err(|_| {
        SignError(format!(
            "the body must be a JSON object (the scheme puts `{name}` in it)"
        ))
    })?;
    let mut out = String::with_capacity(body.len() + name.len() + value.len() + 4);
    let mut replaced = false;
    out.push('{');
    for (key, raw) in &fields {
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(key).unwrap_or_default());
        out.push(':');
        if key == name {
            out.push_str(value);
            replaced = true;
        } else {
            out.push_str(raw.get());
        }
    }
    if !replaced {
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(name).unwrap_or_default());
        out.push(':');
        out.push_str(value);
    }
    out.push('}');
    Ok(out.into_bytes())
}

/// `body`, a Microsoft Graph notification collection (`{"value":[{…},…]}`), with `clientState`
/// set in every notification; everything else as written.
fn with_client_state(body: &[u8], client_state: &str) -> Result<Vec<u8>, SignError> {
    let shape = || {
        SignError(format!(
            "the body must be a Graph notification collection, {{\"{GRAPH_NOTIFICATIONS}\":[{{…}}]}} \
             (the scheme puts `{GRAPH_CLIENT_STATE}` in each notification)"
        ))
    };
    let Fields(fields) = serde_json::from_slice(body).map_err(|_| shape())?;
    let (_, list) = fields
        .iter()
        .find(|(k, _)| k == GRAPH_NOTIFICATIONS)
        .ok_or_else(shape)?;
    let notifications: Vec<&RawValue> = serde_json::from_str(list.get()).map_err(|_| shape())?;
    if notifications.is_empty() {
        return Err(shape());
    }
    let value = serde_json::to_string(client_state).map_err(|_| shape())?;
    let mut out = Vec::with_capacity(list.get().len() + notifications.len() * value.len());
    out.push(b'[');
    for (i, notification) in notifications.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let with = with_field(notification.get().as_bytes(), GRAPH_CLIENT_STATE, &value)
            .map_err(|_| shape())?;
        out.extend_from_slice(&with);
    }
    out.push(b']');
    let list = String::from_utf8(out).map_err(|_| shape())?;
    with_field(body, GRAPH_NOTIFICATIONS, &list)
}

/// A JSON object's fields in document order, values as written.
struct Fields(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InOrder;
        impl<'de> Visitor<'de> for InOrder {
            type Value = Fields;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut fields = Vec::new();
                while let Some(entry) = map.next_entry::<String, Box<RawValue>>()? {
                    fields.push(entry);
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(InOrder)
    }
}

fn hmac256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC takes keys of any length.
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(key) else {
        return Vec::new();
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

fn hmac1(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(key) else {
        return Vec::new();
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The headers `scheme`'s verifier needs, each as alternatives (Svix also takes the Standard
/// Webhooks names).
pub(crate) fn required_headers(scheme: Scheme, header: Option<&HeaderName>) -> Vec<Vec<String>> {
    let one = |name: &str| vec![name.to_owned()];
    let names: Vec<Vec<String>> = match scheme {
        Scheme::GitHub => vec![one(GITHUB_SIGNATURE)],
        Scheme::Stripe => vec![one(STRIPE_SIGNATURE)],
        Scheme::Shopify => vec![one(SHOPIFY_SIGNATURE)],
        Scheme::Slack => vec![one(SLACK_SIGNATURE), one(SLACK_TIMESTAMP)],
        Scheme::Zoom => vec![one(ZOOM_SIGNATURE), one(ZOOM_TIMESTAMP)],
        Scheme::StandardWebhooks => vec![
            one(WEBHOOK_ID),
            one(WEBHOOK_TIMESTAMP),
            one(WEBHOOK_SIGNATURE),
        ],
        Scheme::Svix => [
            (SVIX_ID, WEBHOOK_ID),
            (SVIX_TIMESTAMP, WEBHOOK_TIMESTAMP),
            (SVIX_SIGNATURE, WEBHOOK_SIGNATURE),
        ]
        .iter()
        .map(|(a, b)| vec![(*a).to_owned(), (*b).to_owned()])
        .collect(),
        Scheme::Twilio => vec![one(TWILIO_SIGNATURE)],
        Scheme::GitLab => vec![one(GITLAB_TOKEN)],
        Scheme::Square => vec![one(SQUARE_SIGNATURE)],
        Scheme::Paddle => vec![one(PADDLE_SIGNATURE)],
        Scheme::Linear => vec![one(LINEAR_SIGNATURE)],
        Scheme::Intercom => vec![one(INTERCOM_SIGNATURE)],
        Scheme::HmacSha256 => vec![one(header.map_or(HMAC_DEFAULT_HEADER, HeaderName::as_str))],
        Scheme::Basic | Scheme::Teams | Scheme::Okta => vec![one(AUTHORIZATION)],
        Scheme::ApiKey => vec![one(
            header.map_or(API_KEY_DEFAULT_HEADER, HeaderName::as_str)
        )],
        Scheme::Meta => vec![one(META_SIGNATURE)],
        Scheme::Bitbucket => vec![one(BITBUCKET_SIGNATURE)],
        Scheme::Twitch => vec![one(TWITCH_ID), one(TWITCH_TIMESTAMP), one(TWITCH_SIGNATURE)],
        Scheme::DocuSign => vec![one(DOCUSIGN_SIGNATURE)],
        Scheme::HubSpot => vec![one(HUBSPOT_SIGNATURE), one(HUBSPOT_TIMESTAMP)],
        Scheme::Box => vec![
            vec![BOX_PRIMARY.to_owned(), BOX_SECONDARY.to_owned()],
            one(BOX_TIMESTAMP),
        ],
        Scheme::Typeform => vec![one(TYPEFORM_SIGNATURE)],
        Scheme::Calendly => vec![one(CALENDLY_SIGNATURE)],
        Scheme::Zendesk => vec![one(ZENDESK_SIGNATURE), one(ZENDESK_TIMESTAMP)],
        Scheme::X => vec![one(X_SIGNATURE)],
        Scheme::Discord => vec![one(DISCORD_SIGNATURE), one(DISCORD_TIMESTAMP)],
        Scheme::Telnyx => vec![one(TELNYX_SIGNATURE), one(TELNYX_TIMESTAMP)],
        Scheme::Dropbox => vec![one(DROPBOX_SIGNATURE)],
        // Mailgun and Microsoft Graph prove it in the body: no header to look for.
        _ => Vec::new(),
    };
    names
}

/// How `scheme`'s signature header is written, for a "malformed" diagnosis.
pub(crate) fn expected_format(scheme: Scheme) -> &'static str {
    match scheme {
        Scheme::GitHub | Scheme::Meta => "x-hub-signature-256: sha256=<64 hex digits>",
        Scheme::Stripe => "stripe-signature: t=<unix seconds>,v1=<64 hex digits>",
        Scheme::Shopify => "x-shopify-hmac-sha256: <base64 of 32 bytes>",
        Scheme::Slack => {
            "x-slack-signature: v0=<64 hex digits>, x-slack-request-timestamp: <unix seconds>"
        }
        Scheme::Zoom => {
            "x-zm-signature: v0=<64 hex digits>, x-zm-request-timestamp: <unix seconds>"
        }
        Scheme::StandardWebhooks => {
            "webhook-signature: v1,<base64 of 32 bytes>, webhook-timestamp: <unix seconds>"
        }
        Scheme::Svix => "svix-signature: v1,<base64 of 32 bytes>, svix-timestamp: <unix seconds>",
        Scheme::Twilio => "x-twilio-signature: <base64 of 20 bytes>",
        Scheme::GitLab => "x-gitlab-token: <token>",
        Scheme::Square => "x-square-hmacsha256-signature: <base64 of 32 bytes>",
        Scheme::Paddle => "paddle-signature: ts=<unix seconds>;h1=<64 hex digits>",
        Scheme::Linear => {
            "linear-signature: <64 hex digits>, and a JSON body with webhookTimestamp"
        }
        Scheme::Intercom => "x-hub-signature: sha1=<40 hex digits>",
        Scheme::HmacSha256 => "[sha256=]<64 hex digits>",
        Scheme::Basic => "authorization: Basic <base64 of user:password>",
        Scheme::ApiKey => "<key>",
        Scheme::Bitbucket => "x-hub-signature: sha256=<64 hex digits>",
        Scheme::Twitch => {
            "twitch-eventsub-message-signature: sha256=<64 hex digits>, twitch-eventsub-message-timestamp: <RFC 3339 time>"
        }
        Scheme::Mailgun => {
            "a body with signature.timestamp, signature.token and signature.signature (<64 hex digits>), or those form fields"
        }
        Scheme::Teams => "authorization: HMAC <base64 of 32 bytes>",
        Scheme::DocuSign => "x-docusign-signature-<n>: <base64 of 32 bytes>",
        Scheme::HubSpot => {
            "x-hubspot-signature-v3: <base64 of 32 bytes>, x-hubspot-request-timestamp: <unix milliseconds>"
        }
        Scheme::Box => {
            "box-signature-primary: <base64 of 32 bytes>, box-delivery-timestamp: <RFC 3339 time>"
        }
        Scheme::Typeform => "typeform-signature: sha256=<base64 of 32 bytes>",
        Scheme::Calendly => "calendly-webhook-signature: t=<unix seconds>,v1=<64 hex digits>",
        Scheme::Zendesk => {
            "x-zendesk-webhook-signature: <base64 of 32 bytes>, x-zendesk-webhook-signature-timestamp: <RFC 3339 time>"
        }
        Scheme::X => "x-twitter-webhooks-signature: sha256=<base64 of 32 bytes>",
        Scheme::Discord => {
            "x-signature-ed25519: <128 hex digits>, x-signature-timestamp: <unix seconds>"
        }
        Scheme::Telnyx => {
            "telnyx-signature-ed25519: <base64 of 64 bytes>, telnyx-timestamp: <unix seconds>"
        }
        Scheme::Dropbox => "x-dropbox-signature: <64 hex digits>",
        Scheme::Okta => "authorization: <the configured value>",
        Scheme::MicrosoftGraph => {
            "a body {\"value\":[…]} whose every notification has clientState: <the secret>"
        }
        _ => "the scheme's format",
    }
}

/// The timestamp `scheme` signs, as the request carries it, if it has one and it parses.
pub(crate) fn signed_at(scheme: Scheme, headers: &HeaderMap, body: &[u8]) -> Option<i64> {
    let header = |name: &str| headers.get(name)?.to_str().ok().map(str::trim);
    let item = |name: &str, separator: char, key: &str| {
        header(name)?
            .split(separator)
            .filter_map(|i| i.trim().split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.to_owned())
    };
    let text = match scheme {
        Scheme::Stripe => item(STRIPE_SIGNATURE, ',', "t")?,
        Scheme::Paddle => item(PADDLE_SIGNATURE, ';', "ts")?,
        Scheme::Slack => header(SLACK_TIMESTAMP)?.to_owned(),
        Scheme::Zoom => header(ZOOM_TIMESTAMP)?.to_owned(),
        Scheme::StandardWebhooks => header(WEBHOOK_TIMESTAMP)?.to_owned(),
        Scheme::Svix => header(SVIX_TIMESTAMP)
            .or_else(|| header(WEBHOOK_TIMESTAMP))?
            .to_owned(),
        Scheme::Linear => {
            let value: serde_json::Value = serde_json::from_slice(body).ok()?;
            return value
                .get(LINEAR_TIMESTAMP)?
                .as_i64()
                .map(|ms| ms.div_euclid(1000));
        }
        Scheme::Calendly => item(CALENDLY_SIGNATURE, ',', "t")?,
        Scheme::HubSpot => {
            return header(HUBSPOT_TIMESTAMP)?
                .parse::<i64>()
                .ok()
                .map(|ms| ms.div_euclid(1000));
        }
        Scheme::Twitch | Scheme::Box | Scheme::Zendesk => {
            let name = match scheme {
                Scheme::Twitch => TWITCH_TIMESTAMP,
                Scheme::Box => BOX_TIMESTAMP,
                _ => ZENDESK_TIMESTAMP,
            };
            return OffsetDateTime::parse(header(name)?, &Rfc3339)
                .ok()
                .map(OffsetDateTime::unix_timestamp);
        }
        Scheme::Mailgun => mailgun_timestamp(body)?,
        _ => return None,
    };
    text.parse().ok()
}

/// The timestamp Mailgun signed: the JSON body's `signature.timestamp`, or the form field.
fn mailgun_timestamp(body: &[u8]) -> Option<String> {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        return match value.get(MAILGUN_SIGNATURE)?.get(MAILGUN_TIMESTAMP)? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
    }
    form_urlencoded::parse(body)
        .find(|(name, _)| name == MAILGUN_TIMESTAMP)
        .map(|(_, value)| value.into_owned())
}

#[cfg(test)]
mod tests {
    use firefly_webhook::verify::{SchemeOptions, SignatureVerifier as _, SignedRequest};

    use super::*;

    const PUBLIC: &str = "https://hooks.example.com";
    const PATH: &str = "/api/v1/webhook/test";

    const TEAMS_TOKEN: &str = "vqF0En+Z0ucuRTM/01o2GuhMH3hKKk/N2bOmlM31zaA=";

    fn secret(scheme: Scheme) -> &'static str {
        match scheme {
            Scheme::StandardWebhooks | Scheme::Svix => "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            Scheme::Basic => "user:pa55word",
            Scheme::Teams => TEAMS_TOKEN,
            _ => "s3cret",
        }
    }

    fn shared_secret_schemes() -> Vec<Scheme> {
        SIGNED.to_vec()
    }

    #[test]
    fn other_schemes_are_refused_by_name() {
        for scheme in Scheme::ALL.iter().filter(|s| !SIGNED.contains(s)) {
            let err = sign(unsigned(*scheme, "application/json", b"{}"), "k").unwrap_err();
            let expected = if SIGNED_WITH_PRIVATE_KEY.contains(scheme) {
                "--private-key"
            } else {
                "not supported"
            };
            assert!(err.0.contains(expected), "{scheme}: {err}");
            assert!(err.0.contains(scheme.name()), "{scheme}: {err}");
        }
    }

    fn unsigned(scheme: Scheme, content_type: &'static str, body: &[u8]) -> Unsigned<'static> {
        Unsigned {
            scheme,
            header: None,
            event: None,
            content_type,
            public_url: PUBLIC,
            path: PATH,
            query: Some("a=1".into()),
            body: body.to_vec(),
            now: OffsetDateTime::now_utc(),
            delivery: Uuid::new_v4(),
        }
    }

    fn verify(scheme: Scheme, secret: &str, signed: &Signed) -> Result<(), String> {
        let verifier = scheme
            .verifier(SchemeOptions::new(secret))
            .map_err(|e| e.to_string())?;
        let request = SignedRequest::new(&signed.body, &signed.headers)
            .public_url(PUBLIC)
            .target(PATH, signed.query.as_deref());
        verifier
            .verify(&request)
            .map(drop)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn every_scheme_verifies_what_it_signs() {
        for scheme in shared_secret_schemes() {
            for (content_type, body) in [
                (
                    "application/json",
                    &br#"{"id":"evt_1","webhookTimestamp":1,"n":[1,2]}"#[..],
                ),
                (
                    FORM,
                    &b"From=%2B15551234567&Body=hi+there&AccountSid=AC1"[..],
                ),
            ] {
                if content_type == FORM && matches!(scheme, Scheme::Linear | Scheme::MicrosoftGraph)
                {
                    continue;
                }
                let body = if scheme == Scheme::MicrosoftGraph {
                    &br#"{"value":[{"subscriptionId":"a","changeType":"created"},{"subscriptionId":"b"}]}"#[..]
                } else {
                    body
                };
                let signed = sign(unsigned(scheme, content_type, body), secret(scheme))
                    .unwrap_or_else(|e| panic!("{scheme}: {e}"));
                verify(scheme, secret(scheme), &signed)
                    .unwrap_or_else(|e| panic!("{scheme} ({content_type}): {e}"));
                let wrong = match scheme {
                    Scheme::StandardWebhooks | Scheme::Svix => {
                        "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
                    }
                    Scheme::Basic => "user:wrong",
                    Scheme::Teams => "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                    _ => "wrong",
                };
                assert_eq!(
                    verify(scheme, wrong, &signed),
                    Err("signature does not match".into()),
                    "{scheme}"
                );
            }
        }
    }

    #[test]
    fn custom_headers_and_fresh_ids() {
        let header = HeaderName::from_static("x-acme-key");
        let mut request = unsigned(Scheme::ApiKey, "application/json", b"{}");
        request.header = Some(&header);
        let signed = sign(request, "k").unwrap();
        assert_eq!(signed.headers["x-acme-key"], "k");
        let a = sign(unsigned(Scheme::GitHub, "application/json", b"{}"), "s").unwrap();
        let b = sign(unsigned(Scheme::GitHub, "application/json", b"{}"), "s").unwrap();
        assert_ne!(a.headers[GITHUB_DELIVERY], b.headers[GITHUB_DELIVERY]);
        assert_eq!(a.headers[GITHUB_EVENT], "ping");
    }

    #[test]
    fn linear_bodies_get_a_fresh_timestamp_in_place() {
        let out = with_field(
            br#"{"b":1,"webhookTimestamp":5,"a":{"x":[1]}}"#,
            LINEAR_TIMESTAMP,
            "9",
        )
        .unwrap();
        assert_eq!(out, br#"{"b":1,"webhookTimestamp":9,"a":{"x":[1]}}"#);
        let out = with_field(br#"{ "b" : "\u00e9" }"#, LINEAR_TIMESTAMP, "9").unwrap();
        assert_eq!(out, br#"{"b":"\u00e9","webhookTimestamp":9}"#);
        assert_eq!(with_field(b"{}", "t", "1").unwrap(), br#"{"t":1}"#);
        assert!(with_field(b"[1]", "t", "1").is_err());
    }

    #[test]
    fn graph_bodies_get_the_client_state_in_every_notification() {
        let body = br#"{"value":[{"b":1,"clientState":"old"},{"a":[2]}],"z":true}"#;
        let out = with_client_state(body, "s\"3").unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"value":[{"b":1,"clientState":"s\"3"},{"a":[2],"clientState":"s\"3"}],"z":true}"#
        );
        for bad in [
            &b"{}"[..],
            b"[1]",
            br#"{"value":[]}"#,
            br#"{"value":[1]}"#,
            b"a=1",
        ] {
            let err = with_client_state(bad, "s").unwrap_err();
            assert!(err.0.contains("notification collection"), "{err}");
        }
    }

    #[test]
    fn ed25519_schemes_sign_with_a_private_key() {
        let seed = [7u8; 32];
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let public = key.verifying_key().to_bytes();
        let libsodium = [seed, public].concat();
        for scheme in SIGNED_WITH_PRIVATE_KEY.iter().copied() {
            let (private, public_key, other) = match scheme {
                Scheme::StandardWebhooks | Scheme::Svix => (
                    format!("whsk_{}", STANDARD.encode(&libsodium)),
                    format!("whpk_{}", STANDARD.encode(public)),
                    format!("whpk_{}", STANDARD.encode([9u8; 32])),
                ),
                Scheme::Discord => (hex(&seed), hex(&public), hex(&[9u8; 32])),
                _ => (
                    STANDARD.encode(seed),
                    STANDARD.encode(public),
                    STANDARD.encode([9u8; 32]),
                ),
            };
            let signed = sign_with_private_key(
                unsigned(scheme, "application/json", br#"{"a":1}"#),
                &private,
            )
            .unwrap_or_else(|e| panic!("{scheme}: {e}"));
            verify(scheme, &public_key, &signed).unwrap_or_else(|e| panic!("{scheme}: {e}"));
            let other = verify(scheme, &other, &signed);
            assert!(other.is_err(), "{scheme}");
            for alternatives in required_headers(scheme, None) {
                assert!(
                    alternatives
                        .iter()
                        .any(|h| signed.headers.contains_key(h.as_str())),
                    "{scheme}: {alternatives:?}"
                );
            }
        }
        let err = sign_with_private_key(unsigned(Scheme::GitHub, "application/json", b"{}"), "k")
            .unwrap_err();
        assert!(err.0.contains("use --secret"), "{err}");
        for bad in [
            "",
            "zz",
            &STANDARD.encode([1u8; 31]),
            &STANDARD.encode([1u8; 64]),
        ] {
            let request = unsigned(Scheme::Discord, "application/json", b"{}");
            assert!(sign_with_private_key(request, bad).is_err(), "{bad}");
        }
        let request = unsigned(Scheme::StandardWebhooks, "application/json", b"{}");
        assert!(sign_with_private_key(request, &STANDARD.encode(seed)).is_err());
    }

    #[test]
    fn unusable_secrets_are_errors() {
        let request = || unsigned(Scheme::StandardWebhooks, "application/json", b"{}");
        assert!(sign(request(), "whsec_not base64!").is_err());
        let basic = unsigned(Scheme::Basic, "application/json", b"{}");
        assert!(sign(basic, "no-colon").is_err());
        let gitlab = unsigned(Scheme::GitLab, "application/json", b"{}");
        assert!(sign(gitlab, "line\nbreak").is_err());
    }

    #[test]
    fn signed_timestamps_are_read_back() {
        let now = OffsetDateTime::now_utc();
        for scheme in shared_secret_schemes()
            .into_iter()
            .filter(|s| s.is_timestamped())
        {
            let signed = sign(
                unsigned(scheme, "application/json", br#"{"a":1}"#),
                secret(scheme),
            )
            .unwrap();
            let at = signed_at(scheme, &signed.headers, &signed.body)
                .unwrap_or_else(|| panic!("{scheme}"));
            assert!((at - now.unix_timestamp()).abs() <= 1, "{scheme}");
        }
        assert_eq!(signed_at(Scheme::GitHub, &HeaderMap::new(), b""), None);
    }

    #[test]
    fn every_scheme_names_its_headers() {
        for scheme in shared_secret_schemes() {
            let signed = sign(unsigned(scheme, FORM, b"a=1"), secret(scheme));
            let Ok(signed) = signed else { continue };
            for alternatives in required_headers(scheme, None) {
                assert!(
                    alternatives
                        .iter()
                        .any(|h| signed.headers.contains_key(h.as_str())),
                    "{scheme}: {alternatives:?}"
                );
            }
            assert_ne!(expected_format(scheme), "the scheme's format");
        }
    }
}
