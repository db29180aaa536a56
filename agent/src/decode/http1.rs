//! HTTP/1.1 message framing for one direction of a connection: heads, bodies
//! (Content-Length, chunked, or until close), keep-alive and pipelining.
//! Request heads are parsed with `httparse`; body bytes pass through as they
//! arrive, de-chunked, with the timestamp of the segment that carried them.

/// What a request or response head says that matters here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Head {
    /// Request method, or empty for a response.
    pub method: String,
    /// Request path, or empty for a response.
    pub path: String,
    /// Response status, 0 for a request.
    pub status: u16,
    pub content_type: String,
    pub chunked: bool,
    pub content_length: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Http1Event {
    Head {
        ts_ns: u64,
        head: Head,
    },
    /// Body bytes (de-chunked); `missing` counts body bytes not captured just before these.
    Body {
        ts_ns: u64,
        data: Vec<u8>,
        missing: usize,
    },
    /// The message is complete.
    End {
        ts_ns: u64,
    },
    /// The stream cannot be followed from here (garbage, or a gap in framing
    /// bytes); the parser waits for a capture that starts a new message.
    Desync {
        reason: &'static str,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Parses requests (what a server receives).
    Request,
    /// Parses responses (what a server sends).
    Response,
}

#[derive(Debug)]
enum Body {
    None,
    Length(u64),
    /// Inside chunked framing: `ChunkData(n)` bytes of data left in the current chunk.
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd,
    Trailer,
    UntilClose,
}

/// Most header bytes buffered while waiting for the end of a head, or of a chunk-framing line.
const MAX_HEAD: usize = 64 * 1024;

/// Buffer capacity kept between messages; a larger one (a big head) is released.
const KEEP_CAPACITY: usize = 16 * 1024;

#[derive(Debug)]
pub struct Http1Parser {
    role: Role,
    /// Bytes received and not yet framed start at `buf[start]`: taking bytes
    /// moves `start`, and the buffer is compacted once per segment, not per take.
    buf: Vec<u8>,
    start: usize,
    body: Body,
    /// Lost track of framing: waiting for a capture that starts a message.
    desynced: bool,
}

impl Http1Parser {
    pub fn new(role: Role) -> Self {
        Self {
            role,
            buf: Vec::new(),
            start: 0,
            body: Body::None,
            desynced: false,
        }
    }

    /// Feeds one segment; appends what it completes to `out`.
    pub fn feed(&mut self, seg: super::Segment<'_>, out: &mut Vec<Http1Event>) {
        if self.desynced {
            // Clients and servers write a message's head with its first write,
            // so a capture that starts like one is where framing resumes.
            if !self.starts_message(seg.data) {
                return;
            }
            self.desynced = false;
            self.body = Body::None;
        }
        self.buf.extend_from_slice(seg.data);
        let mut missing = seg.missing;
        loop {
            let progressed = match self.body {
                Body::None => self.head(seg.ts_ns, out),
                _ => self.body_bytes(seg.ts_ns, &mut missing, out),
            };
            if self.desynced || !progressed {
                break;
            }
        }
        if missing > 0 && !self.desynced {
            // Uncaptured bytes inside a head or chunk framing: we can no longer frame.
            self.desync("framing bytes were not captured", out);
        }
        self.buf.drain(..self.start);
        self.start = 0;
        if self.buf.is_empty() && self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::new();
        }
    }

    /// The payload of `seg` if it is exactly one whole chunk of data arriving
    /// at a chunk boundary with nothing pending, as a streaming server writes
    /// each token: feeding it would leave the parser as it is and yield this
    /// payload, so a caller can read it in place instead. `None` otherwise
    /// (the segment is then for `feed`).
    pub fn whole_chunk<'a>(&self, seg: super::Segment<'a>) -> Option<&'a [u8]> {
        if self.desynced
            || !matches!(self.body, Body::ChunkSize)
            || self.buf.len() > self.start
            || seg.missing > 0
        {
            return None;
        }
        let data = seg.data;
        let end = crlf_line_end(data)?;
        let size = usize::try_from(chunk_size(&data[..end])?).ok()?;
        let payload = data.get(end + 2..)?.strip_suffix(b"\r\n")?;
        (size > 0 && payload.len() == size).then_some(payload)
    }

    /// What is received and not yet framed.
    fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
    }

    /// Stops following the stream until a capture starts a new message: bytes
    /// of this direction were lost, or the other direction lost its place.
    pub fn resync(&mut self) {
        self.desynced = true;
        self.buf = Vec::new();
        self.start = 0;
    }

    /// Whether `data` begins the way a message of this role begins: a method
    /// token and a space, or an HTTP/1 status line.
    fn starts_message(&self, data: &[u8]) -> bool {
        match self.role {
            Role::Request => {
                let method = data.iter().take_while(|b| b.is_ascii_uppercase()).count();
                (3..=16).contains(&method) && data.get(method) == Some(&b' ')
            }
            Role::Response => data.starts_with(b"HTTP/1."),
        }
    }

    /// The peer closed the connection: a close-delimited body ends here.
    pub fn close(&mut self, ts_ns: u64, out: &mut Vec<Http1Event>) {
        if matches!(self.body, Body::UntilClose) {
            out.push(Http1Event::End { ts_ns });
            self.body = Body::None;
        }
    }

    fn desync(&mut self, reason: &'static str, out: &mut Vec<Http1Event>) {
        self.resync();
        out.push(Http1Event::Desync { reason });
    }

    fn head(&mut self, ts_ns: u64, out: &mut Vec<Http1Event>) -> bool {
        // Tolerate the blank lines some clients send between pipelined requests.
        let skip = self
            .pending()
            .iter()
            .take_while(|b| **b == b'\r' || **b == b'\n')
            .count();
        self.consume(skip);
        if self.pending().is_empty() {
            return false;
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut head = Head::default();
        let parsed = match self.role {
            Role::Request => {
                let mut req = httparse::Request::new(&mut headers);
                let status = req.parse(self.pending());
                head.method = req.method.unwrap_or_default().to_string();
                head.path = req.path.unwrap_or_default().to_string();
                status
            }
            Role::Response => {
                let mut res = httparse::Response::new(&mut headers);
                let status = res.parse(self.pending());
                head.status = res.code.unwrap_or(0);
                status
            }
        };
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if self.pending().len() <= MAX_HEAD => return false,
            Ok(httparse::Status::Partial) => {
                self.desync("head larger than 64 KiB", out);
                return false;
            }
            Err(_) => {
                self.desync("not HTTP/1.x", out);
                return false;
            }
        };
        // Only the headers that matter are read: the others each made a String for nothing.
        let value = |v: &[u8]| String::from_utf8_lossy(v).trim().to_ascii_lowercase();
        for h in headers.iter().take_while(|h| !h.name.is_empty()) {
            if h.name.eq_ignore_ascii_case("content-type") {
                head.content_type = value(h.value);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                head.chunked = value(h.value).split(',').any(|v| v.trim() == "chunked");
            } else if h.name.eq_ignore_ascii_case("content-length") {
                head.content_length = value(h.value).parse().ok();
            }
        }
        self.consume(len);
        self.body = if head.chunked {
            Body::ChunkSize
        } else if let Some(n) = head.content_length {
            Body::Length(n)
        } else if self.role == Role::Response && !no_body_status(head.status) {
            Body::UntilClose
        } else {
            Body::Length(0)
        };
        out.push(Http1Event::Head { ts_ns, head });
        true
    }

    fn body_bytes(&mut self, ts_ns: u64, missing: &mut usize, out: &mut Vec<Http1Event>) -> bool {
        match self.body {
            Body::Length(0) => {
                self.body = Body::None;
                out.push(Http1Event::End { ts_ns });
                true
            }
            Body::Length(left) => self.counted_data(left, Body::Length, missing, ts_ns, out),
            Body::UntilClose => {
                let (taken, gap) = self.take_data(u64::MAX, missing, ts_ns, out);
                taken + gap > 0
            }
            Body::ChunkData(0) => {
                self.body = Body::ChunkDataEnd;
                true
            }
            Body::ChunkData(left) => self.counted_data(left, Body::ChunkData, missing, ts_ns, out),
            Body::ChunkDataEnd => match self.line(<[u8]>::is_empty) {
                Some(true) => {
                    self.body = Body::ChunkSize;
                    true
                }
                Some(_) => {
                    self.desync("chunk not followed by CRLF", out);
                    false
                }
                None => self.no_line_yet(out),
            },
            Body::ChunkSize => match self.line(chunk_size) {
                Some(size) => {
                    match size {
                        Some(0) => self.body = Body::Trailer,
                        Some(n) => self.body = Body::ChunkData(n),
                        None => self.desync("bad chunk size", out),
                    }
                    !self.desynced
                }
                None => self.no_line_yet(out),
            },
            Body::Trailer => match self.line(<[u8]>::is_empty) {
                Some(true) => {
                    self.body = Body::None;
                    out.push(Http1Event::End { ts_ns });
                    true
                }
                Some(_) => true,
                None => self.no_line_yet(out),
            },
            Body::None => false,
        }
    }

    /// Takes body bytes of a part of known length (`left`), then records what is
    /// left of it with `state`; false when nothing could be taken.
    fn counted_data(
        &mut self,
        left: u64,
        state: fn(u64) -> Body,
        missing: &mut usize,
        ts_ns: u64,
        out: &mut Vec<Http1Event>,
    ) -> bool {
        let (taken, gap) = self.take_data(left, missing, ts_ns, out);
        if taken == 0 && gap == 0 {
            return false;
        }
        self.body = state(left - taken - gap);
        true
    }

    /// Takes up to `limit` body bytes from the buffer (or, once it is empty, from
    /// the uncaptured `missing` ones); returns (taken, skipped).
    fn take_data(
        &mut self,
        limit: u64,
        missing: &mut usize,
        ts_ns: u64,
        out: &mut Vec<Http1Event>,
    ) -> (u64, u64) {
        let n = (self.pending().len() as u64).min(limit) as usize;
        if n > 0 {
            let data = self.pending()[..n].to_vec();
            self.consume(n);
            out.push(Http1Event::Body {
                ts_ns,
                data,
                missing: 0,
            });
            return (n as u64, 0);
        }
        let gap = (*missing as u64).min(limit);
        if gap > 0 {
            *missing -= gap as usize;
            out.push(Http1Event::Body {
                ts_ns,
                data: Vec::new(),
                missing: gap as usize,
            });
        }
        (0, gap)
    }

    /// Waits for the rest of a chunk-framing line, unless it is already longer
    /// than any real one: then the stream is not HTTP, and buffering stops.
    fn no_line_yet(&mut self, out: &mut Vec<Http1Event>) -> bool {
        if self.pending().len() > MAX_HEAD {
            self.desync("chunk framing line longer than 64 KiB", out);
        }
        false
    }

    /// Reads a CRLF-terminated line from the buffer with `read` (it sees the
    /// line without its CRLF), then consumes it; `None` until the CRLF arrived.
    fn line<T>(&mut self, read: impl FnOnce(&[u8]) -> T) -> Option<T> {
        let pending = self.pending();
        let end = crlf_line_end(pending)?;
        let value = read(&pending[..end]);
        self.consume(end + 2);
        Some(value)
    }
}

/// Where the first CRLF-terminated line of `bytes` ends (its CR's index): the
/// first LF preceded by a CR. A one-byte search: memmem would build a searcher
/// per call.
fn crlf_line_end(bytes: &[u8]) -> Option<usize> {
    Some(memchr::memchr_iter(b'\n', bytes).find(|&i| i > 0 && bytes[i - 1] == b'\r')? - 1)
}

/// A chunk-size line's size: hex digits before any `;` extension, whitespace
/// around them allowed (RFC 9112 §7.1). Read as bytes: one is read per token.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let size = line.split(|&b| b == b';').next()?.trim_ascii();
    if size.is_empty() {
        return None;
    }
    size.iter().try_fold(0u64, |n, &b| {
        n.checked_mul(16)?
            .checked_add(u64::from((b as char).to_digit(16)?))
    })
}

fn no_body_status(status: u16) -> bool {
    (100..200).contains(&status) || status == 204 || status == 304
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Segment;

    fn feed_all(role: Role, parts: &[&[u8]]) -> Vec<Http1Event> {
        let mut p = Http1Parser::new(role);
        let mut out = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            p.feed(
                Segment {
                    ts_ns: i as u64,
                    data: part,
                    missing: 0,
                },
                &mut out,
            );
        }
        out
    }

    fn bodies(events: &[Http1Event]) -> Vec<u8> {
        events
            .iter()
            .filter_map(|e| match e {
                Http1Event::Body { data, .. } => Some(data.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    #[test]
    fn pipelined_requests_split_anywhere_come_out_whole_and_in_order() {
        let wire = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n{\"a\":\"bcd\"}GET /health HTTP/1.1\r\n\r\n";
        for split in 1..wire.len() {
            let events = feed_all(Role::Request, &[&wire[..split], &wire[split..]]);
            let heads: Vec<_> = events
                .iter()
                .filter_map(|e| match e {
                    Http1Event::Head { head, .. } => Some((head.method.clone(), head.path.clone())),
                    _ => None,
                })
                .collect();
            assert_eq!(
                heads,
                [
                    ("POST".into(), "/v1/chat/completions".into()),
                    ("GET".into(), "/health".into())
                ]
            );
            assert_eq!(bodies(&events), b"{\"a\":\"bcd\"}");
            assert_eq!(
                events
                    .iter()
                    .filter(|e| matches!(e, Http1Event::End { .. }))
                    .count(),
                2,
                "split {split}"
            );
        }
    }

    #[test]
    fn chunked_response_is_dechunked_with_each_chunks_timestamp() {
        let events = feed_all(
            Role::Response,
            &[
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
                b"6\r\ndata: \r\n",
                b"3;ext=1\r\nabc\r\n0\r\n\r\n",
            ],
        );
        let Http1Event::Head { head, .. } = &events[0] else {
            panic!("{events:?}")
        };
        assert_eq!(
            (head.status, head.chunked, head.content_type.as_str()),
            (200, true, "text/event-stream")
        );
        assert_eq!(bodies(&events), b"data: abc");
        assert!(events.contains(&Http1Event::Body {
            ts_ns: 2,
            data: b"abc".to_vec(),
            missing: 0
        }));
        assert_eq!(events.last(), Some(&Http1Event::End { ts_ns: 2 }));
    }

    #[test]
    fn uncaptured_body_bytes_are_skipped_and_counted_without_losing_the_next_message() {
        let mut p = Http1Parser::new(Role::Response);
        let mut out = Vec::new();
        p.feed(
            Segment {
                ts_ns: 1,
                data: b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
                missing: 7,
            },
            &mut out,
        );
        p.feed(
            Segment {
                ts_ns: 2,
                data: b"HTTP/1.1 204 No Content\r\n\r\n",
                missing: 0,
            },
            &mut out,
        );
        assert!(
            out.contains(&Http1Event::Body {
                ts_ns: 1,
                data: Vec::new(),
                missing: 7
            }),
            "{out:?}"
        );
        assert_eq!(
            out.iter().filter(|e| matches!(e, Http1Event::End { .. })).count(),
            2,
            "{out:?}"
        );
    }

    #[test]
    fn chunk_sizes_are_hex_digits_before_any_extension() {
        assert_eq!(chunk_size(b"1a"), Some(26));
        assert_eq!(chunk_size(b" 3 ;name=value"), Some(3));
        assert_eq!(chunk_size(b"ffffffffffffffff"), Some(u64::MAX));
        for bad in [&b""[..], b"+3", b"-1", b"g", b"1 2", b";3", b"10000000000000000"] {
            assert_eq!(chunk_size(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_whole_chunk_at_a_boundary_is_read_in_place_and_anything_else_is_left_to_feed() {
        let mut p = Http1Parser::new(Role::Response);
        let seg = |data| Segment {
            ts_ns: 0,
            data,
            missing: 0,
        };
        p.feed(
            seg(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            &mut Vec::new(),
        );
        assert_eq!(p.whole_chunk(seg(b"3\r\nabc\r\n")), Some(&b"abc"[..]));
        // The last chunk ends the message; a short or long one, or bytes not captured, are framed by feed.
        for other in [&b"0\r\n\r\n"[..], b"3\r\nab\r\n", b"3\r\nabcd\r\n", b"3\nabc\r\n"] {
            assert_eq!(
                p.whole_chunk(seg(other)),
                None,
                "{:?}",
                String::from_utf8_lossy(other)
            );
        }
        let uncaptured = Segment {
            missing: 1,
            ..seg(b"3\r\nabc\r\n")
        };
        assert_eq!(p.whole_chunk(uncaptured), None);
        // Half a size line pending: not at a boundary.
        p.feed(seg(b"1"), &mut Vec::new());
        assert_eq!(p.whole_chunk(seg(b"3\r\nabc\r\n")), None);
    }

    #[test]
    fn garbage_is_a_desync_not_a_panic() {
        let events = feed_all(Role::Request, &[b"\x16\x03\x01\x02\x00 TLS hello"]);
        assert!(
            matches!(events.as_slice(), [Http1Event::Desync { .. }]),
            "{events:?}"
        );
        let events = feed_all(
            Role::Response,
            &[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"],
        );
        assert!(
            matches!(events.last(), Some(Http1Event::Desync { .. })),
            "{events:?}"
        );
    }

    #[test]
    fn a_body_without_length_ends_when_the_server_closes() {
        let mut p = Http1Parser::new(Role::Response);
        let mut out = Vec::new();
        p.feed(
            Segment {
                ts_ns: 1,
                data: b"HTTP/1.0 200 OK\r\n\r\nhello",
                missing: 0,
            },
            &mut out,
        );
        p.close(5, &mut out);
        assert_eq!(out.last(), Some(&Http1Event::End { ts_ns: 5 }));
        assert_eq!(bodies(&out), b"hello");
    }
}
