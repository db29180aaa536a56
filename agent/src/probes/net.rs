//! Socket payload capture (`net_capture.bpf.c`): what watched servers send and
//! receive on their listening ports, as [`NetEvent`]s.

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, MapData, RingBuf},
    programs::BtfTracePoint,
};
use inferscope_shared::{DROP_REASONS, NET_CAPTURE_MAX, NetEventHeader};

use super::read_drops;

const TRACEPOINTS: [(&str, &str); 3] = [
    ("on_sock_send", "sock_send_length"),
    ("on_sock_recv", "sock_recv_length"),
    ("on_sock_state", "inet_sock_set_state"),
];

pub struct NetProbes {
    ebpf: Ebpf,
}

impl NetProbes {
    /// Loads and attaches; `capture_bytes` bounds the payload copied per send or receive.
    pub fn load(btf: &Btf, capture_bytes: u32) -> Result<Self> {
        let capture_bytes = capture_bytes.min(NET_CAPTURE_MAX as u32);
        let mut ebpf = EbpfLoader::new()
            .override_global("capture_bytes", &capture_bytes, true)
            .load(super::NET_CAPTURE_OBJ)
            .context("loading net_capture.bpf.o")?;
        for (program, tracepoint) in TRACEPOINTS {
            let tp: &mut BtfTracePoint = ebpf
                .program_mut(program)
                .ok_or_else(|| anyhow!("{program} missing"))?
                .try_into()?;
            tp.load(tracepoint, btf)
                .with_context(|| format!("verifying {program}"))?;
            tp.attach()
                .with_context(|| format!("attaching tp_btf/{tracepoint}"))?;
        }
        Ok(Self { ebpf })
    }

    /// Starts capturing connections accepted on this local port.
    pub fn watch_port(&mut self, port: u16) -> Result<()> {
        let map = self
            .ebpf
            .map_mut("watched_ports")
            .ok_or_else(|| anyhow!("watched_ports missing"))?;
        let mut ports: Array<_, u8> = Array::try_from(map)?;
        ports
            .set(u32::from(port), 1, 0)
            .with_context(|| format!("watching port {port}"))?;
        Ok(())
    }

    /// The ring buffer of captured events; call once.
    pub fn events(&mut self) -> Result<RingBuf<MapData>> {
        super::take_ring_buf(&mut self.ebpf, "net_events")
    }

    pub fn drops(&self) -> Result<[u64; DROP_REASONS.len()]> {
        read_drops(&self.ebpf)
    }
}

/// One captured send, receive or connection state change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetEvent {
    pub header: NetEventHeader,
    /// The first `header.captured` bytes the call moved (of `header.len`).
    pub data: Vec<u8>,
}

/// Decodes one ring buffer record; `None` when it is shorter than it says.
pub fn decode_net_event(bytes: &[u8]) -> Option<NetEvent> {
    let head_len = size_of::<NetEventHeader>();
    if bytes.len() < head_len {
        return None;
    }
    // SAFETY: NetEventHeader is plain integers; read_unaligned copes with any alignment.
    let header = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<NetEventHeader>()) };
    let data = bytes.get(head_len..head_len + header.captured as usize)?.to_vec();
    Some(NetEvent { header, data })
}
