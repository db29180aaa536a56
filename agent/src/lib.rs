//! inferscope: a zero-instrumentation profiler for GPU inference servers.
//!
//! The data path, in the order data flows (nothing downstream calls upstream):
//! [`probes`] (eBPF, loaded with aya) → [`derive`] (interval deltas) →
//! [`join`] (one view per process, with [`discover`]y's identity) → [`export`].
//! [`runtimes`] holds the per-runtime probe tables; [`session`] is the running
//! state the CLI ([`cli`]) drives.

pub mod cli;
pub mod decode;
pub mod derive;
pub mod discover;
pub mod export;
pub mod join;
pub mod probes;
pub mod runtimes;
pub mod server_watch;
pub mod session;
