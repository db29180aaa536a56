use std::time::{Duration, UNIX_EPOCH};

use ratatui::{Terminal, backend::TestBackend, style::Color};

use super::*;
use crate::model::{
    Counted, DeviceView, GpuActivity, Outcome, ProcessGpu, ProcessIdentity, ProcessView, Protocol, QueueView,
    ServerView, Vendor,
};

const NOW: u64 = 1_800_000_000;

fn snapshot() -> Snapshot {
    let mut device = DeviceView::new(Vendor::Nvidia, 0, "GPU-1".into(), "NVIDIA H100".into());
    (
        device.utilization_percent,
        device.memory_used_bytes,
        device.memory_total_bytes,
    ) = (Some(87), Some(20 << 30), Some(80 << 30));
    let gpu = GpuActivity {
        kernel_launches: 5_000,
        sync_seconds: 0.25,
        ..GpuActivity::default()
    };
    Snapshot {
        schema: crate::model::SCHEMA_VERSION,
        time: UNIX_EPOCH + Duration::from_secs(NOW),
        interval: Duration::from_secs(1),
        processes: vec![ProcessView {
            identity: ProcessIdentity {
                pid: 200,
                ppid: 100,
                comm: "vllm-worker".into(),
                exe: "/usr/bin/python3".into(),
                ..ProcessIdentity::default()
            },
            runtimes: Vec::new(),
            counted_since: None,
            gpu: Counted {
                total: gpu.clone(),
                delta: gpu,
            },
            gpus: vec![ProcessGpu {
                uuid: "GPU-1".into(),
                index: 0,
                usage: crate::model::GpuUsage {
                    memory_used_bytes: Some(12 << 30),
                    sm_utilization_percent: Some(40),
                    memory_utilization_percent: None,
                },
            }],
            pod: None,
            serves: vec![crate::model::ServerRef { pid: 100, port: 8000 }],
            signals: Vec::new(),
            exited: false,
        }],
        servers: vec![ServerView {
            pid: 100,
            comm: Some("vllm".into()),
            port: 8000,
            protocol: Protocol::Http1,
            queue: QueueView {
                waiting: 3,
                running: 5,
                ..QueueView::default()
            },
            connections: 8,
            arrivals: Counted::default(),
            models: Vec::new(),
        }],
        devices: vec![device],
        pods: Vec::new(),
        gpu_events: Vec::new(),
        drops: Counted::default(),
        dropped_requests: Counted::default(),
    }
}

fn request(ttft: f64, second: u64) -> RequestRecord {
    RequestRecord {
        time: UNIX_EPOCH + Duration::from_secs(NOW - 10 + second),
        pid: 100,
        port: 8000,
        protocol: Protocol::Http1,
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        status: 200,
        model: Some("llama-3-8b".into()),
        stream: true,
        ttft_s: Some(ttft),
        itl_s: vec![0.02, 0.03],
        duration_s: ttft + 1.0,
        output_tokens: Some(50),
        input_tokens: None,
        token_source: None,
        outcome: Outcome::Ok,
        truncated: false,
        engine: None,
    }
}

/// A view fed ten seconds of requests (TTFT 0.1 .. 1.0 s) and then a snapshot.
fn fed(colour: bool) -> Top {
    let mut top = Top::new(colour);
    top.update(Update::Snapshot(Box::new(Snapshot {
        time: UNIX_EPOCH + Duration::from_secs(NOW - 10),
        ..snapshot()
    })));
    for i in 1..=10 {
        top.update(Update::Request(Box::new(request(f64::from(i as u32) / 10.0, i))));
    }
    top.update(Update::Snapshot(Box::new(snapshot())));
    top
}

fn screen(top: &Top, width: u16, height: u16) -> (String, ratatui::buffer::Buffer) {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| top.render(f)).unwrap();
    let buffer = terminal.backend().buffer().clone();
    let text = (0..height)
        .map(|y| (0..width).map(|x| buffer[(x, y)].symbol()).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n");
    (text, buffer)
}

fn line_with<'a>(text: &'a str, needle: &str) -> &'a str {
    text.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in\n{text}"))
}

#[test]
fn a_server_and_its_gpu_worker_are_rows_with_their_own_figures() {
    let (text, _) = screen(&fed(true), 140, 20);
    // Ten requests in the last ten seconds: 1 req/s; TTFT p50 0.5 s, p95 1.0 s.
    let server = line_with(&text, "vllm ");
    for cell in [
        "100", "1.0", "500.0ms", "1.00s", "20.0ms", "30.0ms", "3", "5", "50.0",
    ] {
        assert!(server.contains(cell), "{cell:?} not in {server:?}");
    }
    let worker = line_with(&text, "vllm-worker");
    for cell in ["200", "5000", "25%", "12.0GiB", "40"] {
        assert!(worker.contains(cell), "{cell:?} not in {worker:?}");
    }
    assert!(line_with(&text, "GPU0 NVIDIA H100").contains("util 87%  mem 20.0/80.0 GiB"));
}

#[test]
fn a_narrow_terminal_keeps_the_important_columns_and_a_tiny_one_says_so() {
    let (text, _) = screen(&fed(true), 60, 12);
    let heading = line_with(&text, "PID");
    assert!(
        heading.contains("COMM") && heading.contains("REQ/s") && !heading.contains("J/TOK"),
        "{heading}"
    );
    let (tiny, _) = screen(&fed(true), 30, 4);
    assert!(tiny.contains("terminal too small"), "{tiny}");
}

#[test]
fn without_colour_only_modifiers_mark_things() {
    let (_, buffer) = screen(&fed(false), 140, 20);
    assert!(
        buffer
            .content()
            .iter()
            .all(|c| c.fg == Color::Reset && c.bg == Color::Reset),
        "a colour was used"
    );
    let (_, coloured) = screen(&fed(true), 140, 20);
    assert!(coloured.content().iter().any(|c| c.fg != Color::Reset));
}

#[test]
fn without_gpu_figures_the_view_says_so() {
    let mut top = Top::new(true);
    top.update(Update::Snapshot(Box::new(Snapshot {
        devices: Vec::new(),
        ..snapshot()
    })));
    let (text, _) = screen(&top, 140, 20);
    line_with(&text, "GPUs: no device figures");
}

#[test]
fn sorting_filtering_and_the_drill_down_follow_the_keys() {
    let mut top = fed(true);
    let pids = |top: &Top| top.rows().iter().map(|r| r.pid).collect::<Vec<_>>();
    assert_eq!(pids(&top), [100, 200], "by requests first");
    top.on_key(Key::Char('s'));
    top.on_key(Key::Char('s'));
    assert_eq!(pids(&top), [200, 100], "by launches");
    for key in [Key::Char('/'), Key::Char('w'), Key::Char('o'), Key::Enter] {
        top.on_key(key);
    }
    assert_eq!(pids(&top), [200], "filtered by name");
    top.on_key(Key::Escape);
    assert_eq!(pids(&top), [200, 100]);

    top.on_key(Key::Down);
    top.on_key(Key::Enter);
    let (text, _) = screen(&top, 160, 30);
    line_with(&text, "pid 100  vllm");
    line_with(&text, "Server port 8000");
    // The slowest request of the window first: TTFT 1.0 s.
    let slowest = line_with(&text, "Slowest requests");
    assert!(slowest.contains("TTFT p95 1.00s"), "{slowest}");
    let first = text
        .lines()
        .skip_while(|l| !l.contains("Slowest"))
        .nth(1)
        .unwrap();
    assert!(first.contains("llama-3-8b  TTFT 1.00s"), "{first}");
    top.on_key(Key::Escape);
    assert_eq!(top.on_key(Key::Char('q')), Action::Quit);
}

#[test]
fn requests_older_than_the_window_leave_it() {
    let mut top = fed(true);
    top.update(Update::Snapshot(Box::new(Snapshot {
        time: UNIX_EPOCH + Duration::from_secs(NOW + 5),
        ..snapshot()
    })));
    // Those that finished more than ten seconds before the latest snapshot are
    // gone: of NOW-9 .. NOW, NOW-5 .. NOW stay.
    assert_eq!(top.recent.len(), 6);
}
