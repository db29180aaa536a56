//! Explicit-bucket histograms with the OpenTelemetry GenAI semantic-convention
//! boundaries, plus exact percentiles of the interval's samples.

use serde::{Serialize, Serializer, ser::SerializeStruct as _};

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

#[derive(Clone, Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    samples: Vec<f64>,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            samples: Vec::new(),
        }
    }

    pub fn record(&mut self, v: f64) {
        self.samples.push(v);
    }

    /// Counts per bucket: `counts[i]` holds samples <= `bounds[i]` (and above the previous bound);
    /// the last count is above every bound.
    pub fn counts(&self) -> Vec<u64> {
        let mut counts = vec![0; self.bounds.len() + 1];
        for &s in &self.samples {
            counts[self.bounds.partition_point(|&b| b < s)] += 1;
        }
        counts
    }

    /// The nearest-rank percentile of the samples.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        let mut sorted = self.samples.clone();
        sorted.sort_by(f64::total_cmp);
        let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
        sorted.get(rank - 1).copied()
    }
}

impl Serialize for Histogram {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut h = s.serialize_struct("Histogram", 7)?;
        h.serialize_field("count", &self.samples.len())?;
        h.serialize_field("sum", &self.samples.iter().sum::<f64>())?;
        h.serialize_field("bounds", self.bounds)?;
        h.serialize_field("counts", &self.counts())?;
        h.serialize_field("p50", &self.percentile(50.0))?;
        h.serialize_field("p95", &self.percentile(95.0))?;
        h.serialize_field("p99", &self.percentile(99.0))?;
        h.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_fall_in_the_bucket_whose_upper_bound_holds_them() {
        let mut h = Histogram::new(&[0.1, 1.0]);
        for v in [0.05, 0.1, 0.5, 1.0, 3.0] {
            h.record(v);
        }
        assert_eq!(h.counts(), [2, 2, 1]);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut h = Histogram::new(TTFT_BOUNDS);
        assert_eq!(h.percentile(50.0), None);
        for v in 1..=100 {
            h.record(v as f64);
        }
        assert_eq!(
            (h.percentile(50.0), h.percentile(95.0), h.percentile(99.0)),
            (Some(50.0), Some(95.0), Some(99.0))
        );
    }
}
