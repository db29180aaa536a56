//! Explicit-bucket histograms with the OpenTelemetry GenAI semantic-convention
//! boundaries: cumulative bucket counts, sum and count (what OTLP and
//! Prometheus export), plus exact percentiles of an interval's samples (what a
//! person reads).

use serde::{Deserialize, Serialize};

/// `gen_ai.server.time_to_first_token`.
pub const TTFT_BOUNDS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// `gen_ai.server.time_per_output_token`.
pub const TPOT_BOUNDS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
];
/// `gen_ai.server.request.duration`.
pub const DURATION_BOUNDS: &[f64] = &[
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub count: u64,
    pub sum: f64,
    pub bounds: Vec<f64>,
    /// `counts[i]` holds samples <= `bounds[i]` (and above the previous bound);
    /// the last count those above every bound.
    pub counts: Vec<u64>,
    /// Exact (nearest-rank) percentiles of an interval's samples; absent on totals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99: Option<f64>,
    /// The samples recorded since [`Histogram::close_interval`]; never serialised.
    #[serde(skip)]
    samples: Vec<f64>,
}

impl Histogram {
    pub fn new(bounds: &[f64]) -> Self {
        Self {
            count: 0,
            sum: 0.0,
            bounds: bounds.to_vec(),
            counts: vec![0; bounds.len() + 1],
            p50: None,
            p95: None,
            p99: None,
            samples: Vec::new(),
        }
    }

    pub fn record(&mut self, v: f64) {
        self.counts[self.bounds.partition_point(|&b| b < v)] += 1;
        self.count += 1;
        self.sum += v;
        self.samples.push(v);
    }

    /// Adds another histogram's buckets (same bounds) into this one's.
    pub fn add(&mut self, other: &Histogram) {
        debug_assert_eq!(self.bounds, other.bounds);
        for (c, o) in self.counts.iter_mut().zip(&other.counts) {
            *c = c.saturating_add(*o);
        }
        self.count = self.count.saturating_add(other.count);
        self.sum += other.sum;
    }

    /// Fixes the percentiles of the samples recorded so far and lets the samples go.
    pub fn close_interval(&mut self) {
        let mut sorted = std::mem::take(&mut self.samples);
        sorted.sort_by(f64::total_cmp);
        let rank = |p| nearest_rank(&sorted, p);
        (self.p50, self.p95, self.p99) = (rank(50.0), rank(95.0), rank(99.0));
    }
}

/// Exact nearest-rank percentile `p` (0 to 100) of `values`, sorted in place.
pub fn percentile(values: &mut [f64], p: f64) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    nearest_rank(values, p)
}

/// The nearest-rank percentile of values already sorted.
fn nearest_rank(sorted: &[f64], p: f64) -> Option<f64> {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&mut v, 50.0), Some(50.0));
        assert_eq!(percentile(&mut v, 95.0), Some(95.0));
        assert_eq!(percentile(&mut [0.3], 95.0), Some(0.3));
        assert_eq!(percentile(&mut [], 50.0), None);
    }

    #[test]
    fn samples_fall_in_the_bucket_whose_upper_bound_holds_them() {
        let mut h = Histogram::new(&[0.1, 1.0]);
        for v in [0.05, 0.1, 0.5, 1.0, 3.0] {
            h.record(v);
        }
        assert_eq!((h.counts.as_slice(), h.count, h.sum), (&[2, 2, 1][..], 5, 4.65));
    }

    #[test]
    fn percentiles_are_nearest_rank_over_the_interval() {
        let mut h = Histogram::new(TTFT_BOUNDS);
        h.close_interval();
        assert_eq!(h.p50, None);
        for v in 1..=100 {
            h.record(v as f64);
        }
        h.close_interval();
        assert_eq!((h.p50, h.p95, h.p99), (Some(50.0), Some(95.0), Some(99.0)));
    }

    #[test]
    fn totals_add_buckets_not_percentiles() {
        let mut interval = Histogram::new(&[1.0]);
        interval.record(0.5);
        interval.record(2.0);
        interval.close_interval();
        let mut total = Histogram::new(&[1.0]);
        total.add(&interval);
        total.add(&interval);
        assert_eq!(
            (total.counts, total.count, total.sum, total.p50),
            (vec![2, 2], 4, 5.0, None)
        );
    }
}
