//! Mail through SMTP (lettre, rustls with the system's roots): one pooled transport per
//! sender, a plain-text and an HTML part rendered from `templates/mail/`, the
//! `List-Unsubscribe` headers of RFC 2369 and RFC 8058 (one click) on every mail to a
//! subscriber, and a `Message-ID` made of the delivery's id, so a mail sent again after a
//! crash is recognisably the same one.

use std::sync::LazyLock;
use std::time::Duration;

use handlebars::Handlebars;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Sent, Settings};
use crate::store::outbox::{Delivery, Subscriber};
use crate::template::{Mode, compiled};

/// How long one SMTP command may take.
const TIMEOUT: Duration = Duration::from_secs(30);

static TEXT: LazyLock<Handlebars<'static>> = LazyLock::new(|| {
    compiled(
        Mode::Text,
        false,
        "templates/mail",
        &[],
        &[
            (
                "update",
                include_str!("../../templates/mail/update.txt.hbs"),
            ),
            (
                "confirm",
                include_str!("../../templates/mail/confirm.txt.hbs"),
            ),
            ("team", include_str!("../../templates/mail/team.txt.hbs")),
        ],
    )
});
static HTML: LazyLock<Handlebars<'static>> = LazyLock::new(|| {
    compiled(
        Mode::Html,
        false,
        "templates/mail",
        &[],
        &[
            (
                "update",
                include_str!("../../templates/mail/update.html.hbs"),
            ),
            (
                "confirm",
                include_str!("../../templates/mail/confirm.html.hbs"),
            ),
            ("team", include_str!("../../templates/mail/team.html.hbs")),
        ],
    )
});

/// A mail server and who mails come from.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// For `Message-ID`s: the page's host.
    domain: String,
}

/// `smtp://[USER@]HOST[:PORT][?tls=required|opportunistic|none]` or `smtps://...`.
fn transport(url: &str) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let bad = |why: &str| format!("--smtp `{url}`: {why}");
    let u = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    let host = u
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    if u.password().is_some() {
        return Err(bad(
            "the password goes in $RUNBOOK_SMTP_PASSWORD, not in the URL (a command line is public)",
        ));
    }
    let mut tls = "required".to_owned();
    for (k, v) in u.query_pairs() {
        match k.as_ref() {
            "tls" if ["required", "opportunistic", "none"].contains(&v.as_ref()) => {
                tls = v.into_owned();
            }
            "tls" => return Err(bad("`tls` is `required`, `opportunistic` or `none`")),
            other => return Err(bad(&format!("unknown parameter `{other}` (only `tls`)"))),
        }
    }
    let params = || TlsParameters::new(host.clone()).map_err(|e| bad(&e.to_string()));
    let (tls, port) = match (u.scheme(), tls.as_str()) {
        ("smtps", "none") => return Err(bad("smtps:// is TLS: `tls=none` contradicts it")),
        ("smtps", _) => (Tls::Wrapper(params()?), 465),
        ("smtp", "required") => (Tls::Required(params()?), 587),
        ("smtp", "opportunistic") => (Tls::Opportunistic(params()?), 587),
        ("smtp", _) => (Tls::None, 25),
        _ => return Err(bad("give smtp:// (STARTTLS) or smtps:// (TLS)")),
    };
    let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(u.port().unwrap_or(port))
        .tls(tls)
        .timeout(Some(TIMEOUT))
        .pool_config(PoolConfig::new().max_size(8));
    if !u.username().is_empty() {
        let user = percent_encoding::percent_decode_str(u.username())
            .decode_utf8_lossy()
            .into_owned();
        let password = std::env::var("RUNBOOK_SMTP_PASSWORD").map_err(|_| {
            bad(&format!(
                "it names the user `{user}`: set $RUNBOOK_SMTP_PASSWORD to its password"
            ))
        })?;
        b = b.credentials(Credentials::new(user, password));
    }
    Ok(b.build())
}

impl Mailer {
    /// The mail server of `--smtp` and the `From` of `--mail-from` (default
    /// `status@HOST` of the page's URL).
    pub fn new(smtp: &str, from: Option<&str>, page_url: &str) -> Result<Mailer, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let transport = transport(smtp)?;
        let domain = reqwest::Url::parse(page_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_else(|| "localhost".into());
        let from_text = match from {
            Some(f) => f.to_owned(),
            None => {
                let host = if domain.contains('.') && domain.parse::<std::net::IpAddr>().is_err() {
                    domain.clone()
                } else {
                    "localhost.localdomain".to_owned()
                };
                format!("status@{host}")
            }
        };
        let from = from_text
            .parse::<Mailbox>()
            .map_err(|e| format!("--mail-from `{from_text}`: not a mail address ({e})"))?;
        Ok(Mailer {
            transport,
            from,
            domain,
        })
    }

    /// Sends the mail of delivery `d`.
    pub async fn send(
        &self,
        settings: &Settings,
        d: &Delivery,
        body: &Value,
        sub: Option<&Subscriber>,
    ) -> Sent {
        match self.build(settings, d, body, sub) {
            Ok(mail) => match self.transport.send(mail).await {
                Ok(_) => Sent::Accepted,
                Err(e) => Sent::Failed(format!("SMTP: {}", one_line(&e))),
            },
            Err(e) => Sent::Failed(e),
        }
    }

    fn build(
        &self,
        settings: &Settings,
        d: &Delivery,
        body: &Value,
        sub: Option<&Subscriber>,
    ) -> Result<Message, String> {
        let to = d
            .address
            .parse::<Mailbox>()
            .map_err(|e| format!("`{}` is not a mail address ({e})", d.address))?;
        let kind = body["type"].as_str().unwrap_or_default();
        let mut ctx = match kind {
            "team" => body.clone(),
            _ => body["mail"].clone(),
        };
        let unsubscribe = sub.map(|s| settings.unsubscribe_url(&s.token));
        if let (Some(u), Some(obj)) = (&unsubscribe, ctx.as_object_mut()) {
            obj.insert("unsubscribe".into(), json!(u));
        }
        let (template, subject) = match kind {
            "public" => (
                "update",
                format!(
                    "[{}] {}: {}",
                    settings.page_name,
                    ctx["title"].as_str().unwrap_or_default(),
                    ctx["status_label"].as_str().unwrap_or_default()
                ),
            ),
            "confirm" => (
                "confirm",
                format!("Confirm your subscription to {}", settings.page_name),
            ),
            "team" => (
                "team",
                format!("[runbook] {}", ctx["headline"].as_str().unwrap_or_default()),
            ),
            other => return Err(format!("no mail for a message of type `{other}`")),
        };
        let text = TEXT
            .render(template, &ctx)
            .map_err(|e| format!("templates/mail/{template}.txt.hbs: {e}"))?;
        let html = HTML
            .render(template, &ctx)
            .map_err(|e| format!("templates/mail/{template}.html.hbs: {e}"))?;
        let digest = Sha256::digest(d.id.as_bytes());
        let id: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        let mut b = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject.replace(['\r', '\n'], " "))
            .message_id(Some(format!("<{id}@{}>", self.domain)));
        if let Some(u) = &unsubscribe {
            b = b
                .raw_header(header("List-Unsubscribe", format!("<{u}>")))
                .raw_header(header(
                    "List-Unsubscribe-Post",
                    "List-Unsubscribe=One-Click".into(),
                ));
        }
        b = b.raw_header(header("X-Runbook-Delivery", d.id.clone()));
        b.multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|e| format!("the mail cannot be built: {e}"))
    }
}

fn header(name: &str, value: String) -> HeaderValue {
    HeaderValue::new(
        HeaderName::new_from_ascii(name.to_owned()).expect("an ASCII header name"),
        value,
    )
}

/// An error and its causes on one line.
pub fn one_line(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let t = s.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        source = s.source();
    }
    text.replace(['\r', '\n'], " ")
}
