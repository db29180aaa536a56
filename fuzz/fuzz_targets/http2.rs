//! HTTP/2 framing and HPACK, either side of the connection, and gRPC message
//! splitting of stream data, cut into captures with gaps.
#![no_main]

use arbitrary::Arbitrary;
use inferscope::decode::{
    Segment,
    http2::{GrpcSplitter, H2Event, H2Parser},
};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Capture<'a> {
    data: &'a [u8],
    missing: u16,
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    client_side: bool,
    captures: Vec<Capture<'a>>,
}

fuzz_target!(|input: Input<'_>| {
    let mut parser = H2Parser::new(input.client_side);
    let mut grpc = GrpcSplitter::default();
    let mut out = Vec::new();
    for (ts_ns, c) in (0u64..).zip(&input.captures) {
        let missing = usize::from(c.missing);
        parser.feed(
            Segment {
                ts_ns,
                data: c.data,
                missing,
            },
            &mut out,
        );
        for ev in out.drain(..) {
            if let H2Event::Data { data, missing, .. } = ev {
                grpc.feed(&data, missing, |_| {});
            }
        }
    }
});
