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
