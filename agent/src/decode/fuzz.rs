//! Property tests: the decoders and the request state machine take any bytes,
//! split anywhere, without panicking, and framing does not depend on how the
//! bytes were split into captures.

use proptest::prelude::*;

use crate::{
    clock::Clock,
    decode::{
        NetEvent, Segment,
        http1::{Http1Event, Http1Parser, Role},
        sse::SseSplitter,
    },
    derive::{llm, requests::RequestTracker},
};
use inferscope_shared::NetEventHeader;

fn feed_in_pieces(role: Role, bytes: &[u8], cuts: &[usize]) -> Vec<Http1Event> {
    let mut p = Http1Parser::new(role);
    let mut out = Vec::new();
    let mut at = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    for cut in cuts.into_iter().chain([bytes.len()]) {
        p.feed(
            Segment {
                ts_ns: 0,
                data: &bytes[at..cut.max(at)],
                missing: 0,
            },
            &mut out,
        );
        at = cut.max(at);
    }
    out
}

/// Body bytes concatenated, so that events compare whatever the split.
fn normalise(events: Vec<Http1Event>) -> Vec<Http1Event> {
    let mut out: Vec<Http1Event> = Vec::new();
    for e in events {
        match (out.last_mut(), e) {
            (Some(Http1Event::Body { data, .. }), Http1Event::Body { data: more, .. }) => data.extend(more),
            (_, e) => out.push(e),
        }
    }
    out
}

fn request_bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec!["GET", "POST", "PUT"]),
        "/[a-z/]{0,20}",
        prop::collection::vec(any::<u8>(), 0..200),
        any::<bool>(),
    )
        .prop_map(|(method, path, body, chunked)| {
            // One chunk, then the last chunk; an empty body is the last chunk alone.
            let chunked = chunked && !body.is_empty();
            let mut out = if chunked {
                format!(
                    "{method} {path} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
                    body.len()
                )
                .into_bytes()
            } else {
                format!(
                    "{method} {path} HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .into_bytes()
            };
            out.extend(&body);
            if chunked {
                out.extend(b"\r\n0\r\n\r\n");
            }
            out
        })
}

proptest! {
    #[test]
    fn any_bytes_split_anywhere_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600), cuts in prop::collection::vec(any::<usize>(), 0..8)) {
        feed_in_pieces(Role::Request, &bytes, &cuts);
        feed_in_pieces(Role::Response, &bytes, &cuts);
        SseSplitter::default().feed(&bytes, |_| {});
        crate::decode::sse::LineSplitter::default().feed(&bytes, |_| {});
        for client_side in [true, false] {
            let mut h2 = crate::decode::http2::H2Parser::new(client_side);
            let mut out = Vec::new();
            for part in bytes.chunks(cuts.first().map_or(64, |c| c % 64 + 1)) {
                h2.feed(Segment { ts_ns: 0, data: part, missing: 0 }, &mut out);
            }
        }
        crate::decode::http2::GrpcSplitter::default().feed(&bytes, cuts.len(), |_| {});
        prop_assert_eq!(llm::read_record(&bytes), llm::read_record_typed(&bytes));
        llm::requested_model("/v1/completions", &bytes);
    }

    #[test]
    fn pipelined_requests_frame_the_same_however_they_are_split(
        requests in prop::collection::vec(request_bytes(), 1..4),
        cuts in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        let wire: Vec<u8> = requests.concat();
        let whole = normalise(feed_in_pieces(Role::Request, &wire, &[]));
        let split = normalise(feed_in_pieces(Role::Request, &wire, &cuts));
        prop_assert_eq!(whole.iter().filter(|e| matches!(e, Http1Event::End { .. })).count(), requests.len());
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn sse_events_do_not_depend_on_the_split(stream in "(data: [a-z{}\":]{0,12}\r?\n|: c\n|\n){0,20}", cut in any::<usize>()) {
        let bytes = stream.as_bytes();
        let cut = cut % (bytes.len() + 1);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        SseSplitter::default().feed(bytes, |e| a.push(e.to_vec()));
        let mut s = SseSplitter::default();
        s.feed(&bytes[..cut], |e| b.push(e.to_vec()));
        s.feed(&bytes[cut..], |e| b.push(e.to_vec()));
        prop_assert_eq!(a, b);
    }

    #[test]
    fn the_request_tracker_survives_any_event_sequence(
        events in prop::collection::vec((0u64..4, 0u8..4, 0u8..2, any::<u8>(), prop::collection::vec(any::<u8>(), 0..300), 0u32..600), 0..40),
    ) {
        let mut tracker = RequestTracker::new(Clock::starting_at(std::time::UNIX_EPOCH), 0);
        let mut done = Vec::new();
        for (i, (cookie, kind, direction, flags, data, extra)) in events.into_iter().enumerate() {
            let header = NetEventHeader {
                ktime_ns: i as u64 * 1000,
                sock_cookie: cookie,
                pid: 7,
                len: data.len() as u32 + extra,
                captured: data.len() as u32,
                local_port: 80,
                kind,
                direction,
                flags,
                ..NetEventHeader::default()
            };
            tracker.on_event(&NetEvent { header, data: &data }, &mut done);
        }
        tracker.interval_end(1_000_000);
    }
}
