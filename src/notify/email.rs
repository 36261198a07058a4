//! Mail through SMTP (lettre, rustls with the system's roots): pooled connections (at
//! most 8) per sender, a plain-text and an HTML part rendered from `templates/mail/`, the
//! `List-Unsubscribe` headers of RFC 2369 and RFC 8058 (one click) on every mail to a
//! subscriber, and a `Message-ID` made of the delivery's id, so a mail sent again after a
//! crash is recognisably the same one.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use handlebars::Handlebars;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
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
    transport: Smtp,
    from: Mailbox,
    /// For `Message-ID`s: the page's host.
    domain: String,
}

/// Connections to the mail server at once.
const CONNECTIONS: usize = 8;

/// How mails reach the server. `smtp://` goes through connections of our own, pooled,
/// with `TCP_NODELAY` set: lettre writes a mail's end (`.`) apart from its body, and
/// without it every mail waits for the server's delayed ACK (40 ms on Linux). `smtps://`
/// (TLS from the first byte) goes through lettre's own pool.
#[derive(Clone)]
enum Smtp {
    Lettre(AsyncSmtpTransport<Tokio1Executor>),
    Own(Arc<Pool>),
}

/// Plain or STARTTLS connections to one server.
struct Pool {
    host: String,
    port: u16,
    /// STARTTLS: required, or when the server offers it.
    tls: Option<(TlsParameters, bool)>,
    credentials: Option<Credentials>,
    hello: ClientId,
    idle: tokio::sync::Mutex<Vec<AsyncSmtpConnection>>,
    permits: tokio::sync::Semaphore,
}

impl Pool {
    async fn connect(&self) -> Result<AsyncSmtpConnection, String> {
        let tcp = tokio::time::timeout(
            TIMEOUT,
            tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| {
            format!(
                "no connection to {}:{} within {} s",
                self.host,
                self.port,
                TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| format!("cannot connect to {}:{}: {e}", self.host, self.port))?;
        let _ = tcp.set_nodelay(true);
        let mut conn = AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello)
            .await
            .map_err(|e| crate::diagnostic::error_chain(&e))?;
        match &self.tls {
            Some((params, required)) if *required || conn.can_starttls() => conn
                .starttls(params.clone(), &self.hello)
                .await
                .map_err(|e| format!("STARTTLS: {}", crate::diagnostic::error_chain(&e)))?,
            _ => {}
        }
        if let Some(c) = &self.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], c)
                .await
                .map_err(|e| format!("authentication: {}", crate::diagnostic::error_chain(&e)))?;
        }
        Ok(conn)
    }

    /// Sends one mail on an idle connection (or a new one); a connection that failed
    /// in any way is closed, not used again.
    async fn send(&self, mail: &Message) -> Result<(), String> {
        let _permit = self.permits.acquire().await.map_err(|e| e.to_string())?;
        let idle = self.idle.lock().await.pop();
        let mut conn = match idle {
            Some(c) if !c.has_broken() => c,
            _ => self.connect().await?,
        };
        let bytes = mail.formatted();
        match tokio::time::timeout(TIMEOUT, conn.send(mail.envelope(), &bytes)).await {
            Ok(Ok(_)) => {
                self.idle.lock().await.push(conn);
                Ok(())
            }
            Ok(Err(e)) => {
                conn.abort().await;
                Err(crate::diagnostic::error_chain(&e))
            }
            Err(_) => {
                conn.abort().await;
                Err(format!("no answer within {} s", TIMEOUT.as_secs()))
            }
        }
    }
}

/// `smtp://[USER@]HOST[:PORT][?tls=required|opportunistic|none]` or `smtps://...`.
fn transport(url: &str) -> Result<Smtp, String> {
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
    let credentials = if u.username().is_empty() {
        None
    } else {
        let user = percent_encoding::percent_decode_str(u.username())
            .decode_utf8_lossy()
            .into_owned();
        let password = std::env::var("RUNBOOK_SMTP_PASSWORD").map_err(|_| {
            bad(&format!(
                "it names the user `{user}`: set $RUNBOOK_SMTP_PASSWORD to its password"
            ))
        })?;
        Some(Credentials::new(user, password))
    };
    let params = || TlsParameters::new(host.clone()).map_err(|e| bad(&e.to_string()));
    let (tls, port) = match (u.scheme(), tls.as_str()) {
        ("smtps", "none") => return Err(bad("smtps:// is TLS: `tls=none` contradicts it")),
        ("smtps", _) => {
            let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
                .port(u.port().unwrap_or(465))
                .tls(Tls::Wrapper(params()?))
                .timeout(Some(TIMEOUT))
                .pool_config(PoolConfig::new().max_size(CONNECTIONS as u32));
            if let Some(c) = credentials {
                b = b.credentials(c);
            }
            return Ok(Smtp::Lettre(b.build()));
        }
        ("smtp", "required") => (Some((params()?, true)), 587),
        ("smtp", "opportunistic") => (Some((params()?, false)), 587),
        ("smtp", _) => (None, 25),
        _ => return Err(bad("give smtp:// (STARTTLS) or smtps:// (TLS)")),
    };
    Ok(Smtp::Own(Arc::new(Pool {
        host,
        port: u.port().unwrap_or(port),
        tls,
        credentials,
        hello: ClientId::default(),
        idle: tokio::sync::Mutex::new(Vec::new()),
        permits: tokio::sync::Semaphore::new(CONNECTIONS),
    })))
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
            Ok(mail) => {
                let sent = match &self.transport {
                    Smtp::Lettre(t) => t
                        .send(mail)
                        .await
                        .map(|_| ())
                        .map_err(|e| crate::diagnostic::error_chain(&e)),
                    Smtp::Own(pool) => pool.send(&mail).await,
                };
                match sent {
                    Ok(()) => Sent::Accepted,
                    Err(e) => Sent::Failed(format!("SMTP: {e}")),
                }
            }
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
