//! `runbook serve` and `execute --serve`: the status page, and beside it on the same
//! snapshots the notifications' sender (`crate::notify`). Flags that cannot work (an SMTP
//! URL that does not parse, a mirror without its key) are refused before the address is
//! served.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::status::command::{PageArgs, bind, existing_dir, settings};
use crate::status::server::Sidecar;
use crate::store::Store;

/// The sender, started beside the server; `stop` asks it to finish what is under way.
struct Sender {
    stop: watch::Sender<bool>,
    task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl Sender {
    fn new() -> Sender {
        Sender {
            stop: watch::channel(false).0,
            task: Arc::default(),
        }
    }

    /// The sidecar that starts it with the server's store and snapshots.
    fn sidecar(&self, settings: crate::notify::Settings) -> Sidecar {
        let stop = self.stop.subscribe();
        let task = self.task.clone();
        Box::new(move |store, pages| {
            let handle = tokio::spawn(crate::notify::run(store, Arc::new(settings), pages, stop));
            *task.lock().expect("not poisoned") = Some(handle);
        })
    }

    /// Stops it, waiting up to 30 s for the sends under way to be answered and recorded.
    async fn finish(self) {
        let _ = self.stop.send(true);
        let handle = self.task.lock().expect("not poisoned").take();
        if let Some(h) = handle {
            let _ = tokio::time::timeout(Duration::from_secs(35), h).await;
        }
    }
}

/// Starts serving in the background (for `execute --serve`).
pub async fn spawn(
    listener: TcpListener,
    store_url: &str,
    page: &PageArgs,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let (info, cfg) = settings(page, &listener)?;
    let notify = crate::notify::Settings::new(&page.notify, &info.name, &info.url)?;
    let store = Store::open(store_url).await.map_err(|e| e.to_string())?;
    eprintln!("status page: {}", info.url);
    let sender = Sender::new();
    let sidecar = sender.sidecar(notify);
    // The sender lives as long as the process: a run's end ends it.
    std::mem::forget(sender.stop);
    Ok(tokio::spawn(async move {
        if let Err(e) =
            crate::status::server::serve(listener, store, info, cfg, Some(sidecar)).await
        {
            tracing::error!("status page stopped: {e}");
        }
    }))
}

/// `runbook serve`: until Ctrl-C or SIGTERM; then the sends under way are finished.
pub async fn serve(addr: &str, store_url: &str, page: &PageArgs) -> Result<(), String> {
    existing_dir(store_url)?;
    let listener = bind(addr).await?;
    let (info, cfg) = settings(page, &listener)?;
    let notify = crate::notify::Settings::new(&page.notify, &info.name, &info.url)?;
    let store = Store::open(store_url).await.map_err(|e| e.to_string())?;
    eprintln!(
        "serving the status page of {} on {} (admin API {}{}{})",
        store_url,
        info.url,
        if cfg.admin_token.is_some() {
            "on"
        } else {
            "off: no token"
        },
        if notify.mail.is_some() {
            ", mail on"
        } else {
            ""
        },
        if notify.mirror.is_some() {
            ", Statuspage mirror on"
        } else {
            ""
        },
    );
    let sender = Sender::new();
    let sidecar = sender.sidecar(notify);
    let stop = async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async {
                match term.as_mut() {
                    Some(t) => { t.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {}
        }
    };
    let served = tokio::select! {
        r = crate::status::server::serve(listener, store, info, cfg, Some(sidecar)) => r.map_err(|e| e.to_string()),
        _ = stop => Ok(()),
    };
    sender.finish().await;
    served
}
