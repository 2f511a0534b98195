//! Throughput and latency percentiles, printed as `redis-benchmark --csv` prints them
//! so that one parser reads both tools.

use std::time::Duration;

/// The header line `redis-benchmark --csv` prints (Redis 7).
pub const CSV_HEADER: &str = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"";

/// What one run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Requests that got a reply.
    pub count: u64,
    /// Replies that were errors (`ERROR`, `CLIENT_ERROR`, `SERVER_ERROR`).
    pub errors: u64,
    /// Requests per second over the whole run.
    pub rps: f64,
    /// Mean latency in milliseconds.
    pub avg_ms: f64,
    /// Smallest latency in milliseconds.
    pub min_ms: f64,
    /// Median latency in milliseconds.
    pub p50_ms: f64,
    /// 95th percentile latency in milliseconds.
    pub p95_ms: f64,
    /// 99th percentile latency in milliseconds.
    pub p99_ms: f64,
    /// Largest latency in milliseconds.
    pub max_ms: f64,
}

/// The value at quantile `q` (0..=1) of `sorted`, by nearest rank; 0 when empty.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    // Nearest rank: the smallest value with at least q of the samples at or below it.
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    let idx = rank.saturating_sub(1).min(sorted.len() - 1);
    sorted.get(idx).copied().unwrap_or(0)
}

/// Summarises per-request latencies (microseconds) over a run that took `elapsed`.
pub fn summarize(latencies_us: &mut [u64], errors: u64, elapsed: Duration) -> Summary {
    latencies_us.sort_unstable();
    let count = latencies_us.len() as u64;
    let ms = |us: u64| us as f64 / 1000.0;
    let secs = elapsed.as_secs_f64();
    let sum: u128 = latencies_us.iter().map(|&v| u128::from(v)).sum();
    Summary {
        count,
        errors,
        rps: if secs > 0.0 { count as f64 / secs } else { 0.0 },
        avg_ms: if count > 0 {
            sum as f64 / count as f64 / 1000.0
        } else {
            0.0
        },
        min_ms: ms(latencies_us.first().copied().unwrap_or(0)),
        p50_ms: ms(percentile(latencies_us, 0.50)),
        p95_ms: ms(percentile(latencies_us, 0.95)),
        p99_ms: ms(percentile(latencies_us, 0.99)),
        max_ms: ms(latencies_us.last().copied().unwrap_or(0)),
    }
}

/// One CSV row in `redis-benchmark --csv`'s format.
pub fn csv_row(test: &str, s: &Summary) -> String {
    format!(
        "\"{test}\",\"{:.2}\",\"{:.3}\",\"{:.3}\",\"{:.3}\",\"{:.3}\",\"{:.3}\",\"{:.3}\"",
        s.rps, s.avg_ms, s.min_ms, s.p50_ms, s.p95_ms, s.p99_ms, s.max_ms
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // Nearest rank over 1..=100: p50 is 50, p99 is 99, p100 is 100.
    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.50), 50);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&v, 1.0), 100);
        assert_eq!(percentile(&v, 0.0), 1);
    }

    // No samples: 0, not a panic.
    #[test]
    fn empty_is_zero() {
        assert_eq!(percentile(&[], 0.5), 0);
        let s = summarize(&mut [], 0, Duration::from_secs(1));
        assert_eq!(s.count, 0);
        assert_eq!(s.rps, 0.0);
    }

    // Unsorted input is sorted first; rps is count over elapsed seconds.
    #[test]
    fn summary_of_unsorted_samples() {
        let mut v = vec![3000, 1000, 2000, 4000];
        let s = summarize(&mut v, 1, Duration::from_secs(2));
        assert_eq!(s.count, 4);
        assert_eq!(s.errors, 1);
        assert_eq!(s.rps, 2.0);
        assert_eq!(s.min_ms, 1.0);
        assert_eq!(s.max_ms, 4.0);
        assert_eq!(s.avg_ms, 2.5);
        assert_eq!(s.p50_ms, 2.0);
    }

    // The row has the header's eight columns, quoted, in the same order.
    #[test]
    fn csv_row_matches_header_shape() {
        let s = summarize(&mut [1500], 0, Duration::from_secs(1));
        let row = csv_row("GET", &s);
        assert_eq!(row.split(',').count(), CSV_HEADER.split(',').count());
        assert!(row.starts_with("\"GET\",\"1.00\",\"1.500\""), "{row}");
    }
}
