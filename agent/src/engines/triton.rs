//! NVIDIA Triton Inference Server: the generate extension over HTTP, and
//! the KServe v2 inference service over gRPC.

use super::{EngineSpec, apis::*};

pub static ENGINE: EngineSpec = EngineSpec {
    name: "triton",
    commands: &["tritonserver"],
    programs: &[],
    titles: &[],
    apis: &[&TRITON_GENERATE, &GRPC_INFERENCE],
    prefixes: &[],
};

#[cfg(test)]
mod tests {
    #[test]
    fn recognised_by_its_binary() {
        super::super::tests::recognised_as(
            "triton",
            &[(
                "tritonserver",
                "/opt/tritonserver/bin/tritonserver\0--model-repository=/models",
            )],
        );
    }
}
