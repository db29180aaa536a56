//! Continuous profiles as OTLP profiles, to the collector the metrics go to:
//! the signal's `v1development` protocol (proto v1.10, which collectors
//! from 0.148 read), over gRPC (`ProfilesService/Export`) or HTTP/protobuf
//! (`/v1development/profiles`) as the metrics' protocol is, under the
//! standard `OTEL_EXPORTER_OTLP_*` settings (`_PROFILES_` ones first:
//! endpoint, headers, timeout, gzip compression).
//!
//! One request per period: the agent's resource, as the metrics carry it;
//! a profile per kind; each sample with the attributes of the process that
//! made it, as its metrics carry them (`k8s.pod.name`, `process.pid`, ...),
//! so that a backend can go from a metric's series to its stacks. Shipped as
//! every profile store is ([`super::ship`]), counted under
//! `inferscope.export.dropped_batches{exporter="otlp",signal="profiles"}`.

use std::{collections::HashMap, io, time::UNIX_EPOCH};

use opentelemetry_proto::tonic::{
    collector::profiles::v1development::{
        ExportProfilesServiceRequest, ExportProfilesServiceResponse,
        profiles_service_client::ProfilesServiceClient,
    },
    common::v1::{AnyValue, InstrumentationScope, any_value},
    profiles::v1development::{
        Function, KeyValueAndUnit, Line, Link, Location, Mapping, Profile, ProfilesDictionary,
        ResourceProfiles, Sample, ScopeProfiles, Stack, ValueType,
    },
    resource::v1::Resource,
};
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use prost::Message as _;

use super::{
    Destination, Period, StackProfile,
    ship::{HttpPush, Push, PushError, Shipper},
};
use crate::{
    model::AttributeValue,
    sinks::{
        Export, ExportHealth, OtlpConfig, OtlpProtocol, OtlpSignal, env_value as env, otlp_timeout, resource,
    },
};

/// The HTTP path, after the base endpoint.
const HTTP_PATH: &str = "/v1development/profiles";

/// Sends each period it is given.
pub struct OtlpProfiles {
    resource: Resource,
    endpoint: String,
    shipper: Shipper<ExportProfilesServiceRequest>,
}

impl OtlpProfiles {
    /// To where `config` sends the metrics, with the resource they carry.
    pub fn start(config: &OtlpConfig, node_name: Option<&str>, health: ExportHealth) -> io::Result<Self> {
        let headers = headers();
        let gzip = gzip();
        let timeout = otlp_timeout(OtlpSignal::Profiles);
        let export = Export::Otlp(OtlpSignal::Profiles);
        let (endpoint, shipper) = match config.protocol() {
            OtlpProtocol::Grpc => {
                let endpoint = endpoint(config, "http://localhost:4317", "");
                let push = GrpcPush::new(&endpoint, &headers, timeout, gzip)?;
                (endpoint, Shipper::start("otlp-profiles", export, push, health)?)
            }
            OtlpProtocol::HttpProtobuf => {
                let endpoint = endpoint(config, "http://localhost:4318", HTTP_PATH);
                let mut headers = headers;
                headers.push(("Content-Type".into(), "application/x-protobuf".into()));
                if gzip {
                    headers.push(("Content-Encoding".into(), "gzip".into()));
                }
                let http = HttpPush::new(endpoint.clone(), headers, timeout, |answer| {
                    accepted(ExportProfilesServiceResponse::decode(answer).unwrap_or_default())
                });
                let push = Encoded { http, gzip };
                (endpoint, Shipper::start("otlp-profiles", export, push, health)?)
            }
        };
        let resource = ResourceAttributesWithSchema::from(&resource(node_name));
        Ok(Self {
            resource: Resource {
                attributes: resource.attributes.0,
                ..Resource::default()
            },
            endpoint,
            shipper,
        })
    }
}

impl Destination for OtlpProfiles {
    fn deliver(&mut self, period: &Period<'_>) -> io::Result<()> {
        if let Some(request) = request(period, &self.resource) {
            self.shipper.ship(request)?;
        }
        Ok(())
    }

    fn close(&mut self) -> io::Result<()> {
        self.shipper.close()
    }

    fn describe(&self) -> String {
        format!("OTLP at {}", self.endpoint)
    }
}

/// The endpoint as OpenTelemetry's exporters resolve it: the command line's
/// base endpoint, else `OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT` as it is, else
/// `OTEL_EXPORTER_OTLP_ENDPOINT`, else the protocol's default; a base gets
/// the signal's `path`.
fn endpoint(config: &OtlpConfig, default: &str, path: &str) -> String {
    let base = |base: &str| format!("{}{path}", base.trim_end_matches('/'));
    if let Some(endpoint) = &config.endpoint {
        return base(endpoint);
    }
    if let Some(endpoint) = env("OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT") {
        return endpoint;
    }
    base(&env("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap_or_else(|| default.to_string()))
}

/// `OTEL_EXPORTER_OTLP_HEADERS`, then `OTEL_EXPORTER_OTLP_PROFILES_HEADERS`
/// (which wins for a name both set): `name=value` pairs, comma-separated,
/// values percent-encoded.
fn headers() -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = Vec::new();
    for variable in [
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_PROFILES_HEADERS",
    ] {
        for (name, value) in parse_headers(&env(variable).unwrap_or_default()) {
            headers.retain(|(known, _)| !known.eq_ignore_ascii_case(&name));
            headers.push((name, value));
        }
    }
    headers
}

fn parse_headers(list: &str) -> Vec<(String, String)> {
    list.split(',')
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            let value = percent_encoding::percent_decode_str(value.trim()).decode_utf8_lossy();
            Some((name.trim().to_string(), value.into_owned())).filter(|(name, _)| !name.is_empty())
        })
        .collect()
}

/// A collector's answer: whether it kept the whole request.
fn accepted(answer: ExportProfilesServiceResponse) -> Result<(), PushError> {
    match answer.partial_success {
        Some(partial) if partial.rejected_profiles > 0 => Err(PushError::Rejected {
            rejected: partial.rejected_profiles,
            message: PushError::bounded(&partial.error_message),
        }),
        _ => Ok(()),
    }
}

/// `OTEL_EXPORTER_OTLP_PROFILES_COMPRESSION`, else `OTEL_EXPORTER_OTLP_COMPRESSION`: `gzip` or `none`.
fn gzip() -> bool {
    env("OTEL_EXPORTER_OTLP_PROFILES_COMPRESSION")
        .or_else(|| env("OTEL_EXPORTER_OTLP_COMPRESSION"))
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"))
}

/// A request over HTTP: encoded (and gzipped, when asked) on the sending thread.
struct Encoded {
    http: HttpPush,
    gzip: bool,
}

impl Push<ExportProfilesServiceRequest> for Encoded {
    fn push(&mut self, request: &ExportProfilesServiceRequest) -> Result<(), PushError> {
        let body = request.encode_to_vec();
        if !self.gzip {
            return self.http.push(&body);
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let gzipped = io::Write::write_all(&mut gz, &body).and_then(|()| gz.finish());
        self.http.push(&gzipped.map_err(PushError::Encoding)?)
    }
}

/// A request over gRPC, on a runtime of the sending thread's own.
struct GrpcPush {
    runtime: tokio::runtime::Runtime,
    client: ProfilesServiceClient<tonic::transport::Channel>,
    metadata: tonic::metadata::MetadataMap,
}

impl GrpcPush {
    fn new(
        endpoint: &str,
        headers: &[(String, String)],
        timeout: std::time::Duration,
        gzip: bool,
    ) -> io::Result<Self> {
        let invalid = |e: tonic::transport::Error| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("OTLP endpoint {endpoint}: {e}"),
            )
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())
            .map_err(invalid)?
            .timeout(timeout);
        if endpoint.starts_with("https:") {
            channel = channel
                .tls_config(tonic::transport::ClientTlsConfig::new().with_enabled_roots())
                .map_err(invalid)?;
        }
        // Connects on first use, from the sending thread.
        let channel = {
            let _entered = runtime.enter();
            channel.connect_lazy()
        };
        let mut metadata = tonic::metadata::MetadataMap::new();
        for (name, value) in headers {
            match (
                tonic::metadata::MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes()),
                value.parse(),
            ) {
                (Ok(key), Ok(value)) => {
                    metadata.insert(key, value);
                }
                _ => log::warn!("OTLP header {name:?} is not valid gRPC metadata: not sent"),
            }
        }
        let mut client = ProfilesServiceClient::new(channel);
        if gzip {
            client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
        }
        Ok(Self {
            runtime,
            client,
            metadata,
        })
    }
}

impl Push<ExportProfilesServiceRequest> for GrpcPush {
    fn push(&mut self, request: &ExportProfilesServiceRequest) -> Result<(), PushError> {
        let mut call = tonic::Request::new(request.clone());
        *call.metadata_mut() = self.metadata.clone();
        let answer = self
            .runtime
            .block_on(self.client.export(call))
            .map_err(|status| PushError::Grpc {
                code: status.code(),
                message: PushError::bounded(status.message()),
            })?;
        accepted(answer.into_inner())
    }
}

/// A period as one request, or none when nothing was sampled.
fn request(period: &Period<'_>, resource: &Resource) -> Option<ExportProfilesServiceRequest> {
    let mut dictionary = Dictionary::new();
    let profiles: Vec<Profile> = period
        .delivered()
        .filter(|profile| !profile.stacks.is_empty())
        .map(|profile| dictionary.profile(profile, period))
        .collect();
    if profiles.is_empty() {
        return None;
    }
    Some(ExportProfilesServiceRequest {
        resource_profiles: vec![ResourceProfiles {
            resource: Some(resource.clone()),
            scope_profiles: vec![ScopeProfiles {
                scope: Some(InstrumentationScope {
                    name: "inferscope".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..InstrumentationScope::default()
                }),
                profiles,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
        dictionary: Some(dictionary.tables),
    })
}

/// The request's tables, each entry once, each table starting with its zero
/// value as the protocol requires.
struct Dictionary {
    tables: ProfilesDictionary,
    strings: HashMap<String, i32>,
    /// By frame name: a function and a location of its own.
    locations: HashMap<String, i32>,
    stacks: HashMap<Vec<i32>, i32>,
    attributes: HashMap<(&'static str, AttributeValue), i32>,
}

impl Dictionary {
    fn new() -> Self {
        Self {
            tables: ProfilesDictionary {
                mapping_table: vec![Mapping::default()],
                location_table: vec![Location::default()],
                function_table: vec![Function::default()],
                link_table: vec![Link::default()],
                string_table: vec![String::new()],
                attribute_table: vec![KeyValueAndUnit::default()],
                stack_table: vec![Stack::default()],
            },
            strings: HashMap::from([(String::new(), 0)]),
            locations: HashMap::new(),
            stacks: HashMap::new(),
            attributes: HashMap::new(),
        }
    }

    fn profile(&mut self, profile: &StackProfile, period: &Period<'_>) -> Profile {
        let (kind, unit) = profile.kind.sample_type();
        let ((period_kind, period_unit), every) = profile.kind.period(profile.rate);
        let mut workloads = HashMap::new();
        let samples = profile
            .stacks
            .iter()
            .map(|stack| {
                let attribute_indices = workloads
                    .entry(stack.pid)
                    .or_insert_with(|| {
                        period
                            .workload(stack.pid)
                            .attributes()
                            .into_iter()
                            .map(|(key, value)| self.attribute(key, value))
                            .collect::<Vec<i32>>()
                    })
                    .clone();
                Sample {
                    stack_index: self.stack(&stack.frames),
                    attribute_indices,
                    values: vec![i64::try_from(stack.count).unwrap_or(i64::MAX)],
                    ..Sample::default()
                }
            })
            .collect();
        Profile {
            sample_type: Some(self.value_type(kind, unit)),
            samples,
            time_unix_nano: period
                .start
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            duration_nano: u64::try_from(period.duration.as_nanos()).unwrap_or(u64::MAX),
            period_type: Some(self.value_type(period_kind, period_unit)),
            period: every,
            ..Profile::default()
        }
    }

    fn string(&mut self, s: &str) -> i32 {
        if let Some(&index) = self.strings.get(s) {
            return index;
        }
        let index = next_index(&self.tables.string_table);
        self.tables.string_table.push(s.to_string());
        self.strings.insert(s.to_string(), index);
        index
    }

    fn value_type(&mut self, kind: &str, unit: &str) -> ValueType {
        ValueType {
            type_strindex: self.string(kind),
            unit_strindex: self.string(unit),
        }
    }

    /// `frames`, root first, as a stack (leaf first, as the protocol has it).
    fn stack(&mut self, frames: &[String]) -> i32 {
        let locations: Vec<i32> = frames.iter().rev().map(|frame| self.location(frame)).collect();
        if let Some(&index) = self.stacks.get(&locations) {
            return index;
        }
        let index = next_index(&self.tables.stack_table);
        self.tables.stack_table.push(Stack {
            location_indices: locations.clone(),
        });
        self.stacks.insert(locations, index);
        index
    }

    fn location(&mut self, frame: &str) -> i32 {
        if let Some(&index) = self.locations.get(frame) {
            return index;
        }
        let name = self.string(frame);
        let function_index = next_index(&self.tables.function_table);
        self.tables.function_table.push(Function {
            name_strindex: name,
            system_name_strindex: name,
            ..Function::default()
        });
        let index = next_index(&self.tables.location_table);
        self.tables.location_table.push(Location {
            lines: vec![Line {
                function_index,
                ..Line::default()
            }],
            ..Location::default()
        });
        self.locations.insert(frame.to_string(), index);
        index
    }

    fn attribute(&mut self, key: &'static str, value: AttributeValue) -> i32 {
        if let Some(&index) = self.attributes.get(&(key, value.clone())) {
            return index;
        }
        let key_strindex = self.string(key);
        let index = next_index(&self.tables.attribute_table);
        self.tables.attribute_table.push(KeyValueAndUnit {
            key_strindex,
            value: Some(AnyValue {
                value: Some(match &value {
                    AttributeValue::Int(i) => any_value::Value::IntValue(*i),
                    AttributeValue::Text(s) => any_value::Value::StringValue(s.clone()),
                }),
            }),
            unit_strindex: 0,
        });
        self.attributes.insert((key, value), index);
        index
    }
}

/// The index the next entry of `table` gets (tables stay far below `i32::MAX`:
/// a period holds at most the kernel tables' stacks).
fn next_index<T>(table: &[T]) -> i32 {
    i32::try_from(table.len()).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use std::{
        collections::BTreeMap,
        time::{Duration, SystemTime},
    };

    use super::*;
    use crate::{
        model::{PodRef, ProcessIdentity},
        profile::{ProfileKind, Stack as NamedStack, Workload},
    };

    fn frames(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// The frames of `sample`, root first, read back through the tables.
    fn read_back(dictionary: &ProfilesDictionary, sample: &Sample) -> Vec<String> {
        let stack = &dictionary.stack_table[sample.stack_index as usize];
        let mut names: Vec<String> = stack
            .location_indices
            .iter()
            .map(|&l| {
                let function = dictionary.location_table[l as usize].lines[0].function_index;
                let name = dictionary.function_table[function as usize].name_strindex;
                dictionary.string_table[name as usize].clone()
            })
            .collect();
        names.reverse();
        names
    }

    #[test]
    fn a_period_is_one_request_with_shared_tables_and_each_samples_workload() {
        let workload = |pid, pod: Option<&str>| Workload {
            identity: ProcessIdentity {
                pid,
                comm: "python3".into(),
                exe: "/usr/bin/python3.12".into(),
                ..ProcessIdentity::default()
            },
            pod: pod.map(|name| PodRef {
                namespace: "inference".into(),
                name: name.into(),
                container: "engine".into(),
                owner: None,
            }),
            engine: None,
        };
        let workloads = BTreeMap::from([(7, workload(7, Some("vllm-0"))), (8, workload(8, None))]);
        let stack = |pid, names: &[&str], count| NamedStack {
            pid,
            frames: frames(names),
            count,
        };
        let profiles = [
            StackProfile {
                kind: ProfileKind::Cpu,
                rate: 49,
                stacks: vec![
                    stack(7, &["python3", "main", "forward"], 5),
                    stack(8, &["python3", "main", "forward"], 2),
                ],
            },
            StackProfile {
                kind: ProfileKind::GpuLaunches,
                rate: 64,
                stacks: vec![stack(7, &["python3", "main", "forward", "cudaLaunchKernel"], 128)],
            },
            // No waits this period: no profile of them.
            StackProfile {
                kind: ProfileKind::GpuSyncWait,
                rate: 64,
                stacks: Vec::new(),
            },
        ];
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let period = Period {
            start,
            duration: Duration::from_secs(15),
            profiles: &profiles,
            workloads: &workloads,
        };
        let request = request(&period, &Resource::default()).expect("a request");
        let dictionary = request.dictionary.as_ref().unwrap();
        // Every table starts with its zero value.
        assert_eq!(dictionary.string_table[0], "");
        assert_eq!(dictionary.stack_table[0], Stack::default());
        assert_eq!(dictionary.location_table[0], Location::default());
        assert_eq!(dictionary.function_table[0], Function::default());
        assert_eq!(dictionary.attribute_table[0], KeyValueAndUnit::default());
        let scope = &request.resource_profiles[0].scope_profiles[0];
        let [cpu, launches] = scope.profiles.as_slice() else {
            panic!("{} profiles", scope.profiles.len())
        };
        let text = |i: i32| dictionary.string_table[i as usize].as_str();
        let types = |p: &Profile| {
            let (s, t) = (p.sample_type.unwrap(), p.period_type.unwrap());
            [
                text(s.type_strindex),
                text(s.unit_strindex),
                text(t.type_strindex),
                text(t.unit_strindex),
            ]
        };
        assert_eq!(types(cpu), ["samples", "count", "cpu", "nanoseconds"]);
        assert_eq!(cpu.period, 1_000_000_000 / 49);
        assert_eq!(
            types(launches),
            ["gpu_launches", "count", "gpu_launches", "count"]
        );
        assert_eq!(cpu.time_unix_nano, 1_800_000_000 * 1_000_000_000);
        assert_eq!(cpu.duration_nano, 15_000_000_000);
        // The same stack of two processes: one stack, told apart by attributes.
        assert_eq!(cpu.samples[0].stack_index, cpu.samples[1].stack_index);
        assert_eq!(
            read_back(dictionary, &cpu.samples[0]),
            frames(&["python3", "main", "forward"])
        );
        assert_eq!(cpu.samples[0].values, [5]);
        assert_eq!(
            read_back(dictionary, &launches.samples[0]),
            frames(&["python3", "main", "forward", "cudaLaunchKernel"])
        );
        // Frames shared by both stacks are one location each.
        assert_eq!(dictionary.location_table.len(), 1 + 4);
        let attributes = |sample: &Sample| -> BTreeMap<String, String> {
            sample
                .attribute_indices
                .iter()
                .map(|&i| {
                    let a = &dictionary.attribute_table[i as usize];
                    let value = match a.value.as_ref().and_then(|v| v.value.as_ref()) {
                        Some(any_value::Value::StringValue(s)) => s.clone(),
                        Some(any_value::Value::IntValue(i)) => i.to_string(),
                        other => panic!("{other:?}"),
                    };
                    (text(a.key_strindex).to_string(), value)
                })
                .collect()
        };
        let in_pod = attributes(&cpu.samples[0]);
        assert_eq!(in_pod["k8s.pod.name"], "vllm-0");
        assert_eq!(in_pod["process.pid"], "7");
        let on_host = attributes(&cpu.samples[1]);
        assert_eq!(on_host["process.pid"], "8");
        assert!(!on_host.contains_key("k8s.pod.name"));
        assert_eq!(on_host["process.executable.name"], "python3.12");
    }

    #[test]
    fn a_period_without_samples_sends_nothing() {
        let profiles = [StackProfile {
            kind: ProfileKind::Cpu,
            rate: 49,
            stacks: Vec::new(),
        }];
        let period = Period {
            start: SystemTime::now(),
            duration: Duration::from_secs(15),
            profiles: &profiles,
            workloads: &BTreeMap::new(),
        };
        assert!(request(&period, &Resource::default()).is_none());
    }

    #[test]
    fn headers_are_pairs_with_percent_encoded_values() {
        assert_eq!(
            parse_headers("Authorization=Basic%20dXNlcg%3D%3D, x-scope-orgid = team-a,,junk"),
            [
                ("Authorization".to_string(), "Basic dXNlcg==".to_string()),
                ("x-scope-orgid".to_string(), "team-a".to_string()),
            ]
        );
    }

    #[test]
    fn a_collector_that_kept_part_of_a_request_says_so() {
        use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesPartialSuccess;
        assert!(accepted(ExportProfilesServiceResponse::default()).is_ok());
        let partial = ExportProfilesServiceResponse {
            partial_success: Some(ExportProfilesPartialSuccess {
                rejected_profiles: 2,
                error_message: "unknown sample type".into(),
            }),
        };
        assert!(matches!(
            accepted(partial),
            Err(PushError::Rejected { rejected: 2, .. })
        ));
    }
}
