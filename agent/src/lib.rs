//! inferscope: a zero-instrumentation profiler for GPU inference servers.
//!
//! The data path, in the order data flows (nothing downstream calls upstream):
//! [`sources`] (eBPF through [`probes`], with [`discover`]y's view of
//! processes; [`decode`] and [`derive`] turn captured bytes into requests) →
//! [`join`] (one [`model::Snapshot`] per interval: totals and deltas) →
//! [`sinks`]. The [`pipeline`] owns the sources, the [`clock`] and the tick;
//! the CLI ([`cli`]) only builds a pipeline from flags. [`runtimes`] holds the
//! per-runtime probe tables.

pub mod cli;
pub mod clock;
pub mod decode;
pub mod derive;
pub mod diagnose;
pub mod discover;
pub mod engines;
pub mod join;
pub mod mcp;
pub mod model;
pub mod pipeline;
pub mod probes;
pub mod profile;
pub mod report;
pub mod runtimes;
pub mod sinks;
pub mod sources;
pub mod store;
pub mod top;
pub mod units;
