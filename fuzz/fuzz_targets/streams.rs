//! Streamed response bodies: server-sent events, NDJSON lines and gRPC
//! messages, cut anywhere, with capture gaps; every record read as an LLM record.
#![no_main]

use arbitrary::Arbitrary;
use inferscope::{
    decode::{
        http2::GrpcSplitter,
        sse::{LineSplitter, SseSplitter},
    },
    derive::llm,
};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Capture<'a> {
    data: &'a [u8],
    missing: u16,
}

fuzz_target!(|captures: Vec<Capture<'_>>| {
    let (mut sse, mut lines, mut grpc) = (
        SseSplitter::default(),
        LineSplitter::default(),
        GrpcSplitter::default(),
    );
    for c in &captures {
        if c.missing > 0 {
            sse.gap();
            lines.gap();
        }
        sse.feed(c.data, |rec| {
            llm::read_record(rec);
        });
        lines.feed(c.data, |rec| {
            llm::read_record(rec);
        });
        grpc.feed(c.data, usize::from(c.missing), |_| {});
    }
});
