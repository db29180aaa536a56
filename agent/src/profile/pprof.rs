//! pprof output: the `profile.proto` of github.com/google/pprof, gzipped, as
//! `go tool pprof`, Pyroscope, Grafana and most profile viewers read it.
//! The messages are declared here with prost (a dozen fields): no build step.

use std::{
    collections::HashMap,
    io::{self, Write},
    time::{Duration, SystemTime},
};

use flate2::{Compression, write::GzEncoder};
use prost::Message as _;

use super::{ProfileKind, StackProfile};

#[derive(Clone, PartialEq, prost::Message)]
pub struct Profile {
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    #[prost(int64, tag = "12")]
    pub period: i64,
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueType {
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// Leaf first.
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Location {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Line {
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Function {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(int64, tag = "2")]
    pub name: i64,
}

/// `profile`, sampled over `duration` from `start`, as a pprof profile. CPU:
/// per stack its sample count and the CPU time it stands for; GPU calls: the
/// launches, or the time waited, estimated from 1 in `rate` calls.
pub fn profile(profile: &StackProfile, start: SystemTime, duration: Duration) -> Profile {
    let mut strings = vec![String::new()];
    let mut string_ids: HashMap<String, i64> = HashMap::new();
    let mut intern = |s: &str| -> i64 {
        if let Some(&id) = string_ids.get(s) {
            return id;
        }
        strings.push(s.to_string());
        let id = strings.len() as i64 - 1;
        string_ids.insert(s.to_string(), id);
        id
    };
    let mut value_type = |r#type: &str, unit: &str| ValueType {
        r#type: intern(r#type),
        unit: intern(unit),
    };
    let ((period_kind, period_unit), period) = profile.kind.period(profile.rate);
    let period_type = value_type(period_kind, period_unit);
    let (kind, unit) = profile.kind.sample_type();
    let mut sample_type = vec![value_type(kind, unit)];
    // CPU: each sample also stands for a period of CPU time; GPU calls: the
    // counts are scaled already, one sample per `rate` calls.
    if profile.kind == ProfileKind::Cpu {
        sample_type.push(value_type(period_kind, period_unit));
    }
    let values = |count: i64| match profile.kind {
        ProfileKind::Cpu => vec![count, count.saturating_mul(period)],
        _ => vec![count],
    };
    let comment = match profile.kind {
        ProfileKind::Cpu => Vec::new(),
        _ => vec![intern(&format!(
            "1 in {period} calls recorded its stack; values are scaled by {period}"
        ))],
    };
    // One function and one location per distinct frame name.
    let mut locations: HashMap<String, u64> = HashMap::new();
    let mut location = Vec::new();
    let mut function = Vec::new();
    let mut sample = Vec::new();
    for stack in &profile.stacks {
        let ids = stack
            .frames
            .iter()
            .rev()
            .map(|frame| {
                *locations.entry(frame.clone()).or_insert_with(|| {
                    let id = location.len() as u64 + 1;
                    function.push(Function {
                        id,
                        name: intern(frame),
                    });
                    location.push(Location {
                        id,
                        line: vec![Line { function_id: id }],
                    });
                    id
                })
            })
            .collect();
        let count = i64::try_from(stack.count).unwrap_or(i64::MAX);
        sample.push(Sample {
            location_id: ids,
            value: values(count),
        });
    }
    Profile {
        sample_type,
        sample,
        location,
        function,
        string_table: strings,
        time_nanos: start
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64),
        duration_nanos: duration.as_nanos() as i64,
        period_type: Some(period_type),
        period,
        comment,
    }
}

/// Writes `profile` gzipped, as pprof files are.
pub fn write(out: impl Write, profile: &Profile) -> io::Result<()> {
    let mut gz = GzEncoder::new(out, Compression::default());
    gz.write_all(&profile.encode_to_vec())?;
    gz.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Stack;

    fn types(p: &Profile, v: &[ValueType]) -> Vec<(String, String)> {
        v.iter()
            .map(|t| {
                (
                    p.string_table[t.r#type as usize].clone(),
                    p.string_table[t.unit as usize].clone(),
                )
            })
            .collect()
    }

    #[test]
    fn each_kind_of_profile_says_what_its_values_are() {
        let stacks = vec![Stack {
            pid: 1,
            frames: vec![
                "python (1)".into(),
                "step (a.py:3)".into(),
                "cudaLaunchKernel".into(),
            ],
            count: 640,
        }];
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1);
        let of = |kind, rate| {
            profile(
                &StackProfile {
                    kind,
                    rate,
                    stacks: stacks.clone(),
                },
                at,
                Duration::from_secs(2),
            )
        };
        let cpu = of(ProfileKind::Cpu, 100);
        assert_eq!(
            types(&cpu, &cpu.sample_type),
            [
                ("samples".into(), "count".into()),
                ("cpu".into(), "nanoseconds".into())
            ]
        );
        assert_eq!(
            (cpu.period, cpu.sample[0].value.clone()),
            (10_000_000, vec![640, 6_400_000_000])
        );
        assert!(cpu.comment.is_empty());

        let launches = of(ProfileKind::GpuLaunches, 64);
        assert_eq!(
            types(&launches, &launches.sample_type),
            [("gpu_launches".into(), "count".into())]
        );
        assert_eq!(
            (launches.period, launches.sample[0].value.clone()),
            (64, vec![640])
        );
        let comment = &launches.string_table[launches.comment[0] as usize];
        assert!(comment.contains("1 in 64"), "{comment}");
        // Leaf first, as pprof wants.
        let leaf = &launches.function[launches.sample[0].location_id[0] as usize - 1];
        assert_eq!(launches.string_table[leaf.name as usize], "cudaLaunchKernel");

        let waits = of(ProfileKind::GpuSyncWait, 64);
        assert_eq!(
            types(&waits, &waits.sample_type),
            [("gpu_sync_wait".into(), "nanoseconds".into())]
        );
        assert_eq!(waits.sample[0].value, [640]);
        assert_eq!(
            (waits.time_nanos, waits.duration_nanos),
            (1_000_000_000, 2_000_000_000)
        );
    }
}
