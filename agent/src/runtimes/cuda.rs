//! The CUDA driver API (`libcuda`). Calls the CUDA runtime makes through it are
//! not counted a second time (the cookie's driver bit, `gpu_calls.bpf.c`).

use super::{Family, ProbeSpec, RuntimeSpec, alloc, copy, driver, free, graph_launch, launch, memset, sync};
use inferscope_shared::CopyDir::{DeviceToDevice, DeviceToHost, HostToDevice, Other};

pub(super) const SPEC: RuntimeSpec = RuntimeSpec {
    name: "cuda",
    library: "libcuda",
    family: Some(Family::Cuda),
    probes: PROBES,
};

const PROBES: &[ProbeSpec] = &[
    driver(launch("cuLaunchKernel")),
    driver(launch("cuLaunchKernel_ptsz")),
    driver(launch("cuLaunchKernelEx")),
    driver(launch("cuLaunchKernelEx_ptsz")),
    driver(graph_launch("cuGraphLaunch")),
    driver(graph_launch("cuGraphLaunch_ptsz")),
    driver(copy("cuMemcpyHtoD_v2", 3, HostToDevice, 0)),
    driver(copy("cuMemcpyHtoDAsync_v2", 3, HostToDevice, 0)),
    driver(copy("cuMemcpyHtoDAsync_v2_ptsz", 3, HostToDevice, 0)),
    driver(copy("cuMemcpyDtoH_v2", 3, DeviceToHost, 0)),
    driver(copy("cuMemcpyDtoHAsync_v2", 3, DeviceToHost, 0)),
    driver(copy("cuMemcpyDtoHAsync_v2_ptsz", 3, DeviceToHost, 0)),
    driver(copy("cuMemcpyDtoD_v2", 3, DeviceToDevice, 0)),
    driver(copy("cuMemcpyDtoDAsync_v2", 3, DeviceToDevice, 0)),
    driver(copy("cuMemcpyDtoDAsync_v2_ptsz", 3, DeviceToDevice, 0)),
    // Unified addressing: the pointers decide the direction, which a probe cannot see.
    driver(copy("cuMemcpy", 3, Other, 0)),
    driver(copy("cuMemcpyAsync", 3, Other, 0)),
    driver(copy("cuMemcpyAsync_ptsz", 3, Other, 0)),
    driver(memset("cuMemsetD8_v2", 3)),
    driver(memset("cuMemsetD8Async", 3)),
    driver(alloc("cuMemAlloc_v2", 1, 2)),
    driver(alloc("cuMemAllocAsync", 1, 2)),
    driver(free("cuMemFree_v2")),
    driver(free("cuMemFreeAsync")),
    driver(sync("cuStreamSynchronize")),
    driver(sync("cuStreamSynchronize_ptsz")),
    driver(sync("cuCtxSynchronize")),
];
