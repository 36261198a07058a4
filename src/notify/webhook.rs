//! Webhooks: a subscriber's get Statuspage's payload (`meta`, `page`, and `incident` with
//! its `incident_updates`, or `component_update` with its `component`); a team's get the
//! event as JSON, and a Slack incoming webhook a readable `text`. Every POST carries the
//! delivery's id (`X-Runbook-Delivery`, `Idempotency-Key`: the same on every try) and,
//! for a subscriber, `X-Runbook-Signature: sha256=HMAC-SHA256(secret, body)` in hex. A
//! 2xx within 30 s is success; a redirect is not followed.
//!
//! A URL whose host is, or resolves to, a loopback, private, link-local or otherwise
//! non-public address is refused (when subscribing, and again on every send, so a name
//! that later resolves elsewhere gains nothing), unless the sender was started with
//! `--allow-private-webhooks`.

use std::net::SocketAddr;

use crate::address::{check_public, is_private};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::{Sent, Settings};
use crate::store::outbox::{Delivery, Subscriber};

/// How long a receiver has to answer.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Resolves names to public addresses only.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = all.into_iter().filter(|a| !is_private(a.ip())).collect();
            if public.is_empty() {
                return Err(format!(
                    "`{host}` resolves to loopback or private addresses only: refused (--allow-private-webhooks allows them)"
                )
                .into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The HTTP client of webhooks (one per process, and one that allows private addresses).
fn client(allow_private: bool) -> Result<&'static reqwest::Client, String> {
    static STRICT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    static ANY: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    let cell = if allow_private { &ANY } else { &STRICT };
    cell.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = reqwest::Client::builder()
            .user_agent(concat!("runbook/", env!("CARGO_PKG_VERSION")))
            .timeout(TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(super::IN_FLIGHT);
        if !allow_private {
            b = b.dns_resolver(Arc::new(PublicOnly));
        }
        b.build()
            .map_err(|e| format!("cannot set up the webhook client: {e}"))
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// The body a delivery POSTs.
pub fn payload(
    settings: &Settings,
    d: &Delivery,
    message: &Value,
    sub: Option<&Subscriber>,
) -> Value {
    let meta = json!({
        "unsubscribe": sub.map(|s| settings.unsubscribe_url(&s.token)),
        "documentation": "https://support.atlassian.com/statuspage/docs/enable-webhook-notifications/",
        "delivery": d.id,
    });
    match (message["type"].as_str(), d.channel.as_str()) {
        (Some("public"), _) => {
            json!({"meta": meta, "page": message["page"], "incident": message["object"]})
        }
        (Some("component_update"), _) => json!({
            "meta": meta,
            "page": message["page"],
            "component_update": message["component_update"],
            "component": message["component"],
        }),
        (Some("team"), "slack") => json!({ "text": slack_text(message) }),
        (Some("team"), _) => {
            let mut m = message.clone();
            if let Some(o) = m.as_object_mut() {
                o.remove("type");
                o.insert("delivery".into(), json!(d.id));
            }
            m
        }
        _ => message.clone(),
    }
}

/// A team event as a Slack message: the headline in bold, then the run, the step, the
/// error and the command to run next.
fn slack_text(m: &Value) -> String {
    let s = |f: &str| m[f].as_str().filter(|v| !v.is_empty());
    let mut t = format!("*{}*", s("headline").unwrap_or("runbook"));
    t.push_str(&format!(
        "\nRun: `{}` ({})",
        s("run").unwrap_or("?"),
        s("runbook").unwrap_or("?")
    ));
    if let Some(step) = s("step") {
        t.push_str(&format!("\nStep: `{step}`"));
    }
    if let Some(e) = s("error") {
        t.push_str(&format!("\nError:\n```\n{}\n```", e.replace("```", "'''")));
    }
    if let Some(at) = s("at_local") {
        t.push_str(&format!("\nAt: {at}"));
    }
    if let Some(n) = s("next") {
        t.push_str(&format!("\nNext: `{n}`"));
    }
    if let Some(u) = s("url") {
        t.push_str(&format!("\n<{u}|Status page>"));
    }
    t
}

/// POSTs one delivery.
pub async fn send(
    settings: &Settings,
    d: &Delivery,
    message: &Value,
    sub: Option<&Subscriber>,
) -> Sent {
    let url = match crate::address::webhook(&d.address) {
        Ok(u) => u,
        Err(e) => return Sent::Failed(e),
    };
    if let Err(e) = check_public(&url, settings.allow_private).await {
        return Sent::Failed(e);
    }
    let client = match client(settings.allow_private) {
        Ok(c) => c,
        Err(e) => return Sent::Failed(e),
    };
    let body = payload(settings, d, message, sub).to_string();
    let mut req = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("X-Runbook-Delivery", &d.id)
        .header("Idempotency-Key", &d.id);
    if let Some(s) = sub.filter(|s| !s.secret.is_empty()) {
        req = req.header("X-Runbook-Signature", signature(&s.secret, body.as_bytes()));
    }
    match req.body(body).send().await {
        Ok(r) if r.status().is_success() => Sent::Accepted,
        Ok(r) => Sent::Failed(format!("HTTP {}", r.status())),
        Err(e) if e.is_timeout() => {
            Sent::Failed(format!("no answer within {} s", TIMEOUT.as_secs()))
        }
        Err(e) => Sent::Failed(crate::diagnostic::error_chain(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_the_hmac_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
