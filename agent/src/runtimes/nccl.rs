//! NCCL (`libnccl`) collectives and point-to-point calls: bytes are the element
//! count times the size of the `ncclDataType_t` argument.

use super::{ProbeSpec, RuntimeSpec, spec};
use inferscope_shared::{Cookie, GpuOp, NCCL_OPS};

/// Collectives run on whichever compute runtime is beside them.
pub(super) const SPEC: RuntimeSpec = RuntimeSpec {
    name: "nccl",
    library: "libnccl",
    family: None,
    probes: PROBES,
};

/// `index` into [`NCCL_OPS`]; the count and datatype argument positions.
const fn collective(symbol: &'static str, index: u8, count_arg: u8, type_arg: u8) -> ProbeSpec {
    let mut c = Cookie::new(GpuOp::Nccl);
    c.nccl_op = index;
    c.size_arg = count_arg;
    c.aux_arg = type_arg;
    spec(symbol, c)
}

const PROBES: &[ProbeSpec] = &[
    // (sendbuff, recvbuff, count, datatype, ...)
    collective("ncclAllReduce", 0, 3, 4),
    collective("ncclAllGather", 1, 3, 4),
    collective("ncclReduceScatter", 2, 3, 4),
    collective("ncclBroadcast", 3, 3, 4),
    // (buff, count, datatype, peer, ...)
    collective("ncclSend", 4, 2, 3),
    collective("ncclRecv", 5, 2, 3),
];

const _: () = assert!(PROBES.len() == NCCL_OPS.len());
