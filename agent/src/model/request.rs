//! One finished inference request, as seen on the wire. Never holds prompt or answer text.

use std::{borrow::Cow, time::SystemTime};

use serde::{Deserialize, Serialize};

use super::time;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// When the request ended (its last response byte, or its connection's end).
    #[serde(with = "time::rfc3339")]
    pub time: SystemTime,
    pub pid: u32,
    pub port: u16,
    pub protocol: Protocol,
    pub method: String,
    pub path: String,
    /// 0 when the response never started.
    pub status: u16,
    pub model: Option<String>,
    pub stream: bool,
    /// Time to first token, streaming requests only.
    pub ttft_s: Option<f64>,
    /// Gaps between content-carrying sends after the first.
    pub itl_s: Vec<f64>,
    pub duration_s: f64,
    pub output_tokens: Option<u64>,
    pub input_tokens: Option<u64>,
    /// Where `output_tokens` comes from; `None` when neither is known.
    pub token_source: Option<TokenSource>,
    pub outcome: Outcome,
    /// Some of its bytes were not captured; timing is exact, tokens may be short.
    pub truncated: bool,
    /// The serving engine, when the server process was recognised by name.
    #[serde(default)]
    pub engine: Option<Engine>,
}

/// The inference engine a server runs, by name (`gen_ai.provider.name` in
/// exports): one of `engines::ALL`, or whatever name a saved stream carries.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Engine(Cow<'static, str>);

impl Engine {
    pub const fn named(name: &'static str) -> Self {
        Self(Cow::Borrowed(name))
    }

    /// The name used in JSON and as `gen_ai.provider.name`.
    pub fn name(&self) -> &str {
        &self.0
    }
}

/// What a server speaks; `+tls` when read from its OpenSSL calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    #[default]
    #[serde(rename = "http1")]
    Http1,
    #[serde(rename = "http1+tls")]
    Http1Tls,
    #[serde(rename = "http2")]
    Http2,
    #[serde(rename = "http2+tls")]
    Http2Tls,
    /// gRPC over HTTP/2.
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "grpc+tls")]
    GrpcTls,
}

impl Protocol {
    /// From a connection's framing and whether it is read through TLS.
    pub fn of(http2: bool, tls: bool) -> Self {
        match (http2, tls) {
            (false, false) => Self::Http1,
            (false, true) => Self::Http1Tls,
            (true, false) => Self::Http2,
            (true, true) => Self::Http2Tls,
        }
    }

    /// The same transport carrying gRPC.
    pub fn grpc(self) -> Self {
        match self {
            Self::Http2 => Self::Grpc,
            Self::Http2Tls => Self::GrpcTls,
            other => other,
        }
    }
}

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    /// Status >= 400, a non-zero `grpc-status`, or a body that reports a
    /// failure (an `error` event, the Responses API's `response.failed`).
    Error,
    /// The client closed or reset the connection first.
    Cancelled,
    /// The connection was lost otherwise (server reset, process exit).
    Aborted,
}

impl Outcome {
    pub fn is_error(self) -> bool {
        self != Self::Ok
    }
}

/// Why a generation request whose arrival was seen has no record: its
/// figures would be wrong, so it is counted here instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RequestDrop {
    /// Events of its connection were lost to a full ring buffer.
    EventsLost,
    /// Its bytes could not be framed (a gap inside framing, or not HTTP).
    Unframed,
    /// Its connection was evicted from a full connection table (its close was never seen).
    ConnectionEvicted,
    /// More requests in flight on its connection than are followed.
    TooManyInFlight,
}

impl RequestDrop {
    pub const ALL: [Self; 4] = [
        Self::EventsLost,
        Self::Unframed,
        Self::ConnectionEvicted,
        Self::TooManyInFlight,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::EventsLost => "events_lost",
            Self::Unframed => "unframed",
            Self::ConnectionEvicted => "connection_evicted",
            Self::TooManyInFlight => "too_many_in_flight",
        }
    }
}

/// Where a request's output token count comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenSource {
    /// The server's own usage report (OpenAI `usage`, Ollama `eval_count`, ...).
    Usage,
    /// Counted content-carrying stream events.
    Events,
}
