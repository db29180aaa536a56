//! `cargo xtask bench`: inferscope's costs, each measured against a baseline in
//! the same run (interleaved rounds, medians) and printed as ratios.
//!
//! - GPU launch probe: ns per `cudaLaunchKernel` call, against a bare uprobe and no probe, and per part of its work.
//! - Stacks at launches (`profile --gpu-call-stacks`): a deep launch's cost with
//!   none, 1 in N and every call recording its stack; one stack's run time in the
//!   kernel, native and with a CPython process's Python frames.
//! - Socket capture: a tight `write()` and a loopback TCP round trip in a process the
//!   agent does not watch, with and without the capture programs attached, and the
//!   same round trip on a watched port.
//! - Server load: requests/s of a streaming server at saturation with and without
//!   the agent's capture and decoding.
//! - Decode pipeline: captured events per second through HTTP/SSE decoding and
//!   request derivation, on one core.
//! - CPU profile: a CPU-bound loop's speed with sampling at 49 and 99 Hz against
//!   none; the sampling program's time per sample; naming addresses, cold and
//!   cached; and what continuous profiling shipped to Pyroscope (`run
//!   --profile`) adds to the agent's CPU share and peak RSS under load.
//! - Start-up: time to attach and to the first report, and peak RSS, with a
//!   process mapping the real 200+ MB `libnccl.so.2`.
//! - Export outage (only when named: `outage [MINUTES]`): RSS over time while the
//!   OTLP collector never answers, under load.
//! - Soak (only when named: `soak [MINUTES]`): the agent's CPU share and RSS
//!   over time under mixed load.

mod continuous_profile;
mod decode;
mod export_outage;
mod gpu_launch;
mod launch_stacks;
mod profile_overhead;
mod server_load;
mod soak;
mod socket_overhead;
mod startup;

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let only: Vec<String> = std::env::args().skip(1).collect();
    let fixtures = std::env::var_os("INFERSCOPE_FIXTURES").context("run through `cargo xtask bench`")?;
    let fixtures = std::path::Path::new(&fixtures);
    let agent = std::env::var_os("INFERSCOPE_AGENT").context("run through `cargo xtask bench`")?;
    let benches: [(&str, &dyn Fn() -> anyhow::Result<()>); 7] = [
        ("launch", &gpu_launch::run),
        ("launch-stacks", &|| launch_stacks::run(fixtures)),
        ("socket", &socket_overhead::run),
        ("server", &|| server_load::run(fixtures)),
        ("decode", &decode::run),
        ("profile", &|| {
            profile_overhead::run()?;
            println!();
            continuous_profile::run(fixtures, std::path::Path::new(&agent))
        }),
        ("startup", &|| {
            startup::run(fixtures, std::path::Path::new(&agent))
        }),
    ];
    for (name, bench) in benches {
        if only.is_empty() || only.iter().any(|o| o == name) {
            bench()?;
            println!();
        }
    }
    // Minutes long: only when asked for.
    if let Some(at) = only.iter().position(|o| o == "outage") {
        let minutes = only.get(at + 1).and_then(|m| m.parse().ok()).unwrap_or(10);
        export_outage::run(fixtures, std::path::Path::new(&agent), minutes)?;
    }
    if let Some(at) = only.iter().position(|o| o == "soak") {
        let minutes = only.get(at + 1).and_then(|m| m.parse().ok()).unwrap_or(30);
        soak::run(fixtures, std::path::Path::new(&agent), minutes)?;
    }
    Ok(())
}

/// The middle of the measured values.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The newest loaded BPF program of that name on the host: the one this
/// benchmark just loaded (the kernel names programs after their function).
pub fn newest_program(name: &str) -> anyhow::Result<aya::programs::ProgramInfo> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str() == Some(name))
        .max_by_key(|p| p.id())
        .ok_or_else(|| anyhow::anyhow!("no BPF program {name} is loaded"))
}
