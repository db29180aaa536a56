//! Runs a BPF task iterator over one process. aya 0.14 links an iterator
//! without a target, which walks every task on the host; the kernel can
//! limit a task iterator to one process (`bpf_iter_link_info.task.pid`, 6.1),
//! so the link is made here with the two `bpf()` calls aya would make.

use std::{
    fs::File,
    io::{self, Read as _},
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
};

/// `enum bpf_cmd` and `enum bpf_attach_type` values (stable UAPI).
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_ITER_CREATE: libc::c_long = 33;
const BPF_TRACE_ITER: u32 = 28;

/// The `BPF_LINK_CREATE` member of `union bpf_attr`, as an iterator uses it.
#[repr(C)]
#[derive(Default)]
struct LinkCreate {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    iter_info: u64,
    iter_info_len: u32,
    pad: u32,
}

/// `union bpf_iter_link_info`, its `task` member: `pid` limits the walk to that process.
#[repr(C)]
#[derive(Default)]
struct TaskTarget {
    tid: u32,
    pid: u32,
    pid_fd: u32,
    /// The union's size (its `cgroup` member is 16 bytes).
    pad: u32,
}

/// The `BPF_ITER_CREATE` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct IterCreate {
    link_fd: u32,
    flags: u32,
}

/// Everything the task iterator `program` writes for process `pid`. Kernels
/// before 6.1 refuse the target: there the walk covers every task, and the
/// program itself must keep to `pid`.
pub fn read_for_process(program: BorrowedFd<'_>, pid: u32) -> io::Result<Vec<u8>> {
    let target = TaskTarget {
        pid,
        ..TaskTarget::default()
    };
    let link = match link_create(program, Some(&target)) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::E2BIG)) => link_create(program, None),
        other => other,
    }?;
    let iter = bpf(
        BPF_ITER_CREATE,
        &IterCreate {
            link_fd: link.as_raw_fd() as u32,
            flags: 0,
        },
    )?;
    let mut out = Vec::new();
    File::from(iter).read_to_end(&mut out)?;
    Ok(out)
}

fn link_create(program: BorrowedFd<'_>, target: Option<&TaskTarget>) -> io::Result<OwnedFd> {
    let mut attr = LinkCreate {
        prog_fd: program.as_raw_fd() as u32,
        attach_type: BPF_TRACE_ITER,
        ..LinkCreate::default()
    };
    if let Some(target) = target {
        attr.iter_info = std::ptr::from_ref(target) as u64;
        attr.iter_info_len = size_of::<TaskTarget>() as u32;
    }
    bpf(BPF_LINK_CREATE, &attr)
}

/// A `bpf()` call that returns a new file descriptor.
fn bpf<T>(cmd: libc::c_long, attr: &T) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a #[repr(C)] prefix of `union bpf_attr` for `cmd`, valid
    // for the size passed; the kernel reads it (and what `iter_info` points to,
    // which outlives the call) and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_ref(attr), size_of::<T>()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor, owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
