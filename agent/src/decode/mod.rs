//! Pure protocol decoders: bytes and timestamps in, typed events out. They
//! never see a socket, a map or a clock, which is what makes them testable and
//! fuzzable. Captures may be truncated (the kernel copies a bounded prefix of
//! each send/receive): a decoder is told how many bytes it did not see.

pub mod http1;
pub mod http2;
pub mod sse;

#[cfg(test)]
mod fuzz;

use inferscope_shared::NetEventHeader;

/// One captured send, receive or connection state change: what socket capture
/// produces and the request state machine (`derive::requests`) consumes. It
/// borrows its bytes from the ring buffer record: nothing is copied to decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetEvent<'a> {
    pub header: NetEventHeader,
    /// The first `header.captured` bytes the call moved (of `header.len`).
    pub data: &'a [u8],
}

impl<'a> NetEvent<'a> {
    /// Decodes one ring buffer record; `None` when it is shorter than it says.
    pub fn from_record(bytes: &'a [u8]) -> Option<Self> {
        let head_len = size_of::<NetEventHeader>();
        if bytes.len() < head_len {
            return None;
        }
        // SAFETY: NetEventHeader is plain integers; read_unaligned copes with any alignment.
        let header = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<NetEventHeader>()) };
        let data = bytes.get(head_len..head_len + header.captured as usize)?;
        Some(Self { header, data })
    }
}

/// One send or receive as the decoders see it.
#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    pub ts_ns: u64,
    pub data: &'a [u8],
    /// Bytes the call moved beyond `data` that were not captured.
    pub missing: usize,
}
