//! One view per inference server (process + listening port) per interval:
//! its requests grouped by model, with latency histograms, and its queue.

use std::collections::BTreeMap;

use serde::Serialize;

use super::histogram::{DURATION_BOUNDS, Histogram, TPOT_BOUNDS, TTFT_BOUNDS};
use crate::derive::requests::{QueueReport, RequestRecord, ServerKey};

#[derive(Clone, Debug, Serialize)]
pub struct ModelReport {
    pub model: String,
    /// Generation requests that finished during the interval.
    pub requests: u64,
    /// Of those: status >= 400, cancelled by the client, or cut off.
    pub errors: u64,
    pub cancelled: u64,
    pub ttft_s: Histogram,
    /// Gaps between content events after the first (inter-token latency).
    pub itl_s: Histogram,
    pub duration_s: Histogram,
    pub output_tokens: u64,
    pub input_tokens: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ServerReport {
    pub pid: u32,
    pub port: u16,
    pub protocol: &'static str,
    pub models: Vec<ModelReport>,
    pub waiting: u64,
    pub running: u64,
    pub waiting_mean: f64,
    pub running_mean: f64,
    /// Generation requests arriving per second.
    pub request_rate: f64,
}

/// Groups the interval's finished requests by server and model.
pub fn server_reports(
    finished: &[RequestRecord],
    queues: &BTreeMap<ServerKey, QueueReport>,
    interval_s: f64,
) -> Vec<ServerReport> {
    let mut models: BTreeMap<ServerKey, BTreeMap<String, ModelReport>> = BTreeMap::new();
    for r in finished {
        let name = r.model.clone().unwrap_or_else(|| "unknown".into());
        let m = models
            .entry((r.pid, r.port))
            .or_default()
            .entry(name.clone())
            .or_insert_with(|| ModelReport {
                model: name,
                requests: 0,
                errors: 0,
                cancelled: 0,
                ttft_s: Histogram::new(TTFT_BOUNDS),
                itl_s: Histogram::new(TPOT_BOUNDS),
                duration_s: Histogram::new(DURATION_BOUNDS),
                output_tokens: 0,
                input_tokens: 0,
            });
        m.requests += 1;
        m.errors += u64::from(r.is_error());
        m.cancelled += u64::from(r.outcome == "cancelled");
        if let Some(t) = r.ttft_s {
            m.ttft_s.record(t);
        }
        r.itl_s.iter().for_each(|&g| m.itl_s.record(g));
        m.duration_s.record(r.duration_s);
        m.output_tokens += r.output_tokens.unwrap_or(0);
        m.input_tokens += r.input_tokens.unwrap_or(0);
    }
    let mut keys: Vec<ServerKey> = queues.keys().chain(models.keys()).copied().collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter()
        .map(|key| {
            let q = queues.get(&key);
            ServerReport {
                pid: key.0,
                port: key.1,
                protocol: q.map_or("http1", |q| q.protocol),
                models: models
                    .remove(&key)
                    .map(|m| m.into_values().collect())
                    .unwrap_or_default(),
                waiting: q.map_or(0, |q| q.waiting),
                running: q.map_or(0, |q| q.running),
                waiting_mean: q.map_or(0.0, |q| q.waiting_mean),
                running_mean: q.map_or(0.0, |q| q.running_mean),
                request_rate: q.map_or(0.0, |q| q.arrived as f64 / interval_s.max(f64::EPSILON)),
            }
        })
        .collect()
}
