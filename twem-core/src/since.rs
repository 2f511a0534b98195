//! Latencies measured from one clock read to many start times.
//!
//! Requests decoded by one read of a client share their start time (one
//! clock read per batch), and so do requests queued together for a server.
//! `Instant` subtraction normalises seconds and nanoseconds with checked
//! arithmetic, ~30 instructions, which at pipeline 16 cost ~60 a request
//! (two latencies each, callgrind). [`Since`] does it once per distinct
//! start.

use std::time::{Duration, Instant};

/// Durations from `now` back to start times, the last one remembered.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Since {
    now: Instant,
    last: Option<(Instant, Duration)>,
}

impl Since {
    /// Durations up to `now`.
    #[inline]
    pub(crate) fn new(now: Instant) -> Since {
        Since { now, last: None }
    }

    /// The time from `start` to `now` (zero if `start` is later).
    #[inline]
    pub(crate) fn of(&mut self, start: Instant) -> Duration {
        if let Some((s, d)) = self.last {
            if s == start {
                return d;
            }
        }
        let d = self.now.saturating_duration_since(start);
        self.last = Some((start, d));
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The same answers as the subtraction, for repeated, new, and later
    // start times.
    #[test]
    fn same_as_subtracting() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(3);
        let now = t0 + Duration::from_millis(10);
        let mut since = Since::new(now);
        for start in [t0, t0, t1, t1, t0, now + Duration::from_millis(1)] {
            assert_eq!(since.of(start), now.saturating_duration_since(start));
        }
    }
}
