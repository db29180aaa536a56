//! Builds the eBPF objects with one pinned clang, reproducibly, and checks that
//! the committed objects are what the committed sources compile to.

use std::{fs, path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::run;

/// Pinned so that the committed objects are byte-for-byte reproducible; CI
/// installs exactly this (Debian's clang-19).
const CLANG: &str = "clang-19";
const STRIP: &str = "llvm-strip-19";

pub fn build(root: &Path, check: bool) -> Result<()> {
    let src = root.join("ebpf-programs");
    let committed = src.join("obj");
    let out = if check {
        let scratch = root.join("target/ebpf-check");
        let _ = fs::remove_dir_all(&scratch);
        scratch
    } else {
        committed.clone()
    };
    fs::create_dir_all(&out)?;

    let mut sources: Vec<_> = fs::read_dir(&src)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".bpf.c"))
        .collect();
    sources.sort();
    if sources.is_empty() {
        bail!("no *.bpf.c under {}", src.display());
    }

    let mut stale = Vec::new();
    for source in &sources {
        let name = source
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace(".bpf.c", ".bpf.o");
        let object = out.join(&name);
        compile(&src, source, &object)?;
        if check {
            let fresh = fs::read(&object)?;
            let old = fs::read(committed.join(&name)).unwrap_or_default();
            if fresh != old {
                stale.push(name);
            }
        }
    }
    if !stale.is_empty() {
        bail!(
            "committed eBPF objects are stale: {} (run `cargo xtask ebpf` and commit ebpf-programs/obj)",
            stale.join(", ")
        );
    }
    println!(
        "eBPF objects {} ({} programs)",
        if check { "are fresh" } else { "built" },
        sources.len()
    );
    Ok(())
}

fn compile(src_dir: &Path, source: &Path, object: &Path) -> Result<()> {
    let unstripped = object.with_extension("debug.o");
    run(Command::new(CLANG)
        .current_dir(src_dir)
        .args([
            "-O2",
            "-g",
            "-Wall",
            "-Werror",
            "-target",
            "bpf",
            "-D__TARGET_ARCH_x86",
        ])
        .arg("-Iinclude")
        // <linux/bpf.h> needs <asm/types.h>, which lives in the multiarch folder.
        .arg("-I/usr/include/x86_64-linux-gnu")
        // The build directory would otherwise end up in the debug info.
        .arg(format!("-ffile-prefix-map={}=.", src_dir.display()))
        .arg("-c")
        .arg(source)
        .arg("-o")
        .arg(&unstripped))
    .with_context(|| format!("compiling {} (is {CLANG} installed?)", source.display()))?;
    // DWARF is not needed at run time; BTF (kept) is what CO-RE and the layout test use.
    run(Command::new(STRIP)
        .arg("--strip-debug")
        .arg(&unstripped)
        .arg("-o")
        .arg(object))?;
    fs::remove_file(&unstripped)?;
    Ok(())
}
