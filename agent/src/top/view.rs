//! Drawing [`Top`]: the process list, or one process in detail. Columns a
//! narrow terminal cannot hold go, least important first; without colour only
//! bold and reverse video mark things.

use std::time::SystemTime;

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::Line,
    widgets::{Cell, Paragraph, Row as TableRow, Table, TableState, Wrap},
};

use super::{REQUEST_WINDOW, Row, Top};
use crate::{
    model::{Signal, Snapshot, json_name, percentile},
    units::{self, GIB, MIB},
};

/// Smallest area anything useful fits in.
const MIN_WIDTH: u16 = 40;
const MIN_HEIGHT: u16 = 6;
/// Most devices listed above the table.
const MAX_DEVICE_LINES: usize = 4;
/// Slowest recent requests listed in a process's details.
const SLOW_REQUESTS: usize = 10;

pub fn render(top: &Top, frame: &mut Frame) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let text = format!(
            "terminal too small: {}x{}, need {MIN_WIDTH}x{MIN_HEIGHT}",
            area.width, area.height
        );
        frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), area);
        return;
    }
    let Some(s) = &top.latest else {
        let text = "inferscope top: attaching probes, first figures after one interval... (q quits)";
        frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), area);
        return;
    };
    let devices = device_lines(s);
    let [head, devices_area, body, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(devices.len() as u16),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(header(top, s)).style(top.title_style()), head);
    frame.render_widget(Paragraph::new(devices), devices_area);
    match top.detail {
        Some(pid) => frame.render_widget(
            Paragraph::new(detail_lines(top, s, pid)).wrap(Wrap { trim: false }),
            body,
        ),
        None => render_table(top, frame, body),
    }
    frame.render_widget(Paragraph::new(footer(top)).style(top.dim_style()), foot);
}

impl Top {
    fn title_style(&self) -> Style {
        let bold = Style::new().add_modifier(Modifier::BOLD);
        if self.colour { bold.fg(Color::Cyan) } else { bold }
    }

    fn dim_style(&self) -> Style {
        if self.colour {
            Style::new().fg(Color::DarkGray)
        } else {
            Style::new()
        }
    }
}

fn header(top: &Top, s: &Snapshot) -> String {
    let mut line = format!(
        "inferscope top  {}  every {:.1}s  processes {}  servers {}  lost events {}  sort {}",
        humantime::format_rfc3339_seconds(s.time),
        s.interval.as_secs_f64(),
        s.processes.len(),
        s.servers.len(),
        crate::model::saturating_sum(s.drops.total.values().copied()),
        top.sort.name(),
    );
    if top.editing_filter || !top.filter.is_empty() {
        line.push_str(&format!(
            "  filter: {}{}",
            top.filter,
            if top.editing_filter { "_" } else { "" }
        ));
    }
    line
}

fn footer(top: &Top) -> String {
    let keys = if top.editing_filter {
        "type to filter by name or pid  Enter done  Esc clear"
    } else if top.detail.is_some() {
        "Esc back  q quit"
    } else {
        "Up/Down select  Enter details  s sort  / filter  q quit"
    };
    match &top.status {
        Some(status) => format!("{keys}  |  {status}"),
        None => keys.to_string(),
    }
}

fn device_lines(s: &Snapshot) -> Vec<Line<'static>> {
    if s.devices.is_empty() {
        return vec![Line::from(
            "GPUs: no device figures (no NVML or ROCm SMI readings)",
        )];
    }
    let mut lines: Vec<Line> = s
        .devices
        .iter()
        .take(MAX_DEVICE_LINES)
        .map(|d| {
            let mut parts = vec![format!("GPU{} {}", d.index, d.name)];
            if let Some(u) = d.utilization_percent {
                parts.push(format!("util {u}%"));
            }
            if let (Some(used), Some(total)) = (d.memory_used_bytes, d.memory_total_bytes) {
                parts.push(format!(
                    "mem {:.1}/{:.1} GiB",
                    used as f64 / GIB,
                    total as f64 / GIB
                ));
            }
            if let Some(w) = d.power_watts {
                parts.push(format!("{w:.0} W"));
            }
            if let Some(t) = d.temperature_celsius {
                parts.push(format!("{t} C"));
            }
            if let Some(j) = d.energy_per_output_token_joules {
                parts.push(format!("{j:.3} J/token"));
            }
            if d.xid_errors.total > 0 {
                parts.push(format!("XID errors {}", d.xid_errors.total));
            }
            Line::from(parts.join("  "))
        })
        .collect();
    if s.devices.len() > MAX_DEVICE_LINES {
        lines.push(Line::from(format!(
            "  ... {} more GPUs",
            s.devices.len() - MAX_DEVICE_LINES
        )));
    }
    lines
}

/// A column: its heading, width, how much it matters (0: always shown), and its text.
struct Column {
    heading: &'static str,
    width: u16,
    priority: u8,
    text: fn(&Row) -> String,
}

const COLUMNS: [Column; 15] = [
    Column {
        heading: "PID",
        width: 7,
        priority: 0,
        text: |r| r.pid.to_string(),
    },
    Column {
        heading: "COMM",
        width: 15,
        priority: 0,
        text: |r| r.comm.clone(),
    },
    Column {
        heading: "REQ/s",
        width: 6,
        priority: 1,
        text: |r| rate(r.requests_per_second),
    },
    Column {
        heading: "TTFT p50",
        width: 8,
        priority: 1,
        text: |r| seconds(r.ttft_p50_s),
    },
    Column {
        heading: "TTFT p95",
        width: 8,
        priority: 1,
        text: |r| seconds(r.ttft_p95_s),
    },
    Column {
        heading: "ITL p50",
        width: 7,
        priority: 2,
        text: |r| seconds(r.itl_p50_s),
    },
    Column {
        heading: "ITL p95",
        width: 7,
        priority: 2,
        text: |r| seconds(r.itl_p95_s),
    },
    Column {
        heading: "WAIT",
        width: 4,
        priority: 1,
        text: |r| count(r.waiting),
    },
    Column {
        heading: "RUN",
        width: 4,
        priority: 2,
        text: |r| count(r.running),
    },
    Column {
        heading: "TOK/s",
        width: 7,
        priority: 2,
        text: |r| rate(r.tokens_per_second),
    },
    Column {
        heading: "LAUNCH/s",
        width: 8,
        priority: 1,
        text: |r| rate(r.launches_per_second),
    },
    Column {
        heading: "SYNC%",
        width: 5,
        priority: 3,
        text: |r| share(r.sync_share),
    },
    Column {
        heading: "GPU MEM",
        width: 8,
        priority: 1,
        text: |r| bytes(r.gpu_memory_bytes),
    },
    Column {
        heading: "SM%",
        width: 4,
        priority: 2,
        text: |r| count(r.sm_percent.map(u64::from)),
    },
    Column {
        heading: "J/TOK",
        width: 6,
        priority: 3,
        text: |r| r.joules_per_token.map_or("-".into(), |j| format!("{j:.3}")),
    },
];

/// The columns that fit `width`: the most important first, in their usual order.
fn columns_for(width: u16) -> Vec<&'static Column> {
    let mut by_importance: Vec<(usize, &Column)> = COLUMNS.iter().enumerate().collect();
    by_importance.sort_by_key(|(i, c)| (c.priority, *i));
    let mut room = width;
    let mut chosen: Vec<(usize, &Column)> = Vec::new();
    for (i, c) in by_importance {
        if c.width < room || c.priority == 0 {
            room = room.saturating_sub(c.width + 1);
            chosen.push((i, c));
        }
    }
    chosen.sort_by_key(|(i, _)| *i);
    chosen.into_iter().map(|(_, c)| c).collect()
}

fn render_table(top: &Top, frame: &mut Frame, area: Rect) {
    let rows = top.rows();
    let columns = columns_for(area.width);
    let heading = TableRow::new(columns.iter().map(|c| Cell::from(c.heading))).style(top.title_style());
    let body = rows.iter().map(|r| {
        let row = TableRow::new(columns.iter().map(|c| Cell::from((c.text)(r))));
        if r.exited {
            row.style(Style::new().add_modifier(Modifier::DIM))
        } else {
            row
        }
    });
    let empty = rows.is_empty();
    let table = Table::new(body, columns.iter().map(|c| Constraint::Length(c.width)))
        .header(heading)
        .column_spacing(1)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    let mut state = TableState::default().with_selected((!empty).then(|| top.selected.min(rows.len() - 1)));
    frame.render_stateful_widget(table, area, &mut state);
    if empty && area.height > 1 {
        let note = if top.filter.is_empty() {
            "no GPU process or inference server seen yet"
        } else {
            "nothing matches the filter (Esc clears it)"
        };
        let below = Rect {
            y: area.y + 1,
            height: 1,
            ..area
        };
        frame.render_widget(Paragraph::new(note), below);
    }
}

fn detail_lines(top: &Top, s: &Snapshot, pid: u32) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    let process = s.processes.iter().find(|p| p.identity.pid == pid);
    let own_servers: Vec<_> = s.servers.iter().filter(|v| v.pid == pid).collect();
    let comm = process
        .map(|p| p.identity.comm.clone())
        .or_else(|| own_servers.iter().find_map(|v| v.comm.clone()))
        .unwrap_or_default();
    lines.push(Line::styled(format!("pid {pid}  {comm}"), top.title_style()));
    if process.is_none() && own_servers.is_empty() {
        lines.push(Line::from("not in the latest snapshot (it exited)"));
        return lines;
    }
    if let Some(p) = process {
        let id = &p.identity;
        lines.push(Line::from(format!("  parent {}  executable {}", id.ppid, id.exe)));
        if let Some(c) = &id.container_id {
            lines.push(Line::from(format!("  container {}", &c[..c.len().min(12)])));
        }
        if let Some(pod) = &p.pod {
            lines.push(Line::from(format!(
                "  pod {}/{} container {}",
                pod.namespace, pod.name, pod.container
            )));
        }
    }
    let served: Vec<_> = s
        .servers
        .iter()
        .filter(|v| {
            v.pid == pid
                || process.is_some_and(|p| p.serves.iter().any(|k| k.pid == v.pid && k.port == v.port))
        })
        .collect();
    for v in &served {
        let whose = if v.pid == pid {
            String::new()
        } else {
            format!(" (works for pid {})", v.pid)
        };
        lines.push(Line::styled(
            format!(
                "Server port {}{whose}: {}, {} connections, {} waiting, {} running",
                v.port,
                json_name(&v.protocol),
                v.connections,
                v.queue.waiting,
                v.queue.running
            ),
            top.title_style(),
        ));
        for m in &v.models {
            let d = &m.requests.delta;
            lines.push(Line::from(format!(
                "  model {}: {} requests in the interval ({} total), TTFT p50 {} p95 {}, ITL p50 {}, {} output tokens, {} errors, {} cancelled{}",
                m.model,
                d.requests,
                m.requests.total.requests,
                seconds(d.ttft_s.p50),
                seconds(d.ttft_s.p95),
                seconds(d.itl_s.p50),
                d.output_tokens,
                d.errors,
                d.cancelled,
                m.energy_per_output_token_joules.map_or(String::new(), |j| format!(", {j:.3} J/token")),
            )));
        }
    }
    if let Some(p) = process {
        let g = &p.gpu.delta;
        let per_s = |n: f64| s.per_second(n);
        let runtimes: Vec<&str> = p.runtimes.iter().map(|r| r.name()).collect();
        lines.push(Line::styled(
            format!("GPU runtime calls ({})", runtimes.join(", ")),
            top.title_style(),
        ));
        lines.push(Line::from(format!(
            "  launches {}/s, graph launches {}/s, copies {}/s (H2D {:.1} MiB/s, D2H {:.1} MiB/s), allocations {}/s, live {}, sync {} of the time, {} errors",
            rate(Some(per_s(g.kernel_launches as f64))),
            rate(Some(per_s(g.graph_launches as f64))),
            rate(Some(per_s(g.memcpy_calls as f64))),
            per_s(g.memcpy_bytes.htod as f64) / MIB,
            per_s(g.memcpy_bytes.dtoh as f64) / MIB,
            rate(Some(per_s(g.alloc_calls as f64))),
            bytes(u64::try_from(p.gpu.total.live_bytes).ok()),
            share(Some(per_s(g.sync_seconds))),
            g.errors,
        )));
        for (op, n) in &g.nccl {
            lines.push(Line::from(format!(
                "  NCCL {op}: {}/s, {:.1} MiB/s",
                rate(Some(per_s(n.calls as f64))),
                per_s(n.bytes as f64) / MIB
            )));
        }
        for gpu in &p.gpus {
            lines.push(Line::from(format!(
                "  on GPU{} ({}): memory {}, SM {}",
                gpu.index,
                gpu.uuid,
                bytes(gpu.usage.memory_used_bytes),
                gpu.usage
                    .sm_utilization_percent
                    .map_or("-".into(), |v| format!("{v}%")),
            )));
        }
        for signal in &p.signals {
            let Signal::LaunchBound {
                kernel_launches_per_second,
                sm_utilization_percent,
            } = signal;
            lines.push(Line::from(format!(
                "  launch-bound: {kernel_launches_per_second:.0} launches/s with {sm_utilization_percent}% SM: CUDA graphs or larger batches would help"
            )));
        }
    }
    let server_pids: Vec<u32> = served.iter().map(|v| v.pid).collect();
    let mut slow: Vec<_> = top
        .recent
        .iter()
        .filter(|r| server_pids.contains(&r.pid))
        .collect();
    if !slow.is_empty() {
        slow.sort_by(|a, b| {
            b.ttft_s
                .unwrap_or(b.duration_s)
                .total_cmp(&a.ttft_s.unwrap_or(a.duration_s))
        });
        let mut ttft: Vec<f64> = slow.iter().filter_map(|r| r.ttft_s).collect();
        lines.push(Line::styled(
            format!(
                "Slowest requests of the last {} s (TTFT p95 {}), by time to first token",
                REQUEST_WINDOW.as_secs(),
                seconds(percentile(&mut ttft, 95.0))
            ),
            top.title_style(),
        ));
        for r in slow.into_iter().take(SLOW_REQUESTS) {
            lines.push(Line::from(format!(
                "  {}  port {}  {}  TTFT {}  duration {}  {} tokens  {}",
                clock_time(r.time),
                r.port,
                r.model.as_deref().unwrap_or("unknown"),
                seconds(r.ttft_s),
                seconds(Some(r.duration_s)),
                r.output_tokens.map_or("-".into(), |n| n.to_string()),
                json_name(&r.outcome),
            )));
        }
    }
    lines
}

/// `HH:MM:SS.mmm` (UTC) of a wall-clock instant.
fn clock_time(t: SystemTime) -> String {
    let full = humantime::format_rfc3339_millis(t).to_string();
    full.get(11..23).unwrap_or(&full).to_string()
}

fn rate(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v < 100.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.0}"),
    }
}

fn seconds(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| units::seconds(v).to_string())
}

/// A share of 0 to 1, in percent.
fn share(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| units::percent(v * 100.0).to_string())
}

fn count(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

fn bytes(v: Option<u64>) -> String {
    v.map_or("-".into(), |b| units::bytes(b).to_string())
}
