//! `runbook serve`, `runbook schedule`, and the status page flags `execute --serve`
//! shares.

use std::path::PathBuf;

use chrono_tz::Tz;
use clap::Args;
use tokio::net::TcpListener;

use super::model::PageInfo;
use super::schedule::Scheduled;
use super::server::Config;
use crate::store::Store;

/// How the status page presents itself.
#[derive(Debug, Clone, Args)]
pub struct PageArgs {
    /// Name shown at the top of the page and in the feeds.
    #[arg(long, default_value = "Service status")]
    pub page_name: String,
    /// Public base URL of the page, for links in feeds and the API (default: http://ADDR).
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// Show every time in this IANA zone (default: each maintenance's `window.timezone`).
    #[arg(long, value_name = "ZONE", value_parser = parse_zone)]
    pub timezone: Option<Tz>,
    /// Who may show the page in a frame: CSP `frame-ancestors` sources.
    #[arg(long, value_name = "SOURCES", default_value = "'none'", value_parser = parse_ancestors)]
    pub frame_ancestors: String,
    /// File holding the admin API's bearer token (default: $RUNBOOK_ADMIN_TOKEN; without
    /// either, the admin API refuses every request).
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    #[command(flatten)]
    pub notify: NotifyArgs,
}

/// The flags of `serve` and `execute --serve` that say how to reach people who are not
/// looking (`crate::notify` sends).
#[derive(Debug, Clone, Default, Args)]
pub struct NotifyArgs {
    /// SMTP server for mail: `smtp://[USER@]HOST[:PORT]` (STARTTLS, port 587),
    /// `smtps://...` (TLS, port 465); `?tls=none` for a relay without TLS. The
    /// password is read from $RUNBOOK_SMTP_PASSWORD.
    #[arg(long, value_name = "URL")]
    pub smtp: Option<String>,
    /// The `From` of mails (default: `status@` the --public-url's host).
    #[arg(long, value_name = "ADDRESS")]
    pub mail_from: Option<String>,
    /// Drive a hosted status page from the runs: `statuspage` (Atlassian Statuspage;
    /// needs $STATUSPAGE_API_KEY and the page's id).
    #[arg(long, value_name = "SERVICE", value_parser = ["statuspage"])]
    pub mirror: Option<String>,
    /// The Statuspage page the mirror drives (default: $STATUSPAGE_PAGE_ID).
    #[arg(long, value_name = "ID")]
    pub statuspage_page_id: Option<String>,
    /// Accept webhook subscribers on loopback or private addresses (a lab, a test):
    /// refused by default.
    #[arg(long)]
    pub allow_private_webhooks: bool,
}

fn parse_zone(s: &str) -> Result<Tz, String> {
    s.parse::<Tz>()
        .map_err(|_| format!("`{s}` is not an IANA time zone (like Europe/London or UTC)"))
}

fn parse_ancestors(s: &str) -> Result<String, String> {
    if s.trim().is_empty() || s.contains([';', ',', '\n', '\r']) {
        return Err(format!(
            "`{s}`: give CSP sources separated by spaces, like `'self' https://example.com`"
        ));
    }
    Ok(s.trim().to_owned())
}

/// A listener on `addr`, or why not.
pub async fn bind(addr: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot serve the status page on `{addr}`: {e}"))
}

/// The page settings and server configuration from the flags.
pub fn settings(page: &PageArgs, listener: &TcpListener) -> Result<(PageInfo, Config), String> {
    let token = match &page.admin_token_file {
        Some(path) => Some(
            crate::input::read_limited_text(path)
                .map_err(|e| format!("--admin-token-file: {e}"))?,
        ),
        None => std::env::var("RUNBOOK_ADMIN_TOKEN").ok(),
    };
    let token = token.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
    if let (None, Some(path)) = (&token, &page.admin_token_file) {
        return Err(format!("--admin-token-file `{}` is empty", path.display()));
    }
    let url = match &page.public_url {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None => {
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            format!("http://{addr}")
        }
    };
    Ok((
        PageInfo {
            name: page.page_name.clone(),
            url,
            timezone: page.timezone,
        },
        Config {
            frame_ancestors: page.frame_ancestors.clone(),
            admin_token: token,
            allow_private_webhooks: page.notify.allow_private_webhooks,
        },
    ))
}

/// A SQLite store in a directory that does not exist is a typo, not a new page.
pub fn existing_dir(store_url: &str) -> Result<(), String> {
    // The default store is made where it belongs (`.runbook/`), as `execute` does.
    if store_url == crate::store::DEFAULT_URL {
        return Ok(());
    }
    if let Ok(parsed) = crate::store::StoreUrl::parse(store_url)
        && let Some(path) = parsed.sqlite_file()
        && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        return Err(format!(
            "the store `{store_url}` is in `{}`, which does not exist",
            dir.display()
        ));
    }
    Ok(())
}

/// `runbook schedule`: what to say.
pub async fn schedule(rb: &crate::runbook::Runbook, store_url: &str) -> Result<String, String> {
    let a = super::schedule::announcement(rb, crate::store::now_ms())?;
    let store = Store::open(store_url)
        .await
        .and_then(|s| s.writable().map(|()| s))
        .map_err(|e| e.to_string())?;
    let tz = rb.window.timezone;
    let when = format!(
        "{} to {}, shown from {}",
        super::model::local(a.planned_start_ms, tz),
        super::model::local(a.planned_end_ms, tz),
        super::model::local(a.announce_from_ms.max(crate::store::now_ms()), tz),
    );
    let said = match super::schedule::schedule(&store, rb).await? {
        Scheduled::New(id) => format!("scheduled maintenance {id}: {} ({when})", a.title),
        Scheduled::Rescheduled(id) => {
            format!("rescheduled maintenance {id}: {} ({when})", a.title)
        }
        Scheduled::Unchanged(id) => {
            format!(
                "maintenance {id} is already scheduled: {} ({when})",
                a.title
            )
        }
    };
    store.close().await;
    Ok(said)
}
