//! Compiles the C programs and stand-in libraries the integration tests run.

use std::{env, path::PathBuf, process::Command};

fn cc(args: &[&str]) {
    let status = Command::new("cc")
        .args(args)
        .status()
        .expect("a C compiler (cc) is needed for the tests");
    assert!(status.success(), "cc {args:?} failed");
}

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let c = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("c");
    let stubs = out.join("stubs");
    std::fs::create_dir_all(&stubs).unwrap();
    let (o, s) = (out.display().to_string(), stubs.display().to_string());
    let src = |f: &str| c.join(f).display().to_string();
    println!("cargo:rerun-if-changed=c");

    cc(&[
        "-O1",
        "-Wall",
        "-o",
        &format!("{o}/gpu_workload"),
        &src("gpu_workload.c"),
        "-ldl",
    ]);
    cc(&[
        "-O1",
        "-Wall",
        "-o",
        &format!("{o}/container"),
        &src("container.c"),
    ]);
    cc(&[
        "-O1",
        "-Wall",
        "-o",
        &format!("{o}/gpu_churn"),
        &src("gpu_churn.c"),
        "-ldl",
        "-lpthread",
    ]);
    // Every function with its frame pointer, leaf functions too (which gcc's
    // -O1 leaves without one, whatever the flags): the profile walks user
    // stacks by them.
    cc(&[
        "-O0",
        "-fno-omit-frame-pointer",
        "-Wall",
        "-o",
        &format!("{o}/cpu_burner"),
        &src("cpu_burner.c"),
    ]);
    cc(&[
        "-O0",
        "-fno-omit-frame-pointer",
        "-Wall",
        "-o",
        &format!("{o}/gpu_launcher"),
        &src("gpu_launcher.c"),
        "-ldl",
    ]);
    // The CUDA runtime linked statically, as some inference servers ship it.
    let fixtures = env::var("INFERSCOPE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("../.cache/fixtures")
        });
    let cudart_static = fixtures.join("nvidia/cuda_runtime/lib/libcudart_static.a");
    println!("cargo:rerun-if-env-changed=INFERSCOPE_FIXTURES");
    println!("cargo:rerun-if-changed={}", cudart_static.display());
    if cudart_static.exists() {
        let archive = cudart_static.display().to_string();
        let exe = format!("{o}/gpu_workload_static");
        cc(&[
            "-O1",
            "-Wall",
            "-DSTATIC_CUDART",
            "-o",
            &exe,
            &src("gpu_workload.c"),
            &archive,
            "-ldl",
            "-lpthread",
            "-lrt",
        ]);
    } else {
        println!(
            "cargo:warning=no {}: run `cargo xtask fixtures`",
            cudart_static.display()
        );
    }
    // AMD's ROCm SMI with one known GPU.
    cc(&[
        "-O1",
        "-Wall",
        "-shared",
        "-fPIC",
        "-Wl,-soname,librocm_smi64.so.1",
        "-o",
        &format!("{s}/librocm_smi64.so.1"),
        &src("fake_rocm_smi.c"),
    ]);
    // NVIDIA's management library with scripted devices, processes and events.
    cc(&[
        "-O1",
        "-Wall",
        "-shared",
        "-fPIC",
        "-Wl,-soname,libnvidia-ml.so.1",
        "-o",
        &format!("{s}/libnvidia-ml.so.1"),
        &src("fake_nvml.c"),
    ]);
    cc(&[
        "-O1",
        "-shared",
        "-fPIC",
        "-Wl,-soname,libcuda.so.1",
        "-o",
        &format!("{s}/libcuda.so.1"),
        &src("stub_cuda.c"),
    ]);
    cc(&[
        "-O1",
        "-shared",
        "-fPIC",
        "-Wl,-soname,libcudart.so.12",
        "-o",
        &format!("{s}/libcudart.so.12"),
        &src("stub_cudart.c"),
        &format!("{s}/libcuda.so.1"),
        "-Wl,-rpath,$ORIGIN",
    ]);
    cc(&[
        "-O1",
        "-shared",
        "-fPIC",
        "-Wl,-soname,libnccl.so.2",
        "-o",
        &format!("{s}/libnccl.so.2"),
        &src("stub_nccl.c"),
    ]);
    println!("cargo:rustc-env=TEST_BIN_DIR={o}");
}
