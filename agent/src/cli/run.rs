//! `inferscope run`: flags → sources and sinks → the pipeline, until stopped.

use std::{cell::RefCell, net::SocketAddr, path::PathBuf, process::ExitCode, rc::Rc, time::Duration};

use anyhow::{Context as _, Result};
use inferscope_shared::NET_CAPTURE_MAX;

use super::parse_duration;
use crate::{
    pipeline::{Started, WatchConfig, WatchOptions, watch},
    profile::{
        Continuous, DEFAULT_GPU_CALL_STACK_EVERY, Destination, Profiler,
        otlp::OtlpProfiles,
        pyroscope::{Pyroscope, PyroscopeConfig},
    },
    sinks::{ExportHealth, Format, OtlpConfig, OtlpProtocol, Sink, Telemetry, TelemetryConfig},
    sources::KubeConfig,
};

#[derive(clap::Args)]
pub struct RunArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    output: Format,
    /// Stop after this long (a last report covers the remainder).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    #[command(flatten)]
    watch: WatchArgs,
    /// Export metrics over OTLP to this collector (base URL, as OTEL_EXPORTER_OTLP_ENDPOINT,
    /// which also turns export on; every OTEL_EXPORTER_OTLP_* variable applies).
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// OTLP transport [default: OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf].
    #[arg(long, value_enum, value_name = "PROTOCOL")]
    otlp_protocol: Option<OtlpProtocol>,
    /// Share of requests also sent as OTLP spans (0 to 1; needs OTLP).
    #[arg(long, default_value_t = 0.0, value_name = "RATIO", value_parser = parse_ratio)]
    trace_ratio: f64,
    /// Serve the metrics for Prometheus at http://ADDR/metrics (for example 0.0.0.0:9464).
    #[arg(long, value_name = "ADDR")]
    prometheus_listen: Option<SocketAddr>,
    #[command(flatten)]
    profiling: ProfilingArgs,
    /// Push the profiles to this Grafana Pyroscope server (base URL);
    /// PYROSCOPE_TENANT_ID, PYROSCOPE_BASIC_AUTH_USER and
    /// PYROSCOPE_BASIC_AUTH_PASSWORD apply.
    #[arg(long, value_name = "URL", requires = "profile")]
    pyroscope_url: Option<String>,
}

/// Continuous profiling beside the watch, period by period (`run`, `mcp`).
#[derive(clap::Args)]
pub struct ProfilingArgs {
    /// Also profile what is watched, continuously: CPU stacks, and where GPU
    /// work is launched and waited for, every --profile-every (`run` ships
    /// each period to --pyroscope-url and, as OTLP profiles, to the OTLP
    /// endpoint unless OTEL_PROFILES_EXPORTER=none; `mcp` keeps them for its
    /// `profile` tool).
    #[arg(long)]
    profile: bool,
    /// The length of a profile period.
    #[arg(long, default_value = "15s", value_name = "PERIOD", value_parser = parse_duration)]
    profile_every: Duration,
    /// CPU samples per second per CPU while profiling (a prime, so that
    /// sampling does not beat with periodic work).
    #[arg(long, default_value_t = 49, value_parser = clap::value_parser!(u64).range(1..))]
    profile_frequency: u64,
    /// While profiling, 1 in how many GPU kernel launches, graph launches and
    /// synchronisations (at random) records where it was called from; 0: none.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_GPU_CALL_STACK_EVERY)]
    gpu_call_stacks: u32,
}

impl ProfilingArgs {
    /// The profiler --profile asks for, sampling `pids` (everything watched when empty).
    pub fn start(&self, pids: &[u32]) -> Result<Option<Rc<RefCell<Profiler>>>> {
        if !self.profile {
            return Ok(None);
        }
        crate::probes::host::require_privileges()?;
        let profiler = Profiler::start(self.profile_frequency, pids).context("starting CPU sampling")?;
        Ok(Some(Rc::new(RefCell::new(profiler))))
    }

    /// How the watch feeds `profiler`: the GPU calls' stacks, 1 in --gpu-call-stacks.
    pub fn options(
        &self,
        profiler: Option<Rc<RefCell<Profiler>>>,
        duration: Option<Duration>,
    ) -> WatchOptions {
        WatchOptions {
            duration,
            gpu_call_stack_every: if profiler.is_some() {
                self.gpu_call_stacks
            } else {
                0
            },
            profiler,
            ..WatchOptions::default()
        }
    }

    /// The sink ending a period every --profile-every, delivering it to `destinations`.
    pub fn continuous(
        &self,
        profiler: Rc<RefCell<Profiler>>,
        destinations: Vec<Box<dyn Destination>>,
    ) -> Continuous {
        let to: Vec<String> = destinations.iter().map(|d| d.describe()).collect();
        log::info!(
            "profiling at {} Hz, 1 in {} GPU launches and synchronisations, every {}, to {}",
            self.profile_frequency,
            self.gpu_call_stacks,
            humantime::format_duration(self.profile_every),
            to.join(" and ")
        );
        Continuous::new(profiler, self.profile_every, destinations)
    }
}

/// What to watch and how often: shared by every command that watches live.
#[derive(clap::Args)]
pub struct WatchArgs {
    /// Time between reports.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    interval: Duration,
    /// Only watch these processes (repeatable); their listening ports are captured too.
    #[arg(long = "pid")]
    pids: Vec<u32>,
    /// Also capture requests to this local port (repeatable).
    #[arg(long = "port")]
    ports: Vec<u16>,
    /// Also treat processes with this command name as inference servers (repeatable).
    #[arg(long = "comm")]
    comms: Vec<String>,
    /// How long a GPU library keeps its probes once no process maps it, ready
    /// for the next process that loads it.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    probe_linger: Duration,
    /// Bytes of each send or receive copied for decoding (at most 4096).
    #[arg(long, default_value_t = NET_CAPTURE_MAX as u32)]
    capture_bytes: u32,
    /// NVIDIA's management library, for GPU device figures [default: the system's libnvidia-ml.so.1].
    #[arg(long, value_name = "PATH")]
    nvml_library: Option<PathBuf>,
    /// AMD's ROCm SMI library, for AMD GPU figures [default: the system's librocm_smi64.so.1].
    #[arg(long, value_name = "PATH")]
    rocm_smi_library: Option<PathBuf>,
    /// Kubernetes API server for pod names [default: in a pod, the cluster's own].
    #[arg(long, value_name = "URL")]
    kube_api: Option<String>,
    /// Bearer token file for --kube-api [default in a pod: the service account's].
    #[arg(long, value_name = "PATH", requires = "kube_api")]
    kube_token_file: Option<PathBuf>,
    /// CA bundle (PEM) for an https --kube-api [default in a pod: the service account's].
    #[arg(long, value_name = "PATH", requires = "kube_api")]
    kube_ca_file: Option<PathBuf>,
    /// This node's name in Kubernetes [default: $NODE_NAME, else the host name].
    #[arg(long, value_name = "NAME")]
    kube_node: Option<String>,
    /// How often the pods on this node are listed again.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    kube_refresh: Duration,
}

pub fn run(args: RunArgs) -> Result<ExitCode> {
    let profiling = &args.profiling;
    let otlp = OtlpConfig::from_env(args.otlp_endpoint.clone(), args.otlp_protocol);
    let otlp_profiles = otlp.clone().filter(|_| OtlpConfig::exports_profiles());
    anyhow::ensure!(
        !profiling.profile || args.pyroscope_url.is_some() || otlp_profiles.is_some(),
        "--profile ships its profiles: name where with --pyroscope-url or an OTLP endpoint \
         (--otlp-endpoint, OTEL_EXPORTER_OTLP_ENDPOINT)"
    );
    let profiler = profiling.start(args.watch.pids())?;
    let options = profiling.options(profiler.clone(), args.duration);
    watch(
        &args.watch.config(),
        options,
        |Started { kube_node: node_name }| {
            let mut sinks: Vec<Box<dyn Sink>> = args.output.sink(std::io::stdout()).into_iter().collect();
            // Every exporter counts what it drops here; the metrics report it.
            let health = ExportHealth::default();
            if otlp.is_some() || args.prometheus_listen.is_some() {
                let telemetry = Telemetry::start(TelemetryConfig {
                    otlp: otlp.clone(),
                    trace_ratio: args.trace_ratio,
                    prometheus_listen: args.prometheus_listen,
                    node_name: node_name.clone(),
                    health: health.clone(),
                })
                .context("starting metrics export")?;
                sinks.push(Box::new(telemetry));
            }
            if let Some(profiler) = profiler {
                let mut destinations: Vec<Box<dyn Destination>> = Vec::new();
                if let Some(url) = &args.pyroscope_url {
                    let config = PyroscopeConfig::from_env(url.clone(), node_name.clone());
                    let pyroscope =
                        Pyroscope::start(config, health.clone()).context("starting the Pyroscope sender")?;
                    destinations.push(Box::new(pyroscope));
                }
                if let Some(otlp) = &otlp_profiles {
                    let sender = OtlpProfiles::start(otlp, node_name.as_deref(), health)
                        .context("starting the OTLP profiles sender")?;
                    destinations.push(Box::new(sender));
                }
                sinks.push(Box::new(profiling.continuous(profiler, destinations)));
            }
            Ok(sinks)
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

impl WatchArgs {
    /// The processes named with `--pid`.
    pub fn pids(&self) -> &[u32] {
        &self.pids
    }

    /// What the flags say to watch.
    pub fn config(&self) -> WatchConfig {
        WatchConfig {
            interval: self.interval,
            pids: self.pids.clone(),
            ports: self.ports.clone(),
            comms: self.comms.clone(),
            probe_linger: self.probe_linger,
            capture_bytes: self.capture_bytes,
            nvml_library: self.nvml_library.clone(),
            rocm_smi_library: self.rocm_smi_library.clone(),
            kube: kube_config(self),
            kube_refresh: self.kube_refresh,
        }
    }
}

/// A share between 0 and 1.
fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{s:?} is not a ratio between 0 and 1")),
    }
}

/// The API server named on the command line, else the cluster's own when in a pod.
fn kube_config(args: &WatchArgs) -> Option<KubeConfig> {
    let mut config = match &args.kube_api {
        Some(api) => KubeConfig {
            api: api.clone(),
            token_file: args.kube_token_file.clone(),
            ca_file: args.kube_ca_file.clone(),
            node: crate::sources::kube_node_name(),
        },
        None => KubeConfig::in_cluster()?,
    };
    if let Some(node) = &args.kube_node {
        config.node = node.clone();
    }
    Some(config)
}
