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

use super::Stack;

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

/// `stacks` sampled at `frequency_hz` over `duration` from `start`, as a
/// pprof profile: per stack its sample count and the CPU time it stands for.
pub fn profile(stacks: &[Stack], frequency_hz: u64, start: SystemTime, duration: Duration) -> Profile {
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
    let period = 1_000_000_000 / frequency_hz.max(1) as i64;
    let sample_type = vec![
        ValueType {
            r#type: intern("samples"),
            unit: intern("count"),
        },
        ValueType {
            r#type: intern("cpu"),
            unit: intern("nanoseconds"),
        },
    ];
    let period_type = ValueType {
        r#type: intern("cpu"),
        unit: intern("nanoseconds"),
    };
    // One function and one location per distinct frame name.
    let mut locations: HashMap<String, u64> = HashMap::new();
    let mut location = Vec::new();
    let mut function = Vec::new();
    let mut sample = Vec::new();
    for stack in stacks {
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
        let count = stack.count as i64;
        sample.push(Sample {
            location_id: ids,
            value: vec![count, count * period],
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
    }
}

/// Writes `profile` gzipped, as pprof files are.
pub fn write(out: impl Write, profile: &Profile) -> io::Result<()> {
    let mut gz = GzEncoder::new(out, Compression::default());
    gz.write_all(&profile.encode_to_vec())?;
    gz.finish()?;
    Ok(())
}
