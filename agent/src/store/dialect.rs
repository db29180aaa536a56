//! The two namings a store holds the agents' metrics in, and PromQL for each.

use serde::{Deserialize, Serialize};

/// How a store names the agents' metrics and labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// As OTLP sent them (`hw.gpu.utilization`, `k8s.node.name` on each
    /// series): VictoriaMetrics with `-opentelemetry.usePrometheusNaming=false`.
    Otlp,
    /// As a Prometheus scrape (or a translating OTLP receiver) names them:
    /// `hw_gpu_utilization_ratio`, `_total` counters, the resource in `target_info`.
    Prometheus,
}

/// What an instrument exports as, which decides its translated name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    /// Gauges and up-down counters.
    Gauge,
    HistogramSum,
    HistogramCount,
}

/// An exported metric, as `sinks::otel::instruments` registers it.
#[derive(Clone, Copy, Debug)]
pub struct Metric {
    pub name: &'static str,
    pub unit: &'static str,
    pub kind: Kind,
}

impl Metric {
    pub const fn new(name: &'static str, unit: &'static str, kind: Kind) -> Self {
        Self { name, unit, kind }
    }
}

impl Dialect {
    /// The dialect of a store listing `names`; `None` when it holds neither.
    pub fn of(names: &[&str]) -> Option<Self> {
        let ours = |prefixes: &[&str]| names.iter().any(|n| prefixes.iter().any(|p| n.starts_with(p)));
        if ours(&["inferscope.", "gen_ai.server.", "gpu.cuda.", "hw.gpu."]) {
            Some(Self::Otlp)
        } else if ours(&["inferscope_", "gen_ai_server_", "gpu_cuda_", "hw_gpu_"]) {
            Some(Self::Prometheus)
        } else {
            None
        }
    }

    /// The metric's name in this store (OpenTelemetry's Prometheus translation:
    /// dots to underscores, the unit as a suffix, `_total` for counters).
    pub fn name(self, m: &Metric) -> String {
        let (base, histogram) = match (self, m.kind) {
            (Self::Otlp, Kind::HistogramSum) => return format!("{}_sum", m.name),
            (Self::Otlp, Kind::HistogramCount) => return format!("{}_count", m.name),
            (Self::Otlp, _) => return m.name.to_string(),
            (Self::Prometheus, kind) => (m.name.replace('.', "_"), kind),
        };
        let unit = match (m.unit, histogram) {
            ("s", _) => "seconds",
            ("By", _) => "bytes",
            ("W", _) => "watts",
            ("J", _) => "joules",
            ("1", Kind::Gauge) => "ratio",
            _ => "",
        };
        let mut name = base;
        if !unit.is_empty() && !name.ends_with(unit) {
            name = format!("{name}_{unit}");
        }
        match histogram {
            Kind::Counter => format!("{name}_total"),
            Kind::Gauge => name,
            Kind::HistogramSum => format!("{name}_sum"),
            Kind::HistogramCount => format!("{name}_count"),
        }
    }

    /// An attribute's label name here (`k8s.node.name` or `k8s_node_name`).
    pub fn label(self, attribute: &str) -> String {
        match self {
            Self::Otlp => attribute.to_string(),
            Self::Prometheus => attribute.replace('.', "_"),
        }
    }

    /// `name{labels,matchers}`: `labels` are attribute names (translated
    /// here) with their values; `matchers` are the user's, as written.
    pub fn selector(self, m: &Metric, labels: &[(&str, &str)], matchers: Option<&str>) -> String {
        let mut parts: Vec<String> = labels
            .iter()
            .map(|(key, value)| format!("{}=\"{}\"", self.label(key), escape(value)))
            .collect();
        parts.extend(matchers.map(str::to_string));
        if parts.is_empty() {
            self.name(m)
        } else {
            format!("{}{{{}}}", self.name(m), parts.join(","))
        }
    }
}

/// A label value inside PromQL's double quotes.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_translate_as_the_prometheus_exporter_translates_them() {
        let p = Dialect::Prometheus;
        let cases = [
            (
                Metric::new("gen_ai.server.time_to_first_token", "s", Kind::HistogramSum),
                "gen_ai_server_time_to_first_token_seconds_sum",
                "gen_ai.server.time_to_first_token_sum",
            ),
            (
                Metric::new("gen_ai.server.request.duration", "s", Kind::HistogramCount),
                "gen_ai_server_request_duration_seconds_count",
                "gen_ai.server.request.duration_count",
            ),
            (
                Metric::new("hw.gpu.utilization", "1", Kind::Gauge),
                "hw_gpu_utilization_ratio",
                "hw.gpu.utilization",
            ),
            (
                Metric::new("hw.gpu.memory.usage", "By", Kind::Gauge),
                "hw_gpu_memory_usage_bytes",
                "hw.gpu.memory.usage",
            ),
            (
                Metric::new("hw.errors", "{error}", Kind::Counter),
                "hw_errors_total",
                "hw.errors",
            ),
            (
                Metric::new("inferscope.gpu.sync.time", "s", Kind::Counter),
                "inferscope_gpu_sync_time_seconds_total",
                "inferscope.gpu.sync.time",
            ),
            (
                Metric::new("inferscope.server.queue.waiting", "{request}", Kind::Gauge),
                "inferscope_server_queue_waiting",
                "inferscope.server.queue.waiting",
            ),
            (
                Metric::new("inferscope.process.launch_bound", "", Kind::Gauge),
                "inferscope_process_launch_bound",
                "inferscope.process.launch_bound",
            ),
        ];
        for (m, prometheus, otlp) in cases {
            assert_eq!(p.name(&m), prometheus);
            assert_eq!(Dialect::Otlp.name(&m), otlp);
        }
    }

    #[test]
    fn selectors_translate_labels_and_quote_values() {
        let m = Metric::new("hw.errors", "{error}", Kind::Counter);
        assert_eq!(
            Dialect::Prometheus.selector(&m, &[("hw.id", "GPU-1"), ("job", "a\"b")], Some("x=\"y\"")),
            r#"hw_errors_total{hw_id="GPU-1",job="a\"b",x="y"}"#
        );
        assert_eq!(Dialect::Otlp.selector(&m, &[], None), "hw.errors");
        assert_eq!(
            Dialect::of(&["up", "hw_gpu_utilization_ratio"]),
            Some(Dialect::Prometheus)
        );
        assert_eq!(Dialect::of(&["hw.gpu.utilization"]), Some(Dialect::Otlp));
        assert_eq!(Dialect::of(&["up", "node_cpu_seconds_total"]), None);
    }
}
