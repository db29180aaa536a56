//! The per-interval table a person reads in a terminal: rates over the interval.

use std::io::{self, Write};

use super::Sink;
use crate::{
    model::{GpuEventKind, Signal, Snapshot},
    units::{self, GIB, MIB},
};

/// `--output text`.
pub struct Text<W: Write>(W);

impl<W: Write> Text<W> {
    pub fn new(out: W) -> Self {
        Self(out)
    }
}

impl<W: Write> Sink for Text<W> {
    fn snapshot(&mut self, snapshot: &Snapshot) -> io::Result<()> {
        write_snapshot(&mut self.0, snapshot)?;
        self.0.flush()
    }
}

fn write_snapshot(out: &mut impl Write, r: &Snapshot) -> io::Result<()> {
    writeln!(
        out,
        "{}  interval {:.2}s  processes {}  dropped {}",
        humantime::format_rfc3339_millis(r.time),
        r.interval.as_secs_f64(),
        r.processes.len(),
        r.dropped_in_interval()
    )?;
    write_devices(out, r)?;
    write_servers(out, r)?;
    if r.processes.is_empty() {
        return writeln!(out, "  (no process uses a GPU runtime)");
    }
    writeln!(
        out,
        "  {:>7} {:<15} {:<18} {:>9} {:>7} {:>9} {:>9} {:>9} {:>7} {:>9} {:>8} {:>6}",
        "PID",
        "COMM",
        "RUNTIMES",
        "LAUNCH/s",
        "GRAPH/s",
        "H2D MiB/s",
        "D2H MiB/s",
        "D2D MiB/s",
        "ALLOC/s",
        "LIVE MiB",
        "SYNC %",
        "ERR"
    )?;
    let per_s = |n: f64| r.per_second(n);
    for p in &r.processes {
        let g = &p.gpu.delta;
        let runtimes: Vec<_> = p.runtimes.iter().map(|rt| rt.name()).collect();
        writeln!(
            out,
            "  {:>7} {:<15} {:<18} {:>9.0} {:>7.0} {:>9.1} {:>9.1} {:>9.1} {:>7.0} {:>9.1} {:>7.1}% {:>6}{}",
            p.identity.pid,
            p.identity.comm,
            runtimes.join(","),
            per_s(g.kernel_launches as f64),
            per_s(g.graph_launches as f64),
            per_s(g.memcpy_bytes.htod as f64) / MIB,
            per_s(g.memcpy_bytes.dtoh as f64) / MIB,
            per_s(g.memcpy_bytes.dtod as f64) / MIB,
            per_s(g.alloc_calls as f64),
            g.live_bytes as f64 / MIB,
            100.0 * per_s(g.sync_seconds),
            g.errors,
            if p.exited { "  (exited)" } else { "" },
        )?;
        if let Some(since) = p.counted_since {
            writeln!(
                out,
                "  {:>7} calls counted since {} (it loaded its runtime before the agent probed it)",
                "",
                humantime::format_rfc3339_seconds(since)
            )?;
        }
        for (op, n) in &g.nccl {
            writeln!(
                out,
                "  {:>7} nccl {op}: {} calls, {:.1} MiB",
                "",
                n.calls,
                n.bytes as f64 / MIB
            )?;
        }
        for gpu in &p.gpus {
            writeln!(
                out,
                "  {:>7} gpu {}: {} MiB, SM {}, memory {}",
                "",
                gpu.index,
                gpu.usage
                    .memory_used_bytes
                    .map_or("-".into(), |b| format!("{:.0}", b as f64 / MIB)),
                percent(gpu.usage.sm_utilization_percent.map(f64::from)),
                percent(gpu.usage.memory_utilization_percent.map(f64::from)),
            )?;
        }
        for signal in &p.signals {
            match signal {
                Signal::LaunchBound {
                    kernel_launches_per_second,
                    sm_utilization_percent,
                } => writeln!(
                    out,
                    "  {:>7} launch-bound: {kernel_launches_per_second:.0} launches/s while its SM share is {sm_utilization_percent}%",
                    ""
                )?,
            }
        }
    }
    Ok(())
}

fn percent(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| units::percent(v).to_string())
}

/// One line per GPU (NVML, ROCm SMI), with its XID errors of the interval.
fn write_devices(out: &mut impl Write, r: &Snapshot) -> io::Result<()> {
    if r.devices.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "  {:>3} {:<24} {:>5} {:>7} {:>15} {:>7} {:>5} {:>8} {:>7} {:>4}",
        "GPU", "NAME", "UTIL", "SM ACT", "MEM GiB", "POWER W", "TEMP", "TOK/s", "J/TOK", "XID"
    )?;
    for d in &r.devices {
        let memory = match (d.memory_used_bytes, d.memory_total_bytes) {
            (Some(used), Some(total)) => format!("{:.1}/{:.1}", used as f64 / GIB, total as f64 / GIB),
            _ => "-".into(),
        };
        let or_dash = |v: Option<f64>, digits: usize| v.map_or("-".into(), |v| format!("{v:.digits$}"));
        writeln!(
            out,
            "  {:>3} {:<24} {:>5} {:>7} {:>15} {:>7} {:>5} {:>8} {:>7} {:>4}",
            d.index,
            d.name,
            percent(d.utilization_percent.map(f64::from)),
            percent(d.gpm.as_ref().and_then(|g| g.sm_active_percent)),
            memory,
            or_dash(d.power_watts, 0),
            d.temperature_celsius.map_or("-".into(), |t| format!("{t}C")),
            or_dash(d.output_tokens_per_second, 1),
            or_dash(d.energy_per_output_token_joules, 3),
            d.xid_errors.delta,
        )?;
    }
    for e in &r.gpu_events {
        match e.kind {
            GpuEventKind::Xid { xid } => writeln!(out, "  GPU {} reported XID {xid} ({})", e.index, e.uuid)?,
        }
    }
    Ok(())
}

/// One line per server and model: rate, latency percentiles, tokens, queue.
fn write_servers(out: &mut impl Write, r: &Snapshot) -> io::Result<()> {
    if r.servers.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "  {:>7} {:>5} {:<24} {:>6} {:>5} {:>9} {:>9} {:>9} {:>9} {:>8} {:>5} {:>5}",
        "PID",
        "PORT",
        "MODEL",
        "REQ/s",
        "ERR",
        "TTFT p50",
        "TTFT p95",
        "ITL p50",
        "DUR p95",
        "TOK/s",
        "WAIT",
        "RUN"
    )?;
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |s| format!("{:.1}ms", s * 1e3));
    let per_s = |n: u64| r.per_second(n as f64);
    for s in &r.servers {
        let finished: Vec<_> = s
            .models
            .iter()
            .filter(|m| m.requests.delta.requests > 0)
            .collect();
        if finished.is_empty() {
            writeln!(
                out,
                "  {:>7} {:>5} {:<24} {:>6.1} {:>5} {:>9} {:>9} {:>9} {:>9} {:>8} {:>5} {:>5}",
                s.pid,
                s.port,
                "(no request finished)",
                per_s(s.arrivals.delta),
                "",
                "",
                "",
                "",
                "",
                "",
                s.queue.waiting,
                s.queue.running
            )?;
        }
        for m in finished {
            let d = &m.requests.delta;
            writeln!(
                out,
                "  {:>7} {:>5} {:<24} {:>6.1} {:>5} {:>9} {:>9} {:>9} {:>9} {:>8.1} {:>5} {:>5}",
                s.pid,
                s.port,
                m.model,
                per_s(d.requests),
                d.errors,
                ms(d.ttft_s.p50),
                ms(d.ttft_s.p95),
                ms(d.itl_s.p50),
                ms(d.duration_s.p95),
                per_s(d.output_tokens),
                s.queue.waiting,
                s.queue.running,
            )?;
        }
    }
    Ok(())
}
