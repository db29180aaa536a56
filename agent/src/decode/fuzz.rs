//! Property tests: the decoders and the request state machine take any bytes,
//! split anywhere, without panicking, and framing does not depend on how the
//! bytes were split into captures.

use proptest::prelude::*;

use crate::{
    clock::Clock,
    decode::{
        NetEvent, Segment,
        http1::{Http1Event, Http1Parser, Role},
        sse::{LineSplitter, SseSplitter},
    },
    derive::{llm, requests::RequestTracker},
};
use inferscope_shared::{NET_DATA, NET_RECV, NET_SEND, NetEventHeader};

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
        LineSplitter::default().feed(&bytes, |_| {});
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

    /// Where an in-place reader answers, it answers what feeding would have
    /// handed out, and feeding would have left the splitter as it was.
    #[test]
    fn whole_sse_events_and_lines_read_in_place_are_what_feeding_yields(
        pending in "(data: x\n|: c\n)?",
        bytes in "(data: ?|event: )?[a-z{}\":\r\n ]{0,14}(\n\n|\n|\r\n\r\n)?",
    ) {
        let mut s = SseSplitter::default();
        s.feed(pending.as_bytes(), |_| {});
        if let Some(data) = s.whole_event(bytes.as_bytes()) {
            let mut fed = Vec::new();
            s.feed(bytes.as_bytes(), |e| fed.push(e.to_vec()));
            prop_assert_eq!(&fed, &vec![data.to_vec()]);
            s.feed(b"data: next\n\n", |e| fed.push(e.to_vec()));
            prop_assert_eq!(&fed[1], &b"next".to_vec());
        }
        let mut l = LineSplitter::default();
        l.feed(pending.as_bytes(), |_| {});
        if let Some(line) = l.whole_line(bytes.as_bytes()) {
            let mut fed = Vec::new();
            l.feed(bytes.as_bytes(), |r| fed.push(r.to_vec()));
            prop_assert_eq!(fed, vec![line.to_vec()]);
        }
    }

    /// The same for a whole chunk at a chunk boundary: the payload is the body
    /// feeding yields, and the parser is left at the next chunk boundary.
    #[test]
    fn whole_chunks_read_in_place_are_what_feeding_yields(
        before in "([0-9a-f]{1,2}(\r\n[a-z]{0,3})?)?",
        chunk in "(0|1|2|a|1;x| 2|g)\r?\n[a-z\r\n]{0,2}(\r\n)?",
    ) {
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut p = Http1Parser::new(Role::Response);
        let mut out = Vec::new();
        let seg = |data| Segment { ts_ns: 0, data, missing: 0 };
        p.feed(seg(head), &mut out);
        p.feed(seg(before.as_bytes()), &mut out);
        if let Some(payload) = p.whole_chunk(seg(chunk.as_bytes())) {
            prop_assert!(before.is_empty(), "a chunk read in place while one was pending");
            out.clear();
            p.feed(seg(chunk.as_bytes()), &mut out);
            p.feed(seg(b"1\r\nz\r\n"), &mut out);
            let data = |d: &[u8]| Http1Event::Body { ts_ns: 0, data: d.to_vec(), missing: 0 };
            prop_assert_eq!(out, vec![data(payload), data(b"z")]);
        }
    }

    /// A token stream's requests come out the same whether each chunk is sent
    /// whole (read in place) or in two pieces (through the parsers' buffers).
    #[test]
    fn streamed_requests_do_not_depend_on_whether_chunks_are_sent_whole(
        records in prop::collection::vec(r#"(data: )?(\{"choices":\[\{"delta":\{"content":"[a-z]{0,2}"\}\}\]\}|\[DONE\]|x)(\n\n|\n)"#, 0..8),
        ndjson in any::<bool>(),
        cut in 1usize..6,
    ) {
        let content_type = if ndjson { "application/x-ndjson" } else { "text/event-stream" };
        let body = r#"{"model":"m","stream":true}"#;
        let request = format!("POST /v1/chat/completions HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        let head = format!("HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n");
        let run = |split: bool| {
            // (milliseconds, direction, bytes): both pieces of a split chunk in the same instant.
            let mut sends = vec![(1, NET_RECV, request.clone().into_bytes()), (2, NET_SEND, head.clone().into_bytes())];
            for (i, r) in records.iter().enumerate() {
                let chunk = format!("{:x}\r\n{r}\r\n", r.len()).into_bytes();
                let ms = 3 + i as u64;
                if split {
                    sends.push((ms, NET_SEND, chunk[..cut].to_vec()));
                    sends.push((ms, NET_SEND, chunk[cut..].to_vec()));
                } else {
                    sends.push((ms, NET_SEND, chunk));
                }
            }
            sends.push((99, NET_SEND, b"0\r\n\r\n".to_vec()));
            let mut tracker = RequestTracker::new(Clock::starting_at(std::time::UNIX_EPOCH), 0);
            let mut done = Vec::new();
            for (ms, direction, data) in &sends {
                let header = NetEventHeader {
                    ktime_ns: ms * 1_000_000,
                    sock_cookie: 1,
                    pid: 7,
                    len: data.len() as u32,
                    captured: data.len() as u32,
                    local_port: 80,
                    kind: NET_DATA,
                    direction: *direction,
                    ..NetEventHeader::default()
                };
                tracker.on_event(&NetEvent { header, data }, &mut done);
            }
            format!("{done:?}")
        };
        prop_assert_eq!(run(false), run(true));
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
