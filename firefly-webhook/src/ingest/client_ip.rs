//! The client address: the socket peer, or the forwarded client when the peer is trusted.

use std::net::{IpAddr, SocketAddr};

use http::{Extensions, HeaderMap};
use ipnet::IpNet;

use super::PeerAddr;

fn peer(extensions: &Extensions) -> Option<SocketAddr> {
    if let Some(PeerAddr(addr)) = extensions.get::<PeerAddr>() {
        return Some(*addr);
    }
    #[cfg(feature = "axum")]
    if let Some(axum::extract::ConnectInfo(addr)) =
        extensions.get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(*addr);
    }
    None
}

/// The client IP. Forwarding headers are read only when the socket peer is a trusted proxy;
/// then the right-most address that is not itself a trusted proxy is the client.
pub(super) fn resolve(
    headers: &HeaderMap,
    extensions: &Extensions,
    trusted: &[IpNet],
) -> Option<IpAddr> {
    let peer = peer(extensions)?.ip();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if trusted.is_empty() || !is_trusted(&peer) {
        return Some(peer);
    }
    let chain = forwarded_chain(headers);
    // Walk from the nearest hop outwards; stop at the first untrusted one.
    let client = chain
        .iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .or_else(|| chain.first())
        .copied();
    Some(client.unwrap_or(peer))
}

/// Addresses from `X-Forwarded-For` (preferred) or `Forwarded`, client first.
fn forwarded_chain(headers: &HeaderMap) -> Vec<IpAddr> {
    let xff: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| parse_ip(s.trim()))
        .collect();
    if !xff.is_empty() {
        return xff;
    }
    headers
        .get_all(http::header::FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                k.eq_ignore_ascii_case("for")
                    .then(|| parse_ip(v.trim().trim_matches('"')))
                    .flatten()
            })
        })
        .collect()
}

/// Accepts `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]` and `[::1]:80`.
fn parse_ip(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use http::request::Parts;

    use super::*;

    fn resolve(p: &Parts, trusted: &[IpNet]) -> Option<IpAddr> {
        super::resolve(&p.headers, &p.extensions, trusted)
    }

    fn parts(peer: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder();
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let (mut parts, ()) = b.body(()).unwrap().into_parts();
        parts.extensions.insert(PeerAddr(peer.parse().unwrap()));
        parts
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn untrusted_peer_forwarding_is_ignored() {
        let p = parts("198.51.100.7:5000", &[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(
            resolve(&p, &nets(&["10.0.0.0/8"])),
            Some("198.51.100.7".parse().unwrap())
        );
        assert_eq!(resolve(&p, &[]), Some("198.51.100.7".parse().unwrap()));
    }

    #[test]
    fn trusted_peer_uses_rightmost_untrusted_hop() {
        let p = parts(
            "10.0.0.2:5000",
            &[
                ("x-forwarded-for", "6.6.6.6, 203.0.113.5"),
                ("x-forwarded-for", "10.0.0.9"),
            ],
        );
        assert_eq!(
            resolve(&p, &nets(&["10.0.0.0/8"])),
            Some("203.0.113.5".parse().unwrap())
        );
    }

    #[test]
    fn forwarded_header_and_ipv6() {
        let p = parts(
            "[::1]:5000",
            &[(
                "forwarded",
                r#"for="[2001:db8::1]:4711";proto=https, for=10.1.1.1"#,
            )],
        );
        assert_eq!(
            resolve(&p, &nets(&["::1/128", "10.0.0.0/8"])),
            Some("2001:db8::1".parse().unwrap())
        );
    }

    #[test]
    fn garbage_falls_back_to_peer() {
        let p = parts("10.0.0.2:1", &[("x-forwarded-for", "not-an-ip")]);
        assert_eq!(
            resolve(&p, &nets(&["10.0.0.0/8"])),
            Some("10.0.0.2".parse().unwrap())
        );
    }
}
