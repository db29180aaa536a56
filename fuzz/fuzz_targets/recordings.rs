//! What `diagnose` and `record` make of a saved stream: the figures come from
//! a file anyone can write, so every rule, the text and the HTML report must
//! take any numbers (zeros, huge counts, NaN, negative times, a request count
//! below its errors) without panicking. Two sources: arbitrary bytes as JSON
//! lines, and snapshots built from arbitrary figures.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use arbitrary::Arbitrary;
use inferscope::{
    diagnose::{Recording, diagnose, write_text},
    model::{
        Counted, DeviceView, GpuActivity, ModelView, ProcessGpu, ProcessIdentity, ProcessView, QueueView,
        RequestStats, ServerRef, ServerView, Signal, Snapshot, Vendor,
    },
    report,
};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Interval {
    seconds: u32,
    interval_ms: u32,
    requests: u64,
    errors: u64,
    cancelled: u64,
    ttft: Vec<f64>,
    output_tokens: u64,
    waiting_mean: f64,
    busy: Option<u32>,
    memory: Option<(u64, u64)>,
    launches: u64,
    sync_seconds: f64,
    launch_bound: Option<(f64, u32)>,
    xids: u64,
    reasons: Vec<u8>,
    energy: Option<f64>,
}

#[derive(Arbitrary, Debug)]
enum Input<'a> {
    Lines(&'a [u8]),
    Figures(Vec<Interval>),
}

fn snapshot(i: &Interval) -> Snapshot {
    let mut stats = RequestStats::empty();
    for &t in i.ttft.iter().take(64) {
        stats.ttft_s.record(t);
    }
    (stats.requests, stats.errors, stats.cancelled, stats.output_tokens) =
        (i.requests, i.errors, i.cancelled, i.output_tokens);
    let server = ServerRef { pid: 1, port: 80 };
    let mut device = DeviceView::new(Vendor::Nvidia, 0, "GPU-0".into(), "gpu".into());
    device.utilization_percent = i.busy;
    (device.memory_used_bytes, device.memory_total_bytes) = (i.memory.map(|m| m.0), i.memory.map(|m| m.1));
    device.xid_errors = Counted { total: i.xids, delta: i.xids };
    device.energy_per_output_token_joules = i.energy;
    let names = ["sw_power_cap", "hw_thermal_slowdown", "gpu_idle"];
    device.clock_event_reasons = Some(i.reasons.iter().map(|r| names[*r as usize % 3].to_string()).collect());
    let gpu = GpuActivity { kernel_launches: i.launches, sync_seconds: i.sync_seconds, sync_calls: 1, ..GpuActivity::default() };
    Snapshot {
        schema: inferscope::model::SCHEMA_VERSION,
        time: UNIX_EPOCH + Duration::from_secs(u64::from(i.seconds)),
        interval: Duration::from_millis(u64::from(i.interval_ms)),
        processes: vec![ProcessView {
            identity: ProcessIdentity { pid: 1, comm: "<b>&".into(), ..ProcessIdentity::default() },
            runtimes: Vec::new(),
            gpu: Counted { total: gpu.clone(), delta: gpu },
            gpus: vec![ProcessGpu { uuid: "GPU-0".into(), index: 0, usage: Default::default() }],
            pod: None,
            serves: vec![server],
            signals: i
                .launch_bound
                .map(|(rate, sm)| Signal::LaunchBound { kernel_launches_per_second: rate, sm_utilization_percent: sm })
                .into_iter()
                .collect(),
            exited: false,
            counted_since: None,
        }],
        servers: vec![ServerView {
            pid: 1,
            comm: Some("srv".into()),
            port: 80,
            protocol: Default::default(),
            queue: QueueView { waiting_mean: i.waiting_mean, ..QueueView::default() },
            connections: 0,
            arrivals: Counted::default(),
            models: vec![ModelView {
                model: "m\"<".into(),
                energy_joules: i.energy,
                energy_per_output_token_joules: i.energy,
                requests: Counted { total: RequestStats::empty(), delta: stats },
            }],
        }],
        devices: vec![device],
        pods: Vec::new(),
        gpu_events: Vec::new(),
        drops: Counted::default(),
        dropped_requests: Counted::default(),
    }
}

fuzz_target!(|input: Input| {
    let recording = match input {
        Input::Lines(bytes) => match Recording::read(bytes) {
            Ok(r) => r,
            Err(_) => return,
        },
        Input::Figures(intervals) => Recording {
            snapshots: intervals.iter().take(32).map(snapshot).collect(),
            requests: Vec::new(),
        },
    };
    let diagnosis = diagnose(&recording);
    let mut text = Vec::new();
    write_text(&mut text, &diagnosis).unwrap();
    let page = report::render(&[("", &recording)], &diagnosis, "fuzz", &[]);
    assert!(!page.contains("<b>&") && !page.contains("m\"<"), "an outside name reached the page unescaped");
});
