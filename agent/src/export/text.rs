//! The per-interval table a person reads in a terminal.

use std::io::{self, Write};

use crate::join::Report;

const MIB: f64 = 1024.0 * 1024.0;

pub fn write_text(out: &mut impl Write, r: &Report) -> io::Result<()> {
    writeln!(
        out,
        "{}  interval {:.2}s  processes {}  dropped {}",
        r.time,
        r.interval_s,
        r.processes.len(),
        r.dropped_events
    )?;
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
    let per_s = |n: f64| if r.interval_s > 0.0 { n / r.interval_s } else { 0.0 };
    for p in &r.processes {
        let g = &p.gpu;
        let runtimes: Vec<_> = p
            .runtimes
            .iter()
            .map(|rt| format!("{rt:?}").to_lowercase())
            .collect();
        writeln!(
            out,
            "  {:>7} {:<15} {:<18} {:>9.0} {:>7.0} {:>9.1} {:>9.1} {:>9.1} {:>7.0} {:>9.1} {:>7.1}% {:>6}{}",
            p.info.pid,
            p.info.comm,
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
        for (op, n) in &g.nccl {
            writeln!(
                out,
                "  {:>7} nccl {op}: {} calls, {:.1} MiB",
                "",
                n.calls,
                n.bytes as f64 / MIB
            )?;
        }
    }
    Ok(())
}

/// One line per server and model: rate, latency percentiles, tokens, queue.
fn write_servers(out: &mut impl Write, r: &Report) -> io::Result<()> {
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
    let per_s = |n: u64| {
        if r.interval_s > 0.0 {
            n as f64 / r.interval_s
        } else {
            0.0
        }
    };
    for s in &r.servers {
        if s.models.is_empty() {
            writeln!(
                out,
                "  {:>7} {:>5} {:<24} {:>6.1} {:>5} {:>9} {:>9} {:>9} {:>9} {:>8} {:>5} {:>5}",
                s.pid,
                s.port,
                "(no request finished)",
                s.request_rate,
                "",
                "",
                "",
                "",
                "",
                "",
                s.waiting,
                s.running
            )?;
        }
        for m in &s.models {
            writeln!(
                out,
                "  {:>7} {:>5} {:<24} {:>6.1} {:>5} {:>9} {:>9} {:>9} {:>9} {:>8.1} {:>5} {:>5}",
                s.pid,
                s.port,
                m.model,
                per_s(m.requests),
                m.errors,
                ms(m.ttft_s.percentile(50.0)),
                ms(m.ttft_s.percentile(95.0)),
                ms(m.itl_s.percentile(50.0)),
                ms(m.duration_s.percentile(95.0)),
                per_s(m.output_tokens),
                s.waiting,
                s.running,
            )?;
        }
    }
    Ok(())
}
