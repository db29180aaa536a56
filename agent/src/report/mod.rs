//! `inferscope record`: one self-contained HTML file of a recording — its
//! findings, the request, queue and GPU figures over time, and tables per
//! server, process and GPU. Charts are inline SVG; the page has no script and
//! a content security policy that forbids every fetch, so it opens offline and
//! cannot call out. Every name from outside (process, model) is escaped.

mod svg;

use std::{collections::BTreeMap, fmt::Write as _, time::SystemTime};

use base64::Engine as _;

use svg::{Series, line_chart};

use crate::{
    diagnose::{Diagnosis, Recording, Severity, evidence_value},
    model::{Snapshot, json_name, percentile},
    units::{self, GIB},
};

/// Processes drawn per per-process chart (the busiest by kernel launches).
const MAX_PROCESS_SERIES: usize = 6;

/// Text safe inside HTML elements and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px auto;max-width:1340px;color:#222;padding:0 16px}\
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}\
.sub{color:#666}.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(600px,1fr));gap:12px}\
figure{margin:0;border:1px solid #e3e3e3;border-radius:6px;padding:8px}figcaption{font-weight:600;margin-bottom:4px}\
svg{width:100%;height:auto}.grid{stroke:#eee}.axis{font-size:10px;fill:#666}\
.legend span{margin-right:12px;font-size:12px}.legend i{display:inline-block;width:10px;height:10px;margin-right:4px}\
table{border-collapse:collapse;margin:6px 0}td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:right}\
td:first-child,th:first-child{text-align:left}.finding{border-left:4px solid #999;padding:4px 10px;margin:10px 0}\
.critical{border-color:#c00}.warning{border-color:#e69f00}.info{border-color:#0072b2}.none{color:#888}\
.sev{font-weight:700;text-transform:uppercase;font-size:12px}";

/// A flame graph for the page: its heading, a line on what its widths are, and the SVG.
pub struct FlameGraph {
    pub title: String,
    pub caption: String,
    pub svg: Vec<u8>,
}

/// The whole page; `flamegraphs`: the recording's profiles (CPU first), none from a saved stream.
pub fn render(
    recordings: &[(&str, &Recording)],
    diagnosis: &Diagnosis,
    title: &str,
    flamegraphs: &[FlameGraph],
) -> String {
    let mut page = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{t}</title><style>{STYLE}</style></head><body>\
         <h1>{t}</h1><p class=\"sub\">{}</p>",
        span(diagnosis),
        t = escape(title),
    );
    page.push_str("<h2>Findings</h2>");
    page.push_str(&findings(diagnosis));
    let start = diagnosis.from.unwrap_or(SystemTime::UNIX_EPOCH);
    for (node, recording) in recordings {
        if !node.is_empty() {
            let _ = write!(page, "<h2 class=\"node\">Node {}</h2>", escape(node));
        }
        sections(&mut page, recording, start);
    }
    if flamegraphs.is_empty() {
        page.push_str(
            "<h2>Profile</h2><p class=\"none\">No profile: a live <code>record</code> samples the watched processes; a saved stream or a store has none.</p>",
        );
    }
    for graph in flamegraphs {
        // As an image: its zoom script does not run, and nothing is fetched.
        let _ = write!(
            page,
            "<h2>{}</h2><p class=\"sub\">{}</p>\
             <img style=\"width:100%\" alt=\"flame graph\" src=\"data:image/svg+xml;base64,{}\">",
            escape(&graph.title),
            escape(&graph.caption),
            base64::engine::general_purpose::STANDARD.encode(&graph.svg)
        );
    }
    page.push_str("<p class=\"sub\">Written by inferscope record. Figures: docs/output.md; findings: docs/diagnose.md.</p></body></html>");
    page
}

/// The requests, GPUs and GPU processes of one recording (one host or node), in time from `start`.
fn sections(page: &mut String, recording: &Recording, start: SystemTime) {
    let snapshots = &recording.snapshots;
    let at = |s: &Snapshot| s.time.duration_since(start).map_or(0.0, |d| d.as_secs_f64());
    let span_s = snapshots.last().map_or(0.0, at);
    page.push_str("<h2>Requests</h2>");
    page.push_str(&servers_table(recording));
    let servers = server_keys(snapshots);
    let per_server = |value: &dyn Fn(&crate::model::ServerView, &Snapshot) -> Option<f64>| -> Vec<Series> {
        servers
            .iter()
            .map(|(key, name)| Series {
                name: name.clone(),
                points: snapshots
                    .iter()
                    .filter_map(|s| {
                        let v = s.servers.iter().find(|v| (v.pid, v.port) == *key)?;
                        Some((at(s), value(v, s)?))
                    })
                    .collect(),
            })
            .collect()
    };
    let hist = |v: &crate::model::ServerView,
                which: fn(&crate::model::RequestStats) -> &crate::model::Histogram| {
        let (sum, n) = v
            .models
            .iter()
            .map(|m| which(&m.requests.delta))
            .fold((0.0, 0), |(s, n), h| (s + h.sum, n + h.count));
        (n > 0).then(|| sum / n as f64)
    };
    let p95 = |v: &crate::model::ServerView,
               which: fn(&crate::model::RequestStats) -> &crate::model::Histogram| {
        v.models
            .iter()
            .filter_map(|m| which(&m.requests.delta).p95)
            .reduce(f64::max)
    };
    let mut charts = vec![
        line_chart(
            "Time to first token, mean per interval",
            span_s,
            &per_server(&|v, _| hist(v, |d| &d.ttft_s)),
            seconds,
        ),
        line_chart(
            "Time to first token, p95 per interval",
            span_s,
            &per_server(&|v, _| p95(v, |d| &d.ttft_s)),
            seconds,
        ),
        line_chart(
            "Inter-token latency, mean per interval",
            span_s,
            &per_server(&|v, _| hist(v, |d| &d.itl_s)),
            seconds,
        ),
        line_chart(
            "Requests waiting for their first token (time-weighted mean)",
            span_s,
            &per_server(&|v, _| Some(v.queue.waiting_mean)),
            plain,
        ),
        line_chart(
            "Requests streaming (time-weighted mean)",
            span_s,
            &per_server(&|v, _| Some(v.queue.running_mean)),
            plain,
        ),
        line_chart(
            "Output tokens per second",
            span_s,
            &per_server(&|v, s| {
                let tokens =
                    crate::model::saturating_sum(v.models.iter().map(|m| m.requests.delta.output_tokens));
                Some(s.per_second(tokens as f64))
            }),
            plain,
        ),
    ];
    if !servers.is_empty() {
        page.push_str(&grid(&mut charts));
    }

    page.push_str("<h2>GPUs</h2>");
    page.push_str(&devices_table(snapshots));
    let devices: BTreeMap<String, String> = snapshots
        .iter()
        .flat_map(|s| &s.devices)
        .map(|d| (d.uuid.clone(), format!("GPU{} {}", d.index, d.name)))
        .collect();
    let per_device = |value: &dyn Fn(&crate::model::DeviceView) -> Option<f64>| -> Vec<Series> {
        devices
            .iter()
            .map(|(uuid, name)| Series {
                name: name.clone(),
                points: snapshots
                    .iter()
                    .filter_map(|s| Some((at(s), value(s.devices.iter().find(|d| &d.uuid == uuid)?)?)))
                    .collect(),
            })
            .collect()
    };
    let mut charts = vec![
        line_chart(
            "GPU utilisation",
            span_s,
            &per_device(&|d| d.utilization_percent.map(f64::from)),
            percent,
        ),
        line_chart(
            "GPU memory used",
            span_s,
            &per_device(&|d| d.memory_used_bytes.map(|b| b as f64 / GIB)),
            gib,
        ),
        line_chart(
            "Energy per output token",
            span_s,
            &per_device(&|d| d.energy_per_output_token_joules),
            joules,
        ),
        line_chart("GPU power", span_s, &per_device(&|d| d.power_watts), watts),
    ];
    if !devices.is_empty() {
        page.push_str(&grid(&mut charts));
    }

    page.push_str("<h2>GPU processes</h2>");
    page.push_str(&processes_table(snapshots));
    let busiest = busiest_processes(snapshots);
    let per_process = |value: &dyn Fn(&crate::model::ProcessView, &Snapshot) -> f64| -> Vec<Series> {
        busiest
            .iter()
            .map(|(pid, name)| Series {
                name: name.clone(),
                points: snapshots
                    .iter()
                    .filter_map(|s| {
                        let p = s.processes.iter().find(|p| p.identity.pid == *pid)?;
                        Some((at(s), value(p, s)))
                    })
                    .collect(),
            })
            .collect()
    };
    let mut charts = vec![
        line_chart(
            "Kernel launches per second",
            span_s,
            &per_process(&|p, s| s.per_second(p.gpu.delta.kernel_launches as f64)),
            plain,
        ),
        line_chart(
            "Time blocked in GPU synchronisation (seconds per second, over threads)",
            span_s,
            &per_process(&|p, s| s.per_second(p.gpu.delta.sync_seconds)),
            plain,
        ),
    ];
    if !busiest.is_empty() {
        page.push_str(&grid(&mut charts));
    }
}

fn grid(charts: &mut Vec<String>) -> String {
    format!("<div class=\"grid2\">{}</div>", std::mem::take(charts).concat())
}

fn span(d: &Diagnosis) -> String {
    let time = |t: Option<SystemTime>| {
        t.map_or("-".to_string(), |t| {
            humantime::format_rfc3339_seconds(t).to_string()
        })
    };
    format!(
        "{} to {}. Intervals: {}, servers: {}, GPU processes: {}, GPUs: {}, finished requests: {}.",
        time(d.from),
        time(d.to),
        d.intervals,
        d.servers,
        d.gpu_processes,
        d.devices,
        d.requests
    )
}

fn findings(d: &Diagnosis) -> String {
    let mut out = String::new();
    if d.findings.is_empty() {
        out.push_str("<p>No findings.</p>");
    }
    for f in &d.findings {
        let class = match f.severity {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        };
        let _ = write!(
            out,
            "<div class=\"finding {class}\"><span class=\"sev\">{class}</span> <b>{}</b> &middot; {} &middot; {} to {}<p>{}</p><table>",
            escape(&json_name(&f.finding)),
            escape(&f.subject.to_string()),
            humantime::format_rfc3339_seconds(f.from),
            humantime::format_rfc3339_seconds(f.to),
            escape(&f.summary),
        );
        for (k, v) in &f.evidence {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td></tr>",
                escape(&k.name()),
                evidence_value(*v)
            );
        }
        out.push_str("</table>");
        for q in &f.queries {
            let _ = write!(out, "<pre>{}</pre>", escape(q));
        }
        out.push_str("</div>");
    }
    if !d.not_checked.is_empty() {
        out.push_str("<p>Not checked:</p><ul>");
        for n in &d.not_checked {
            let _ = write!(out, "<li>{}</li>", escape(n));
        }
        out.push_str("</ul>");
    }
    out
}

/// Servers in the recording by (pid, port), named for a legend.
fn server_keys(snapshots: &[Snapshot]) -> BTreeMap<(u32, u16), String> {
    snapshots
        .iter()
        .flat_map(|s| &s.servers)
        .map(|v| {
            let name = format!("{} {}:{}", v.comm.as_deref().unwrap_or("pid"), v.pid, v.port);
            ((v.pid, v.port), name)
        })
        .collect()
}

/// The processes with the most kernel launches, with their names.
fn busiest_processes(snapshots: &[Snapshot]) -> Vec<(u32, String)> {
    let mut launches: BTreeMap<u32, (u64, String)> = BTreeMap::new();
    for p in snapshots.iter().flat_map(|s| &s.processes) {
        let e = launches.entry(p.identity.pid).or_default();
        e.0 = e.0.max(p.gpu.total.kernel_launches);
        e.1 = format!("{} {}", p.identity.comm, p.identity.pid);
    }
    let mut by_launches: Vec<_> = launches.into_iter().collect();
    by_launches.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(&b.0)));
    by_launches
        .into_iter()
        .take(MAX_PROCESS_SERIES)
        .map(|(pid, (_, name))| (pid, name))
        .collect()
}

/// Per server and model over the whole recording; exact percentiles where
/// the recording has the requests themselves.
fn servers_table(recording: &Recording) -> String {
    let mut totals: BTreeMap<(u32, u16, String), crate::model::RequestStats> = BTreeMap::new();
    for s in &recording.snapshots {
        for v in &s.servers {
            for m in &v.models {
                totals
                    .entry((v.pid, v.port, m.model.clone()))
                    .or_insert_with(crate::model::RequestStats::empty)
                    .add(&m.requests.delta);
            }
        }
    }
    if totals.is_empty() {
        return "<p class=\"none\">No inference server's traffic was captured.</p>".into();
    }
    let names = server_keys(&recording.snapshots);
    let mut out = String::from(
        "<table><tr><th>server</th><th>model</th><th>requests</th><th>errors</th><th>cancelled</th>\
         <th>TTFT mean</th><th>TTFT p50</th><th>TTFT p95</th><th>ITL mean</th><th>ITL p95</th><th>output tokens</th></tr>",
    );
    for ((pid, port, model), t) in &totals {
        let records: Vec<_> = recording
            .requests
            .iter()
            .filter(|r| (r.pid, r.port) == (*pid, *port) && r.model.as_deref().unwrap_or("unknown") == model)
            .collect();
        let mut ttft: Vec<f64> = records.iter().filter_map(|r| r.ttft_s).collect();
        let mut itl: Vec<f64> = records.iter().flat_map(|r| r.itl_s.iter().copied()).collect();
        let mean = |h: &crate::model::Histogram| (h.count > 0).then(|| h.sum / h.count as f64);
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(names.get(&(*pid, *port)).map_or("", String::as_str)),
            escape(model),
            t.requests,
            t.errors.saturating_sub(t.cancelled),
            t.cancelled,
            opt(mean(&t.ttft_s), seconds),
            opt(percentile(&mut ttft.clone(), 50.0), seconds),
            opt(percentile(&mut ttft, 95.0), seconds),
            opt(mean(&t.itl_s), seconds),
            opt(percentile(&mut itl, 95.0), seconds),
            t.output_tokens,
        );
    }
    out.push_str("</table>");
    if recording.requests.is_empty() {
        out.push_str("<p class=\"sub\">Percentiles need the requests themselves; this recording has only per-interval snapshots.</p>");
    }
    out
}

fn devices_table(snapshots: &[Snapshot]) -> String {
    let mut seen: BTreeMap<String, Vec<&crate::model::DeviceView>> = BTreeMap::new();
    for d in snapshots.iter().flat_map(|s| &s.devices) {
        seen.entry(d.uuid.clone()).or_default().push(d);
    }
    if seen.is_empty() {
        return "<p class=\"none\">No GPU device figures (no NVML or ROCm SMI readings).</p>".into();
    }
    let mut out = String::from(
        "<table><tr><th>GPU</th><th>utilisation mean</th><th>max</th><th>memory max</th><th>of</th><th>energy</th><th>XID errors</th></tr>",
    );
    for views in seen.values() {
        let last = views[views.len() - 1];
        let util: Vec<f64> = views
            .iter()
            .filter_map(|d| d.utilization_percent.map(f64::from))
            .collect();
        let mean = (!util.is_empty()).then(|| util.iter().sum::<f64>() / util.len() as f64);
        let max = util.iter().copied().reduce(f64::max);
        let energy: f64 = views
            .iter()
            .filter_map(|d| d.energy_joules.as_ref().map(|e| e.delta))
            .sum();
        let _ = write!(
            out,
            "<tr><td>GPU{} {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            last.index,
            escape(&last.name),
            opt(mean, percent),
            opt(max, percent),
            opt(
                views
                    .iter()
                    .filter_map(|d| d.memory_used_bytes)
                    .max()
                    .map(|b| b as f64 / GIB),
                gib
            ),
            opt(last.memory_total_bytes.map(|b| b as f64 / GIB), gib),
            if energy > 0.0 { joules(energy) } else { "-".into() },
            last.xid_errors.total,
        );
    }
    out.push_str("</table>");
    out
}

/// Per process over the recording: its intervals' deltas, so a stream saved
/// mid-run does not count what happened before it.
fn processes_table(snapshots: &[Snapshot]) -> String {
    struct Seen<'a> {
        last: &'a crate::model::ProcessView,
        seconds: f64,
        launches: u64,
        graph_launches: u64,
        sync_seconds: f64,
        copies: u64,
        errors: u64,
    }
    let mut seen: BTreeMap<u32, Seen> = BTreeMap::new();
    for s in snapshots {
        for p in &s.processes {
            let d = &p.gpu.delta;
            let e = seen.entry(p.identity.pid).or_insert(Seen {
                last: p,
                seconds: 0.0,
                launches: 0,
                graph_launches: 0,
                sync_seconds: 0.0,
                copies: 0,
                errors: 0,
            });
            e.last = p;
            e.seconds += s.interval.as_secs_f64();
            e.launches = e.launches.saturating_add(d.kernel_launches);
            e.graph_launches = e.graph_launches.saturating_add(d.graph_launches);
            e.sync_seconds += d.sync_seconds;
            e.copies = e.copies.saturating_add(d.memcpy_calls);
            e.errors = e.errors.saturating_add(d.errors);
        }
    }
    if seen.is_empty() {
        return "<p class=\"none\">No process used a GPU runtime.</p>".into();
    }
    let mut out = String::from(
        "<table><tr><th>process</th><th>runtimes</th><th>kernel launches</th><th>per second</th><th>graph launches</th>\
         <th>sync s/s</th><th>copies</th><th>errors</th><th>exited</th></tr>",
    );
    for (pid, e) in &seen {
        let runtimes: Vec<&str> = e.last.runtimes.iter().map(|r| r.name()).collect();
        let seconds = e.seconds.max(1e-9);
        let _ = write!(
            out,
            "<tr><td>{} {pid}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&e.last.identity.comm),
            runtimes.join(", "),
            e.launches,
            plain(e.launches as f64 / seconds),
            e.graph_launches,
            plain(e.sync_seconds / seconds),
            e.copies,
            e.errors,
            if e.last.exited { "yes" } else { "" },
        );
    }
    out.push_str("</table><p class=\"sub\">Over the recording: the sum of its intervals.</p>");
    out
}

fn opt(v: Option<f64>, f: fn(f64) -> String) -> String {
    v.map_or("-".into(), f)
}

fn seconds(v: f64) -> String {
    units::seconds(v).spaced()
}

fn plain(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn percent(v: f64) -> String {
    units::percent(v).spaced()
}

fn gib(v: f64) -> String {
    format!("{v:.1} GiB")
}

fn joules(v: f64) -> String {
    format!("{v:.3} J")
}

fn watts(v: f64) -> String {
    format!("{v:.0} W")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::diagnose;

    #[test]
    fn names_from_outside_cannot_inject_markup() {
        assert_eq!(
            escape("<script>\"a\"&'b'"),
            "&lt;script&gt;&quot;a&quot;&amp;&#39;b&#39;"
        );
    }

    #[test]
    fn an_empty_recording_is_a_page_that_says_what_is_missing() {
        let recording = Recording::default();
        let page = render(&[("", &recording)], &diagnose(&recording), "empty <test>", &[]);
        assert!(page.starts_with("<!DOCTYPE html>") && page.ends_with("</html>"));
        assert!(page.contains("<title>empty &lt;test&gt;</title>"));
        // No empty charts: each section says what is missing instead.
        assert!(!page.contains("<svg"));
        for missing in [
            "No inference server",
            "No GPU device figures",
            "No process used a GPU runtime",
        ] {
            assert!(page.contains(missing), "{missing}");
        }
        assert!(page.contains("default-src 'none'"));
        assert!(!page.contains("<script"));
    }
}
