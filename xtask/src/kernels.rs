//! `cargo xtask kernels`: the agent and its integration tests on the kernels GPU
//! fleets run, booted here under QEMU, plus this host's kernel, in one table.
//!
//! Debian's cloud kernels come from `apt-get download` (BTF and nearly everything
//! the guest needs are built in; overlayfs, a module, is loaded from the same
//! package), cached in `~/.cache/inferscope/kernels`.
//! The guest is an initramfs of busybox, the agent, the test executables and
//! every file they use, each at the path it has here (the tests hold absolute
//! paths compiled in), and an `/init` that runs the selected tests and powers
//! off. `/dev/kvm` cannot run these guests on our machines, so QEMU emulates
//! (TCG): slower, but the tests' timing checks are windows taken by the
//! workloads themselves, not tolerances, so they hold at any speed.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::{BufWriter, Write as _},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::run;

/// Debian packages naming the kernel lines we test: bookworm's 6.1 and 6.12.
const KERNEL_PACKAGES: [&str; 2] = ["linux-image-cloud-amd64", "linux-image-6.12-cloud-amd64"];

/// The integration tests every kernel runs: (test target, test name). Those that
/// need Python (the Starlette, gRPC and TLS servers) or llama-server stay on the host.
const GUEST_TESTS: &[(&str, &str)] = &[
    ("cli", "check_reports_what_works_here_and_says_the_agent_can_run"),
    (
        "cli",
        "without_privileges_run_and_check_fail_with_one_clear_sentence",
    ),
    (
        "cli",
        "run_with_duration_stops_by_itself_having_reported_every_call",
    ),
    (
        "cli",
        "with_only_its_capabilities_an_unprivileged_user_gets_gpu_counts_and_request_metrics",
    ),
    ("gpu_activity", "real_cuda_runtime_calls_are_counted_exactly"),
    ("gpu_activity", "real_hip_calls_are_counted_exactly"),
    (
        "gpu_activity",
        "runtime_calls_through_the_driver_are_counted_once_and_direct_driver_calls_too",
    ),
    ("gpu_activity", "nccl_bytes_are_element_count_times_datatype_size"),
    (
        "gpu_activity",
        "a_library_dlopened_after_start_is_found_when_the_loader_reports_it",
    ),
    (
        "gpu_activity",
        "two_processes_sharing_one_library_file_are_counted_apart",
    ),
    (
        "gpu_activity",
        "an_exited_process_is_reported_once_more_then_released",
    ),
    (
        "gpu_activity",
        "every_short_lived_process_is_reported_by_name_with_every_call",
    ),
    ("gpu_activity", "a_library_in_another_mount_namespace_is_probed"),
    ("gpu_activity", "replicas_of_one_image_are_counted_once_each"),
    (
        "gpu_activity",
        "a_library_bind_mounted_into_two_namespaces_is_counted_once_in_each",
    ),
    (
        "gpu_activity",
        "a_library_replaced_while_mapped_is_counted_once_per_version",
    ),
    (
        "gpu_activity",
        "a_process_calling_its_runtime_right_after_loading_it_is_counted_from_its_first_call",
    ),
    (
        "gpu_activity",
        "a_container_started_later_has_its_installed_runtime_probed_before_anything_loads_it",
    ),
    (
        "gpu_activity",
        "a_runtime_probed_only_once_loaded_has_its_process_say_since_when_it_is_counted",
    ),
    (
        "gpu_activity",
        "a_library_nobody_maps_loses_its_probes_after_the_linger",
    ),
    ("gpu_activity", "only_the_named_pid_is_reported_with_pid_filter"),
    (
        "gpu_activity",
        "a_cuda_runtime_linked_statically_into_the_executable_is_found_by_its_symbols",
    ),
    (
        "profile",
        "gpu_launches_and_waits_of_a_native_program_are_profiled_with_their_callers",
    ),
    (
        "requests",
        "ttft_and_gaps_match_the_write_windows_of_a_plain_rust_server",
    ),
    (
        "requests",
        "a_receive_larger_than_a_capture_is_copied_to_the_full_capture_size",
    ),
    ("requests", "a_peeked_request_is_captured_once"),
    (
        "load",
        "a_full_ring_buffer_is_counted_without_slowing_the_server_and_capture_recovers",
    ),
    (
        "load",
        "a_thousand_short_connections_and_200_concurrent_streams_are_each_reported_and_released",
    ),
];

/// Host programs the tests call (util-linux's, whose flags busybox lacks; glibc's
/// ldconfig, which writes a container image's ld.so.cache).
const HOST_TOOLS: [&str; 4] = [
    "/usr/bin/setpriv",
    "/usr/bin/unshare",
    "/usr/bin/nsenter",
    "/sbin/ldconfig",
];

/// The whole guest run, boot to power-off, may take this long.
const GUEST_TIMEOUT: Duration = Duration::from_secs(900);

/// What a run printed: "check: <row>" or a test name -> "ok", "no", "--" (not used
/// on this kernel) or "FAILED".
type Results = BTreeMap<String, &'static str>;

/// One kernel's run: its name, what it printed, and the outcomes read from that.
struct Column {
    kernel: String,
    log: String,
    results: Results,
}

impl Column {
    fn of(kernel: String, log: String) -> Self {
        let results = parse(&log);
        Self { kernel, log, results }
    }

    /// What a failed test printed (its panic message), at most `MAX_LINES` lines:
    /// CI keeps only the end of its output, so the cause must be printed, not only filed.
    fn failure_output(&self, test: &str) -> Option<String> {
        const MAX_LINES: usize = 40;
        let start = format!("---- {test} stdout ----");
        let lines: Vec<&str> = self
            .log
            .lines()
            .map(|l| l.trim_end_matches('\r'))
            .skip_while(|l| *l != start)
            .skip(1)
            .take_while(|l| !l.starts_with("---- ") && *l != "failures:")
            .take(MAX_LINES)
            .collect();
        (!lines.is_empty()).then(|| lines.join("\n"))
    }
}

/// `only`: boot just the kernels whose release contains one of these (all when empty).
pub fn matrix(root: &Path, fixtures: &Path, only: &[String]) -> Result<()> {
    let mut kernels = fetch_kernels()?;
    if !only.is_empty() {
        kernels.retain(|(release, _)| only.iter().any(|o| release.contains(o.as_str())));
    }
    let build = build_tests(root, fixtures)?;
    let work = root.join("target/kernels");
    fs::create_dir_all(&work)?;

    let mut columns: Vec<Column> = Vec::new();
    let host_log = run_on_host(&build, fixtures)?;
    fs::write(work.join("host.log"), &host_log)?;
    columns.push(Column::of(format!("host {}", host_release()), host_log));

    let initrd = work.join("initramfs.cpio");
    let modules = guest_modules(&kernels, &work.join("modules"))?;
    write_initramfs(&initrd, &work.join("strip"), &build, fixtures, &modules)?;
    for (name, vmlinuz) in &kernels {
        println!("booting {name} under QEMU (TCG)...");
        let started = Instant::now();
        let log = boot(vmlinuz, &initrd)?;
        let log_path = work.join(format!("{name}.log"));
        fs::write(&log_path, &log)?;
        println!(
            "  {name}: {:.0} s, serial log in {}",
            started.elapsed().as_secs_f64(),
            log_path.display()
        );
        columns.push(Column::of(name.clone(), log));
    }
    print_table(&columns)
}

/// Downloads (once) and unpacks each kernel package; returns (name, vmlinuz).
fn fetch_kernels() -> Result<Vec<(String, PathBuf)>> {
    let home = std::env::var_os("HOME").context("HOME")?;
    let cache = PathBuf::from(home).join(".cache/inferscope/kernels");
    fs::create_dir_all(&cache)?;
    let mut out = Vec::new();
    for meta in KERNEL_PACKAGES {
        let package = versioned_package(meta)?;
        let release = package
            .strip_prefix("linux-image-")
            .context("unexpected kernel package name")?
            .to_string();
        let dir = cache.join(&package);
        let vmlinuz = dir.join(format!("boot/vmlinuz-{release}"));
        if !vmlinuz.exists() {
            let download = cache.join("download");
            let _ = fs::remove_dir_all(&download);
            fs::create_dir_all(&download)?;
            run(Command::new("apt-get")
                .args(["download", "-q"])
                .arg(&package)
                .current_dir(&download))
            .with_context(|| format!("downloading {package} (run apt-get update first?)"))?;
            let deb = fs::read_dir(&download)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| p.extension().is_some_and(|e| e == "deb"))
                .context("apt-get download left no .deb")?;
            run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir))?;
            fs::remove_dir_all(&download)?;
            anyhow::ensure!(vmlinuz.exists(), "{} missing in {package}", vmlinuz.display());
        }
        out.push((release, vmlinuz));
    }
    Ok(out)
}

/// The versioned kernel package a Debian metapackage depends on.
fn versioned_package(meta: &str) -> Result<String> {
    let out = Command::new("apt-cache").args(["depends", meta]).output()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|d| d.starts_with("linux-image-"))
        .map(str::to_string)
        .with_context(|| format!("apt-cache knows no {meta}: run apt-get update"))
}

fn host_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// What the tests need, as built here.
struct TestBuild {
    agent: PathBuf,
    /// Test target name -> its executable.
    tests: BTreeMap<String, PathBuf>,
    /// Other files the tests run (workloads, stand-in libraries, servers).
    files: Vec<PathBuf>,
}

fn build_tests(root: &Path, fixtures: &Path) -> Result<TestBuild> {
    let agent = crate::build_agent(root)?;
    let out = Command::new("cargo")
        .current_dir(root)
        .args([
            "test",
            "--package",
            "inferscope-tests",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .env("INFERSCOPE_FIXTURES", fixtures)
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!("building the integration tests failed");
    }
    let mut tests = BTreeMap::new();
    let mut files = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.contains("\"reason\":\"compiler-artifact\"")
            && let Some(exe) = json_field(line, "\"executable\":\"")
            && let Some(target) = json_field(line, "\"name\":\"")
        {
            if line.contains("\"kind\":[\"test\"]") {
                tests.insert(target, PathBuf::from(exe));
            } else if line.contains("\"kind\":[\"bin\"]") {
                files.push(PathBuf::from(exe));
            }
        } else if line.contains("\"reason\":\"build-script-executed\"")
            && line.contains("inferscope-tests")
            && let Some(out_dir) = json_field(line, "\"out_dir\":\"")
        {
            // gpu_workload, gpu_workload_static and the stand-in libraries.
            for entry in walk(Path::new(&out_dir))? {
                files.push(entry);
            }
        }
    }
    for (target, _) in GUEST_TESTS {
        anyhow::ensure!(tests.contains_key(*target), "no test executable for {target}");
    }
    Ok(TestBuild { agent, tests, files })
}

/// The string value of `"key":"` in one line of cargo's JSON (paths have no quotes).
fn json_field(line: &str, key: &str) -> Option<String> {
    let start = line.find(key)? + key.len();
    let end = line[start..].find('"')? + start;
    Some(line[start..end].to_string())
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(walk(&path)?);
        } else {
            out.push(path);
        }
    }
    Ok(out)
}

/// The guest's commands, one test executable at a time, tests one at a time:
/// (executable, arguments).
fn test_commands(build: &TestBuild) -> Vec<(&Path, Vec<&str>)> {
    let mut by_target: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (target, name) in GUEST_TESTS {
        by_target.entry(target).or_default().push(name);
    }
    by_target
        .into_iter()
        .map(|(target, names)| {
            let args = ["--exact", "--test-threads=1"].into_iter().chain(names).collect();
            (build.tests[target].as_path(), args)
        })
        .collect()
}

fn run_on_host(build: &TestBuild, fixtures: &Path) -> Result<String> {
    println!("running the matrix's tests on this host's kernel...");
    let mut log = format!("@@ check\n{}", agent_check(&build.agent)?);
    for (exe, args) in test_commands(build) {
        let out = Command::new(exe)
            .args(args)
            .env("INFERSCOPE_BIN", &build.agent)
            .env("INFERSCOPE_FIXTURES", fixtures)
            .output()?;
        log.push_str(&String::from_utf8_lossy(&out.stdout));
        log.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    Ok(log)
}

fn agent_check(agent: &Path) -> Result<String> {
    let out = Command::new(agent).arg("check").output()?;
    Ok(format!(
        "{}{}@@ check exit {}\n",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status.code().unwrap_or(-1)
    ))
}

/// `/init`: mounts what a system has, runs `check` and the tests, powers off.
/// tracefs is left unmounted: the agent mounts it, as on a fresh host. Nothing
/// is mounted over /tmp: the root is already writable memory, and a checkout
/// under /tmp would be hidden.
fn init_script(build: &TestBuild, fixtures: &Path) -> String {
    let mut s = format!(
        "#!/bin/sh\n\
         export PATH=/usr/bin:/usr/sbin INFERSCOPE_BIN={agent} INFERSCOPE_FIXTURES={fixtures} RUST_BACKTRACE=1\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev\n\
         mkdir -p /tmp /mnt /root\n\
         ip link set lo up\n\
         insmod /usr/lib/modules/$(uname -r)/overlay.ko\n\
         echo '@@ kernel' $(uname -r)\n\
         echo '@@ check'\n\
         {agent} check 2>&1\n\
         echo \"@@ check exit $?\"\n",
        agent = build.agent.display(),
        fixtures = fixtures.display(),
    );
    for (exe, args) in test_commands(build) {
        s.push_str(&format!("{} {} 2>&1\n", exe.display(), args.join(" ")));
    }
    s.push_str("echo '@@ done'\npoweroff -f\n");
    s
}

/// The files of the guest: absolute path -> what to put there.
enum Entry {
    Dir,
    File(PathBuf),
    Bytes(Vec<u8>, u32),
    Symlink(PathBuf),
}

/// Modules the guests load that Debian builds as modules: overlayfs (containers'
/// image layers, which the replica tests mount). Each kernel's, uncompressed for
/// busybox's `insmod`, as (path in the guest, file here).
fn guest_modules(kernels: &[(String, PathBuf)], out: &Path) -> Result<Vec<(PathBuf, PathBuf)>> {
    fs::create_dir_all(out)?;
    let mut modules = Vec::new();
    for (release, vmlinuz) in kernels {
        let package = vmlinuz
            .parent()
            .and_then(Path::parent)
            .context("kernel package folder")?;
        let dir = package.join(format!("lib/modules/{release}/kernel/fs/overlayfs"));
        let here = out.join(format!("overlay-{release}.ko"));
        let plain = dir.join("overlay.ko");
        if plain.exists() {
            fs::copy(&plain, &here)?;
        } else {
            let packed = dir.join("overlay.ko.xz");
            let unpacked = Command::new("xz")
                .arg("-dc")
                .arg(&packed)
                .output()
                .with_context(|| format!("xz -dc {}", packed.display()))?;
            anyhow::ensure!(unpacked.status.success(), "xz -dc {} failed", packed.display());
            fs::write(&here, unpacked.stdout)?;
        }
        modules.push((
            PathBuf::from(format!("/usr/lib/modules/{release}/overlay.ko")),
            here,
        ));
    }
    Ok(modules)
}

fn write_initramfs(
    out: &Path,
    strip_dir: &Path,
    build: &TestBuild,
    fixtures: &Path,
    modules: &[(PathBuf, PathBuf)],
) -> Result<()> {
    let mut entries: BTreeMap<PathBuf, Entry> = BTreeMap::new();
    for (guest, here) in modules {
        entries.insert(guest.clone(), Entry::File(here.clone()));
    }
    // Merged /usr, as on Debian: the paths ldd prints (/lib/...) and the real ones (/usr/lib/...) both work.
    for (link, target) in [
        ("/bin", "usr/bin"),
        ("/sbin", "usr/sbin"),
        ("/lib", "usr/lib"),
        ("/lib64", "usr/lib64"),
    ] {
        entries.insert(link.into(), Entry::Symlink(target.into()));
    }
    let busybox = Path::new("/bin/busybox");
    anyhow::ensure!(busybox.exists(), "busybox missing: install busybox-static");
    entries.insert("/usr/bin/busybox".into(), Entry::File(busybox.into()));
    let applets = Command::new(busybox).arg("--list").output()?;
    for applet in String::from_utf8_lossy(&applets.stdout).lines() {
        // Not `busybox` itself: a link to itself would loop.
        if applet != "busybox" {
            entries.insert(
                Path::new("/usr/bin").join(applet),
                Entry::Symlink("busybox".into()),
            );
        }
    }
    entries.insert(
        "/init".into(),
        Entry::Bytes(init_script(build, fixtures).into_bytes(), 0o755),
    );

    // Executables without their debug info (smaller guest, same code), at
    // their own paths: the test servers alone are hundreds of MB with it, and
    // the guest unpacks its initramfs into its memory.
    fs::create_dir_all(strip_dir)?;
    let mut elves: Vec<PathBuf> = Vec::new();
    let strip = |exe: &Path, index: usize| -> Result<PathBuf> {
        let name = exe.file_name().context("file name")?.to_string_lossy();
        let stripped = strip_dir.join(format!("{index}-{name}"));
        run(Command::new("objcopy")
            .arg("--strip-debug")
            .arg(exe)
            .arg(&stripped))?;
        Ok(stripped)
    };
    for (index, exe) in std::iter::once(&build.agent)
        .chain(build.tests.values())
        .enumerate()
    {
        entries.insert(exe.clone(), Entry::File(strip(exe, index)?));
        elves.push(exe.clone());
    }
    for (index, file) in build.files.iter().enumerate() {
        if is_executable_elf(file)? {
            entries.insert(
                file.clone(),
                Entry::File(strip(file, build.tests.len() + 1 + index)?),
            );
        } else {
            add_path(&mut entries, file)?;
        }
        elves.push(file.clone());
    }
    let libraries = [
        fixtures.join("nvidia/cuda_runtime/lib/libcudart.so.12"),
        PathBuf::from("/usr/lib/x86_64-linux-gnu/libamdhip64.so.5"),
    ];
    for path in libraries
        .iter()
        .map(PathBuf::as_path)
        .chain(HOST_TOOLS.iter().map(Path::new))
    {
        add_path(&mut entries, path)?;
        elves.push(path.to_path_buf());
    }
    for lib in shared_libraries(&elves)? {
        add_path(&mut entries, &lib)?;
    }
    // Parents first: the kernel's unpacker creates no missing directories.
    let dirs: BTreeSet<PathBuf> = entries
        .keys()
        .flat_map(|p| p.ancestors().skip(1).map(Path::to_path_buf).collect::<Vec<_>>())
        .filter(|d| d != Path::new("/") && !entries.contains_key(d))
        .collect();
    for d in dirs {
        entries.insert(d, Entry::Dir);
    }
    for d in ["/proc", "/sys", "/dev", "/tmp"] {
        entries.entry(d.into()).or_insert(Entry::Dir);
    }
    write_cpio(out, &entries)
}

/// A regular file (not a link to one) that is an ELF executable: a test
/// server or workload, to be stripped (libraries keep their links).
fn is_executable_elf(path: &Path) -> Result<bool> {
    use std::io::Read as _;
    let meta = fs::symlink_metadata(path).with_context(|| format!("{} missing", path.display()))?;
    if !meta.file_type().is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Ok(false);
    }
    let mut magic = [0u8; 4];
    let read = fs::File::open(path)?.read(&mut magic)?;
    Ok(read == 4 && magic == *b"\x7fELF")
}

/// Adds a file at its path, through any symlinks on the way (each kept as a link).
fn add_path(entries: &mut BTreeMap<PathBuf, Entry>, path: &Path) -> Result<()> {
    let parent = path.parent().context("no parent")?;
    let path = fs::canonicalize(parent)?.join(path.file_name().context("no file name")?);
    let meta = fs::symlink_metadata(&path).with_context(|| format!("{} missing", path.display()))?;
    if meta.file_type().is_symlink() {
        let target = fs::read_link(&path)?;
        let resolved = parent.join(&target);
        entries.insert(path, Entry::Symlink(target));
        return add_path(entries, &resolved);
    }
    entries.insert(path.clone(), Entry::File(path));
    Ok(())
}

/// Every shared library (and the loader) the ELF files need, as `ldd` resolves them here.
pub fn shared_libraries(elves: &[PathBuf]) -> Result<BTreeSet<PathBuf>> {
    let mut libs = BTreeSet::new();
    for elf in elves {
        let out = Command::new("ldd").arg(elf).output()?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
            let path = match line.split_once("=> ") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next().filter(|w| w.starts_with('/')),
            };
            if let Some(p) = path.filter(|p| p.starts_with('/')) {
                libs.insert(PathBuf::from(p));
            }
        }
    }
    Ok(libs)
}

/// Writes a newc cpio archive (what the kernel unpacks as an initramfs).
fn write_cpio(out: &Path, entries: &BTreeMap<PathBuf, Entry>) -> Result<()> {
    let mut w = BufWriter::new(fs::File::create(out)?);
    let header = |w: &mut BufWriter<fs::File>,
                  ino: usize,
                  name: &str,
                  mode: u32,
                  size: usize|
     -> Result<()> {
        write!(
            w,
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            0,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        )?;
        w.write_all(name.as_bytes())?;
        w.write_all(&[0])?;
        pad(w, 110 + name.len() + 1)
    };
    for (ino, (path, entry)) in entries.iter().enumerate() {
        let name = path.to_string_lossy();
        let name = name.trim_start_matches('/');
        let (mode, data) = match entry {
            Entry::Dir => (0o040755, Vec::new()),
            Entry::Symlink(target) => (0o120777, target.to_string_lossy().as_bytes().to_vec()),
            Entry::Bytes(bytes, perm) => (0o100000 | perm, bytes.clone()),
            Entry::File(source) => {
                let perm = fs::metadata(source)?.permissions().mode() & 0o7777;
                (
                    0o100000 | perm,
                    fs::read(source).with_context(|| format!("reading {}", source.display()))?,
                )
            }
        };
        header(&mut w, ino + 1, name, mode, data.len())?;
        w.write_all(&data)?;
        pad(&mut w, data.len())?;
    }
    header(&mut w, 0, "TRAILER!!!", 0, 0)?;
    w.flush()?;
    Ok(())
}

fn pad(w: &mut impl std::io::Write, len: usize) -> Result<()> {
    w.write_all(&[0; 3][..(4 - len % 4) % 4])?;
    Ok(())
}

fn boot(vmlinuz: &Path, initrd: &Path) -> Result<String> {
    let log = initrd.with_extension("serial.log");
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "3072"])
        .args(["-nographic", "-no-reboot", "-nic", "none", "-kernel"])
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .stdin(Stdio::null())
        .stdout(fs::File::create(&log)?)
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting qemu-system-x86_64 (install qemu-system-x86)")?;
    let deadline = Instant::now() + GUEST_TIMEOUT;
    let timed_out = loop {
        if child.try_wait()?.is_some() {
            break false;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break true;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut text = String::from_utf8_lossy(&fs::read(&log)?).into_owned();
    if timed_out {
        text.push_str(&format!("\n@@ guest killed after {GUEST_TIMEOUT:?}\n"));
    }
    Ok(text)
}

/// Results from a serial log or the host's output: `check` lines and test outcomes.
fn parse(log: &str) -> Results {
    let mut results = Results::new();
    let mut in_check = false;
    for line in log.lines().map(|l| l.trim_end_matches('\r')) {
        if line == "@@ check" {
            in_check = true;
        } else if let Some(code) = line.strip_prefix("@@ check exit ") {
            in_check = false;
            results.insert(
                "check: can run here".into(),
                if code == "0" { "ok" } else { "FAILED" },
            );
        } else if in_check
            && let Some(status) = ["ok", "no", "--"]
                .into_iter()
                .find(|s| line.starts_with(&format!("{s} ")))
        {
            let what = line[3..].trim_start();
            let name = what.split("  ").next().unwrap_or(what).trim();
            results.insert(format!("check: {name}"), status);
        } else if let Some(rest) = line.strip_prefix("test ")
            && let Some((name, outcome)) = rest.rsplit_once(" ... ")
        {
            results.insert(name.to_string(), if outcome == "ok" { "ok" } else { "FAILED" });
        }
    }
    results
}

fn print_table(columns: &[Column]) -> Result<()> {
    let mut rows: Vec<String> = columns
        .iter()
        .flat_map(|c| c.results.keys().filter(|k| k.starts_with("check: ")).cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    rows.extend(GUEST_TESTS.iter().map(|(_, name)| name.to_string()));
    let width = rows.iter().map(String::len).max().unwrap_or(0);
    println!();
    print!("{:width$}", "");
    for column in columns {
        print!(" | {}", column.kernel);
    }
    println!();
    let mut failed = Vec::new();
    for row in &rows {
        print!("{row:width$}");
        for column in columns {
            let cell = column.results.get(row).copied().unwrap_or("missing");
            if cell == "FAILED" || (cell == "missing" && !row.starts_with("check: ")) {
                failed.push((row, column));
            }
            print!(" | {cell:width$}", width = column.kernel.len());
        }
        println!();
    }
    for (test, column) in &failed {
        println!("\n{test} on {}:", column.kernel);
        println!(
            "{}",
            column
                .failure_output(test)
                .unwrap_or_else(|| "(no output of its own: see the log)".into())
        );
    }
    if !failed.is_empty() {
        let names: Vec<String> = failed
            .iter()
            .map(|(test, column)| format!("{test} on {}", column.kernel))
            .collect();
        bail!(
            "{} failed in the kernel matrix (serial logs in target/kernels): {}",
            failed.len(),
            names.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// libtest's report of a failure, as a guest's serial console carries it.
    const LOG: &str = "test a ... ok\r\ntest b ... FAILED\r\n\r\nfailures:\r\n\r\n---- b stdout ----\r\n\r\nthread 'b' panicked at tests/x.rs:1:1:\r\nrun 3 of 20: left vs right\r\n\r\n---- c stdout ----\r\nother\r\n\r\nfailures:\r\n    b\r\n";

    #[test]
    fn a_failed_test_is_shown_with_what_it_printed_and_nothing_of_the_next() {
        let column = Column::of("6.1".into(), LOG.into());
        assert_eq!(column.results["a"], "ok");
        assert_eq!(column.results["b"], "FAILED");
        assert_eq!(
            column.failure_output("b").as_deref(),
            Some("\nthread 'b' panicked at tests/x.rs:1:1:\nrun 3 of 20: left vs right\n")
        );
        assert_eq!(column.failure_output("a"), None);
    }
}
