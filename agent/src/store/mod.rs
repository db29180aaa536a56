//! The agents' exported series read back from a metrics store (Prometheus,
//! VictoriaMetrics, Thanos, Mimir) through the Prometheus HTTP query API, and
//! rebuilt into one [`Recording`] per node, so that `diagnose` and `record`
//! apply the same rules to the fleet's history as to a live watch.
//!
//! A store holds the agents' metrics in one of two dialects: as OTLP sent
//! them (VictoriaMetrics keeping names: `gen_ai.server.time_to_first_token_sum`,
//! resource attributes such as `k8s.node.name` on every series), or
//! translated by a Prometheus scrape (`gen_ai_server_time_to_first_token_seconds_sum`,
//! the node in `target_info`, joined by `job` and `instance`). The dialect is
//! found from the names the store lists.

mod dialect;
mod metrics;
mod queries;
mod rebuild;

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use crate::diagnose::{Diagnosis, StoreSource};
pub use dialect::Dialect;
pub use rebuild::NodeRecording;

/// Most points a range query may return per series (Prometheus refuses more than 11 000).
pub const MAX_POINTS: u64 = 11_000;
/// The step chosen when none is asked for: about this many points over the range.
const DEFAULT_POINTS: u64 = 240;
/// What the agents send as log records or keep to themselves, not as metrics.
const NOT_IN_STORE: &str = "from a store: clock throttling reasons, XID codes (log records), and how long \
     cancelled requests' clients waited (request lines) are not metrics";
/// Longest answer read from the store.
const MAX_ANSWER_BYTES: u64 = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("{url} answered HTTP {status}: {message}")]
    Http {
        url: String,
        status: u16,
        message: String,
    },
    #[error("the store refused `{query}`: {message}")]
    Query { query: String, message: String },
    #[error("{url}: not an answer of the Prometheus HTTP API ({message})")]
    Malformed { url: String, message: String },
    #[error(
        "the store holds no inferscope series between {from} and {to} (metric names such as \
         gen_ai.server.request.duration or inferscope_dropped_events_total)"
    )]
    NothingExported { from: String, to: String },
    #[error(
        "{points} points per series: more than the {MAX_POINTS} a query may ask for; use a larger --step"
    )]
    TooManyPoints { points: u64 },
    #[error("--since must come before --until")]
    EmptyRange,
}

/// The slice of a store to read: a time range at a step, and label matchers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Slice {
    #[serde(with = "crate::model::time::rfc3339")]
    pub from: SystemTime,
    #[serde(with = "crate::model::time::rfc3339")]
    pub to: SystemTime,
    #[serde(rename = "step_s", with = "crate::model::time::seconds")]
    pub step: Duration,
    /// Label matchers (`k8s.namespace.name="chat"`) added to the servers',
    /// requests' and processes' series; GPUs follow the processes matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matchers: Option<String>,
}

impl Slice {
    /// `from` to `to` at `step`, or at the step giving about [`DEFAULT_POINTS`].
    pub fn new(
        from: SystemTime,
        to: SystemTime,
        step: Option<Duration>,
        matchers: Option<String>,
    ) -> Result<Self, StoreError> {
        let span = to.duration_since(from).map_err(|_| StoreError::EmptyRange)?;
        if span.is_zero() {
            return Err(StoreError::EmptyRange);
        }
        // The rules' resolution is a second: a shorter step only divides by zero.
        let step = step
            .unwrap_or_else(|| Duration::from_secs(span.as_secs() / DEFAULT_POINTS))
            .max(Duration::from_secs(1));
        let points = (span.as_secs_f64() / step.as_secs_f64()).ceil() as u64;
        if points > MAX_POINTS {
            return Err(StoreError::TooManyPoints { points });
        }
        let matchers = matchers
            .map(|m| {
                m.trim()
                    .trim_start_matches('{')
                    .trim_end_matches('}')
                    .trim()
                    .to_string()
            })
            .filter(|m| !m.is_empty());
        Ok(Self {
            from,
            to,
            step,
            matchers,
        })
    }
}

/// A slice of the fleet as a store holds it: each node's recording, and the findings over them all.
pub struct Fleet {
    pub diagnosis: Diagnosis,
    pub nodes: Vec<NodeRecording>,
}

/// A store's HTTP query API.
pub struct Store {
    base: String,
    http: ureq::Agent,
}

/// One series of a range query: its labels, and its values by time (ms).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub values: BTreeMap<i64, f64>,
}

impl Store {
    /// The store at `url` (its base: `http://prometheus:9090`, or a path
    /// prefix such as Mimir's `/prometheus`); `/api/v1/...` is added.
    pub fn new(url: &str, timeout: Duration) -> Self {
        let http = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            base: url.trim_end_matches('/').to_string(),
            http,
        }
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// The agents' series over `slice`, one recording per node.
    pub fn read(&self, slice: &Slice) -> Result<(Dialect, Vec<NodeRecording>), StoreError> {
        let dialect = self.dialect(slice)?;
        let nodes = rebuild::read(self, dialect, slice)?;
        Ok((dialect, nodes))
    }

    /// The rules over each node's series in `slice`: every finding names its
    /// node and carries the queries of its evidence.
    pub fn diagnose(&self, slice: &Slice) -> Result<Fleet, StoreError> {
        let (dialect, nodes) = self.read(slice)?;
        let parts = nodes
            .iter()
            .map(|node| {
                let mut d = crate::diagnose::diagnose(&node.recording);
                for finding in &mut d.findings {
                    finding.subject.node = Some(node.node.clone());
                    finding.queries = queries::of(dialect, slice.step, node, finding);
                }
                // Not exported as metrics: the rules that need them cannot run here.
                d.not_checked.push(NOT_IN_STORE.to_string());
                (node.node.clone(), d)
            })
            .collect();
        let mut diagnosis = Diagnosis::merge(parts);
        diagnosis.store = Some(StoreSource {
            url: self.base.clone(),
            dialect,
            slice: slice.clone(),
            nodes: nodes.iter().map(|n| n.node.clone()).collect(),
        });
        Ok(Fleet { diagnosis, nodes })
    }

    /// Which naming the agents' series have here, from the metric names the store lists.
    fn dialect(&self, slice: &Slice) -> Result<Dialect, StoreError> {
        let (start, end) = (seconds(slice.from), seconds(slice.to));
        let data = self.get("label/__name__/values", &[("start", &start), ("end", &end)], None)?;
        let names: Vec<&str> = data
            .as_array()
            .map(|a| a.iter().filter_map(|n| n.as_str()).collect())
            .unwrap_or_default();
        Dialect::of(&names).ok_or_else(|| StoreError::NothingExported {
            from: humantime::format_rfc3339_millis(slice.from).to_string(),
            to: humantime::format_rfc3339_millis(slice.to).to_string(),
        })
    }

    /// `query` evaluated at every step of `slice`.
    pub fn range(&self, query: &str, slice: &Slice) -> Result<Vec<Series>, StoreError> {
        let step = format!("{}", slice.step.as_secs_f64());
        let data = self.get(
            "query_range",
            &[
                ("query", query),
                ("start", &seconds(slice.from)),
                ("end", &seconds(slice.to)),
                ("step", &step),
            ],
            Some(query),
        )?;
        self.series(&data)
    }

    /// `query` evaluated at `at`: each series with its one value.
    pub fn instant(&self, query: &str, at: SystemTime) -> Result<Vec<Series>, StoreError> {
        let data = self.get("query", &[("query", query), ("time", &seconds(at))], Some(query))?;
        self.series(&data)
    }

    /// The series of a query's `data`: a matrix (`values`) or a vector (`value`).
    fn series(&self, data: &serde_json::Value) -> Result<Vec<Series>, StoreError> {
        let malformed = |message: &str| StoreError::Malformed {
            url: self.base.clone(),
            message: message.to_string(),
        };
        let result = data.get("result");
        // A scalar is one unlabelled point.
        if data.get("resultType").and_then(|t| t.as_str()) == Some("scalar") {
            let point = result.ok_or_else(|| malformed("no result in a query's answer"))?;
            return Ok(Vec::from_iter(point_of(point).map(|point| Series {
                labels: BTreeMap::new(),
                values: BTreeMap::from([point]),
            })));
        }
        let result = result
            .and_then(|r| r.as_array())
            .ok_or_else(|| malformed("no result in a query's answer"))?;
        result
            .iter()
            .map(|s| {
                let labels = s
                    .get("metric")
                    .and_then(|m| m.as_object())
                    .ok_or_else(|| malformed("a series without labels"))?
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect();
                let one = s.get("value").map(std::slice::from_ref);
                let values = s
                    .get("values")
                    .and_then(|v| v.as_array())
                    .map(Vec::as_slice)
                    .or(one)
                    .ok_or_else(|| malformed("a series without values"))?
                    .iter()
                    .filter_map(point_of)
                    .collect();
                Ok(Series { labels, values })
            })
            .collect()
    }

    /// A GET of `/api/v1/PATH`: the answer's `data`, or why not.
    fn get(
        &self,
        path: &str,
        params: &[(&str, &str)],
        query: Option<&str>,
    ) -> Result<serde_json::Value, StoreError> {
        let url = format!("{}/api/v1/{path}", self.base);
        let mut request = self.http.get(&url);
        for (key, value) in params {
            request = request.query(*key, *value);
        }
        let mut response = request.call().map_err(|e| StoreError::Unreachable {
            url: url.clone(),
            message: e.to_string(),
        })?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_vec()
            .map_err(|e| StoreError::Unreachable {
                url: url.clone(),
                message: e.to_string(),
            })?;
        let answer: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
        let said = |key: &str| {
            answer
                .as_ref()
                .and_then(|a| a.get(key))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        match (
            answer.as_ref().and_then(|a| a.get("data")),
            said("status").as_deref(),
        ) {
            (Some(data), Some("success")) => Ok(data.clone()),
            (_, Some("error")) if query.is_some() => Err(StoreError::Query {
                query: query.unwrap_or_default().to_string(),
                message: said("error").unwrap_or_default(),
            }),
            _ if !(200..300).contains(&status) => Err(StoreError::Http {
                url,
                status,
                message: said("error").unwrap_or_else(|| {
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                        .trim()
                        .to_string()
                }),
            }),
            _ => Err(StoreError::Malformed {
                url,
                message: "no `status: success` with `data`".into(),
            }),
        }
    }
}

/// A point as the query API gives it, `[unix seconds, "value"]`, as (ms, value);
/// none where it is not one or its value is not finite (`NaN`, `+Inf`).
fn point_of(point: &serde_json::Value) -> Option<(i64, f64)> {
    let time = point.get(0)?.as_f64()?;
    let value: f64 = point.get(1)?.as_str()?.parse().ok()?;
    value.is_finite().then_some(((time * 1e3).round() as i64, value))
}

/// Unix seconds, as the query API takes them.
fn seconds(t: SystemTime) -> String {
    format!(
        "{:.3}",
        t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
    )
}

/// A time in milliseconds, as series index their values.
fn at_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}
