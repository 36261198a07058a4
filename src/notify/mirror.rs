//! The Statuspage mirror: drives a real Atlassian Statuspage page from the runs through
//! its manage API (`Authorization: OAuth KEY`). Each public update that subscribers hear
//! of is one request: the first of a maintenance (or incident) creates it
//! (`POST /v1/pages/{page_id}/incidents`, a scheduled maintenance with its window, or an
//! incident), each later one updates it (`PATCH .../incidents/{id}`: status, text, and
//! the components it changes, mapped to Statuspage's by name). Our id and theirs are
//! kept in the store (`mirror_ids`), so a restart never creates one twice.
//!
//! One request at a time, in the order of the updates (a failed one holds back the
//! later ones: the page never shows them out of order), at least [`SPACING`] apart to
//! stay under Statuspage's 1 request/s; a `429` waits its `Retry-After` and asks again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use super::Sent;
use crate::status::snapshot::Snapshot;
use crate::store::outbox::Claimed;
use crate::store::{Store, now_ms};

/// The least time between two requests.
pub const SPACING: Duration = Duration::from_millis(1100);

/// Where the mirror writes.
#[derive(Clone, Debug)]
pub struct Mirror {
    /// `https://api.statuspage.io` ($STATUSPAGE_API_URL for a stand-in).
    pub base: String,
    pub page_id: String,
    key: String,
}

impl Mirror {
    /// From $STATUSPAGE_API_KEY and the page id (flag, else $STATUSPAGE_PAGE_ID).
    pub fn from_env(page_id: Option<&str>) -> Result<Mirror, String> {
        let key = std::env::var("STATUSPAGE_API_KEY")
            .ok()
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty())
            .ok_or("--mirror statuspage needs $STATUSPAGE_API_KEY (an API key of the Statuspage account)")?;
        let page_id = page_id
            .map(str::to_owned)
            .or_else(|| std::env::var("STATUSPAGE_PAGE_ID").ok())
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .ok_or("--mirror statuspage needs the page's id: --statuspage-page-id ID or $STATUSPAGE_PAGE_ID")?;
        if !page_id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!(
                "--statuspage-page-id `{page_id}`: a Statuspage page id is letters and digits"
            ));
        }
        let base = std::env::var("STATUSPAGE_API_URL")
            .unwrap_or_else(|_| "https://api.statuspage.io".into())
            .trim_end_matches('/')
            .to_owned();
        reqwest::Url::parse(&base).map_err(|e| format!("$STATUSPAGE_API_URL `{base}`: {e}"))?;
        Ok(Mirror { base, page_id, key })
    }
}

/// Requests, spaced and retried on `429`.
struct Api<'a> {
    m: &'a Mirror,
    client: reqwest::Client,
    last: Option<Instant>,
    /// Their component ids by our component's name (lowercase).
    components: Option<HashMap<String, String>>,
}

impl Api<'_> {
    async fn call(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, String> {
        let url = format!("{}/v1/pages/{}{path}", self.m.base, self.m.page_id);
        for _ in 0..10 {
            if let Some(last) = self.last {
                tokio::time::sleep_until(last + SPACING).await;
            }
            self.last = Some(Instant::now());
            let mut req = self.client.request(method.clone(), &url).header(
                reqwest::header::AUTHORIZATION,
                format!("OAuth {}", self.m.key),
            );
            if let Some(b) = body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(b.to_string());
            }
            let r = req
                .send()
                .await
                .map_err(|e| format!("Statuspage: {}", crate::diagnostic::error_chain(&e)))?;
            let status = r.status();
            if status.as_u16() == 429 || status.as_u16() == 420 {
                let wait = r
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(1)
                    .min(60);
                tokio::time::sleep(Duration::from_secs(wait)).await;
                continue;
            }
            let text = r.text().await.unwrap_or_default();
            if !status.is_success() {
                let short: String = text.chars().take(200).collect();
                return Err(format!(
                    "Statuspage: {method} {path}: HTTP {status}: {short}"
                ));
            }
            return serde_json::from_str(&text)
                .map_err(|e| format!("Statuspage: {method} {path}: the answer is not JSON: {e}"));
        }
        Err(format!(
            "Statuspage: {method} {path}: still rate limited after 10 tries"
        ))
    }

    /// Their id of each of our components, by name (asked once per process).
    async fn component_ids(&mut self, store: &Store) -> Result<&HashMap<String, String>, String> {
        if self.components.is_none() {
            let list = self.call(reqwest::Method::GET, "/components", None).await?;
            let mut map = HashMap::new();
            for c in list.as_array().into_iter().flatten() {
                if let (Some(name), Some(id)) = (c["name"].as_str(), c["id"].as_str()) {
                    map.insert(name.to_lowercase(), id.to_owned());
                    let _ = store
                        .set_mirror_id("component", &name.to_lowercase(), id)
                        .await;
                }
            }
            self.components = Some(map);
        }
        Ok(self.components.as_ref().expect("just set"))
    }
}

/// Mirrors one public update.
async fn mirror_one(api: &mut Api<'_>, store: &Store, c: &Claimed) -> Result<(), String> {
    let msg: Value =
        serde_json::from_str(&c.body).map_err(|e| format!("the message cannot be read: {e}"))?;
    let subject = msg["subject"].as_str().unwrap_or_default().to_owned();
    let object = &msg["object"];
    let status = msg["mail"]["status"]
        .as_str()
        .unwrap_or("in_progress")
        .to_owned();
    let text = msg["mail"]["body"].as_str().unwrap_or_default().to_owned();
    let ids = api.component_ids(store).await?.clone();
    let id_of = |name: &str| ids.get(&name.to_lowercase()).cloned();
    let component_ids: Vec<String> = object["components"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().and_then(id_of))
        .collect();
    let mut components = serde_json::Map::new();
    for ch in msg["changes"].as_array().into_iter().flatten() {
        match ch["name"].as_str().and_then(id_of) {
            Some(id) => {
                components.insert(id, ch["new_status"].clone());
            }
            None => tracing::warn!(
                "Statuspage mirror: no component named {} on page {}",
                ch["name"],
                api.m.page_id
            ),
        }
    }
    let kind = if msg["incident"].as_bool() == Some(true) {
        "incident"
    } else {
        "maintenance"
    };
    let ours = format!("{kind}:{subject}");
    match store
        .mirror_id("incident", &ours)
        .await
        .map_err(|e| e.to_string())?
    {
        None => {
            let mut incident = json!({
                "name": object["name"],
                "status": status,
                "body": text,
                "component_ids": component_ids,
                "components": components,
                "deliver_notifications": true,
                "metadata": {"runbook": {"id": subject}},
            });
            if kind == "maintenance" {
                incident["scheduled_for"] = object["scheduled_for"].clone();
                incident["scheduled_until"] = object["scheduled_until"].clone();
                incident["scheduled_auto_in_progress"] = json!(false);
                incident["scheduled_auto_completed"] = json!(false);
            } else {
                incident["impact_override"] = object["impact"].clone();
            }
            let made = api
                .call(
                    reqwest::Method::POST,
                    "/incidents",
                    Some(&json!({"incident": incident})),
                )
                .await?;
            let theirs = made["id"]
                .as_str()
                .ok_or("Statuspage: the new incident has no id")?;
            store
                .set_mirror_id("incident", &ours, theirs)
                .await
                .map_err(|e| e.to_string())?;
        }
        Some(theirs) => {
            let mut incident = json!({
                "status": status,
                "body": text,
                "components": components,
                "component_ids": component_ids,
                "deliver_notifications": true,
            });
            if kind == "maintenance" {
                incident["scheduled_until"] = object["scheduled_until"].clone();
            }
            api.call(
                reqwest::Method::PATCH,
                &format!("/incidents/{theirs}"),
                Some(&json!({"incident": incident})),
            )
            .await?;
        }
    }
    Ok(())
}

/// Mirrors updates, one at a time in order, until `stop`.
pub async fn run(
    store: Store,
    mirror: Mirror,
    mut pages: watch::Receiver<Arc<Snapshot>>,
    mut stop: watch::Receiver<bool>,
    me: String,
) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = match reqwest::Client::builder()
        .user_agent(concat!("runbook/", env!("CARGO_PKG_VERSION")))
        .timeout(super::webhook::TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("Statuspage mirror: cannot set up its HTTP client: {e}");
            return;
        }
    };
    // The process before this one may have asked a moment ago: the first request
    // waits too.
    let mut api = Api {
        m: &mirror,
        client,
        last: Some(Instant::now()),
        components: None,
    };
    let mut local = crate::store::changes();
    loop {
        if *stop.borrow() {
            return;
        }
        let head = store.claim(true, 1, now_ms(), &me).await;
        match head {
            Ok(list) if !list.is_empty() => {
                for c in list {
                    let outcome = match mirror_one(&mut api, &store, &c).await {
                        Ok(()) => Sent::Accepted,
                        Err(e) => {
                            tracing::warn!("Statuspage mirror: {e}");
                            Sent::Failed(e)
                        }
                    };
                    super::settle(&store, &c, outcome).await;
                }
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("Statuspage mirror: cannot read the store: {e}"),
        }
        tokio::select! {
            _ = pages.changed() => {}
            _ = local.changed() => {}
            _ = stop.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
