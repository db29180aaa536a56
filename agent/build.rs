//! Names the commit the binary is built from, for `inferscope --version`: a
//! report of a bug or a figure is only as useful as knowing which build made it.
//! Outside a git checkout (a source archive), `INFERSCOPE_COMMIT` may say it.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=INFERSCOPE_COMMIT");
    let commit = std::env::var("INFERSCOPE_COMMIT")
        .ok()
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown commit".into());
    // Build again when HEAD moves: a new commit or another branch checked out.
    // Only files that exist: cargo runs a script again every time for a missing one.
    let branch = git(&["symbolic-ref", "-q", "HEAD"]);
    for name in ["HEAD", "packed-refs"].into_iter().chain(branch.as_deref()) {
        if let Some(path) =
            git(&["rev-parse", "--git-path", name]).filter(|p| std::path::Path::new(p).exists())
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!(
        "cargo:rustc-env=INFERSCOPE_VERSION={} ({commit})",
        env!("CARGO_PKG_VERSION")
    );
}
