//! The addresses notifications go to, as text: an email address (lettre's own reading
//! of RFC 5321, so that what is accepted here can be sent to) and a webhook URL
//! (`http` or `https`, with a host, no credentials), and whether a URL's host is or
//! resolves to a loopback or private address (refused for webhooks unless allowed).

use std::net::{IpAddr, SocketAddr};

/// An email address, trimmed; or why it is none.
pub fn email(s: &str) -> Result<String, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("an email address is empty".into());
    }
    if t.chars().any(|c| c.is_control() || c.is_whitespace()) || t.len() > 254 {
        return Err(format!("`{}` is not an email address", t.escape_debug()));
    }
    t.parse::<lettre::Address>()
        .map(|a| a.to_string())
        .map_err(|e| format!("`{t}` is not an email address ({e})"))
}

/// A webhook URL: `http(s)://host[:port]/path`, without a user or password; or why not.
pub fn webhook(s: &str) -> Result<reqwest::Url, String> {
    let t = s.trim();
    let url = reqwest::Url::parse(t).map_err(|e| {
        format!(
            "`{}` is not a URL ({e}); give one such as https://hooks.example.com/status",
            t.escape_debug()
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("`{t}`: a webhook URL is http:// or https://"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{t}`: a webhook URL needs a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "`{t}`: a webhook URL carries no user or password (the payload is signed instead)"
        ));
    }
    if url.fragment().is_some() {
        return Err(format!("`{t}`: a webhook URL has no `#fragment`"));
    }
    Ok(url)
}

/// Whether an address is anything but a public unicast one.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                // 100.64.0.0/10 (carrier-grade NAT), 198.18.0.0/15 (benchmarking),
                // 240.0.0.0/4 (reserved).
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8)
        }
    }
}

/// Refuses a URL whose host is or resolves to a non-public address (unless allowed).
pub async fn check_public(url: &reqwest::Url, allow_private: bool) -> Result<(), String> {
    if allow_private {
        return Ok(());
    }
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(443);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| format!("`{host}` does not resolve: {e}"))?
            .collect(),
    };
    match addrs.iter().find(|a| is_private(a.ip())) {
        Some(a) => Err(format!(
            "`{host}` is a loopback or private address ({}): webhooks go to public addresses only, unless the server is started with --allow-private-webhooks",
            a.ip()
        )),
        None if addrs.is_empty() => Err(format!("`{host}` does not resolve")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private(a.parse().unwrap()), "{a}");
        }
        for a in ["93.184.216.34", "1.1.1.1", "2606:4700::1111"] {
            assert!(!is_private(a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn emails() {
        assert_eq!(email(" ops@example.com ").unwrap(), "ops@example.com");
        for bad in [
            "",
            "ops",
            "ops@",
            "@example.com",
            "a b@example.com",
            "ops@exa mple.com",
            "x\n@y.z",
        ] {
            assert!(email(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn webhooks() {
        assert!(webhook("https://hooks.example.com/a?b=c").is_ok());
        for bad in [
            "",
            "hooks.example.com",
            "ftp://x.y/",
            "https://u:p@x.y/",
            "https://x.y/#f",
        ] {
            assert!(webhook(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
