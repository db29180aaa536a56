//! GPU runtime files installed where a mount namespace's processes would load
//! them from, found before any process maps them. A uprobe belongs to a file
//! and is installed in every process that maps the file afterwards, so a
//! library probed ahead of its first `dlopen` has its first calls counted; one
//! probed after (the agent reacts to the loader's event) misses the calls made
//! in between, all of them for a process that loads and calls at once.
//!
//! Looked up where the dynamic loader and Python look, never by walking whole
//! trees: the namespace's `/etc/ld.so.cache`, `LD_LIBRARY_PATH`, the CUDA,
//! NVIDIA and ROCm directories, and the `site-packages` (or `dist-packages`)
//! of the Python prefixes in use, where NVIDIA's wheels put their libraries
//! (`nvidia/*/lib`) and PyTorch its own (`torch/lib`).

use std::{
    collections::HashSet,
    ffi::{CString, OsStr, OsString},
    fs::{self, File},
    io,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    },
    path::{Path, PathBuf},
};

use super::maps::FileId;
use crate::runtimes::Runtime;

/// Directories of CUDA toolkits, the NVIDIA driver as the container toolkit
/// mounts it, and ROCm.
const LIBRARY_DIRS: [&str; 7] = [
    "/usr/local/cuda/lib64",
    "/usr/local/cuda-*/lib64",
    "/usr/local/nvidia/lib64",
    "/usr/local/nvidia/lib",
    "/opt/rocm/lib",
    "/opt/rocm-*/lib",
    "/usr/lib/wsl/lib",
];

/// Python prefixes of system, conda and common virtual-environment installs;
/// those on `PATH` and named by `VIRTUAL_ENV` or `CONDA_PREFIX` come on top.
const PYTHON_PREFIXES: [&str; 5] = ["/usr", "/usr/local", "/opt/conda", "/opt/venv", "/root/.local"];

/// Where, under a Python prefix, packages holding runtime libraries live.
const PACKAGE_DIRS: [&str; 4] = [
    "lib/python3*/site-packages/nvidia/*/lib",
    "lib/python3*/dist-packages/nvidia/*/lib",
    "lib/python3*/site-packages/torch/lib",
    "lib/python3*/dist-packages/torch/lib",
];

/// What a process's environment says about where it loads libraries from.
/// Read only for these variables; nothing else of the environment is kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoaderEnv {
    pub path: Vec<PathBuf>,
    pub library_path: Vec<PathBuf>,
    pub python_prefixes: Vec<PathBuf>,
}

impl LoaderEnv {
    /// From a `/proc/PID/environ` listing (NUL-separated `NAME=value`).
    pub fn parse(environ: &[u8]) -> Self {
        let mut env = Self::default();
        let dirs = |value: &[u8]| {
            value
                .split(|&b| b == b':')
                .filter(|d| d.first() == Some(&b'/'))
                .map(|d| PathBuf::from(OsStr::from_bytes(d)))
                .collect::<Vec<_>>()
        };
        for var in environ.split(|&b| b == 0) {
            let Some(eq) = var.iter().position(|&b| b == b'=') else {
                continue;
            };
            let (name, value) = (&var[..eq], &var[eq + 1..]);
            match name {
                b"PATH" => env.path = dirs(value),
                b"LD_LIBRARY_PATH" => env.library_path = dirs(value),
                b"VIRTUAL_ENV" | b"CONDA_PREFIX" => env.python_prefixes.extend(dirs(value)),
                _ => {}
            }
        }
        env
    }

    /// The environment of `pid`; empty when it cannot be read (gone, or no permission).
    pub fn of_process(proc_root: &Path, pid: u32) -> Self {
        fs::read(proc_root.join(pid.to_string()).join("environ"))
            .map(|e| Self::parse(&e))
            .unwrap_or_default()
    }

    /// Python prefixes worth a look: the usual ones, each `PATH` entry's
    /// parent (`/opt/venv/bin` -> `/opt/venv`), and the named environments.
    fn python_prefixes(&self) -> Vec<PathBuf> {
        let mut prefixes: Vec<PathBuf> = PYTHON_PREFIXES.iter().map(PathBuf::from).collect();
        let on_path = self
            .path
            .iter()
            .filter(|d| d.file_name() == Some(OsStr::new("bin")))
            .filter_map(|d| d.parent().map(Path::to_path_buf));
        prefixes.extend(on_path);
        prefixes.extend(self.python_prefixes.iter().cloned());
        let mut seen = HashSet::new();
        prefixes.retain(|p| seen.insert(p.clone()));
        prefixes
    }
}

/// A mount namespace's root directory, seen through one of its processes:
/// paths are resolved inside it, absolute symbolic links included (a
/// container's `/usr/local/cuda -> /usr/local/cuda-12.4` must not lead into
/// the agent's own tree).
pub struct Root {
    dir: OwnedFd,
}

impl Root {
    pub fn of_process(proc_root: &Path, pid: u32) -> io::Result<Self> {
        let path = proc_root.join(pid.to_string()).join("root");
        Ok(Self {
            dir: File::open(path)?.into(),
        })
    }

    /// A directory taken as a root (tests: a tree built in a temporary directory).
    pub fn at(dir: &Path) -> io::Result<Self> {
        Ok(Self {
            dir: File::open(dir)?.into(),
        })
    }

    /// Opens `path` (absolute, inside this root) for reading.
    fn open(&self, path: &Path) -> io::Result<File> {
        let relative = path.strip_prefix("/").unwrap_or(path);
        let name = CString::new(relative.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let how = OpenHow {
            flags: (libc::O_RDONLY | libc::O_CLOEXEC) as u64,
            mode: 0,
            resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
        };
        // SAFETY: valid NUL-terminated name and `open_how` of the size passed;
        // the returned descriptor is owned by the File made of it.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.dir.as_raw_fd(),
                name.as_ptr(),
                &how as *const OpenHow,
                size_of::<OpenHow>(),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor the kernel just returned, owned by nobody else.
        Ok(unsafe { File::from_raw_fd(fd as i32) })
    }

    /// The names in directory `dir`; none when it does not exist.
    fn list(&self, dir: &Path) -> Vec<OsString> {
        let Ok(opened) = self.open(dir) else {
            return Vec::new();
        };
        fs::read_dir(fd_path(&opened))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name())
            .collect()
    }

    /// The directories matching `pattern`, whose components may hold one `*`.
    fn expand(&self, pattern: &Path) -> Vec<PathBuf> {
        let mut found = vec![PathBuf::from("/")];
        for component in pattern.components().skip(1) {
            let part = component.as_os_str();
            let Some((before, after)) = part.to_str().and_then(|p| p.split_once('*')) else {
                found.iter_mut().for_each(|f| f.push(part));
                continue;
            };
            found = found
                .iter()
                .flat_map(|dir| {
                    self.list(dir)
                        .into_iter()
                        .filter(|name| {
                            let name = name.as_bytes();
                            name.len() >= before.len() + after.len()
                                && name.starts_with(before.as_bytes())
                                && name.ends_with(after.as_bytes())
                        })
                        .map(|name| dir.join(name))
                        .collect::<Vec<_>>()
                })
                .collect();
        }
        found
    }
}

/// `struct open_how` (stable UAPI; libc's cannot be built outside the crate).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// An installed runtime file, open: the probes read and attach to it through
/// [`fd_path`] while it is.
#[derive(Debug)]
pub struct InstalledFile {
    pub runtime: Runtime,
    /// Its path inside the namespace.
    pub path: PathBuf,
    pub file: File,
    /// Its identity as `stat` gives it.
    pub id: FileId,
}

/// Every runtime file installed where `env`'s loader and Python would look
/// inside `root`, each file once however many names lead to it.
pub fn runtime_files(root: &Root, env: &LoaderEnv) -> Vec<InstalledFile> {
    let mut candidates: Vec<PathBuf> = root
        .open(Path::new("/etc/ld.so.cache"))
        .and_then(|mut f| {
            let mut bytes = Vec::new();
            io::Read::read_to_end(&mut f, &mut bytes)?;
            Ok(cached_libraries(&bytes))
        })
        .unwrap_or_default();
    let mut dirs: Vec<PathBuf> = env.library_path.clone();
    for pattern in LIBRARY_DIRS {
        dirs.extend(root.expand(Path::new(pattern)));
    }
    for prefix in env.python_prefixes() {
        for packages in PACKAGE_DIRS {
            dirs.extend(root.expand(&prefix.join(packages)));
        }
    }
    for dir in dirs {
        candidates.extend(
            root.list(&dir)
                .into_iter()
                .filter(|name| name.to_str().and_then(Runtime::of_library).is_some())
                .map(|name| dir.join(name)),
        );
    }
    let mut seen = HashSet::new();
    candidates
        .into_iter()
        .filter_map(|path| {
            let runtime = Runtime::of_library(path.file_name()?.to_str()?)?;
            let file = root.open(&path).ok()?;
            let meta = file.metadata().ok()?;
            let id = FileId {
                dev: meta.dev(),
                ino: meta.ino(),
            };
            (meta.is_file() && seen.insert((id, runtime))).then_some(InstalledFile {
                runtime,
                path,
                file,
                id,
            })
        })
        .collect()
}

/// The runtime libraries an `ld.so.cache` lists. Its string table holds
/// every library's full path, NUL-terminated, in the old format and the new
/// alike: those are read, whatever the entries around them say.
fn cached_libraries(cache: &[u8]) -> Vec<PathBuf> {
    cache
        .split(|&b| b == 0)
        .filter(|s| s.first() == Some(&b'/'))
        .map(|s| PathBuf::from(OsStr::from_bytes(s)))
        .filter(|p| {
            p.file_name()
                .and_then(OsStr::to_str)
                .and_then(Runtime::of_library)
                .is_some()
        })
        .collect()
}

/// A read-only mapping of a file, made to ask the kernel which file it maps
/// (under overlayfs, the layer's file underneath); unmapped when dropped.
/// Not executable: no uprobe is ever installed in it.
pub struct ReadMapping {
    addr: *mut libc::c_void,
    len: usize,
}

impl ReadMapping {
    pub fn of(file: &File) -> io::Result<Self> {
        let len = 4096;
        // SAFETY: a fresh private read-only mapping of a file we hold open;
        // nothing reads through it, and Drop unmaps exactly it.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { addr, len })
    }

    /// Where the mapping starts, as the kernel's mapping records name it.
    pub fn start(&self) -> u64 {
        self.addr as u64
    }
}

impl Drop for ReadMapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `of`, unmapped once.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

/// A path that opens the file behind `file` again, through the agent's own
/// descriptor: valid while `file` is open.
pub fn fd_path(file: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// A directory tree standing for a container's root filesystem.
    struct Tree(PathBuf);

    impl Tree {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("inferscope-installed-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn file(&self, path: &str) {
            let full = self.0.join(path.trim_start_matches('/'));
            fs::create_dir_all(full.parent().unwrap()).unwrap();
            fs::write(full, path).unwrap();
        }

        fn found(&self, env: &LoaderEnv) -> Vec<(Runtime, String)> {
            let mut found: Vec<_> = runtime_files(&Root::at(&self.0).unwrap(), env)
                .into_iter()
                .map(|f| (f.runtime, f.path.display().to_string()))
                .collect();
            found.sort();
            found
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn runtimes_are_found_where_cuda_rocm_and_python_packages_put_them() {
        let t = Tree::new("dirs");
        t.file("/usr/local/cuda-12.4/lib64/libcudart.so.12.4.127");
        t.file("/opt/rocm-6.2.0/lib/libamdhip64.so.6");
        t.file("/usr/local/lib/python3.12/dist-packages/nvidia/nccl/lib/libnccl.so.2");
        t.file("/opt/venv/lib/python3.11/site-packages/nvidia/cu13/lib/libcudart.so.13");
        t.file("/app/env/lib/python3.10/site-packages/torch/lib/libcudart-9335f6a2.so.12");
        t.file("/srv/libs/libcuda.so.1");
        // Not runtimes, or not where anything looks.
        t.file("/usr/local/cuda-12.4/lib64/libcublas.so.12");
        t.file("/home/me/src/libcudart.so.12");
        let env =
            LoaderEnv::parse(b"PATH=/app/env/bin:/usr/bin\0LD_LIBRARY_PATH=/srv/libs:relative\0HOME=/root\0");
        assert_eq!(
            t.found(&env),
            [
                (
                    Runtime::Cudart,
                    "/app/env/lib/python3.10/site-packages/torch/lib/libcudart-9335f6a2.so.12"
                ),
                (
                    Runtime::Cudart,
                    "/opt/venv/lib/python3.11/site-packages/nvidia/cu13/lib/libcudart.so.13"
                ),
                (
                    Runtime::Cudart,
                    "/usr/local/cuda-12.4/lib64/libcudart.so.12.4.127"
                ),
                (Runtime::Cuda, "/srv/libs/libcuda.so.1"),
                (Runtime::Hip, "/opt/rocm-6.2.0/lib/libamdhip64.so.6"),
                (
                    Runtime::Nccl,
                    "/usr/local/lib/python3.12/dist-packages/nvidia/nccl/lib/libnccl.so.2"
                ),
            ]
            .map(|(rt, p)| (rt, p.to_string()))
        );
    }

    /// Links resolve inside the root: `/usr/local/cuda` pointing at an
    /// absolute path must not reach the agent's own `/usr/local`.
    #[test]
    fn absolute_links_resolve_inside_the_root_and_each_file_is_found_once() {
        let t = Tree::new("links");
        t.file("/usr/local/cuda-12.4/targets/x86_64-linux/lib/libcudart.so.12.4.127");
        std::os::unix::fs::symlink("/usr/local/cuda-12.4", t.0.join("usr/local/cuda")).unwrap();
        std::os::unix::fs::symlink(
            "/usr/local/cuda/targets/x86_64-linux/lib",
            t.0.join("usr/local/cuda-12.4/lib64"),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            "libcudart.so.12.4.127",
            t.0.join("usr/local/cuda-12.4/targets/x86_64-linux/lib/libcudart.so.12"),
        )
        .unwrap();
        let found = runtime_files(&Root::at(&t.0).unwrap(), &LoaderEnv::default());
        assert_eq!(found.len(), 1, "{found:?}");
        let contents = fs::read_to_string(fd_path(&found[0].file)).unwrap();
        assert_eq!(
            contents,
            "/usr/local/cuda-12.4/targets/x86_64-linux/lib/libcudart.so.12.4.127"
        );
    }

    /// The cache as glibc's own `ldconfig` writes it, for a root of our making.
    #[test]
    fn the_libraries_ld_so_cache_lists_are_found() {
        let t = Tree::new("cache");
        let lib = t.0.join("opt/cuda/lib64/libcudart.so.12");
        fs::create_dir_all(lib.parent().unwrap()).unwrap();
        // ldconfig lists shared objects by their soname: an empty one with the runtime's.
        let built = Command::new("cc")
            .args([
                "-shared",
                "-Wl,-soname,libcudart.so.12",
                "-x",
                "c",
                "/dev/null",
                "-o",
            ])
            .arg(&lib)
            .status()
            .expect("running cc");
        assert!(built.success(), "cc failed");
        t.file("/etc/ld.so.conf");
        fs::write(t.0.join("etc/ld.so.conf"), "/opt/cuda/lib64\n").unwrap();
        let status = Command::new("ldconfig")
            .args(["-X", "-r"])
            .arg(&t.0)
            .status()
            .expect("running ldconfig");
        assert!(status.success(), "ldconfig -r failed");
        assert_eq!(
            t.found(&LoaderEnv::default()),
            [(Runtime::Cudart, "/opt/cuda/lib64/libcudart.so.12".to_string())]
        );
    }

    #[test]
    fn only_the_loader_variables_are_read_from_the_environment() {
        let env = LoaderEnv::parse(
            b"SECRET=/x\0PATH=/opt/conda/bin:/usr/bin:bin\0VIRTUAL_ENV=/app/.venv\0CONDA_PREFIX=/opt/conda\0garbage\0=\0",
        );
        assert_eq!(
            env.path,
            [PathBuf::from("/opt/conda/bin"), PathBuf::from("/usr/bin")]
        );
        assert!(env.library_path.is_empty());
        assert_eq!(
            env.python_prefixes,
            [PathBuf::from("/app/.venv"), PathBuf::from("/opt/conda")]
        );
        let prefixes = env.python_prefixes();
        assert!(prefixes.contains(&PathBuf::from("/app/.venv")));
        assert_eq!(
            prefixes.iter().filter(|p| *p == Path::new("/opt/conda")).count(),
            1
        );
    }
}
