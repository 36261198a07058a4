//! A real browser (headless Chromium driven over W3C WebDriver by chromedriver) watches
//! the status page while a run goes on in another process: the page shows the active
//! maintenance, and the next step's update arrives by Server-Sent Events and replaces
//! `main#content` without a reload. Also a screenshot (`target/status-page.png`) and no
//! severe console messages.
//!
//! Needs /usr/bin/chromium and /usr/bin/chromedriver; `scripts/test-tools.sh chromium`
//! installs them when missing (the test calls it).

use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Functional waits: generous, for a shared and noisy machine.
const WAIT: Duration = Duration::from_secs(60);

/// A process of the test, in its own process group, killed with its group when dropped.
struct Proc {
    child: Child,
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command) -> Proc {
        cmd.stdin(Stdio::null()).process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc { child }
    }

    /// Whether it is still running.
    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM to the group, then SIGKILL after `grace`.
    fn stop(&mut self, grace: Duration) {
        let pgid = self.child.id() as i32;
        if self.alive() {
            // SAFETY: signalling a process group we created.
            unsafe { libc::kill(-pgid, libc::SIGTERM) };
            let end = Instant::now() + grace;
            while self.alive() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // Whatever is left of the group (children of a killed parent too).
        // SAFETY: as above.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The target directory (`CARGO_TARGET_TMPDIR` is `<target>/tmp`).
fn target_dir() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().map(Path::to_path_buf).unwrap_or(tmp)
}

fn ensure_chromium() {
    if Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists() {
        return;
    }
    let status = Command::new("bash")
        .arg(root().join("scripts/test-tools.sh"))
        .arg("chromium")
        .status()
        .expect("scripts/test-tools.sh runs");
    assert!(
        status.success(),
        "scripts/test-tools.sh chromium failed ({status}): chromium and chromedriver are needed"
    );
}

fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .no_proxy()
        .build()
        .expect("an HTTP client")
}

async fn get_text(http: &reqwest::Client, url: &str) -> Option<(u16, String)> {
    let r = http
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.ok()?))
}

/// `runbook serve` of `store` on a free port, answering as `page_name` (so that it is
/// surely ours and not another server that took the port first).
async fn start_server(
    http: &reqwest::Client,
    dir: &Path,
    store: &str,
    page_name: &str,
) -> (Proc, String) {
    for attempt in 0..5 {
        let port = free_port();
        let log = fs::File::create(dir.join(format!("serve-{attempt}.log"))).unwrap();
        let mut server = Proc::spawn(
            "runbook serve",
            crate::common::runbook()
                .args(["serve", "--addr", &format!("127.0.0.1:{port}")])
                .args(["--store", store, "--page-name", page_name])
                .current_dir(dir)
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        );
        let base = format!("http://127.0.0.1:{port}");
        let end = Instant::now() + WAIT;
        while server.alive() && Instant::now() < end {
            if let Some((200, body)) = get_text(http, &format!("{base}/api/v2/summary.json")).await
            {
                let v: Value = serde_json::from_str(&body).unwrap_or_default();
                if v["page"]["name"] == page_name {
                    return (server, base);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Port taken meanwhile, or too slow: try another.
    }
    panic!(
        "runbook serve did not come up; see {}",
        dir.join("serve-*.log").display()
    );
}

/// chromedriver on a free port, ready for sessions.
async fn start_chromedriver(http: &reqwest::Client, dir: &Path) -> (Proc, String) {
    for attempt in 0..5 {
        let port = free_port();
        let log = fs::File::create(dir.join(format!("chromedriver-{attempt}.log"))).unwrap();
        let mut driver = Proc::spawn(
            "chromedriver",
            Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        );
        let base = format!("http://127.0.0.1:{port}");
        let end = Instant::now() + WAIT;
        while driver.alive() && Instant::now() < end {
            if let Some((200, body)) = get_text(http, &format!("{base}/status")).await {
                let v: Value = serde_json::from_str(&body).unwrap_or_default();
                if v["value"]["ready"] == true {
                    return (driver, base);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    panic!("chromedriver did not come up; see {}", dir.display());
}

/// A WebDriver session (W3C protocol over HTTP).
struct Browser {
    http: reqwest::Client,
    base: String,
    session: String,
}

impl Browser {
    /// Sends a command; its `value`, or the WebDriver error as `Err`.
    async fn send(
        http: &reqwest::Client,
        method: reqwest::Method,
        url: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut req = http.request(method.clone(), url);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json; charset=utf-8")
                .body(serde_json::to_vec(&b).unwrap());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("{method} {url}: {e}"))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| format!("{method} {url}: {e}"))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{method} {url}: {status}: not JSON ({e}): {text}"))?;
        if status.is_success() {
            Ok(v["value"].clone())
        } else {
            Err(format!(
                "{method} {url}: {status}: {} {}",
                v["value"]["error"], v["value"]["message"]
            ))
        }
    }

    async fn new_session(http: &reqwest::Client, base: &str) -> Browser {
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": CHROMIUM,
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-dev-shm-usage",
                            "--window-size=1200,1600",
                            "--no-first-run",
                            "--no-default-browser-check",
                        ],
                    },
                    "goog:loggingPrefs": { "browser": "ALL" },
                }
            }
        });
        let mut last = String::new();
        // The first start of a browser on a cold machine can be slow: try again once.
        for _ in 0..2 {
            match Browser::send(
                http,
                reqwest::Method::POST,
                &format!("{base}/session"),
                Some(caps.clone()),
            )
            .await
            {
                Ok(v) => {
                    let session = v["sessionId"]
                        .as_str()
                        .unwrap_or_else(|| panic!("no sessionId in {v}"))
                        .to_owned();
                    return Browser {
                        http: http.clone(),
                        base: base.to_owned(),
                        session,
                    };
                }
                Err(e) => last = e,
            }
        }
        panic!("cannot start a browser session: {last}");
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        Browser::send(&self.http, method, &url, body)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn try_cmd(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        Browser::send(&self.http, method, &url, body).await
    }

    async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// Runs `script` (a function body) in the page; what it returns.
    async fn js(&self, script: &str) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// The visible text of `main#content` (empty if there is none).
    async fn content_text(&self) -> String {
        self.js("var m = document.querySelector('main#content'); return m ? m.innerText : '';")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits until `main#content` shows `needle`; the text then.
    async fn wait_for_text(&self, needle: &str) -> String {
        let end = Instant::now() + WAIT;
        loop {
            let text = self.content_text().await;
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < end,
                "the page did not show {needle:?} within {WAIT:?}; it shows:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn switch_to(&self, handle: &Value) {
        self.cmd(
            reqwest::Method::POST,
            "/window",
            Some(json!({ "handle": handle })),
        )
        .await;
    }

    /// Waits until the maintenance banner's text (empty while there is none) passes
    /// `done`; the text then.
    async fn wait_for_banner(&self, done: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + WAIT;
        loop {
            let text = self
                .js(
                    "var b = document.getElementById('runbook-maintenance-banner'); \
                     return b ? b.innerText : '';",
                )
                .await
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if done(&text) {
                return text;
            }
            assert!(
                Instant::now() < end,
                "the banner did not change as expected within {WAIT:?}; it shows: {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn screenshot(&self, to: &Path) {
        let b64 = self.cmd(reqwest::Method::GET, "/screenshot", None).await;
        let png = decode_base64(b64.as_str().expect("a base64 screenshot"));
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
        fs::write(to, png).unwrap_or_else(|e| panic!("{}: {e}", to.display()));
    }

    /// The browser's console messages since the last call: chromedriver's log endpoint
    /// (`se/log`), else the legacy one.
    async fn console_log(&self) -> Vec<Value> {
        let body = json!({ "type": "browser" });
        let got = match self
            .try_cmd(reqwest::Method::POST, "/se/log", Some(body.clone()))
            .await
        {
            Ok(v) => v,
            Err(_) => self.cmd(reqwest::Method::POST, "/log", Some(body)).await,
        };
        got.as_array().cloned().unwrap_or_default()
    }

    async fn quit(&self) {
        let _ = self.try_cmd(reqwest::Method::DELETE, "", None).await;
    }
}

fn decode_base64(s: &str) -> Vec<u8> {
    fn val(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some((c - b'A') as u32),
            b'a'..=b'z' => Some((c - b'a') as u32 + 26),
            b'0'..=b'9' => Some((c - b'0') as u32 + 52),
            b'+' | b'-' => Some(62),
            b'/' | b'_' => Some(63),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// A step that waits (at most two minutes) until the test creates `gate`.
fn gated(gate: &Path) -> String {
    format!(
        "i=0; while [ ! -e '{}' ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done",
        gate.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_page_follows_a_run_without_reloading() {
    ensure_chromium();
    let http = http_client();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = format!("sqlite://{}/state.db", dir.display());
    let (gate1, gate2) = (dir.join("gate-one"), dir.join("gate-two"));
    // Both gates open at the end, whatever happens, so no step waits on.
    struct Gates(PathBuf, PathBuf);
    impl Drop for Gates {
        fn drop(&mut self) {
            let _ = fs::write(&self.0, "");
            let _ = fs::write(&self.1, "");
        }
    }
    let _gates = Gates(gate1.clone(), gate2.clone());

    let runbook = dir.join("slow.yaml");
    fs::write(
        &runbook,
        format!(
            r#"runbook: slow-demo
title: Slow demo maintenance
summary: Testing the page.
status_page: {{ components: [web, api] }}
steps:
  - {{ id: one, kind: patch, title: First step, expected: 2s, timeout: 5m, run: {{ shell: "{}" }} }}
  - {{ id: close, kind: close, title: Close the shop }}
  - {{ id: two, kind: patch, title: Second step, expected: 3s, timeout: 5m, run: {{ shell: "{}" }} }}
  - {{ id: reopen, kind: reopen, title: Reopen the shop }}
"#,
            gated(&gate1),
            gated(&gate2)
        ),
    )
    .unwrap();
    let valid = crate::common::runbook()
        .arg("validate")
        .arg(&runbook)
        .output()
        .unwrap();
    assert!(
        valid.status.success(),
        "the test's runbook is invalid:\n{}",
        String::from_utf8_lossy(&valid.stderr)
    );

    let page_name = format!("Browser test {}", std::process::id());
    let (_server, base) = start_server(&http, dir, &store, &page_name).await;
    let (_driver, driver_base) = start_chromedriver(&http, dir).await;
    let browser = Browser::new_session(&http, &driver_base).await;

    let exec_log = fs::File::create(dir.join("execute.log")).unwrap();
    let mut run = Proc::spawn(
        "runbook execute",
        crate::common::runbook()
            .arg("execute")
            .arg(&runbook)
            .args(["--now", "--yes", "--store", &store])
            .current_dir(dir)
            .stdout(exec_log.try_clone().unwrap())
            .stderr(exec_log),
    );

    // The first step has started (and waits for its gate) once the API says so.
    let end = Instant::now() + WAIT;
    loop {
        if let Some((200, body)) = get_text(&http, &format!("{base}/api/v2/summary.json")).await
            && body.contains("Step 1 of 4")
        {
            break;
        }
        assert!(
            run.alive(),
            "runbook execute ended early:\n{}",
            fs::read_to_string(dir.join("execute.log")).unwrap_or_default()
        );
        assert!(
            Instant::now() < end,
            "the first step never showed in /api/v2/summary.json"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    browser.goto(&format!("{base}/")).await;
    let title = browser.js("return document.title;").await;
    let text = browser.content_text().await;
    assert!(
        text.contains("Slow demo maintenance"),
        "the active maintenance is not shown (title {title}):\n{text}"
    );
    assert!(
        text.contains("Step 1 of 4: First step"),
        "the first step's progress is not shown:\n{text}"
    );
    assert!(
        !text.contains("Second step"),
        "the second step shows before it started:\n{text}"
    );
    assert_eq!(
        browser
            .js("window.__noReload = 1; return window.__noReload;")
            .await,
        json!(1)
    );
    // The live script is connected before the change happens: the page keeps its own
    // EventSource, so give it a moment to open (the first `update` event is the version
    // it already shows, and is ignored).
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The run goes on: the next step's update must arrive without a reload.
    fs::write(&gate1, "").unwrap();
    let text = browser.wait_for_text("Second step").await;
    assert!(
        text.contains("Step 3 of 4: Second step"),
        "progress did not move to the second step:\n{text}"
    );
    assert_eq!(
        browser.js("return window.__noReload === 1;").await,
        json!(true),
        "the page was reloaded instead of updated in place"
    );
    let shot = target_dir().join("status-page.png");
    browser.screenshot(&shot).await;
    eprintln!("screenshot: {}", shot.display());

    // The banner on a customer's own page, in another tab (and another origin): in the
    // page's flow, not over its first heading, saying the update's ETA once.
    let status_tab = browser.cmd(reqwest::Method::GET, "/window", None).await;
    let host_tab = browser
        .cmd(
            reqwest::Method::POST,
            "/window/new",
            Some(json!({ "type": "tab" })),
        )
        .await;
    let host_tab = host_tab["handle"].clone();
    browser.switch_to(&host_tab).await;
    let host = crate::common::serve(
        "text/html; charset=utf-8",
        format!(
            "<!doctype html><title>Shop</title><body style='margin:0'><h1 id='shop' style='margin:0'>Acme shop</h1><p>Welcome</p><script src='{base}/banner.js'></script>"
        ),
    );
    browser.goto(&host).await;
    let banner = browser.wait_for_banner(|t| t.contains("Second step")).await;
    assert_eq!(
        banner.to_lowercase().matches("expect").count(),
        1,
        "the ETA is said once: {banner}"
    );
    let layout = browser
        .js(
            "var b = document.getElementById('runbook-maintenance-banner'); \
             var h = document.getElementById('shop'); \
             var br = b.getBoundingClientRect(), hr = h.getBoundingClientRect(); \
             var at = document.elementFromPoint(hr.left + 5, hr.top + hr.height / 2); \
             return { covered: at !== h && !h.contains(at), below: hr.top >= br.bottom - 0.5 };",
        )
        .await;
    assert_eq!(
        layout,
        json!({ "covered": false, "below": true }),
        "the banner covers the host page's heading"
    );
    browser.switch_to(&status_tab).await;

    // And to the end of the run, still in place.
    fs::write(&gate2, "").unwrap();
    let text = browser.wait_for_text("Completed").await;
    assert!(
        !text.contains("Maintenance in progress"),
        "the finished run still shows as in progress:\n{text}"
    );
    assert_eq!(
        browser.js("return window.__noReload === 1;").await,
        json!(true),
        "the page was reloaded at the end of the run"
    );

    // The banner went away as the run ended, told by the event stream: its own poll is
    // every ten minutes.
    browser.switch_to(&host_tab).await;
    browser.wait_for_banner(|t| t.is_empty()).await;

    let logs = browser.console_log().await;
    let severe: Vec<&Value> = logs.iter().filter(|e| e["level"] == "SEVERE").collect();
    assert!(
        severe.is_empty(),
        "the browser console has severe messages: {severe:#?}"
    );
    browser.quit().await;

    let end = Instant::now() + WAIT;
    while run.alive() && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = run.child.try_wait().unwrap();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "runbook execute did not complete:\n{}",
        fs::read_to_string(dir.join("execute.log")).unwrap_or_default()
    );
}
