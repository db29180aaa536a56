//! The LLM readers: generation endpoints, the requested model (JSON, a
//! truncated body's scan, Triton's protobuf), and records with usage.
#![no_main]

use arbitrary::Arbitrary;
use inferscope::derive::llm;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    path: &'a str,
    triton_grpc: bool,
    body: &'a [u8],
}

fuzz_target!(|input: Input<'_>| {
    let path = if input.triton_grpc {
        "/inference.GRPCInferenceService/ModelInfer"
    } else {
        input.path
    };
    llm::is_generation_endpoint(input.path);
    llm::requested_model(path, input.body);
    llm::read_record(input.body);
});
