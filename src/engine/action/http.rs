//! The `http` action and check: one request with its expectations (status, latency,
//! body text, JSON pointers), through the process's one HTTP client.

use std::time::{Duration, Instant};

use indexmap::IndexMap;
use serde_json::Value;

use super::{Outcome, StepLog, TAIL_LINES};
use crate::runbook::HttpCheck;

/// The process's HTTP client: rustls (with *ring*) and the system's root certificates,
/// built once so connections are reused across checks.
fn client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: std::sync::OnceLock<Result<reqwest::Client, String>> =
        std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            // Another part of the process may have installed one already; either will do.
            let _ = rustls::crypto::ring::default_provider().install_default();
            reqwest::Client::builder()
                .user_agent(concat!("runbook/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| {
                    format!(
                        "cannot set up the HTTP client: {}",
                        crate::diagnostic::error_chain(&e)
                    )
                })
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Requests used when a check gives no `timeout` of its own.
const HTTP_DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends the request (its templates already rendered) and checks the response: status,
/// latency bound, body text, JSON pointers. The fields of a JSON object body become
/// outputs, with `http_status` and `latency_ms`.
pub async fn http(h: &HttpCheck, log: &mut StepLog) -> Outcome {
    let what = format!("{} {}", h.method, h.url);
    let fail = |why: String| Outcome::Failed(format!("{what}: {why}"));
    let client = match client() {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(e),
    };
    let method = match reqwest::Method::from_bytes(h.method.as_bytes()) {
        Ok(m) => m,
        Err(_) => return fail(format!("`{}` is not an HTTP method", h.method)),
    };
    let timeout = h.timeout.unwrap_or(HTTP_DEFAULT_TIMEOUT);
    let mut req = client.request(method, &h.url).timeout(timeout);
    for (k, v) in &h.headers {
        req = req.header(k, v);
    }
    if let Some(b) = &h.body {
        req = req.body(b.clone());
    }
    let start = Instant::now();
    let sent = async {
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await?;
        Ok::<_, reqwest::Error>((status, body))
    };
    let (status, body) = match sent.await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            return fail(format!(
                "no response within {}",
                crate::duration::fmt_duration(timeout)
            ));
        }
        Err(e) => return fail(crate::diagnostic::error_chain(&e)),
    };
    let latency = start.elapsed();
    let text = String::from_utf8_lossy(&body);
    log.line(
        "http",
        &format!(
            "{what} -> {status} in {} ms, {} bytes",
            latency.as_millis(),
            body.len()
        ),
    );
    for line in text.lines().take(TAIL_LINES) {
        log.line("body", line);
    }
    if status != h.expect_status {
        return fail(format!("status {status}, expected {}", h.expect_status));
    }
    if let Some(bound) = h.within
        && latency > bound
    {
        return fail(format!(
            "answered in {} ms, more than the {} allowed",
            latency.as_millis(),
            crate::duration::fmt_duration(bound)
        ));
    }
    if let Some(want) = &h.expect_contains
        && !text.contains(want.as_str())
    {
        return fail(format!("the response does not contain `{want}`"));
    }
    let json: Option<Value> = serde_json::from_slice(&body).ok();
    for (pointer, want) in &h.expect_json {
        match json.as_ref().map(|j| j.pointer(pointer)) {
            None => {
                return fail(format!(
                    "the response is not JSON, so it has no `{pointer}`"
                ));
            }
            Some(None) => return fail(format!("the response has no `{pointer}`")),
            Some(Some(got)) if !crate::engine::target::same(got, want) => {
                return fail(format!("`{pointer}` is {got}, expected {want}"));
            }
            Some(Some(_)) => {}
        }
    }
    let mut outputs: IndexMap<String, Value> = match json {
        Some(Value::Object(m)) => m.into_iter().collect(),
        _ => IndexMap::new(),
    };
    outputs
        .entry("http_status".into())
        .or_insert(Value::from(status));
    outputs
        .entry("latency_ms".into())
        .or_insert(Value::from(latency.as_millis() as u64));
    Outcome::Succeeded(outputs)
}
