//! Pacing of an accept loop after failed accepts (EMFILE, ENFILE, ENOBUFS),
//! shared by the pools' listeners and the admin endpoints: the pending
//! connection stays queued after a failed accept, so retrying at once would
//! spin. The pause doubles from 10 ms up to a maximum while failures go on,
//! and the warning is logged at most once a second with the number of
//! failures since the last line.

use std::time::{Duration, Instant};

/// One accept loop's back-off and log pacing.
#[derive(Debug)]
pub struct AcceptBackoff {
    pause: Duration,
    max: Duration,
    failures: u64,
    last_log: Option<Instant>,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    /// The longest pause of a pool's listener.
    pub const POOL_MAX: Duration = Duration::from_secs(1);
    /// The longest pause of an admin endpoint (a scraper should not wait long
    /// once descriptors are free again).
    pub const ADMIN_MAX: Duration = Duration::from_millis(100);

    /// Back-off pausing at most `max`.
    pub fn new(max: Duration) -> Self {
        AcceptBackoff {
            pause: Self::FIRST,
            max,
            failures: 0,
            last_log: None,
        }
    }

    /// An accept succeeded: the next failure starts from the shortest pause.
    pub fn succeeded(&mut self) {
        self.pause = Self::FIRST;
    }

    /// An accept of `what` (a pool or an endpoint) failed with `e`: how long
    /// to pause before the next one.
    pub fn failed(&mut self, what: &str, e: &std::io::Error) -> Duration {
        self.failures += 1;
        if self.log_due() {
            tracing::warn!(listener = what, error = %e, failures = self.failures,
                pause_ms = self.pause.as_millis() as u64, "accept failed; pausing the listener");
            self.failures = 0;
        }
        let pause = self.pause;
        self.pause = (self.pause * 2).min(self.max);
        pause
    }

    /// Whether a warning may be logged now (at most one a second).
    pub fn log_due(&mut self) -> bool {
        let now = Instant::now();
        match self.last_log {
            Some(t) if now.duration_since(t) < Duration::from_secs(1) => false,
            _ => {
                self.last_log = Some(now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_doubles_to_its_maximum_and_resets() {
        let e = std::io::Error::from_raw_os_error(libc::EMFILE);
        let mut b = AcceptBackoff::new(Duration::from_millis(40));
        let pauses: Vec<u128> = (0..5).map(|_| b.failed("p", &e).as_millis()).collect();
        assert_eq!(pauses, [10, 20, 40, 40, 40]);
        b.succeeded();
        assert_eq!(b.failed("p", &e), Duration::from_millis(10));
    }

    #[test]
    fn at_most_one_line_a_second() {
        let mut b = AcceptBackoff::new(AcceptBackoff::POOL_MAX);
        assert!(b.log_due());
        assert!(!b.log_due());
    }
}
