//! Pure protocol decoders: bytes and timestamps in, typed events out. They
//! never see a socket, a map or a clock, which is what makes them testable and
//! fuzzable. Captures may be truncated (the kernel copies a bounded prefix of
//! each send/receive): a decoder is told how many bytes it did not see.

pub mod http1;
pub mod http2;
pub mod sse;

#[cfg(test)]
mod fuzz;

/// One send or receive as the decoders see it.
#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    pub ts_ns: u64,
    pub data: &'a [u8],
    /// Bytes the call moved beyond `data` that were not captured.
    pub missing: usize,
}
