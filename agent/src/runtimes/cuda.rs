//! CUDA runtime (`libcudart`) and driver (`libcuda`) functions.
//!
//! `_ptsz`/`_ptds` are the per-thread-default-stream twins that nvcc's
//! `--default-stream per-thread` selects; they take the same arguments.
//! `cudaMemcpyKind` is argument 4 of the copies (1 HtoD, 2 DtoH, 3 DtoD), 5 of
//! the symbol copies.

use super::{ProbeSpec, alloc, copy, driver, free, graph_launch, launch, memset, sync};
use inferscope_shared::CopyDir::{DeviceToDevice, DeviceToHost, FromKindArg, HostToDevice, Other};

pub(super) const RUNTIME: &[ProbeSpec] = &[
    launch("cudaLaunchKernel"),
    launch("cudaLaunchKernel_ptsz"),
    launch("cudaLaunchKernelExC"),
    launch("cudaLaunchKernelExC_ptsz"),
    launch("cudaLaunchCooperativeKernel"),
    launch("cudaLaunchCooperativeKernel_ptsz"),
    graph_launch("cudaGraphLaunch"),
    graph_launch("cudaGraphLaunch_ptsz"),
    copy("cudaMemcpy", 3, FromKindArg, 4),
    copy("cudaMemcpy_ptds", 3, FromKindArg, 4),
    copy("cudaMemcpyAsync", 3, FromKindArg, 4),
    copy("cudaMemcpyAsync_ptsz", 3, FromKindArg, 4),
    // (symbol or destination, source or symbol, count, offset, kind[, stream])
    copy("cudaMemcpyToSymbol", 3, FromKindArg, 5),
    copy("cudaMemcpyToSymbol_ptds", 3, FromKindArg, 5),
    copy("cudaMemcpyToSymbolAsync", 3, FromKindArg, 5),
    copy("cudaMemcpyToSymbolAsync_ptsz", 3, FromKindArg, 5),
    copy("cudaMemcpyFromSymbol", 3, FromKindArg, 5),
    copy("cudaMemcpyFromSymbol_ptds", 3, FromKindArg, 5),
    copy("cudaMemcpyFromSymbolAsync", 3, FromKindArg, 5),
    copy("cudaMemcpyFromSymbolAsync_ptsz", 3, FromKindArg, 5),
    memset("cudaMemset", 3),
    memset("cudaMemset_ptds", 3),
    memset("cudaMemsetAsync", 3),
    memset("cudaMemsetAsync_ptsz", 3),
    alloc("cudaMalloc", 1, 2),
    alloc("cudaMallocAsync", 1, 2),
    alloc("cudaMallocAsync_ptsz", 1, 2),
    free("cudaFree"),
    free("cudaFreeAsync"),
    free("cudaFreeAsync_ptsz"),
    sync("cudaStreamSynchronize"),
    sync("cudaStreamSynchronize_ptsz"),
    sync("cudaDeviceSynchronize"),
    sync("cudaEventSynchronize"),
];

pub(super) const DRIVER: &[ProbeSpec] = &[
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
