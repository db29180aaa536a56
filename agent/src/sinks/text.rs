//! The per-interval table a person reads in a terminal: rates over the interval.

use std::io::{self, Write};

use super::Sink;
use crate::model::Snapshot;

const MIB: f64 = 1024.0 * 1024.0;

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
