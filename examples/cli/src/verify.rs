//! `firefly verify`: why a captured request does (not) verify, step by step.

use std::time::Duration;

use clap::Args;
use firefly_webhook::http::{HeaderMap, HeaderName, HeaderValue};
use firefly_webhook::verify::{
    Scheme, SchemeOptions, SignatureVerifier, SignedRequest, Verified, VerifyError,
};
use serde_json::json;
use time::OffsetDateTime;

use crate::exit::{Exit, Fatal, read_argument, read_secret};
use crate::send::{default_scheme, parse_header_name, parse_scheme};
use crate::sign::{expected_format, required_headers, signed_at};

#[derive(Debug, Args)]
#[command(after_help = "\
The captured request is the raw HTTP/1.1 request as received: the request line, the headers,
a blank line, then the body byte for byte (`Content-Length`, when present, bounds the body, so a
trailing newline added by an editor does no harm). For example:

  POST /api/v1/webhook/github HTTP/1.1
  Content-Type: application/json
  X-Hub-Signature-256: sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17

  Hello, World!

Secrets are never printed: they are named by their position (#1, #2, ...).")]
pub(crate) struct VerifyArgs {
    /// The captured request: `@file`, or `-` for standard input.
    #[arg(long, value_name = "@FILE|-")]
    request: String,

    /// The provider [default: the last segment of the request path].
    #[arg(long)]
    provider: Option<String>,

    /// The scheme [default: the provider's name, when it names one].
    #[arg(long, value_parser = parse_scheme)]
    scheme: Option<Scheme>,

    /// A secret to check against (repeatable, in rotation order; `@file` reads it from a
    /// file). Without any, the gateway's verifier for the provider (FIREFLY_VERIFY_<P>,
    /// FIREFLY_SECRET_<P>) is used, with one verdict for all its secrets.
    #[arg(long = "secret", value_name = "SECRET|@FILE")]
    secrets: Vec<String>,

    /// The public base URL the gateway verifies URL signatures against, for twilio and square
    /// [default: FIREFLY_PUBLIC_URL].
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,

    /// The timestamp tolerance in seconds [default: the scheme's].
    #[arg(long, value_name = "SECONDS")]
    tolerance: Option<u64>,

    /// The header of the hmac-sha256 and api-key schemes.
    #[arg(long, value_name = "NAME", value_parser = parse_header_name)]
    header: Option<HeaderName>,

    /// Judge timestamps at this time (RFC 3339 or Unix seconds), e.g. when the request was
    /// captured [default: now].
    #[arg(long, value_name = "TIME", value_parser = crate::dates::parse_instant)]
    at: Option<OffsetDateTime>,
}

/// A request as captured.
#[derive(Debug)]
struct Captured {
    method: String,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Vec<u8>,
    /// Something about the capture worth saying (a short body, ...).
    note: Option<String>,
}

fn parse_capture(raw: &[u8]) -> Result<Captured, String> {
    // The head ends at the first blank line, whichever the line endings.
    let crlf = find(raw, b"\r\n\r\n").map(|at| (at, 4));
    let lf = find(raw, b"\n\n").map(|at| (at, 2));
    let (head, body) = match [crlf, lf].into_iter().flatten().min() {
        Some((at, len)) => (&raw[..at], &raw[at + len..]),
        None => (raw, &[][..]),
    };
    let head = std::str::from_utf8(head).map_err(|_| "the request head is not text")?;
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or_default().trim();
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(format!(
            "the first line must be a request line like `POST /api/v1/webhook/github HTTP/1.1`, not `{request_line}`"
        ));
    };
    // An absolute target (`POST https://host/path`) keeps only its path and query.
    let target = target.split_once("://").map_or(target, |(_, rest)| {
        rest.find('/').map_or("/", |i| &rest[i..])
    });
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (target.to_owned(), None),
    };
    let mut headers = HeaderMap::new();
    for line in lines {
        if line.trim().is_empty() {
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("`{line}` is not a header line (`name: value`)"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("`{}` is not a header name", name.trim()))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| format!("the value of `{name}` is not a valid header value"))?;
        headers.append(name, value);
    }
    if headers
        .get("transfer-encoding")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        return Err("the body is chunked: capture it decoded, with a Content-Length".into());
    }
    let mut body = body.to_vec();
    let mut note = None;
    if let Some(length) = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok()?.trim().parse::<usize>().ok())
    {
        if length <= body.len() {
            body.truncate(length);
        } else {
            note = Some(format!(
                "the body has {} bytes, Content-Length says {length}: was it cut?",
                body.len()
            ));
        }
    }
    Ok(Captured {
        method: method.to_owned(),
        path,
        query,
        headers,
        body,
        note,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    Failed,
    Skipped,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "FAIL",
            Self::Skipped => "--",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }
}

#[derive(Debug)]
struct Step {
    name: &'static str,
    status: Status,
    detail: String,
}

/// The verdict: each step, and the error that failed it.
#[derive(Debug)]
struct Diagnosis {
    steps: Vec<Step>,
    error: Option<VerifyError>,
}

/// The verifiers to try, each with the name it is reported under.
type Candidates = Vec<(String, Box<dyn SignatureVerifier>)>;

pub(crate) fn run(args: &VerifyArgs, json: bool) -> Result<Exit, Fatal> {
    let raw = read_argument(&args.request, "captured request")?;
    let captured =
        parse_capture(&raw).map_err(|e| Fatal::usage(format!("captured request: {e}")))?;
    let provider = match &args.provider {
        Some(p) => p.to_ascii_lowercase(),
        None => captured
            .path
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .filter(|s| !s.is_empty())
            .map(str::to_ascii_lowercase)
            .ok_or_else(|| Fatal::usage("no provider in the request path: pass --provider"))?,
    };
    let scheme = default_scheme(&provider, args.scheme)?;
    let settings = std::cell::OnceCell::new();
    let settings = || {
        settings
            .get_or_init(|| stack::Settings::from_env(stack::Defaults::GATEWAY))
            .as_ref()
            .map_err(|e| Fatal::usage(e.to_string()))
    };
    let public_url = match &args.public_url {
        Some(url) => Some(url.clone()),
        None if scheme.signs_url() => Some(
            settings()?
                .verifiers
                .public_url_str()
                .map(str::to_owned)
                .ok_or_else(|| {
                    Fatal::usage(format!(
                        "scheme `{scheme}` signs the request URL: pass --public-url (the gateway's FIREFLY_PUBLIC_URL)"
                    ))
                })?,
        ),
        None => None,
    };

    let candidates: Candidates = if args.secrets.is_empty() {
        let configured = settings()?;
        if configured.verifiers.get(&provider).is_none() {
            return Err(Fatal::usage(format!(
                "no --secret given and the gateway's configuration (FIREFLY_VERIFY_*) has no verifier for `{provider}`"
            )));
        }
        vec![(
            "the configured secrets".to_owned(),
            Box::new(RegistryEntry {
                verifiers: configured.verifiers.clone(),
                provider: provider.clone(),
            }),
        )]
    } else {
        let mut candidates: Candidates = Vec::with_capacity(args.secrets.len());
        for (i, secret) in args.secrets.iter().enumerate() {
            let mut options = SchemeOptions::new(read_secret(secret)?);
            if let Some(t) = args.tolerance {
                options = options.tolerance(Duration::from_secs(t));
            }
            if let Some(h) = &args.header {
                options = options.header(h.clone());
            }
            let verifier = scheme
                .verifier(options)
                .map_err(|e| Fatal::usage(format!("secret #{}: {e}", i + 1)))?;
            candidates.push((format!("secret #{}", i + 1), verifier));
        }
        candidates
    };

    let now = args.at.unwrap_or_else(OffsetDateTime::now_utc);
    let mut request = SignedRequest::new(&captured.body, &captured.headers)
        .at(now)
        .method(&captured.method)
        .target(&captured.path, captured.query.as_deref());
    if let Some(url) = &public_url {
        request = request.public_url(url);
    }
    let results: Vec<(String, Result<Verified, VerifyError>)> = candidates
        .iter()
        .map(|(name, v)| (name.clone(), v.verify(&request)))
        .collect();
    let diagnosis = diagnose(
        scheme,
        args.header.as_ref(),
        &captured,
        now,
        args.tolerance,
        &results,
    );
    print(&captured, &provider, scheme, &diagnosis, json);
    Ok(if diagnosis.error.is_none() {
        Exit::Ok
    } else {
        Exit::Unverified
    })
}

/// The gateway's verifier for one provider (the registry lends it out; this keeps the
/// registry, a cheap clone).
struct RegistryEntry {
    verifiers: firefly_webhook::Verifiers,
    provider: String,
}

impl SignatureVerifier for RegistryEntry {
    fn verify(&self, request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
        match self.verifiers.get(&self.provider) {
            Some(v) => v.verify(request),
            None => Err(VerifyError::UnknownProvider),
        }
    }
}

#[allow(clippy::too_many_lines, reason = "the steps, one after the other")]
fn diagnose(
    scheme: Scheme,
    header: Option<&HeaderName>,
    captured: &Captured,
    now: OffsetDateTime,
    tolerance: Option<u64>,
    results: &[(String, Result<Verified, VerifyError>)],
) -> Diagnosis {
    let mut steps = Vec::with_capacity(4);
    let first_error = |wanted: &VerifyError| {
        results
            .iter()
            .any(|(_, r)| r.as_ref().err() == Some(wanted))
    };
    let matched = results
        .iter()
        .find_map(|(name, r)| Some((name, r.as_ref().ok()?)));

    // 1. The headers the scheme reads.
    let required = required_headers(scheme, header);
    let missing: Vec<String> = required
        .iter()
        .filter(|alts| {
            !alts
                .iter()
                .any(|h| captured.headers.contains_key(h.as_str()))
        })
        .map(|alts| alts.join(" or "))
        .collect();
    let present: Vec<String> = required.iter().map(|alts| alts.join(" or ")).collect();
    if !missing.is_empty() || first_error(&VerifyError::MissingSignature) {
        let detail = if missing.is_empty() {
            "a header the scheme needs is missing".to_owned()
        } else {
            format!("missing {}", quoted(&missing))
        };
        steps.push(Step {
            name: "headers",
            status: Status::Failed,
            detail,
        });
        return skip_rest(
            steps,
            &["format", "timestamp", "signature"],
            VerifyError::MissingSignature,
        );
    }
    steps.push(Step {
        name: "headers",
        status: Status::Ok,
        detail: format!("present: {}", quoted(&present)),
    });

    // 2. Their format.
    if matched.is_none() && first_error(&VerifyError::MalformedSignature) {
        steps.push(Step {
            name: "format",
            status: Status::Failed,
            detail: format!("malformed: expected {}", expected_format(scheme)),
        });
        return skip_rest(
            steps,
            &["timestamp", "signature"],
            VerifyError::MalformedSignature,
        );
    }
    steps.push(Step {
        name: "format",
        status: Status::Ok,
        detail: "well-formed".to_owned(),
    });

    // 3. The signed timestamp.
    let out_of_tolerance = first_error(&VerifyError::TimestampOutOfTolerance);
    let skew =
        signed_at(scheme, &captured.headers, &captured.body).map(|at| now.unix_timestamp() - at);
    let window = tolerance.map_or_else(
        || "the scheme's tolerance".to_owned(),
        |t| format!("the tolerance of {t} s"),
    );
    let timing = match skew {
        Some(s) if s >= 0 => format!("signed {s} s before the time it is judged at"),
        Some(s) => format!(
            "signed {} s after the time it is judged at (clock skew?)",
            -s
        ),
        None => "signed at an unreadable time".to_owned(),
    };
    if !scheme.is_timestamped() {
        steps.push(Step {
            name: "timestamp",
            status: Status::Skipped,
            detail: "the scheme signs no timestamp".to_owned(),
        });
    } else if out_of_tolerance && matched.is_none() {
        steps.push(Step {
            name: "timestamp",
            status: Status::Failed,
            detail: format!("{timing}: outside {window}"),
        });
        // Linear checks the signature first: a stale Linear request had a matching one.
        let rest = if scheme == Scheme::Linear {
            let which = results
                .iter()
                .find(|(_, r)| r.as_ref().err() == Some(&VerifyError::TimestampOutOfTolerance))
                .map_or("a secret", |(name, _)| name.as_str());
            steps.push(Step {
                name: "signature",
                status: Status::Ok,
                detail: format!("matches {which}"),
            });
            &[][..]
        } else {
            &["signature"][..]
        };
        return skip_rest(steps, rest, VerifyError::TimestampOutOfTolerance);
    } else {
        steps.push(Step {
            name: "timestamp",
            status: Status::Ok,
            detail: format!("{timing}: within {window}"),
        });
    }

    // 4. The signature against each secret.
    if let Some((name, verified)) = matched {
        let label = verified
            .secret_label()
            .map(|l| format!(" (label {l})"))
            .unwrap_or_default();
        steps.push(Step {
            name: "signature",
            status: Status::Ok,
            detail: format!("matches {name}{label}"),
        });
        return Diagnosis { steps, error: None };
    }
    let verdicts: Vec<String> = results
        .iter()
        .map(|(name, r)| match r {
            Err(VerifyError::InvalidSignature) => format!("{name}: mismatch"),
            Err(e) => format!("{name}: {}", e.code()),
            Ok(_) => format!("{name}: match"),
        })
        .collect();
    let mut detail = format!("matches no secret ({})", verdicts.join(", "));
    if scheme.signs_url() {
        detail.push_str(
            "; the URL is signed too: check --public-url against the URL the provider calls",
        );
    }
    steps.push(Step {
        name: "signature",
        status: Status::Failed,
        detail,
    });
    let error = results
        .iter()
        .find_map(|(_, r)| r.as_ref().err().cloned())
        .unwrap_or(VerifyError::InvalidSignature);
    Diagnosis {
        steps,
        error: Some(error),
    }
}

fn skip_rest(mut steps: Vec<Step>, rest: &[&'static str], error: VerifyError) -> Diagnosis {
    for name in rest {
        steps.push(Step {
            name,
            status: Status::Skipped,
            detail: "not reached".to_owned(),
        });
    }
    Diagnosis {
        steps,
        error: Some(error),
    }
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print(captured: &Captured, provider: &str, scheme: Scheme, diagnosis: &Diagnosis, json: bool) {
    let failed = diagnosis
        .steps
        .iter()
        .find(|s| s.status == Status::Failed)
        .map(|s| s.name);
    if json {
        let steps: Vec<_> = diagnosis
            .steps
            .iter()
            .map(|s| json!({"step": s.name, "status": s.status.name(), "detail": s.detail}))
            .collect();
        let out = json!({
            "provider": provider,
            "scheme": scheme.name(),
            "verified": diagnosis.error.is_none(),
            "failedStep": failed,
            "code": diagnosis.error.as_ref().map(VerifyError::code),
            "note": captured.note,
            "steps": steps,
        });
        println!("{out}");
        return;
    }
    let target = match &captured.query {
        Some(q) => format!("{}?{q}", captured.path),
        None => captured.path.clone(),
    };
    println!(
        "request    {} {target}, {}-byte body",
        captured.method,
        captured.body.len()
    );
    println!(
        "provider   {provider}, scheme {scheme} (signs {})",
        scheme.signs()
    );
    if let Some(note) = &captured.note {
        println!("note       {note}");
    }
    for step in &diagnosis.steps {
        println!(
            "  {:<5} {:<10} {}",
            step.status.label(),
            step.name,
            step.detail
        );
    }
    match (&diagnosis.error, failed) {
        (None, _) => println!("verified"),
        (Some(error), step) => println!(
            "verification failed at `{}`: {} ({error})",
            step.unwrap_or("signature"),
            error.code()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_parse_with_either_line_ending() {
        let raw = b"POST /api/v1/webhook/github?x=1 HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nContent-Length: 2\r\n\r\n{}\n";
        let c = parse_capture(raw).unwrap();
        assert_eq!(
            (c.method.as_str(), c.path.as_str()),
            ("POST", "/api/v1/webhook/github")
        );
        assert_eq!(c.query.as_deref(), Some("x=1"));
        assert_eq!(c.headers["x-a"], "1");
        assert_eq!(c.body, b"{}", "Content-Length trims the editor's newline");

        let c = parse_capture(b"POST https://h.example/p HTTP/1.1\nX-A: 1\n\nbody").unwrap();
        assert_eq!(c.path, "/p");
        assert_eq!(c.body, b"body");
        assert!(parse_capture(b"garbage").is_err());
        assert!(parse_capture(b"POST / HTTP/1.1\nno colon\n\n").is_err());
        let chunked = b"POST / HTTP/1.1\nTransfer-Encoding: chunked\n\n2\r\n{}\r\n0\r\n\r\n";
        assert!(parse_capture(chunked).unwrap_err().contains("chunked"));
        let short = parse_capture(b"POST / HTTP/1.1\nContent-Length: 10\n\nab").unwrap();
        assert!(short.note.unwrap().contains("cut"));
    }
}
