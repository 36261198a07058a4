//! The runner's clock: what time it is, and waiting for a moment. The real clock is the
//! system's time with tokio's timers; a virtual one follows tokio's (pausable) clock, so
//! tests run hours of a run in no time, and no time passes while the store answers.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// What time it is for a runner, and how it waits.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// `None`: the system's time. `Some((ms, at))`: `ms` at tokio's instant `at`, then
    /// as tokio's clock moves (paused in tests, it moves only when nothing else can).
    virtual_from: Option<(i64, Instant)>,
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl Clock {
    /// The system's time.
    pub fn system() -> Self {
        Clock { virtual_from: None }
    }

    /// A clock that reads `start_ms` now and then moves with tokio's clock: under
    /// `tokio::time::pause` it jumps to the next timer whenever the runtime is idle.
    pub fn virtual_from(start_ms: i64) -> Self {
        Clock {
            virtual_from: Some((start_ms, Instant::now())),
        }
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        match self.virtual_from {
            None => crate::store::now_ms(),
            Some((start, at)) => start.saturating_add(crate::duration::millis(at.elapsed())),
        }
    }

    /// Returns at `ms` (at once when it has passed).
    pub async fn sleep_until(&self, ms: i64) {
        let wait = ms.saturating_sub(self.now_ms()).max(0) as u64;
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    }

    /// Returns at `ms`, or never without one.
    pub async fn sleep_until_maybe(&self, ms: Option<i64>) {
        match ms {
            Some(ms) => self.sleep_until(ms).await,
            None => std::future::pending().await,
        }
    }

    /// Returns after `d`.
    pub async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }

    /// A call to the store (or anything else that answers from another thread). On a
    /// virtual clock no time passes meanwhile: tokio's paused clock does not jump while a
    /// blocking task is running (on a current-thread runtime), so one waits alongside.
    pub async fn io<F: Future>(&self, call: F) -> F::Output {
        if self.virtual_from.is_none() {
            return call.await;
        }
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let holder = tokio::task::spawn_blocking(move || {
            let _ = wait.recv();
        });
        let out = call.await;
        drop(done);
        let _ = holder.await;
        out
    }
}
