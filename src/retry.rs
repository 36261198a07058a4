//! Trying again: the one retry loop of the program. A [`Backoff`] says how long to wait
//! between tries (doubling from `first` up to `max`), and for how long or how many tries
//! to go on; the caller's judge says, for each error, whether to try again at once, after
//! the wait, or not at all. Time comes from a [`Clock`], so the loop runs under a fake
//! one in tests.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// Where the retry loop reads the time and waits.
pub trait Clock {
    fn now(&self) -> Instant;
    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send;
}

/// The runtime's clock (tokio's, so a paused runtime pauses it too).
#[derive(Clone, Copy, Debug, Default)]
pub struct Tokio;

impl Clock for Tokio {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(d)
    }
}

/// What to do after a failed try.
#[derive(Debug, PartialEq)]
pub enum Next<E> {
    /// Try again after the backoff's wait.
    Later(E),
    /// Try again at once (another writer got there first: read again, decide again).
    Now(E),
    /// Give up with this error.
    Stop(E),
}

/// Why the loop ended without a success.
#[derive(Debug, PartialEq)]
pub enum Failed<E> {
    /// The judge said stop.
    Stopped(E),
    /// The tries or the time ran out; the last error.
    Exhausted(E),
}

impl<E> Failed<E> {
    /// The error, however the loop ended.
    pub fn into_inner(self) -> E {
        match self {
            Failed::Stopped(e) | Failed::Exhausted(e) => e,
        }
    }
}

/// Exponential backoff with a cap, and optionally a deadline (counted from the first
/// failure) and a limit on the number of tries.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// The wait after the first failure.
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
    /// How long after the first failure to stop trying.
    pub deadline: Option<Duration>,
    /// The most tries, the first included.
    pub tries: Option<u32>,
}

impl Backoff {
    /// Waits of `first`, doubling up to `max`, for ever.
    pub const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            deadline: None,
            tries: None,
        }
    }

    /// Tries again at once only (for conflicts), at most `tries` times in all.
    pub const fn immediate(tries: u32) -> Backoff {
        Backoff::new(Duration::ZERO, Duration::ZERO).tries(tries)
    }

    /// Gives up `deadline` after the first failure.
    pub const fn within(mut self, deadline: Duration) -> Backoff {
        self.deadline = Some(deadline);
        self
    }

    /// Gives up after `tries` tries in all.
    pub const fn tries(mut self, tries: u32) -> Backoff {
        self.tries = Some(tries);
        self
    }

    /// The wait after the `n`th delayed failure (1, 2, ...): `first * 2^(n-1)`, at most
    /// `max`.
    pub fn wait(&self, n: u32) -> Duration {
        let doubled = 2u32
            .checked_pow(n.saturating_sub(1))
            .and_then(|f| self.first.checked_mul(f))
            .unwrap_or(self.max);
        doubled.min(self.max)
    }

    /// Counts the tries of one operation against this backoff, for a loop that cannot
    /// hand its operation over as a closure (one that borrows its state mutably).
    pub fn start<'c, C: Clock>(&self, clock: &'c C) -> Attempts<'c, C> {
        Attempts {
            backoff: *self,
            clock,
            failed: 0,
            delayed: 0,
            since: None,
        }
    }

    /// Runs `op` until it succeeds, `judge` stops it, or the tries or the time run out.
    /// `judge` gets each error and the wait a [`Next::Later`] would be followed by.
    pub async fn retry<T, E, Op, Fut>(
        &self,
        clock: &impl Clock,
        mut op: Op,
        mut judge: impl FnMut(E, Duration) -> Next<E>,
    ) -> Result<T, Failed<E>>
    where
        Op: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut attempts = self.start(clock);
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let next = judge(e, attempts.next_wait());
                    attempts.after(next).await?;
                }
            }
        }
    }
}

/// The tries of one operation so far (see [`Backoff::start`]).
pub struct Attempts<'c, C> {
    backoff: Backoff,
    clock: &'c C,
    failed: u32,
    delayed: u32,
    since: Option<Instant>,
}

impl<C: Clock> Attempts<'_, C> {
    /// The wait a [`Next::Later`] after the next failure would be followed by.
    pub fn next_wait(&self) -> Duration {
        self.backoff.wait(self.delayed + 1)
    }

    /// After a failed try judged `next`: waits as it says, and answers `Ok` to try
    /// again, or how the loop ends.
    pub async fn after<E>(&mut self, next: Next<E>) -> Result<(), Failed<E>> {
        self.failed += 1;
        let since = *self.since.get_or_insert_with(|| self.clock.now());
        let out_of_tries = self.backoff.tries.is_some_and(|n| self.failed >= n);
        match next {
            Next::Stop(e) => Err(Failed::Stopped(e)),
            Next::Now(e) | Next::Later(e) if out_of_tries => Err(Failed::Exhausted(e)),
            Next::Now(_) => Ok(()),
            Next::Later(e) => {
                let mut wait = self.next_wait();
                if let Some(d) = self.backoff.deadline {
                    let left = d.saturating_sub(self.clock.now() - since);
                    if left.is_zero() {
                        return Err(Failed::Exhausted(e));
                    }
                    wait = wait.min(left);
                }
                self.delayed += 1;
                self.clock.sleep(wait).await;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A clock that moves only when slept on, and notes every wait.
    struct Fake {
        now: Mutex<Instant>,
        slept: Mutex<Vec<Duration>>,
    }

    impl Fake {
        fn new() -> Fake {
            Fake {
                now: Mutex::new(Instant::now()),
                slept: Mutex::new(Vec::new()),
            }
        }

        fn slept(&self) -> Vec<Duration> {
            self.slept.lock().unwrap().clone()
        }
    }

    impl Clock for Fake {
        fn now(&self) -> Instant {
            *self.now.lock().unwrap()
        }

        fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send {
            *self.now.lock().unwrap() += d;
            self.slept.lock().unwrap().push(d);
            std::future::ready(())
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// An operation that fails `fails` times, then answers how many tries it took.
    fn failing(fails: u32) -> impl FnMut() -> std::future::Ready<Result<u32, u32>> {
        let mut n = 0;
        move || {
            n += 1;
            std::future::ready(if n <= fails { Err(n) } else { Ok(n) })
        }
    }

    #[test]
    fn waits_double_up_to_the_cap() {
        let b = Backoff::new(ms(50), ms(1000));
        let waits: Vec<_> = (1..=7).map(|n| b.wait(n)).collect();
        assert_eq!(
            waits,
            [
                ms(50),
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1000),
                ms(1000)
            ]
        );
        assert_eq!(b.wait(200), ms(1000));
    }

    #[tokio::test]
    async fn later_waits_and_succeeds() {
        let clock = Fake::new();
        let b = Backoff::new(ms(50), ms(150));
        let r = b.retry(&clock, failing(4), |e, _| Next::Later(e)).await;
        assert_eq!(r, Ok(5));
        assert_eq!(clock.slept(), [ms(50), ms(100), ms(150), ms(150)]);
    }

    #[tokio::test]
    async fn now_does_not_wait() {
        let clock = Fake::new();
        let r = Backoff::immediate(10)
            .retry(&clock, failing(3), |e, _| Next::Now(e))
            .await;
        assert_eq!(r, Ok(4));
        assert!(clock.slept().is_empty());
    }

    #[tokio::test]
    async fn stop_gives_up_at_once() {
        let clock = Fake::new();
        let b = Backoff::new(ms(50), ms(150));
        let r = b.retry(&clock, failing(3), |e, _| Next::Stop(e)).await;
        assert_eq!(r, Err(Failed::Stopped(1)));
        assert!(clock.slept().is_empty());
    }

    #[tokio::test]
    async fn the_tries_run_out() {
        let clock = Fake::new();
        let r = Backoff::immediate(3)
            .retry(&clock, failing(5), |e, _| Next::Now(e))
            .await;
        assert_eq!(r, Err(Failed::Exhausted(3)));
    }

    #[tokio::test]
    async fn the_deadline_cuts_the_last_wait_then_ends() {
        let clock = Fake::new();
        let b = Backoff::new(ms(100), ms(1000)).within(ms(250));
        let r = b.retry(&clock, failing(10), |e, _| Next::Later(e)).await;
        // 100 + 150 (cut from 200) = the deadline; the try after it fails for good.
        assert_eq!(clock.slept(), [ms(100), ms(150)]);
        assert_eq!(r, Err(Failed::Exhausted(3)));
    }

    #[tokio::test]
    async fn attempts_drive_a_loop_of_its_own() {
        let clock = Fake::new();
        let mut state = 0;
        let mut attempts = Backoff::immediate(3).start(&clock);
        let end = loop {
            state += 1;
            if let Err(f) = attempts.after(Next::Now(state)).await {
                break f;
            }
        };
        assert_eq!(end, Failed::Exhausted(3));
        assert_eq!(state, 3);
    }

    #[tokio::test]
    async fn the_judge_is_told_the_next_wait() {
        let clock = Fake::new();
        let mut told = Vec::new();
        let b = Backoff::new(ms(10), ms(40));
        let r = b
            .retry(&clock, failing(3), |e, wait| {
                told.push(wait);
                // A conflict (even) goes again at once; it does not move the backoff on.
                if e % 2 == 0 {
                    Next::Now(e)
                } else {
                    Next::Later(e)
                }
            })
            .await;
        assert_eq!(r, Ok(4));
        assert_eq!(told, [ms(10), ms(20), ms(20)]);
        assert_eq!(clock.slept(), [ms(10), ms(20)]);
    }
}
