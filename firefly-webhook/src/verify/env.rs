//! Building the registry from environment variables, for the gateway.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use http::HeaderName;

use super::{
    ApiKey, Basic, ConfigError, GenericHmac, GitHub, GitLab, Intercom, Linear, Paddle, SecretSet,
    Shopify, SignatureVerifier, Slack, Square, StandardWebhooks, Stripe, Twilio, Verifiers, Zoom,
};

/// The scheme names accepted in `FIREFLY_VERIFY_<PROVIDER>`.
pub const SCHEMES: &[&str] = &[
    "github",
    "stripe",
    "shopify",
    "slack",
    "standard-webhooks",
    "svix",
    "twilio",
    "gitlab",
    "square",
    "paddle",
    "linear",
    "zoom",
    "intercom",
    "hmac-sha256",
    "basic",
    "api-key",
];

const VERIFY: &str = "FIREFLY_VERIFY_";
const SECRET: &str = "FIREFLY_SECRET_";
const PROVIDER: &str = "FIREFLY_PROVIDER_";
const TOLERANCE: &str = "FIREFLY_TOLERANCE_";
const HEADER: &str = "FIREFLY_HEADER_";
const PUBLIC_URL: &str = "FIREFLY_PUBLIC_URL";
const REQUIRE: &str = "FIREFLY_REQUIRE_VERIFICATION";

fn env_error(var: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Env {
        var: var.into(),
        reason: reason.into(),
    }
}

impl Verifiers {
    /// Builds the registry from the process environment; see
    /// [`from_env_vars`](Self::from_env_vars) for the variables.
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut vars = Vec::new();
        for (key, value) in std::env::vars_os() {
            let Some(key) = key.to_str().filter(|k| k.starts_with("FIREFLY_")) else {
                continue;
            };
            let value = value
                .into_string()
                .map_err(|_| env_error(key, "the value is not valid UTF-8"))?;
            vars.push((key.to_owned(), value));
        }
        Self::from_env_vars(vars)
    }

    /// Builds the registry from `(name, value)` pairs, as [`from_env`](Self::from_env) does
    /// with the process environment (testable without touching it).
    ///
    /// | variable                              | meaning                                                         |
    /// |---------------------------------------|-----------------------------------------------------------------|
    /// | `FIREFLY_VERIFY_<P>=<scheme>`         | verify provider `<P>` with `<scheme>` (names below)             |
    /// | `FIREFLY_SECRET_<P>=<s1>[,<s2>…]`     | its secrets, comma-separated, tried in order (rotation)         |
    /// | `FIREFLY_PROVIDER_<P>=<name>`         | optional: the provider's real name, e.g. `my-app`               |
    /// | `FIREFLY_TOLERANCE_<P>=<seconds>`     | optional: timestamp tolerance, for timestamped schemes          |
    /// | `FIREFLY_HEADER_<P>=<header>`         | optional: the header of `api-key` / `hmac-sha256`               |
    /// | `FIREFLY_PUBLIC_URL=<url>`            | external base URL, e.g. `https://hooks.example.com` (required by `twilio` and `square`) |
    /// | `FIREFLY_REQUIRE_VERIFICATION=true`   | providers without a verifier get 401 `unknown_provider`         |
    ///
    /// `<P>` is the provider name upper-cased, with `-` and `.` written as `_`; it maps back
    /// to the lower-cased name, so `FIREFLY_VERIFY_MY_APP` configures provider `my_app`. For a
    /// name containing `-` or `.`, set `FIREFLY_PROVIDER_MY_APP=my-app`.
    ///
    /// Schemes: `github`, `stripe`, `shopify`, `slack`, `standard-webhooks`, `svix`, `twilio`,
    /// `gitlab`, `square`, `paddle`, `linear`, `zoom`, `intercom`, `hmac-sha256` (hex
    /// HMAC-SHA256 of the body in `X-Signature`, optional `sha256=` prefix), `basic` (secrets
    /// are `user:password`) and `api-key` (header `X-Api-Key`).
    ///
    /// Anything inconsistent — an unknown scheme, a missing or empty secret, a per-provider
    /// variable without its `FIREFLY_VERIFY_<P>`, a scheme that signs the URL without
    /// `FIREFLY_PUBLIC_URL` — is an error naming the variable (never a secret). Other
    /// variables are ignored.
    ///
    /// ```
    /// use firefly_webhook::verify::Verifiers;
    ///
    /// let verifiers = Verifiers::from_env_vars([
    ///     ("FIREFLY_VERIFY_GITHUB", "github"),
    ///     ("FIREFLY_SECRET_GITHUB", "new-secret,old-secret"),
    ///     ("FIREFLY_VERIFY_MY_APP", "hmac-sha256"),
    ///     ("FIREFLY_SECRET_MY_APP", "s3cret"),
    ///     ("FIREFLY_PROVIDER_MY_APP", "my-app"),
    ///     ("FIREFLY_REQUIRE_VERIFICATION", "true"),
    /// ])
    /// .unwrap();
    /// assert_eq!(verifiers.providers(), ["github", "my-app"]);
    /// assert!(verifiers.is_required());
    ///
    /// let err = Verifiers::from_env_vars([("FIREFLY_VERIFY_GITHUB", "gthub")]).unwrap_err();
    /// assert!(err.to_string().starts_with("FIREFLY_VERIFY_GITHUB: unknown scheme `gthub`"));
    /// ```
    pub fn from_env_vars<I, K, V>(vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let vars: BTreeMap<String, String> = vars
            .into_iter()
            .filter(|(k, _)| k.as_ref().starts_with("FIREFLY_"))
            .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
            .collect();

        let mut verifiers = Self::new();
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

        // Every per-provider variable must belong to a FIREFLY_VERIFY_<P>: catches typos.
        for key in vars.keys() {
            for prefix in [SECRET, PROVIDER, TOLERANCE, HEADER] {
                if let Some(suffix) = key.strip_prefix(prefix)
                    && !vars.contains_key(&format!("{VERIFY}{suffix}"))
                {
                    return Err(env_error(
                        key,
                        format!("is set but {VERIFY}{suffix} is not"),
                    ));
                }
            }
        }

        let mut seen: HashMap<String, String> = HashMap::new();
        for (key, scheme) in &vars {
            let Some(suffix) = key.strip_prefix(VERIFY) else {
                continue;
            };
            let spec = ProviderSpec::read(&vars, suffix, scheme, public_url.is_some())?;
            if let Some(previous) = seen.insert(spec.provider.clone(), key.clone()) {
                return Err(env_error(
                    key,
                    format!(
                        "provider `{}` is already configured by {previous}",
                        spec.provider
                    ),
                ));
            }
            let provider = spec.provider.clone();
            verifiers = verifiers.provider(&provider, spec.build()?);
        }
        Ok(verifiers)
    }
}

struct ProviderSpec<'a> {
    suffix: &'a str,
    provider: String,
    scheme: String,
    secrets: SecretSet,
    tolerance: Option<Duration>,
    header: Option<HeaderName>,
}

impl<'a> ProviderSpec<'a> {
    fn read(
        vars: &BTreeMap<String, String>,
        suffix: &'a str,
        scheme: &str,
        has_public_url: bool,
    ) -> Result<Self, ConfigError> {
        let verify_var = format!("{VERIFY}{suffix}");
        let scheme = scheme.trim().to_ascii_lowercase();
        if !SCHEMES.contains(&scheme.as_str()) {
            return Err(env_error(
                &verify_var,
                format!(
                    "unknown scheme `{scheme}`; expected one of {}",
                    SCHEMES.join(", ")
                ),
            ));
        }
        if matches!(scheme.as_str(), "twilio" | "square") && !has_public_url {
            return Err(env_error(
                &verify_var,
                format!("scheme `{scheme}` signs the request URL: set {PUBLIC_URL}"),
            ));
        }

        let provider_var = format!("{PROVIDER}{suffix}");
        let provider = match vars.get(&provider_var) {
            Some(name) => crate::ingest::provider_name(name.trim()).ok_or_else(|| {
                env_error(
                    &provider_var,
                    "not a provider name: use 1-64 characters of a-z, 0-9, '.', '_' and '-'",
                )
            })?,
            None => crate::ingest::provider_name(suffix).ok_or_else(|| {
                env_error(
                    &verify_var,
                    format!("`{suffix}` is not a provider name; set {provider_var}"),
                )
            })?,
        };

        let secret_var = format!("{SECRET}{suffix}");
        let raw = vars
            .get(&secret_var)
            .ok_or_else(|| env_error(&secret_var, format!("is required by {verify_var}")))?;
        let parts: Vec<&str> = raw.split(',').map(str::trim).collect();
        if parts.iter().any(|s| s.is_empty()) {
            return Err(env_error(
                &secret_var,
                "empty secret: give one or more secrets separated by commas",
            ));
        }
        let secrets: SecretSet = parts.into_iter().collect();

        let tolerance_var = format!("{TOLERANCE}{suffix}");
        let tolerance = match vars.get(&tolerance_var) {
            None => None,
            Some(_) if !timestamped(&scheme) => {
                return Err(env_error(
                    &tolerance_var,
                    format!("scheme `{scheme}` has no timestamp"),
                ));
            }
            Some(v) => Some(Duration::from_secs(v.trim().parse::<u64>().map_err(
                |_| env_error(&tolerance_var, "expected a whole number of seconds"),
            )?)),
        };

        let header_var = format!("{HEADER}{suffix}");
        let header = match vars.get(&header_var) {
            None => None,
            Some(_) if !matches!(scheme.as_str(), "api-key" | "hmac-sha256") => {
                return Err(env_error(
                    &header_var,
                    format!("scheme `{scheme}` has a fixed header"),
                ));
            }
            Some(v) => Some(
                HeaderName::from_bytes(v.trim().as_bytes())
                    .map_err(|_| env_error(&header_var, "not a valid header name"))?,
            ),
        };

        Ok(Self {
            suffix,
            provider,
            scheme,
            secrets,
            tolerance,
            header,
        })
    }

    fn build(self) -> Result<Box<dyn SignatureVerifier>, ConfigError> {
        let secret_var = format!("{SECRET}{}", self.suffix);
        let secrets = self.secrets;
        let tolerance = self.tolerance;
        macro_rules! timed {
            ($v:expr) => {{
                let v = $v;
                match tolerance {
                    Some(t) => v.tolerance(t),
                    None => v,
                }
            }};
        }
        let standard = |svix: bool| {
            let built = if svix {
                StandardWebhooks::svix(secrets.clone())
            } else {
                StandardWebhooks::new(secrets.clone())
            };
            built.map_err(|e| env_error(&secret_var, e.to_string()))
        };
        Ok(match self.scheme.as_str() {
            "github" => Box::new(GitHub::new(secrets)),
            "stripe" => Box::new(timed!(Stripe::new(secrets))),
            "shopify" => Box::new(Shopify::new(secrets)),
            "slack" => Box::new(timed!(Slack::new(secrets))),
            "standard-webhooks" => Box::new(timed!(standard(false)?)),
            "svix" => Box::new(timed!(standard(true)?)),
            "twilio" => Box::new(Twilio::new(secrets)),
            "gitlab" => Box::new(GitLab::new(secrets)),
            "square" => Box::new(Square::new(secrets)),
            "paddle" => Box::new(timed!(Paddle::new(secrets))),
            "linear" => Box::new(timed!(Linear::new(secrets))),
            "zoom" => Box::new(timed!(Zoom::new(secrets))),
            "intercom" => Box::new(Intercom::new(secrets)),
            "hmac-sha256" => {
                let v = GenericHmac::sha256(secrets).prefix("sha256=");
                Box::new(match self.header {
                    Some(h) => v.header(h),
                    None => v,
                })
            }
            "basic" => {
                if secrets.iter().any(|s| !s.expose_secret().contains(&b':')) {
                    return Err(env_error(
                        &secret_var,
                        "basic credentials must be `user:password`",
                    ));
                }
                Box::new(Basic::new(secrets))
            }
            "api-key" => {
                let v = ApiKey::new(secrets);
                Box::new(match self.header {
                    Some(h) => v.header(h),
                    None => v,
                })
            }
            other => {
                return Err(env_error(
                    format!("{VERIFY}{}", self.suffix),
                    format!("unknown scheme `{other}`"),
                ));
            }
        })
    }
}

fn timestamped(scheme: &str) -> bool {
    matches!(
        scheme,
        "stripe" | "slack" | "standard-webhooks" | "svix" | "paddle" | "linear" | "zoom"
    )
}

fn parse_bool(var: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(env_error(var, "expected true or false")),
    }
}

fn parse_public_url(value: &str) -> Result<String, ConfigError> {
    let url = value.trim().trim_end_matches('/');
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(['?', '#', ' ']) => Ok(url.to_owned()),
        _ => Err(env_error(
            PUBLIC_URL,
            "expected an http(s) base URL without query, e.g. https://hooks.example.com",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WebhookEvent;
    use crate::verify::VerifyError;

    fn build(vars: &[(&str, &str)]) -> Result<Verifiers, ConfigError> {
        Verifiers::from_env_vars(vars.iter().copied())
    }

    fn err(vars: &[(&str, &str)]) -> String {
        build(vars).unwrap_err().to_string()
    }

    #[test]
    fn every_scheme_builds() {
        for scheme in SCHEMES {
            let secret = match *scheme {
                "standard-webhooks" | "svix" => "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "basic" => "user:pass",
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
                "FIREFLY_SECRET_G: basic credentials must be `user:password`",
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
