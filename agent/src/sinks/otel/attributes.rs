//! Attributes of exported figures, in OpenTelemetry semantic-convention terms.
//!
//! Cardinality stays bounded: processes are keyed by pid (live ones, plus
//! exited ones for a few minutes), devices by UUID, servers by port, models by
//! name (at most [`MAX_MODELS`] distinct names, then `_OTHER`); never by
//! kernel name, path, request or connection.

use std::collections::BTreeSet;

use opentelemetry::KeyValue;

use crate::{
    engines,
    model::{AttributeValue, DeviceView, Outcome, PodRef, ProcessView, RequestRecord, Vendor},
};

/// Distinct `gen_ai.request.model` values exported before the rest become `_OTHER`:
/// the model name comes from request bodies, which clients choose.
pub const MAX_MODELS: usize = 64;

/// `process.*`, `container.id` and `k8s.*` of a process.
pub fn process(p: &ProcessView) -> Vec<KeyValue> {
    key_values(p.identity.attributes(p.pod.as_ref()))
}

/// `k8s.*` of a pod's container.
pub fn pod_attributes(pod: &PodRef) -> Vec<KeyValue> {
    key_values(pod.attributes())
}

fn key_values(attributes: Vec<(&'static str, AttributeValue)>) -> Vec<KeyValue> {
    attributes
        .into_iter()
        .map(|(key, value)| match value {
            AttributeValue::Int(i) => KeyValue::new(key, i),
            AttributeValue::Text(s) => KeyValue::new(key, s),
        })
        .collect()
}

/// The GenAI conventions' attributes of a request: `server.port`,
/// `gen_ai.operation.name`, `gen_ai.provider.name`, `gen_ai.request.model` (as `model` says).
pub fn request(r: &RequestRecord, model: Option<String>) -> Vec<KeyValue> {
    let mut attributes = vec![KeyValue::new("server.port", i64::from(r.port))];
    if let Some(operation) = engines::operation_name(&r.path) {
        attributes.push(KeyValue::new("gen_ai.operation.name", operation));
    }
    if let Some(engine) = &r.engine {
        attributes.push(KeyValue::new("gen_ai.provider.name", engine.name().to_string()));
    }
    if let Some(model) = model {
        attributes.push(KeyValue::new("gen_ai.request.model", model));
    }
    attributes
}

/// `error.type` of a request that did not succeed: its HTTP status, or how its connection ended.
pub fn error_type(r: &RequestRecord) -> Option<String> {
    match r.outcome {
        Outcome::Ok => None,
        Outcome::Error if r.status >= 400 => Some(r.status.to_string()),
        Outcome::Error => Some("_OTHER".into()),
        Outcome::Cancelled => Some("cancelled".into()),
        Outcome::Aborted => Some("aborted".into()),
    }
}

/// `hw.name` of the GPU at `index` (NVML's or ROCm SMI's order).
pub fn device_name(index: u32) -> String {
    format!("gpu{index}")
}

/// `hw.*` of a GPU, as the hardware conventions name them.
pub fn device(d: &DeviceView) -> Vec<KeyValue> {
    vec![
        KeyValue::new("hw.id", d.uuid.clone()),
        KeyValue::new("hw.type", "gpu"),
        KeyValue::new("hw.name", device_name(d.index)),
        KeyValue::new("hw.model", d.name.clone()),
        KeyValue::new(
            "hw.vendor",
            match d.vendor {
                Vendor::Nvidia => "NVIDIA",
                Vendor::Amd => "AMD",
            },
        ),
    ]
}

/// Model names seen so far, capped at [`MAX_MODELS`].
#[derive(Default)]
pub struct ModelNames {
    seen: BTreeSet<String>,
}

impl ModelNames {
    /// The name to export for `model`.
    pub fn name(&mut self, model: &str) -> String {
        if self.seen.contains(model) {
            return model.to_string();
        }
        if self.seen.len() < MAX_MODELS {
            self.seen.insert(model.to_string());
            return model.to_string();
        }
        "_OTHER".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_past_the_cap_are_other() {
        let mut names = ModelNames::default();
        for i in 0..MAX_MODELS {
            assert_eq!(names.name(&format!("m{i}")), format!("m{i}"));
        }
        assert_eq!(names.name("one-too-many"), "_OTHER");
        assert_eq!(names.name("m0"), "m0", "names seen before stay");
    }
}
