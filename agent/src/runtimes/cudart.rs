//! The CUDA runtime API (`libcudart`), shared or linked statically into an executable.
//!
//! `_ptsz`/`_ptds` are the per-thread-default-stream twins that nvcc's
//! `--default-stream per-thread` selects; they take the same arguments.
//! `cudaMemcpyKind` is argument 4 of the copies (1 HtoD, 2 DtoH, 3 DtoD), 5 of
//! the symbol copies, 6 of the array copies.

use super::{Family, ProbeSpec, RuntimeSpec, alloc, copy, free, graph_launch, launch, memset, sync};
use inferscope_shared::CopyDir::FromKindArg;

pub(super) const SPEC: RuntimeSpec = RuntimeSpec {
    name: "cudart",
    library: "libcudart",
    family: Some(Family::Cuda),
    probes: PROBES,
};

const PROBES: &[ProbeSpec] = &[
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
    // (array or destination, offsets or array, ..., count, kind): deprecated, still exported.
    copy("cudaMemcpyToArray", 5, FromKindArg, 6),
    copy("cudaMemcpyFromArray", 5, FromKindArg, 6),
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
