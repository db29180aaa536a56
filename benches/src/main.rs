//! `cargo xtask bench`: inferscope's costs, each measured against a baseline in
//! the same run (interleaved rounds, medians) and printed as ratios.
//!
//! - GPU launch probe: ns per real `cudaLaunchKernel` call, against a bare uprobe and no probe.
//! - Socket capture: a tight `write()` and a loopback TCP round trip in a process the
//!   agent does not watch, with and without the capture programs attached, and the
//!   same round trip on a watched port.
//! - Server load: requests/s of a streaming server at saturation with and without
//!   the agent's capture and decoding.
//! - Decode pipeline: captured events per second through HTTP/SSE decoding and
//!   request derivation, on one core.
//! - Start-up: time to attach and to the first report, and peak RSS, with a
//!   process mapping the real 200+ MB `libnccl.so.2`.

mod decode;
mod gpu_launch;
mod server_load;
mod socket_overhead;
mod startup;

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    gpu_launch::run()?;
    println!();
    socket_overhead::run()?;
    println!();
    let fixtures = std::env::var_os("INFERSCOPE_FIXTURES").context("run through `cargo xtask bench`")?;
    let fixtures = std::path::Path::new(&fixtures);
    server_load::run(fixtures)?;
    println!();
    decode::run()?;
    println!();
    let agent = std::env::var_os("INFERSCOPE_AGENT").context("run through `cargo xtask bench`")?;
    startup::run(fixtures, std::path::Path::new(&agent))
}

/// The middle of the measured values.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
