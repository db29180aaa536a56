//! The LLM readers: generation endpoints, the requested model (JSON, a
//! truncated body's scan, Triton's protobuf), and records with usage, whose
//! fast path and stream reader (the body, then each of `more` spliced into
//! it) must read every input as the typed (serde) reader does.
#![no_main]

use arbitrary::Arbitrary;
use inferscope::{derive::llm, engines};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    path: &'a str,
    triton_grpc: bool,
    body: &'a [u8],
    /// Bytes put in place of a piece of the body: (start, end, replacement).
    more: Vec<(usize, usize, &'a [u8])>,
}

fuzz_target!(|input: Input<'_>| {
    let path = if input.triton_grpc {
        "/inference.GRPCInferenceService/ModelInfer"
    } else {
        input.path
    };
    engines::operation(input.path);
    llm::requested_model(path, input.body);
    assert_eq!(llm::read_record(input.body), llm::read_record_typed(input.body));
    let mut stream = llm::StreamReader::default();
    assert_eq!(stream.read(input.body), llm::read_record_typed(input.body));
    for (start, end, replacement) in input.more {
        let start = start.min(input.body.len());
        let end = end.clamp(start, input.body.len());
        let record = [&input.body[..start], replacement, &input.body[end..]].concat();
        assert_eq!(stream.read(&record), llm::read_record_typed(&record));
    }
});
