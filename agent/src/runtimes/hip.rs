//! AMD HIP (`libamdhip64`) functions. `hipMemcpyKind` shares CUDA's values.
//! `hipLaunchKernel` passes its `dim3`s by value, but launches only count calls.

use super::{Family, ProbeSpec, RuntimeSpec, alloc, copy, free, graph_launch, launch, memset, sync};
use inferscope_shared::CopyDir::FromKindArg;

pub(super) const SPEC: RuntimeSpec = RuntimeSpec {
    name: "hip",
    library: "libamdhip64",
    family: Some(Family::Hip),
    probes: PROBES,
};

const PROBES: &[ProbeSpec] = &[
    launch("hipLaunchKernel"),
    launch("hipModuleLaunchKernel"),
    graph_launch("hipGraphLaunch"),
    copy("hipMemcpy", 3, FromKindArg, 4),
    copy("hipMemcpyAsync", 3, FromKindArg, 4),
    memset("hipMemset", 3),
    memset("hipMemsetAsync", 3),
    alloc("hipMalloc", 1, 2),
    free("hipFree"),
    sync("hipStreamSynchronize"),
    sync("hipDeviceSynchronize"),
];
