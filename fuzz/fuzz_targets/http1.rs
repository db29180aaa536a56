//! HTTP/1.1 framing, both roles, the bytes cut into captures at fuzzer-chosen
//! places, some of them reported as not captured (truncation).
#![no_main]

use arbitrary::Arbitrary;
use inferscope::decode::{
    Segment,
    http1::{Http1Parser, Role},
};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Capture<'a> {
    data: &'a [u8],
    missing: u16,
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    response: bool,
    captures: Vec<Capture<'a>>,
}

fuzz_target!(|input: Input<'_>| {
    let role = if input.response {
        Role::Response
    } else {
        Role::Request
    };
    let mut parser = Http1Parser::new(role);
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
    }
    parser.close(u64::MAX, &mut out);
});
