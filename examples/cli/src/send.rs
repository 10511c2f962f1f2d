//! `firefly send`: a webhook signed as its provider signs it, posted to a gateway.

use std::time::Duration;

use clap::Args;
use firefly_webhook::http::{HeaderMap, HeaderName, HeaderValue, Uri, header};
use firefly_webhook::verify::Scheme;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::exit::{Exit, Fatal, read_argument, read_secret};
use crate::sign::{Unsigned, sign, sign_with_private_key};

/// The gateway's default ingest prefix, added to a bare `--url`.
const INGEST_PREFIX: &str = "/api/v1/webhook";

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  firefly send github --url http://127.0.0.1:8080 --secret @github.secret --body @push.json
  firefly send acme --scheme standard-webhooks --secret whsec_... --url http://127.0.0.1:8080 --body -
  firefly send twilio --url http://127.0.0.1:8080 --public-url https://hooks.example.com \\
      --secret @twilio.token --content-type application/x-www-form-urlencoded --body 'Body=hi'")]
pub(crate) struct SendArgs {
    /// The provider: the path segment after the ingest prefix, e.g. `github`.
    provider: String,

    /// The gateway's base URL (`http://127.0.0.1:8080`; `/api/v1/webhook/<provider>` is added)
    /// or the full ingest URL. Plain http only.
    #[arg(long, value_name = "URL")]
    url: Uri,

    /// The body: `@file`, `-` for standard input, or the text itself.
    #[arg(long, value_name = "@FILE|-|TEXT")]
    body: String,

    /// The signing secret (token, `user:password` for basic, `whsec_…` for Standard Webhooks
    /// and Svix); `@file` reads it from a file, out of the shell history.
    #[arg(
        long,
        value_name = "SECRET|@FILE",
        required_unless_present = "private_key",
        conflicts_with = "private_key"
    )]
    secret: Option<String>,

    /// Instead of --secret, for the ed25519 schemes: the sender's private key. discord and
    /// telnyx take the 32-byte seed in hex or base64; standard-webhooks and svix a
    /// `whsk_<base64>` key, and sign `v1a`. `@file` reads it from a file.
    #[arg(long, value_name = "KEY|@FILE")]
    private_key: Option<String>,

    /// The signature scheme [default: the provider's name, when it names one]. One of:
    /// github, stripe, shopify, slack, standard-webhooks, svix, twilio, gitlab, square,
    /// paddle, linear, zoom, intercom, hmac-sha256, basic, api-key, meta, bitbucket, twitch,
    /// mailgun, teams (the secret is the base64 security token), docusign, hubspot, box,
    /// typeform, calendly, zendesk, x, dropbox, okta (the secret is the Authorization value),
    /// microsoft-graph (the body is a notification collection `{"value":[…]}`; the secret, its
    /// clientState, is written into each notification).
    #[arg(long, value_parser = parse_scheme)]
    scheme: Option<Scheme>,

    /// The Content-Type [default: application/json; for twilio, a body that is not JSON is
    /// sent as application/x-www-form-urlencoded].
    #[arg(long, value_name = "TYPE")]
    content_type: Option<String>,

    /// The event type, for providers that send one in a header (GitHub, GitLab, Shopify,
    /// Linear).
    #[arg(long)]
    event: Option<String>,

    /// The header of the hmac-sha256 and api-key schemes [default: x-signature, x-api-key].
    #[arg(long, value_name = "NAME", value_parser = parse_header_name)]
    header: Option<HeaderName>,

    /// The public base URL the gateway checks URL signatures against (its
    /// FIREFLY_PUBLIC_URL), for twilio, square and hubspot [default: the scheme and host of
    /// --url].
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,

    /// An extra request header (repeatable).
    #[arg(short = 'H', long = "add-header", value_name = "NAME: VALUE")]
    add_header: Vec<String>,

    /// Seconds to wait for the gateway's answer.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    timeout: u64,
}

/// A scheme name, for clap.
pub(crate) fn parse_scheme(value: &str) -> Result<Scheme, String> {
    value.parse().map_err(|_| {
        let names: Vec<&str> = Scheme::ALL.iter().map(|s| s.name()).collect();
        format!(
            "unknown scheme `{value}`; expected one of {}",
            names.join(", ")
        )
    })
}

/// A header name, for clap.
pub(crate) fn parse_header_name(value: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(value.trim().as_bytes())
        .map_err(|_| format!("`{value}` is not a header name"))
}

/// The scheme a provider uses when none is given: the one named like the provider.
pub(crate) fn default_scheme(provider: &str, given: Option<Scheme>) -> Result<Scheme, Fatal> {
    given.or_else(|| provider.parse().ok()).ok_or_else(|| {
        Fatal::usage(format!(
            "provider `{provider}` names no scheme: pass --scheme (e.g. --scheme standard-webhooks)"
        ))
    })
}

pub(crate) async fn run(args: SendArgs, json: bool) -> Result<Exit, Fatal> {
    let scheme = default_scheme(&args.provider, args.scheme)?;
    let body = read_argument(&args.body, "body")?;
    let content_type = args.content_type.clone().unwrap_or_else(|| {
        let is_json = serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok();
        if scheme == Scheme::Twilio && !is_json {
            "application/x-www-form-urlencoded".to_owned()
        } else {
            "application/json".to_owned()
        }
    });
    let url = &args.url;
    let path = match url.path() {
        "" | "/" => format!("{INGEST_PREFIX}/{}", args.provider),
        path => path.to_owned(),
    };
    let authority = url
        .authority()
        .ok_or_else(|| Fatal::usage(format!("`{url}` has no host")))?;
    let public_url = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("{}://{authority}", url.scheme_str().unwrap_or("http")));
    let unsigned = Unsigned {
        scheme,
        header: args.header.as_ref(),
        event: args.event.as_deref(),
        content_type: &content_type,
        public_url: &public_url,
        path: &path,
        query: url.query().map(str::to_owned),
        body,
        now: OffsetDateTime::now_utc(),
        delivery: Uuid::new_v4(),
    };
    let signed = match (&args.secret, &args.private_key) {
        (_, Some(key)) => sign_with_private_key(unsigned, &read_secret(key)?),
        (Some(secret), None) => sign(unsigned, &read_secret(secret)?),
        (None, None) => return Err(Fatal::usage("pass --secret or --private-key")),
    }
    .map_err(|e| Fatal::usage(format!("cannot sign as {scheme}: {e}")))?;

    let mut target = path;
    if let Some(q) = &signed.query {
        target.push('?');
        target.push_str(q);
    }
    let uri = Uri::builder()
        .scheme(url.scheme_str().unwrap_or("http"))
        .authority(authority.as_str())
        .path_and_query(target)
        .build()
        .map_err(|e| Fatal::usage(format!("invalid URL: {e}")))?;
    let headers = request_headers(&content_type, signed.headers, &args.add_header)?;
    let timeout = Duration::from_secs(args.timeout.max(1));
    let answer = crate::client::post(&uri, headers, signed.body, timeout).await?;
    Ok(report(&answer, json))
}

fn request_headers(
    content_type: &str,
    signed: HeaderMap,
    extra: &[String],
) -> Result<HeaderMap, Fatal> {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type)
            .map_err(|_| Fatal::usage("--content-type is not a valid header value"))?,
    );
    headers.insert(
        header::USER_AGENT,
        HeaderValue::from_static(concat!("firefly/", env!("CARGO_PKG_VERSION"))),
    );
    headers.extend(signed);
    for line in extra {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| Fatal::usage(format!("-H `{line}`: expected `name: value`")))?;
        let name = parse_header_name(name).map_err(Fatal::usage)?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| Fatal::usage(format!("-H `{line}`: invalid header value")))?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// Prints the receipt (exit 0) or the gateway's refusal (exit 1).
fn report(answer: &crate::client::Answer, json: bool) -> Exit {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(&answer.body).ok();
    let accepted = answer.status.is_success();
    if json {
        match &parsed {
            Some(value) => println!("{value}"),
            None => println!(
                "{}",
                serde_json::json!({
                    "status": answer.status.as_u16(),
                    "body": String::from_utf8_lossy(&answer.body),
                })
            ),
        }
    } else if accepted {
        match &parsed {
            Some(value) => println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
            ),
            None => println!("{}", String::from_utf8_lossy(&answer.body)),
        }
    } else {
        let field = |name: &str| {
            parsed
                .as_ref()
                .and_then(|v| v.get(name)?.as_str().map(str::to_owned))
        };
        match (field("code"), field("message")) {
            (Some(code), Some(message)) => {
                println!("rejected: {} {code}: {message}", answer.status.as_u16());
            }
            (Some(code), None) => println!("rejected: {} {code}", answer.status.as_u16()),
            _ => println!(
                "rejected: {} {}",
                answer.status,
                String::from_utf8_lossy(&answer.body).trim()
            ),
        }
    }
    if accepted { Exit::Ok } else { Exit::Failed }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_default_to_the_provider_name() {
        assert_eq!(default_scheme("github", None).unwrap(), Scheme::GitHub);
        assert_eq!(
            default_scheme("acme", Some(Scheme::Svix)).unwrap(),
            Scheme::Svix
        );
        assert_eq!(
            default_scheme("acme", None).unwrap_err().exit(),
            Exit::Usage
        );
        assert!(
            parse_scheme("gthub")
                .unwrap_err()
                .contains("standard-webhooks")
        );
    }

    #[test]
    fn extra_headers_are_name_value_pairs() {
        let headers = request_headers(
            "application/json",
            HeaderMap::new(),
            &["X-Request-Id: abc".into()],
        )
        .unwrap();
        assert_eq!(headers["x-request-id"], "abc");
        assert!(
            request_headers("application/json", HeaderMap::new(), &["nocolon".into()]).is_err()
        );
    }
}
