//! [`Scheme`]: the named verification schemes, as a typed value.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;

use super::{
    ApiKey, Basic, Bitbucket, BoxWebhooks, Calendly, ConfigError, DocuSign, GenericHmac, GitHub,
    GitLab, HubSpot, Intercom, Linear, Mailgun, Meta, Paddle, SecretSet, Shopify,
    SignatureVerifier, Slack, Square, StandardWebhooks, Stripe, Teams, Twilio, Twitch, Typeform,
    Zendesk, Zoom,
};
use super::{
    Discord, DiscordPing, DropboxChallenge, Encoding, GraphClientState, GraphValidation,
    HttpsFetcher, MetaVerifyToken, OktaVerification, PayPal, SendGrid, SlackUrlVerification, Sns,
    SnsSubscription, Telnyx, TwitchCallbackVerification, WithHandshake, XCrc, ZoomUrlValidation,
};

/// A named signature scheme: what a provider signs and how, so an application can pick a
/// verifier from configuration.
///
/// ```
/// use firefly_webhook::verify::{Scheme, SchemeOptions};
///
/// let scheme: Scheme = "stripe".parse().unwrap();
/// assert!(scheme.is_timestamped());
/// let verifier = scheme.verifier(SchemeOptions::new("whsec_test")).unwrap();
/// # let _ = verifier;
/// assert!("gthub".parse::<Scheme>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Scheme {
    /// [`GitHub`]: `X-Hub-Signature-256`, HMAC-SHA256 of the body.
    GitHub,
    /// [`Stripe`]: `Stripe-Signature`, timestamp + body.
    Stripe,
    /// [`Shopify`]: `X-Shopify-Hmac-Sha256`, base64 HMAC of the body.
    Shopify,
    /// [`Slack`]: `X-Slack-Signature` v0, timestamp + body.
    Slack,
    /// [`StandardWebhooks`]: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    StandardWebhooks,
    /// [`StandardWebhooks::svix`]: the same with `svix-*` headers.
    Svix,
    /// [`Twilio`]: `X-Twilio-Signature`, HMAC-SHA1 of the URL and form parameters.
    Twilio,
    /// [`GitLab`]: `X-Gitlab-Token`, a shared token.
    GitLab,
    /// [`Square`]: `X-Square-Hmacsha256-Signature`, notification URL + body.
    Square,
    /// [`Paddle`]: `Paddle-Signature`, timestamp + body.
    Paddle,
    /// [`Linear`]: `Linear-Signature`, body, with the timestamp in the body.
    Linear,
    /// [`Zoom`]: `x-zm-signature`, timestamp + body.
    Zoom,
    /// [`Intercom`]: `X-Hub-Signature`, HMAC-SHA1 of the body.
    Intercom,
    /// [`GenericHmac::sha256`]: hex HMAC-SHA256 of the body in a header (`X-Signature` by
    /// default, optional `sha256=` prefix).
    HmacSha256,
    /// [`Basic`]: HTTP Basic credentials, secrets are `user:password`.
    Basic,
    /// [`ApiKey`]: a static key in a header (`X-Api-Key` by default).
    ApiKey,
    /// [`Meta`]: `X-Hub-Signature-256`, HMAC-SHA256 of the body with the app secret.
    Meta,
    /// [`Bitbucket`]: Bitbucket Cloud's `X-Hub-Signature: sha256=…`, HMAC-SHA256 of the body.
    Bitbucket,
    /// [`Twitch`]: `Twitch-Eventsub-Message-Signature`, message id + timestamp + body.
    Twitch,
    /// [`Mailgun`]: the body's `signature`, timestamp + token.
    Mailgun,
    /// [`Teams`]: Microsoft Teams' `Authorization: HMAC …`, body, base64 key.
    Teams,
    /// [`DocuSign`]: `X-DocuSign-Signature-<n>`, body, one header per active key.
    DocuSign,
    /// [`HubSpot`]: `X-HubSpot-Signature-v3`, method + URL + body + timestamp.
    HubSpot,
    /// [`BoxWebhooks`]: `box-signature-primary` / `-secondary`, body + timestamp.
    Box,
    /// [`Typeform`]: `Typeform-Signature: sha256=…`, base64 HMAC-SHA256 of the body.
    Typeform,
    /// [`Calendly`]: `Calendly-Webhook-Signature: t=…,v1=…`, timestamp + body.
    Calendly,
    /// [`Zendesk`]: `X-Zendesk-Webhook-Signature`, timestamp + body.
    Zendesk,
    /// [`Discord`]: `X-Signature-Ed25519`, ed25519 over timestamp + body; public keys. Answers
    /// the interactions PING ([`DiscordPing`]).
    Discord,
    /// [`Telnyx`]: `telnyx-signature-ed25519`, ed25519 over timestamp + body; public keys.
    Telnyx,
    /// [`SendGrid`]: `X-Twilio-Email-Event-Webhook-Signature`, ECDSA P-256 over timestamp +
    /// body; public keys.
    SendGrid,
    /// [`Sns`]: AWS SNS, RSA with SNS's certificate (needs [`SchemeOptions::fetcher`]);
    /// secrets are topic ARNs. Confirms subscriptions ([`SnsSubscription`]).
    Sns,
    /// [`PayPal`]: RSA with PayPal's certificate (needs [`SchemeOptions::fetcher`]); secrets
    /// are webhook ids.
    PayPal,
    /// X (Twitter) Account Activity: `x-twitter-webhooks-signature: sha256=<base64 HMAC-SHA256
    /// of the body>` with the consumer secret ([`GenericHmac`]); answers the CRC ([`XCrc`]).
    X,
    /// [`GraphClientState`]: Microsoft Graph change notifications' `clientState`; answers the
    /// subscription validation ([`GraphValidation`]).
    MicrosoftGraph,
    /// Dropbox: `X-Dropbox-Signature`, hex HMAC-SHA256 of the body with the app secret
    /// ([`GenericHmac`]); answers the challenge ([`DropboxChallenge`]).
    Dropbox,
    /// Okta event hooks: the configured `Authorization` header value ([`ApiKey`]); answers the
    /// one-time verification ([`OktaVerification`]).
    Okta,
}

/// The settings a [`Scheme`] builds its verifier from.
#[derive(Clone)]
#[non_exhaustive]
pub struct SchemeOptions {
    /// The secrets, tried in order (rotation).
    pub secrets: SecretSet,
    /// Timestamp tolerance, for [timestamped](Scheme::is_timestamped) schemes.
    pub tolerance: Option<Duration>,
    /// The header, for schemes with a [configurable header](Scheme::has_header_option).
    pub header: Option<HeaderName>,
    /// Meta's verify token(s), which the `GET` handshake must present ([`MetaVerifyToken`]);
    /// without them a `meta` provider answers no handshake.
    pub verify_token: Option<SecretSet>,
    /// The HTTPS client of the schemes that [fetch certificates](Scheme::needs_fetcher).
    pub fetcher: Option<Arc<dyn HttpsFetcher>>,
}

impl fmt::Debug for SchemeOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchemeOptions")
            .field("secrets", &self.secrets)
            .field("tolerance", &self.tolerance)
            .field("header", &self.header)
            .field("verify_token", &self.verify_token)
            .field("fetcher", &self.fetcher.is_some())
            .finish()
    }
}

impl SchemeOptions {
    /// Options with `secrets` and the scheme's defaults otherwise.
    pub fn new(secrets: impl Into<SecretSet>) -> Self {
        Self {
            secrets: secrets.into(),
            tolerance: None,
            header: None,
            verify_token: None,
            fetcher: None,
        }
    }

    /// Sets Meta's verify token(s).
    #[must_use]
    pub fn verify_token(mut self, tokens: impl Into<SecretSet>) -> Self {
        self.verify_token = Some(tokens.into());
        self
    }

    /// Sets the HTTPS client that fetches certificates (and confirms SNS subscriptions).
    #[must_use]
    pub fn fetcher(mut self, fetcher: Arc<dyn HttpsFetcher>) -> Self {
        self.fetcher = Some(fetcher);
        self
    }

    /// Sets the timestamp tolerance.
    #[must_use]
    pub fn tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = Some(tolerance);
        self
    }

    /// Sets the header.
    #[must_use]
    pub fn header(mut self, header: HeaderName) -> Self {
        self.header = Some(header);
        self
    }
}

/// A scheme name that is not one of [`Scheme::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scheme `{0}`")]
pub struct UnknownScheme(pub String);

impl Scheme {
    /// Every scheme, in documentation order.
    pub const ALL: &'static [Scheme] = &[
        Self::GitHub,
        Self::Stripe,
        Self::Shopify,
        Self::Slack,
        Self::StandardWebhooks,
        Self::Svix,
        Self::Twilio,
        Self::GitLab,
        Self::Square,
        Self::Paddle,
        Self::Linear,
        Self::Zoom,
        Self::Intercom,
        Self::HmacSha256,
        Self::Basic,
        Self::ApiKey,
        Self::Meta,
        Self::Bitbucket,
        Self::Twitch,
        Self::Mailgun,
        Self::Teams,
        Self::DocuSign,
        Self::HubSpot,
        Self::Box,
        Self::Typeform,
        Self::Calendly,
        Self::Zendesk,
        Self::Discord,
        Self::Telnyx,
        Self::SendGrid,
        Self::Sns,
        Self::PayPal,
        Self::X,
        Self::MicrosoftGraph,
        Self::Dropbox,
        Self::Okta,
    ];

    /// The configuration name, e.g. `standard-webhooks`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::GitHub => "github",
            Self::Stripe => "stripe",
            Self::Shopify => "shopify",
            Self::Slack => "slack",
            Self::StandardWebhooks => "standard-webhooks",
            Self::Svix => "svix",
            Self::Twilio => "twilio",
            Self::GitLab => "gitlab",
            Self::Square => "square",
            Self::Paddle => "paddle",
            Self::Linear => "linear",
            Self::Zoom => "zoom",
            Self::Intercom => "intercom",
            Self::HmacSha256 => "hmac-sha256",
            Self::Basic => "basic",
            Self::ApiKey => "api-key",
            Self::Meta => "meta",
            Self::Bitbucket => "bitbucket",
            Self::Twitch => "twitch",
            Self::Mailgun => "mailgun",
            Self::Teams => "teams",
            Self::DocuSign => "docusign",
            Self::HubSpot => "hubspot",
            Self::Box => "box",
            Self::Typeform => "typeform",
            Self::Calendly => "calendly",
            Self::Zendesk => "zendesk",
            Self::Discord => "discord",
            Self::Telnyx => "telnyx",
            Self::SendGrid => "sendgrid",
            Self::Sns => "sns",
            Self::PayPal => "paypal",
            Self::X => "x",
            Self::MicrosoftGraph => "microsoft-graph",
            Self::Dropbox => "dropbox",
            Self::Okta => "okta",
        }
    }

    /// What the provider signs, in a few words.
    pub const fn signs(self) -> &'static str {
        match self {
            Self::GitHub
            | Self::Shopify
            | Self::Intercom
            | Self::HmacSha256
            | Self::Meta
            | Self::Bitbucket
            | Self::Teams
            | Self::DocuSign
            | Self::Typeform
            | Self::X
            | Self::Dropbox => "the body",
            Self::Stripe
            | Self::Slack
            | Self::Paddle
            | Self::Zoom
            | Self::Calendly
            | Self::Zendesk => "timestamp and body",
            Self::StandardWebhooks | Self::Svix | Self::Twitch => "message id, timestamp and body",
            Self::Linear => "the body (timestamp inside it)",
            Self::Twilio => "the URL and form parameters",
            Self::Square => "the notification URL and body",
            Self::GitLab | Self::Basic | Self::ApiKey | Self::MicrosoftGraph | Self::Okta => {
                "nothing: a shared secret is sent"
            }
            Self::Mailgun => "timestamp and token (in the body), not the rest of the body",
            Self::HubSpot => "method, URL, body and timestamp",
            Self::Box => "body and timestamp",
            Self::Discord | Self::Telnyx | Self::SendGrid => {
                "timestamp and body (public-key signature)"
            }
            Self::Sns => "the message's fields (RSA, SNS's certificate)",
            Self::PayPal => {
                "transmission id and time, webhook id, body CRC32 (RSA, PayPal's certificate)"
            }
        }
    }

    /// The endpoint handshake the scheme's verifier answers (see
    /// [`Handshake`](super::Handshake)), in a few words; `None` for schemes without one.
    pub const fn handshake(self) -> Option<&'static str> {
        Some(match self {
            Self::Slack => "POST url_verification: echo the challenge",
            Self::Zoom => "POST endpoint.url_validation: plainToken + encryptedToken",
            Self::Meta => "GET hub.challenge with the verify token (FIREFLY_VERIFY_TOKEN_<P>)",
            Self::Twitch => "POST webhook_callback_verification: echo the challenge",
            Self::Discord => "POST PING (type 1): PONG",
            Self::Sns => "POST SubscriptionConfirmation: GET SubscribeURL",
            Self::X => "GET crc_token: response_token",
            Self::MicrosoftGraph => "POST ?validationToken: echo the token",
            Self::Dropbox => "GET challenge: echo it",
            Self::Okta => "GET X-Okta-Verification-Challenge: verification",
            _ => return None,
        })
    }

    /// Whether the scheme fetches the provider's certificate, so
    /// [`SchemeOptions::fetcher`] is required.
    pub const fn needs_fetcher(self) -> bool {
        matches!(self, Self::Sns | Self::PayPal)
    }

    /// Whether the configured secrets are public keys (or, for SNS and PayPal, topic ARNs
    /// and webhook ids): nothing that must be kept secret.
    pub const fn is_asymmetric(self) -> bool {
        matches!(
            self,
            Self::Discord | Self::Telnyx | Self::SendGrid | Self::Sns | Self::PayPal
        )
    }

    /// Whether the signature covers a timestamp checked against a tolerance.
    pub const fn is_timestamped(self) -> bool {
        matches!(
            self,
            Self::Stripe
                | Self::Slack
                | Self::StandardWebhooks
                | Self::Svix
                | Self::Paddle
                | Self::Linear
                | Self::Zoom
                | Self::Twitch
                | Self::Mailgun
                | Self::HubSpot
                | Self::Box
                | Self::Calendly
                | Self::Zendesk
                | Self::Discord
                | Self::Telnyx
                | Self::SendGrid
                | Self::Sns
                | Self::PayPal
        )
    }

    /// Whether the signature covers the request URL, so the verifier needs the public base
    /// URL ([`Verifiers::public_url`](super::Verifiers::public_url)).
    pub const fn signs_url(self) -> bool {
        matches!(self, Self::Twilio | Self::Square | Self::HubSpot)
    }

    /// Whether [`SchemeOptions::header`] applies.
    pub const fn has_header_option(self) -> bool {
        matches!(self, Self::HmacSha256 | Self::ApiKey)
    }

    /// Builds the verifier. Options the scheme does not use are errors, so a typo in
    /// configuration is not silently ignored.
    #[allow(clippy::too_many_lines, reason = "one arm per scheme reads best")]
    pub fn verifier(
        self,
        options: SchemeOptions,
    ) -> Result<Box<dyn SignatureVerifier>, ConfigError> {
        let SchemeOptions {
            secrets,
            tolerance,
            header,
            verify_token,
            fetcher,
        } = options;
        if verify_token.is_some() && self != Self::Meta {
            return Err(self.invalid("verify token", "only the meta scheme has one"));
        }
        if fetcher.is_some() && !self.needs_fetcher() {
            return Err(self.invalid("fetcher", "the scheme fetches no certificate"));
        }
        let fetcher = || {
            fetcher.clone().ok_or_else(|| {
                self.invalid(
                    "fetcher",
                    "the scheme fetches certificates: give it an HTTPS fetcher",
                )
            })
        };
        if tolerance.is_some() && !self.is_timestamped() {
            return Err(self.invalid("tolerance", "the scheme has no timestamp"));
        }
        if header.is_some() && !self.has_header_option() {
            return Err(self.invalid("header", "the scheme has a fixed header"));
        }
        macro_rules! timed {
            ($v:expr) => {{
                let v = $v;
                match tolerance {
                    Some(t) => v.tolerance(t),
                    None => v,
                }
            }};
        }
        Ok(match self {
            Self::GitHub => Box::new(GitHub::new(secrets)),
            Self::Stripe => Box::new(timed!(Stripe::new(secrets))),
            Self::Shopify => Box::new(Shopify::new(secrets)),
            Self::Slack => Box::new(WithHandshake::new(
                timed!(Slack::new(secrets)),
                SlackUrlVerification,
            )),
            Self::StandardWebhooks => Box::new(timed!(StandardWebhooks::new(secrets)?)),
            Self::Svix => Box::new(timed!(StandardWebhooks::svix(secrets)?)),
            Self::Twilio => Box::new(Twilio::new(secrets)),
            Self::GitLab => Box::new(GitLab::new(secrets)),
            Self::Square => Box::new(Square::new(secrets)),
            Self::Paddle => Box::new(timed!(Paddle::new(secrets))),
            Self::Linear => Box::new(timed!(Linear::new(secrets))),
            Self::Zoom => Box::new(WithHandshake::new(
                timed!(Zoom::new(secrets.clone())),
                ZoomUrlValidation::new(secrets),
            )),
            Self::Intercom => Box::new(Intercom::new(secrets)),
            Self::HmacSha256 => {
                let v = GenericHmac::sha256(secrets).prefix("sha256=");
                Box::new(match header {
                    Some(h) => v.header(h),
                    None => v,
                })
            }
            Self::Basic => {
                if let Some(index) = secrets
                    .iter()
                    .position(|s| !s.expose_secret().contains(&b':'))
                {
                    return Err(ConfigError::InvalidSecret {
                        index,
                        reason: "basic credentials must be `user:password`",
                    });
                }
                Box::new(Basic::new(secrets))
            }
            Self::ApiKey => {
                let v = ApiKey::new(secrets);
                Box::new(match header {
                    Some(h) => v.header(h),
                    None => v,
                })
            }
            Self::Meta => match verify_token {
                Some(tokens) => Box::new(WithHandshake::new(
                    Meta::new(secrets),
                    MetaVerifyToken::new(tokens),
                )),
                None => Box::new(Meta::new(secrets)),
            },
            Self::Bitbucket => Box::new(Bitbucket::new(secrets)),
            Self::Twitch => Box::new(WithHandshake::new(
                timed!(Twitch::new(secrets)),
                TwitchCallbackVerification,
            )),
            Self::Mailgun => Box::new(timed!(Mailgun::new(secrets))),
            Self::Teams => Box::new(Teams::new(secrets)?),
            Self::DocuSign => Box::new(DocuSign::new(secrets)),
            Self::HubSpot => Box::new(timed!(HubSpot::new(secrets))),
            Self::Box => Box::new(timed!(BoxWebhooks::new(secrets))),
            Self::Typeform => Box::new(Typeform::new(secrets)),
            Self::Calendly => Box::new(timed!(Calendly::new(secrets))),
            Self::Zendesk => Box::new(timed!(Zendesk::new(secrets))),
            Self::Discord => Box::new(WithHandshake::new(
                timed!(Discord::new(secrets)?),
                DiscordPing,
            )),
            Self::Telnyx => Box::new(timed!(Telnyx::new(secrets)?)),
            Self::SendGrid => Box::new(timed!(SendGrid::new(secrets)?)),
            Self::Sns => {
                let fetcher = fetcher()?;
                Box::new(WithHandshake::new(
                    timed!(Sns::new(secrets, Arc::clone(&fetcher))?),
                    SnsSubscription::new(fetcher),
                ))
            }
            Self::PayPal => Box::new(timed!(PayPal::new(secrets, fetcher()?)?)),
            Self::X => Box::new(WithHandshake::new(
                GenericHmac::sha256(secrets.clone())
                    .header(HeaderName::from_static("x-twitter-webhooks-signature"))
                    .prefix("sha256=")
                    .encoding(Encoding::Base64),
                XCrc::new(secrets),
            )),
            Self::MicrosoftGraph => Box::new(WithHandshake::new(
                GraphClientState::new(secrets),
                GraphValidation,
            )),
            Self::Dropbox => Box::new(WithHandshake::new(
                GenericHmac::sha256(secrets).header(HeaderName::from_static("x-dropbox-signature")),
                DropboxChallenge,
            )),
            Self::Okta => Box::new(WithHandshake::new(
                ApiKey::new(secrets).header(http::header::AUTHORIZATION),
                OktaVerification,
            )),
        })
    }

    fn invalid(self, setting: &'static str, reason: &str) -> ConfigError {
        ConfigError::Invalid {
            setting,
            reason: format!("{reason} (scheme `{}`)", self.name()),
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scheme {
    type Err = UnknownScheme;

    /// Parses a configuration name, ignoring case and surrounding space.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim();
        Self::ALL
            .iter()
            .copied()
            .find(|scheme| scheme.name().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| UnknownScheme(wanted.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for scheme in Scheme::ALL {
            assert_eq!(scheme.name().parse::<Scheme>().unwrap(), *scheme);
            assert_eq!(
                scheme.to_string().to_uppercase().parse::<Scheme>().unwrap(),
                *scheme
            );
        }
        assert_eq!(
            "nope".parse::<Scheme>().unwrap_err().to_string(),
            "unknown scheme `nope`"
        );
    }

    #[test]
    fn every_scheme_builds() {
        for scheme in Scheme::ALL {
            let secret = match scheme {
                Scheme::StandardWebhooks | Scheme::Svix => "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                Scheme::Basic => "user:pass",
                Scheme::Teams => "vqF0En+Z0ucuRTM/01o2GuhMH3hKKk/N2bOmlM31zaA=",
                Scheme::Discord | Scheme::Telnyx => "iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w=",
                Scheme::SendGrid => SENDGRID_KEY,
                Scheme::Sns => "arn:aws:sns:us-east-1:123456789012:orders",
                _ => "s3cret",
            };
            let mut options = SchemeOptions::new(secret);
            if scheme.needs_fetcher() {
                options = options.fetcher(Arc::new(NoFetch));
            }
            let verifier = scheme
                .verifier(options)
                .unwrap_or_else(|e| panic!("{scheme}: {e}"));
            assert_eq!(
                verifier.handshake().is_some(),
                scheme.handshake().is_some() && *scheme != Scheme::Meta,
                "{scheme}"
            );
        }
    }

    const SENDGRID_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA==";

    struct NoFetch;

    #[crate::async_trait]
    impl HttpsFetcher for NoFetch {
        async fn get(
            &self,
            _url: &super::super::TrustedUrl,
        ) -> Result<bytes::Bytes, crate::BoxError> {
            Err("offline".into())
        }
    }

    #[test]
    fn handshakes_and_fetchers_come_with_their_schemes() {
        let meta = Scheme::Meta
            .verifier(SchemeOptions::new("app-secret").verify_token("vt"))
            .unwrap();
        assert!(meta.handshake().is_some());
        assert!(
            Scheme::GitHub
                .verifier(SchemeOptions::new("s").verify_token("vt"))
                .is_err()
        );
        assert!(
            Scheme::Sns
                .verifier(SchemeOptions::new("arn:aws:sns:us-east-1:1:t"))
                .is_err(),
            "sns needs a fetcher"
        );
        assert!(
            Scheme::GitHub
                .verifier(SchemeOptions::new("s").fetcher(Arc::new(NoFetch)))
                .is_err()
        );
        assert!(
            Scheme::Discord
                .verifier(SchemeOptions::new("not a key"))
                .is_err()
        );
        let debug = format!("{:?}", SchemeOptions::new("sup3r").verify_token("t0ken"));
        assert!(
            !debug.contains("sup3r") && !debug.contains("t0ken"),
            "{debug}"
        );
    }

    #[test]
    fn options_that_do_not_apply_are_errors() {
        let tolerance = SchemeOptions::new("s").tolerance(Duration::from_secs(1));
        assert!(Scheme::GitHub.verifier(tolerance.clone()).is_err());
        assert!(Scheme::Stripe.verifier(tolerance).is_ok());
        let header = SchemeOptions::new("s").header(HeaderName::from_static("x-key"));
        assert!(Scheme::Stripe.verifier(header.clone()).is_err());
        assert!(Scheme::ApiKey.verifier(header).is_ok());
        assert!(matches!(
            Scheme::Basic.verifier(SchemeOptions::new("nocolon")),
            Err(ConfigError::InvalidSecret { index: 0, .. })
        ));
    }
}
