//! Headers that carry a timestamp and one or more hex HMAC-SHA256 signatures as `key=value`
//! items, signed over `{timestamp}{joiner}{body}`: Stripe and Paddle.

use std::time::Duration;

use time::OffsetDateTime;

use super::{
    Algorithm, Encoding, Tag, check_window, decode_signature, parse_unix_seconds, verify_mac,
};
use crate::verify::{SecretSet, SignedRequest, Verified, VerifyError};

/// How one scheme writes its header and what it signs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TimestampedHeader {
    /// The header carrying it, lowercase.
    pub(crate) name: &'static str,
    /// Between items.
    pub(crate) separator: char,
    /// The key of the (single) timestamp item.
    pub(crate) timestamp_key: &'static str,
    /// The key of the signature items; items with other keys are ignored.
    pub(crate) signature_key: &'static str,
    /// At most this many signatures are considered; later ones are ignored.
    pub(crate) max_signatures: usize,
    /// Between the timestamp and the body in the signed content.
    pub(crate) joiner: &'static [u8],
}

/// A parsed header: the timestamp text (signed as sent) and the signatures.
#[derive(Debug)]
pub(crate) struct Parsed<'a> {
    pub(crate) timestamp: &'a str,
    pub(crate) signed_at: OffsetDateTime,
    pub(crate) signatures: Vec<Tag>,
}

impl TimestampedHeader {
    /// Parses `header`; a missing or repeated timestamp, an item without `=`, a malformed
    /// signature or none at all is malformed.
    pub(crate) fn parse<'a>(&self, header: &'a str) -> Result<Parsed<'a>, VerifyError> {
        let mut timestamp = None;
        let mut signatures = Vec::new();
        for item in header.split(self.separator) {
            let (key, value) = item
                .trim()
                .split_once('=')
                .ok_or(VerifyError::MalformedSignature)?;
            if key == self.timestamp_key {
                if timestamp.is_some() {
                    return Err(VerifyError::MalformedSignature);
                }
                timestamp = Some(value);
            } else if key == self.signature_key && signatures.len() < self.max_signatures {
                signatures.push(decode_signature(value, Encoding::Hex, Algorithm::Sha256)?);
            }
        }
        let timestamp = timestamp.ok_or(VerifyError::MalformedSignature)?;
        if signatures.is_empty() {
            return Err(VerifyError::MalformedSignature);
        }
        Ok(Parsed {
            timestamp,
            signed_at: parse_unix_seconds(timestamp)?,
            signatures,
        })
    }

    /// Reads, parses and checks the header of `request` against `secrets`.
    pub(crate) fn verify(
        &self,
        request: &SignedRequest<'_>,
        secrets: &SecretSet,
        tolerance: Duration,
    ) -> Result<Verified, VerifyError> {
        let header = self.parse(request.require_header(self.name)?)?;
        check_window(header.signed_at, request.now(), tolerance)?;
        let parts: [&[u8]; 3] = [header.timestamp.as_bytes(), self.joiner, request.body()];
        verify_mac(
            secrets,
            request.now(),
            Algorithm::Sha256,
            &parts,
            &header.signatures,
        )
        .map(|v| v.with_signed_at(header.signed_at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORMAT: TimestampedHeader = TimestampedHeader {
        name: "x-test-signature",
        separator: '|',
        timestamp_key: "ts",
        signature_key: "s",
        max_signatures: 2,
        joiner: b"-",
    };

    #[test]
    fn signatures_past_the_limit_are_ignored_unparsed() {
        let sig = "00".repeat(32);
        let header = format!("ts=1700000000|s={sig}|other=x|s={sig}|s=not-hex");
        let parsed = FORMAT.parse(&header).unwrap();
        assert_eq!(parsed.timestamp, "1700000000");
        assert_eq!(parsed.signed_at.unix_timestamp(), 1_700_000_000);
        assert_eq!(parsed.signatures.len(), 2);
        assert_eq!(
            FORMAT
                .parse(&format!("ts=1700000000|s=not-hex|s={sig}"))
                .unwrap_err(),
            VerifyError::MalformedSignature
        );
    }

    #[test]
    fn only_the_configured_separator_splits() {
        let sig = "00".repeat(32);
        for bad in [
            format!("ts=1700000000;s={sig}"),
            format!("ts=1|ts=1|s={sig}"),
            format!("s={sig}"),
            "ts=1700000000".to_owned(),
            "ts=1700000000|garbage".to_owned(),
        ] {
            assert_eq!(
                FORMAT.parse(&bad).unwrap_err(),
                VerifyError::MalformedSignature,
                "{bad}"
            );
        }
    }
}
