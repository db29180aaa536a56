//! The PromQL behind each finding read from a store, for a person to paste
//! into Grafana: the series of its evidence, on its node and subject, per step.

use std::collections::BTreeSet;

use super::{
    dialect::{Dialect, Metric},
    metrics::*,
    rebuild::NodeRecording,
};
use crate::diagnose::{Finding, FindingKind};

/// The queries giving `finding`'s evidence, found on `node`, at `step`.
pub fn of(
    dialect: Dialect,
    step: std::time::Duration,
    node: &NodeRecording,
    finding: &Finding,
) -> Vec<String> {
    // Windows of at least a minute, so that a pasted query spans several scrapes.
    let window = format!("[{}s]", step.as_secs().max(60));
    let subject = &finding.subject;
    let pid = subject.pid.map(|p| p.to_string());
    let port = subject.port.map(|p| p.to_string());
    let labels: Vec<(&str, &str)> = node
        .selector
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let series = |m: &Metric, extra: &[(&str, Option<&str>)]| {
        let mut labels = labels.clone();
        labels.extend(extra.iter().filter_map(|(k, v)| Some((*k, (*v)?))));
        dialect.selector(m, &labels, None)
    };
    let rate = |m: &Metric, extra: &[(&str, Option<&str>)]| format!("rate({}{window})", series(m, extra));
    let increase =
        |m: &Metric, extra: &[(&str, Option<&str>)]| format!("increase({}{window})", series(m, extra));
    let server = [("server.port", port.as_deref())];
    let process = [("process.pid", pid.as_deref())];
    let gpu = [("hw.id", subject.gpu_uuid.as_deref())];
    let mut queries = Vec::new();
    match finding.finding {
        FindingKind::Saturated
        | FindingKind::QueueWithIdleGpu
        | FindingKind::Queueing
        | FindingKind::SlowFirstTokenGpuIdle => {
            queries.push(format!(
                "sum({}) / sum({})",
                increase(&TTFT_SUM, &server),
                increase(&TTFT_COUNT, &server)
            ));
            queries.push(rate(&WAITING_TIME, &[server[0], process[0]]));
            if finding.finding != FindingKind::Queueing {
                // The GPUs its process had a context on.
                let uuids: BTreeSet<&str> = node
                    .recording
                    .snapshots
                    .iter()
                    .flat_map(|s| &s.processes)
                    .filter(|p| Some(p.identity.pid) == subject.pid)
                    .flat_map(|p| p.gpus.iter().map(|g| g.uuid.as_str()))
                    .collect();
                let any = uuids.into_iter().collect::<Vec<_>>().join("|");
                let mut query = series(&GPU_UTILIZATION, &[]);
                if !any.is_empty() {
                    let label = dialect.label("hw.id");
                    query = match query.strip_suffix('}') {
                        Some(open) => format!("{open},{label}=~\"{any}\"}}"),
                        None => format!("{query}{{{label}=~\"{any}\"}}"),
                    };
                }
                queries.push(query);
            }
        }
        FindingKind::RequestErrors | FindingKind::ClientCancellations => {
            queries.push(format!(
                "sum by ({}) ({})",
                dialect.label("error.type"),
                increase(
                    &REQUESTS,
                    &[server[0], ("gen_ai.request.model", subject.model.as_deref())]
                )
            ));
        }
        FindingKind::LaunchBound | FindingKind::BlockedInSync => {
            let rates: &[&Metric] = if finding.finding == FindingKind::LaunchBound {
                &[&CUDA_LAUNCHES]
            } else {
                &[&SYNC_TIME, &SYNC_CALLS]
            };
            queries.extend(rates.iter().map(|m| rate(m, &process)));
            if finding.finding == FindingKind::LaunchBound {
                queries.push(series(&PROCESS_SM, &process));
                queries.push(series(&LAUNCH_BOUND, &process));
            }
        }
        FindingKind::XidErrors => {
            queries.push(increase(&GPU_ERRORS, &[gpu[0], ("error.type", Some("xid"))]));
        }
        FindingKind::GpuMemoryNearLimit => {
            queries.push(format!(
                "{} / {}",
                series(&GPU_MEMORY_USED, &gpu),
                series(&GPU_MEMORY_LIMIT, &gpu)
            ));
        }
        FindingKind::ClockThrottled => {}
        FindingKind::MeasurementGaps => {
            queries.push(increase(&DROPPED_EVENTS, &[]));
            queries.push(increase(&DROPPED_REQUESTS, &[]));
        }
    }
    queries
}
