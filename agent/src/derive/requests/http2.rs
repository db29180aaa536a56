//! HTTP/2 connections (gRPC among them): requests and responses are streams,
//! answered in any order.

use std::collections::BTreeMap;

use inferscope_shared::NET_RECV;

use super::{
    Dropped, Finished,
    conn::{Conn, MAX_IN_FLIGHT},
    queue::{Queue, abandon, arrived},
    request::{BodyKind, InFlight, finish},
};
use crate::{
    decode::{
        Segment,
        http2::{GrpcSplitter, H2Event, H2Parser},
    },
    derive::llm,
    model::{Outcome, RequestDrop},
};

/// An HTTP/2 connection: a parser per direction, and its open streams.
pub(super) struct H2Conn {
    pub(super) client: H2Parser,
    pub(super) server: H2Parser,
    pub(super) streams: BTreeMap<u32, InFlight>,
}

impl Conn {
    /// HTTP/2: requests and responses are streams, answered in any order.
    pub(super) fn on_h2(
        &mut self,
        seg: Segment<'_>,
        direction: u8,
        queue: &mut Queue,
        done: &mut Finished<'_>,
        dropped: &mut Dropped,
    ) {
        let protocol = self.protocol();
        let Some(h2) = self.h2.as_mut() else { return };
        let mut events = Vec::new();
        let from_client = direction == NET_RECV;
        if from_client {
            h2.client.feed(seg, &mut events);
        } else {
            h2.server.feed(seg, &mut events);
        }
        for ev in events {
            match ev {
                H2Event::Headers {
                    ts_ns,
                    stream,
                    head,
                    grpc_status,
                    end_stream,
                } => {
                    if from_client {
                        if h2.streams.contains_key(&stream) {
                            continue; // trailers
                        }
                        let r = arrived(InFlight::new(head, ts_ns), queue);
                        if h2.streams.len() >= MAX_IN_FLIGHT {
                            abandon(r, ts_ns, RequestDrop::TooManyInFlight, queue, dropped);
                        } else {
                            h2.streams.insert(stream, r);
                        }
                        continue;
                    }
                    let Some(r) = h2.streams.get_mut(&stream) else {
                        continue;
                    };
                    if head.status != 0 {
                        r.status = head.status;
                        r.body = BodyKind::for_content_type(&head.content_type);
                    }
                    r.grpc_status = grpc_status.or(r.grpc_status);
                    if end_stream && let Some(r) = h2.streams.remove(&stream) {
                        finish(self.server, protocol, r, ts_ns, Outcome::Ok, queue, done);
                    }
                }
                H2Event::Data {
                    ts_ns,
                    stream,
                    data,
                    missing,
                    end_stream,
                } => {
                    let Some(r) = h2.streams.get_mut(&stream) else {
                        continue;
                    };
                    if from_client {
                        r.request_body(&data, missing);
                        if end_stream {
                            r.model = llm::requested_model(&r.path, &grpc_first_message(&r.request_body))
                                .or_else(|| llm::requested_model(&r.path, &r.request_body));
                            r.request_complete = true;
                        }
                    } else {
                        r.response_body(ts_ns, &data, missing, queue);
                        if end_stream && let Some(r) = h2.streams.remove(&stream) {
                            finish(self.server, protocol, r, ts_ns, Outcome::Ok, queue, done);
                        }
                    }
                }
                H2Event::Reset { ts_ns, stream } => {
                    if let Some(r) = h2.streams.remove(&stream) {
                        let outcome = if from_client {
                            Outcome::Cancelled
                        } else {
                            Outcome::Aborted
                        };
                        finish(self.server, protocol, r, ts_ns, outcome, queue, done);
                    }
                }
                H2Event::Desync { reason } => {
                    log::debug!(
                        "pid {} port {}: HTTP/2 not followed any more: {reason}",
                        self.server.0,
                        self.server.1
                    );
                    self.lose_place(seg.ts_ns, RequestDrop::Unframed, queue, dropped);
                    return;
                }
            }
        }
    }
}

/// The first gRPC message of a request body (the body itself when it is not gRPC-framed).
pub(super) fn grpc_first_message(body: &[u8]) -> Vec<u8> {
    let mut first = None;
    GrpcSplitter::default().feed(body, 0, |m| {
        first.get_or_insert_with(|| m.to_vec());
    });
    first.unwrap_or_default()
}
