//! CPython processes: where the sampler finds the interpreter's frames, and
//! the names of the code objects it recorded.
//!
//! The layouts are CPython's own (release builds, x86-64), one table per
//! minor version, read from its headers (`offsetof` with `Py_BUILD_CORE`):
//! `_PyRuntime.interpreters.head` is the main interpreter, whose
//! `threads.head` (3.10: `tstate_head`) lists its thread states; the sampled
//! thread's state is the one whose `thread_id` is its `pthread_self()`. Its
//! innermost frame is `frame` (3.10: a `PyFrameObject`, `f_code` and
//! `f_back`), `cframe->current_frame` (3.11, 3.12) or `current_frame` (3.13:
//! an `_PyInterpreterFrame`, `f_executable` and `previous`). A code object
//! carries its qualified name (3.10: its name), file and first line as `str`
//! objects, read here from the process's memory. Versions without a table
//! are profiled natively only, and the log says so.

use std::{fs::File, os::unix::fs::FileExt as _, path::Path};

use crate::{
    discover::{maps, symbols},
    probes::PythonProc,
};

/// One CPython minor version's layout.
struct Layout {
    minor: u32,
    /// `_PyRuntimeState.interpreters.head`.
    runtime_interpreters_head: u64,
    /// What the sampler reads (`interpreters_head` is set per process).
    frames: PythonProc,
    code_filename: u64,
    /// `co_qualname`; `co_name` where there is none (3.10).
    code_qualname: u64,
    code_firstlineno: u64,
    /// `sizeof(PyASCIIObject)`: where a compact ASCII string's characters start.
    ascii_data: u64,
}

/// Measured on CPython 3.10.13's, 3.11.7's, 3.12.1's and 3.13.0's headers;
/// stable within a minor version.
const LAYOUTS: [Layout; 4] = [
    Layout {
        minor: 10,
        runtime_interpreters_head: 32,
        frames: PythonProc {
            interpreters_head: 0,
            interp_threads_head: 8,
            tstate_next: 8,
            tstate_thread_id: 176,
            tstate_frame: 24,
            cframe_current_frame: PythonProc::NO_CFRAME,
            frame_code: 32,
            frame_previous: 24,
            frame_owner: 0,
            shim_owner: PythonProc::NO_SHIM,
            pad: [0; 7],
        },
        code_filename: 104,
        code_qualname: 112,
        code_firstlineno: 40,
        ascii_data: 48,
    },
    Layout {
        minor: 11,
        runtime_interpreters_head: 40,
        frames: PythonProc {
            interpreters_head: 0,
            interp_threads_head: 16,
            tstate_next: 8,
            tstate_thread_id: 152,
            tstate_frame: 56,
            cframe_current_frame: 8,
            frame_code: 32,
            frame_previous: 48,
            frame_owner: 69,
            shim_owner: PythonProc::NO_SHIM,
            pad: [0; 7],
        },
        code_filename: 112,
        code_qualname: 128,
        code_firstlineno: 72,
        ascii_data: 48,
    },
    Layout {
        minor: 12,
        runtime_interpreters_head: 40,
        frames: PythonProc {
            interpreters_head: 0,
            interp_threads_head: 72,
            tstate_next: 8,
            tstate_thread_id: 136,
            tstate_frame: 56,
            cframe_current_frame: 0,
            frame_code: 0,
            frame_previous: 8,
            frame_owner: 70,
            // FRAME_OWNED_BY_CSTACK: the entry shim between C and Python.
            shim_owner: 3,
            pad: [0; 7],
        },
        code_filename: 112,
        code_qualname: 128,
        code_firstlineno: 68,
        ascii_data: 40,
    },
    Layout {
        minor: 13,
        runtime_interpreters_head: 632,
        frames: PythonProc {
            interpreters_head: 0,
            interp_threads_head: 7344,
            tstate_next: 8,
            tstate_thread_id: 152,
            tstate_frame: 72,
            cframe_current_frame: PythonProc::NO_CFRAME,
            frame_code: 0,
            frame_previous: 8,
            frame_owner: 70,
            // FRAME_OWNED_BY_CSTACK.
            shim_owner: 3,
            pad: [0; 7],
        },
        code_filename: 112,
        code_qualname: 128,
        code_firstlineno: 68,
        ascii_data: 40,
    },
];

/// `PyASCIIObject.length` and `.state`; the state's compact and ascii bits.
const STR_LENGTH: u64 = 16;
const STR_STATE: u64 = 32;
const STATE_COMPACT_ASCII: u32 = (1 << 5) | (1 << 6);
/// Longest name or path read.
const MAX_STR: u64 = 256;

/// A CPython process the sampler can read: its version and where its runtime is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Python {
    pub minor: u32,
    pub proc: PythonProc,
}

/// Whether `pid` runs a CPython with a known layout, found by the file that
/// defines `_PyRuntime` (`libpython3.N.so` or a `python3.N` executable).
pub fn detect(pid: u32) -> Option<Python> {
    let listing = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let mappings = maps::parse(&listing);
    for m in mappings.iter().filter(|m| m.offset == 0) {
        let Some(minor) = m.file_name().and_then(python_minor) else {
            continue;
        };
        let Some(layout) = LAYOUTS.iter().find(|l| l.minor == minor) else {
            log::info!("pid {pid}: CPython 3.{minor} has no frame layout here: native frames only");
            return None;
        };
        let file = Path::new("/proc")
            .join(pid.to_string())
            .join("map_files")
            .join(format!("{:x}-{:x}", m.start, m.end));
        let Ok(found) = symbols::symbol_addresses(&file, ["_PyRuntime"]) else {
            continue;
        };
        let Some(&runtime) = found.get("_PyRuntime") else {
            continue;
        };
        // The mapping of file offset 0 starts where the file's base was loaded:
        // 0 in a shared object or PIE, 0x400000 in a non-PIE python3.N (Debian's).
        let base = symbols::load_base(&file).ok()?;
        let address = m
            .start
            .checked_sub(base)?
            .checked_add(runtime)?
            .checked_add(layout.runtime_interpreters_head)?;
        return Some(Python {
            minor,
            proc: PythonProc {
                interpreters_head: address,
                ..layout.frames
            },
        });
    }
    None
}

/// `3.N` of `libpython3.N.so...` or `python3.N`.
fn python_minor(file_name: &str) -> Option<u32> {
    let rest = file_name
        .strip_prefix("libpython3.")
        .or_else(|| file_name.strip_prefix("python3."))?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let after = &rest[digits.len()..];
    (after.is_empty() || after.starts_with('.') || after.starts_with('d') || after.starts_with('m'))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Reads code objects' names from a process's memory.
pub struct CodeNames {
    mem: Option<File>,
    layout: &'static Layout,
}

impl CodeNames {
    pub fn open(pid: u32, minor: u32) -> Option<Self> {
        Some(Self {
            mem: File::open(format!("/proc/{pid}/mem")).ok(),
            layout: LAYOUTS.iter().find(|l| l.minor == minor)?,
        })
    }

    /// `qualname (file.py:line)`; `None` when its memory cannot be read (the
    /// process exited, or the object was freed).
    pub fn name(&self, code: u64) -> Option<String> {
        let l = self.layout;
        let qualname = self.string(self.u64_at(code + l.code_qualname)?)?;
        let file = self
            .string(self.u64_at(code + l.code_filename)?)
            .unwrap_or_default();
        let line = self.u32_at(code + l.code_firstlineno).unwrap_or(0);
        let file = file.rsplit('/').next().unwrap_or(&file).to_string();
        Some(format!("{qualname} ({file}:{line})"))
    }

    fn read(&self, at: u64, buf: &mut [u8]) -> Option<()> {
        self.mem.as_ref()?.read_exact_at(buf, at).ok()
    }

    fn u64_at(&self, at: u64) -> Option<u64> {
        let mut b = [0; 8];
        self.read(at, &mut b)?;
        Some(u64::from_le_bytes(b))
    }

    fn u32_at(&self, at: u64) -> Option<u32> {
        let mut b = [0; 4];
        self.read(at, &mut b)?;
        Some(u32::from_le_bytes(b))
    }

    /// A compact ASCII `str` (names and paths nearly always are).
    fn string(&self, obj: u64) -> Option<String> {
        if obj == 0 {
            return None;
        }
        let state = self.u32_at(obj + STR_STATE)?;
        if state & STATE_COMPACT_ASCII != STATE_COMPACT_ASCII {
            return Some("<non-ascii>".into());
        }
        let length = self.u64_at(obj + STR_LENGTH)?.min(MAX_STR);
        let mut buf = vec![0; length as usize];
        self.read(obj + self.layout.ascii_data, &mut buf)?;
        String::from_utf8(buf).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpreter_files_name_their_version() {
        assert_eq!(python_minor("libpython3.11.so.1.0"), Some(11));
        assert_eq!(python_minor("python3.12"), Some(12));
        assert_eq!(python_minor("libpython3.11d.so.1.0"), Some(11));
        assert_eq!(python_minor("python3.11-config"), None);
        assert_eq!(python_minor("python3"), None);
        assert_eq!(python_minor("libc.so.6"), None);
    }
}
