//! The accept loop: every connection served by hyper under [`Limits`] (a header
//! deadline, an idle timeout, a cap on open connections that sheds the quietest), so no
//! client can hold the server's sockets or descriptors (issue 12).

use std::sync::Arc;
use std::time::Duration;

use super::Front;

/// How long a connection may take, and how many there may be (documented in the README).
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    /// A request's header must be complete this long after the connection opened or its
    /// previous response was sent: a silent, half-sent or idle kept-alive connection ends.
    header: Duration,
    /// A connection on which no byte moves either way for this long ends (a client that
    /// stopped reading). A live-update stream sends a keep-alive comment after 20 s
    /// without an update.
    idle: Duration,
    /// Connections open at once; when a new one would pass it, the connection that has
    /// been quiet the longest is closed to make room.
    max: usize,
}

/// The default limits; `RUNBOOK_TEST_HEADER_TIMEOUT_MS`, `RUNBOOK_TEST_IDLE_TIMEOUT_MS`
/// and `RUNBOOK_TEST_MAX_CONNECTIONS` change them, for tests only.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_CONNECTIONS: usize = 10_000;
/// Descriptors kept for everything but connections (the store, logs, the runtime).
const FDS_KEPT: u64 = 100;

impl Limits {
    pub(super) fn from_env() -> Limits {
        let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        let fds = fd_limit().unwrap_or(u64::MAX);
        let max = (MAX_CONNECTIONS as u64).min(fds.saturating_sub(FDS_KEPT).max(16)) as usize;
        Limits {
            header: env("RUNBOOK_TEST_HEADER_TIMEOUT_MS")
                .map_or(HEADER_TIMEOUT, Duration::from_millis),
            idle: env("RUNBOOK_TEST_IDLE_TIMEOUT_MS").map_or(IDLE_TIMEOUT, Duration::from_millis),
            max: env("RUNBOOK_TEST_MAX_CONNECTIONS").map_or(max, |n| n as usize),
        }
    }
}

/// The connections open now, each with the time of its last byte (ms since `epoch`).
struct Open {
    epoch: std::time::Instant,
    conns: std::sync::Mutex<std::collections::HashMap<u64, Arc<Conn>>>,
}

struct Conn {
    last_ms: std::sync::atomic::AtomicU64,
    /// Told to close, to make room for a new connection.
    shed: tokio::sync::Notify,
}

impl Open {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Closes the connection quiet for the longest (it no longer counts from now on).
    fn shed_quietest(&self) {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let quietest = conns
            .iter()
            .min_by_key(|(_, c)| c.last_ms.load(std::sync::atomic::Ordering::Relaxed))
            .map(|(id, _)| *id);
        if let Some(c) = quietest.and_then(|id| conns.remove(&id)) {
            c.shed.notify_one();
        }
    }

    fn len(&self) -> usize {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Accepts connections for ever, each served by hyper under [`Limits`].
pub(super) async fn accept(
    listener: tokio::net::TcpListener,
    front: Front,
    limits: Limits,
) -> std::io::Result<()> {
    use std::sync::atomic::Ordering::Relaxed;
    let open = Arc::new(Open {
        epoch: std::time::Instant::now(),
        conns: Default::default(),
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header);
    let mut next_id = 0u64;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!("status page: cannot accept a connection: {e}");
                // Out of descriptors (or a connection reset before it was taken): make
                // room, and try again in a moment rather than spin.
                open.shed_quietest();
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if open.len() >= limits.max {
            open.shed_quietest();
        }
        let id = next_id;
        next_id += 1;
        let conn = Arc::new(Conn {
            last_ms: open.now_ms().into(),
            shed: tokio::sync::Notify::new(),
        });
        open.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, conn.clone());
        let io = hyper_util::rt::TokioIo::new(Counted {
            inner: stream,
            open: open.clone(),
            conn: conn.clone(),
        });
        let served = http.serve_connection(io, front.clone());
        let open = open.clone();
        let idle_ms = limits.idle.as_millis() as u64;
        tokio::spawn(async move {
            tokio::pin!(served);
            loop {
                let quiet_until = conn.last_ms.load(Relaxed) + idle_ms;
                let at = open.epoch + Duration::from_millis(quiet_until);
                tokio::select! {
                    _ = served.as_mut() => break,
                    _ = conn.shed.notified() => break,
                    _ = tokio::time::sleep_until(at.into()) => {
                        if open.now_ms() >= conn.last_ms.load(Relaxed) + idle_ms {
                            break;
                        }
                    }
                }
            }
            open.conns
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
        });
    }
}

/// A connection's socket that notes when a byte last moved.
struct Counted {
    inner: tokio::net::TcpStream,
    open: Arc<Open>,
    conn: Arc<Conn>,
}

impl Counted {
    fn moved(&self) {
        self.conn
            .last_ms
            .store(self.open.now_ms(), std::sync::atomic::Ordering::Relaxed);
    }
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.moved();
        }
        r
    }
}

impl tokio::io::AsyncWrite for Counted {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        r
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The soft limit on open descriptors.
fn fd_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit on a valid struct.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then_some(lim.rlim_cur)
}

/// Thousands of live-update clients need thousands of descriptors: take the hard limit.
pub(super) fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit on a valid struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
