//! HTTP/2 framing for one direction of a cleartext (h2c) connection, as gRPC
//! servers speak it: frames, header blocks decoded with HPACK (`loona-hpack`;
//! one decoder per direction, as the protocol requires), and stream data as it
//! arrives. Bytes that were not captured inside a DATA payload are skipped by
//! count; anywhere else they make HPACK and framing unrecoverable: a desync.

use loona_hpack::Decoder;

use super::{Segment, http1::Head};

/// What a client sends first on an HTTP/2 connection.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum H2Event {
    /// A header block (request or response headers, or trailers).
    Headers {
        ts_ns: u64,
        stream: u32,
        head: Head,
        grpc_status: Option<u32>,
        end_stream: bool,
    },
    /// Stream data; `missing` counts bytes not captured just before these.
    Data {
        ts_ns: u64,
        stream: u32,
        data: Vec<u8>,
        missing: usize,
        end_stream: bool,
    },
    Reset {
        ts_ns: u64,
        stream: u32,
    },
    Desync {
        reason: &'static str,
    },
}

#[derive(Debug)]
enum State {
    /// The client preface still to come (bytes left).
    Preface(usize),
    FrameHeader,
    /// Inside a frame payload that is streamed (unpadded DATA).
    Data {
        stream: u32,
        left: usize,
        end_stream: bool,
    },
    /// Inside a frame payload that is collected whole.
    Collect {
        kind: u8,
        flags: u8,
        stream: u32,
        left: usize,
    },
}

pub struct H2Parser {
    state: State,
    buf: Vec<u8>,
    payload: Vec<u8>,
    hpack: Decoder<'static>,
    /// A header block waiting for its CONTINUATION frames: (stream, flags of HEADERS, bytes).
    block: Option<(u32, u8, Vec<u8>)>,
    desynced: bool,
}

impl std::fmt::Debug for H2Parser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Parser")
            .field("state", &self.state)
            .field("desynced", &self.desynced)
            .finish()
    }
}

impl H2Parser {
    /// `client_side`: parses what a client sends (starts with the preface).
    pub fn new(client_side: bool) -> Self {
        Self {
            state: if client_side {
                State::Preface(PREFACE.len())
            } else {
                State::FrameHeader
            },
            buf: Vec::new(),
            payload: Vec::new(),
            hpack: Decoder::new(),
            block: None,
            desynced: false,
        }
    }

    pub fn feed(&mut self, seg: Segment<'_>, out: &mut Vec<H2Event>) {
        if self.desynced {
            return;
        }
        self.buf.extend_from_slice(seg.data);
        let mut missing = seg.missing;
        while !self.desynced && self.step(seg.ts_ns, &mut missing, out) {}
        if missing > 0 && !self.desynced {
            self.desync("framing bytes were not captured", out);
        }
    }

    fn desync(&mut self, reason: &'static str, out: &mut Vec<H2Event>) {
        self.desynced = true;
        self.buf.clear();
        out.push(H2Event::Desync { reason });
    }

    fn step(&mut self, ts_ns: u64, missing: &mut usize, out: &mut Vec<H2Event>) -> bool {
        match self.state {
            State::Preface(left) => {
                let n = left.min(self.buf.len());
                let at = PREFACE.len() - left;
                if self.buf[..n] != PREFACE[at..at + n] {
                    self.desync("not an HTTP/2 preface", out);
                    return false;
                }
                self.buf.drain(..n);
                self.state = if n == left {
                    State::FrameHeader
                } else {
                    State::Preface(left - n)
                };
                n > 0
            }
            State::FrameHeader => {
                if self.buf.len() < 9 {
                    return false;
                }
                let h: Vec<u8> = self.buf.drain(..9).collect();
                let len = (h[0] as usize) << 16 | (h[1] as usize) << 8 | h[2] as usize;
                let (kind, flags) = (h[3], h[4]);
                let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                self.state = if kind == DATA && flags & PADDED == 0 {
                    State::Data {
                        stream,
                        left: len,
                        end_stream: flags & END_STREAM != 0,
                    }
                } else {
                    self.payload.clear();
                    State::Collect {
                        kind,
                        flags,
                        stream,
                        left: len,
                    }
                };
                true
            }
            State::Data {
                stream,
                left,
                end_stream,
            } => {
                let n = left.min(self.buf.len());
                let (data, gap) = if n > 0 {
                    (self.buf.drain(..n).collect(), 0)
                } else {
                    let gap = left.min(*missing);
                    *missing -= gap;
                    (Vec::new(), gap)
                };
                let left = left - n - gap;
                if n + gap == 0 && left > 0 {
                    return false;
                }
                let end = end_stream && left == 0;
                out.push(H2Event::Data {
                    ts_ns,
                    stream,
                    data,
                    missing: gap,
                    end_stream: end,
                });
                self.state = if left == 0 {
                    State::FrameHeader
                } else {
                    State::Data {
                        stream,
                        left,
                        end_stream,
                    }
                };
                true
            }
            State::Collect {
                kind,
                flags,
                stream,
                left,
            } => {
                let n = left.min(self.buf.len());
                self.payload.extend(self.buf.drain(..n));
                if n < left {
                    self.state = State::Collect {
                        kind,
                        flags,
                        stream,
                        left: left - n,
                    };
                    return false;
                }
                self.state = State::FrameHeader;
                let payload = std::mem::take(&mut self.payload);
                self.frame(ts_ns, kind, flags, stream, payload, out);
                true
            }
        }
    }

    fn frame(
        &mut self,
        ts_ns: u64,
        kind: u8,
        flags: u8,
        stream: u32,
        payload: Vec<u8>,
        out: &mut Vec<H2Event>,
    ) {
        match kind {
            DATA => match unpad(&payload, flags) {
                Some(data) => out.push(H2Event::Data {
                    ts_ns,
                    stream,
                    data: data.to_vec(),
                    missing: 0,
                    end_stream: flags & END_STREAM != 0,
                }),
                None => self.desync("bad DATA padding", out),
            },
            HEADERS => {
                let Some(mut block) = unpad(&payload, flags) else {
                    return self.desync("bad HEADERS padding", out);
                };
                if flags & PRIORITY != 0 {
                    block = block.get(5..).unwrap_or_default();
                }
                self.block = Some((stream, flags, block.to_vec()));
                if flags & END_HEADERS != 0 {
                    self.end_block(ts_ns, out);
                }
            }
            CONTINUATION => match &mut self.block {
                Some((s, _, block)) if *s == stream => {
                    block.extend_from_slice(&payload);
                    if flags & END_HEADERS != 0 {
                        self.end_block(ts_ns, out);
                    }
                }
                _ => self.desync("CONTINUATION without HEADERS", out),
            },
            RST_STREAM => out.push(H2Event::Reset { ts_ns, stream }),
            // SETTINGS, PING, WINDOW_UPDATE, PRIORITY, GOAWAY, PUSH_PROMISE: nothing a metric needs.
            _ => {}
        }
    }

    fn end_block(&mut self, ts_ns: u64, out: &mut Vec<H2Event>) {
        let Some((stream, flags, block)) = self.block.take() else {
            return;
        };
        let Ok(headers) = self.hpack.decode(&block) else {
            return self.desync("HPACK", out);
        };
        let mut head = Head::default();
        let mut grpc_status = None;
        for (name, value) in headers {
            let value = String::from_utf8_lossy(&value).into_owned();
            match name.as_slice() {
                b":method" => head.method = value,
                b":path" => head.path = value,
                b":status" => head.status = value.parse().unwrap_or(0),
                b"content-type" => head.content_type = value.to_ascii_lowercase(),
                b"grpc-status" => grpc_status = value.parse().ok(),
                _ => {}
            }
        }
        out.push(H2Event::Headers {
            ts_ns,
            stream,
            head,
            grpc_status,
            end_stream: flags & END_STREAM != 0,
        });
    }
}

/// The payload without its padding, when the PADDED flag is set.
fn unpad(payload: &[u8], flags: u8) -> Option<&[u8]> {
    if flags & PADDED == 0 {
        return Some(payload);
    }
    let (&pad, rest) = payload.split_first()?;
    rest.get(..rest.len().checked_sub(pad as usize)?)
}

/// Splits gRPC's length-prefixed messages (1 byte compressed flag, 4 bytes length) out of stream data.
#[derive(Debug, Default)]
pub struct GrpcSplitter {
    buf: Vec<u8>,
    /// Bytes of a message still to skip after a capture gap.
    skip: usize,
    lost: bool,
}

impl GrpcSplitter {
    pub fn feed(&mut self, data: &[u8], missing: usize, mut message: impl FnMut(&[u8])) {
        if self.lost {
            return;
        }
        if missing > 0 {
            // Bytes inside a message can be skipped if we know where it ends; else give up.
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
                let have = self.buf.len() - 5;
                if missing <= len - have.min(len) {
                    message(&[]); // counted, though unread
                    self.skip = len - have - missing;
                    self.buf.clear();
                } else {
                    self.lost = true;
                    return;
                }
            } else {
                self.lost = true;
                return;
            }
        }
        let mut data = data;
        if self.skip > 0 {
            let n = self.skip.min(data.len());
            self.skip -= n;
            data = &data[n..];
        }
        self.buf.extend_from_slice(data);
        while self.buf.len() >= 5 {
            let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
            if self.buf.len() < 5 + len {
                break;
            }
            message(&self.buf[5..5 + len]);
            self.buf.drain(..5 + len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loona_hpack::Encoder;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend(stream.to_be_bytes());
        f.extend(payload);
        f
    }

    fn grpc(message: &[u8]) -> Vec<u8> {
        let mut m = vec![0];
        m.extend((message.len() as u32).to_be_bytes());
        m.extend(message);
        m
    }

    #[test]
    fn a_grpc_call_split_anywhere_yields_its_headers_messages_and_trailers() {
        let mut enc = Encoder::new();
        let mut wire = PREFACE.to_vec();
        wire.extend(frame(4, 0, 0, &[])); // SETTINGS
        let req = enc.encode([
            (&b":method"[..], &b"POST"[..]),
            (b":path", b"/svc/Generate"),
            (b"content-type", b"application/grpc"),
        ]);
        wire.extend(frame(HEADERS, END_HEADERS, 1, &req));
        wire.extend(frame(DATA, END_STREAM, 1, &grpc(b"\x0a\x04smol")));
        for split in 0..wire.len() {
            let mut p = H2Parser::new(true);
            let mut out = Vec::new();
            for part in [&wire[..split], &wire[split..]] {
                p.feed(
                    Segment {
                        ts_ns: 1,
                        data: part,
                        missing: 0,
                    },
                    &mut out,
                );
            }
            let paths: Vec<_> = out
                .iter()
                .filter_map(|e| match e {
                    H2Event::Headers { head, .. } => Some(head.path.clone()),
                    _ => None,
                })
                .collect();
            assert_eq!(paths, ["/svc/Generate"], "split {split}: {out:?}");
            let mut messages = Vec::new();
            let mut g = GrpcSplitter::default();
            for e in &out {
                if let H2Event::Data { data, .. } = e {
                    g.feed(data, 0, |m| messages.push(m.to_vec()));
                }
            }
            assert_eq!(messages, [b"\x0a\x04smol".to_vec()], "split {split}");
        }
    }

    #[test]
    fn trailers_carry_the_grpc_status() {
        let mut enc = Encoder::new();
        let mut wire = frame(
            HEADERS,
            END_HEADERS,
            3,
            &enc.encode([(&b":status"[..], &b"200"[..])]),
        );
        wire.extend(frame(DATA, 0, 3, &grpc(b"tok")));
        wire.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            3,
            &enc.encode([(&b"grpc-status"[..], &b"13"[..])]),
        ));
        let mut p = H2Parser::new(false);
        let mut out = Vec::new();
        p.feed(
            Segment {
                ts_ns: 1,
                data: &wire,
                missing: 0,
            },
            &mut out,
        );
        assert!(
            matches!(
                out.last(),
                Some(H2Event::Headers {
                    grpc_status: Some(13),
                    end_stream: true,
                    ..
                })
            ),
            "{out:?}"
        );
    }

    #[test]
    fn garbage_is_a_desync() {
        let mut p = H2Parser::new(true);
        let mut out = Vec::new();
        p.feed(
            Segment {
                ts_ns: 1,
                data: b"GET / HTTP/1.1\r\n\r\n",
                missing: 0,
            },
            &mut out,
        );
        assert!(matches!(out.as_slice(), [H2Event::Desync { .. }]));
    }
}
