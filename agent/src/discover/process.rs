//! What a person needs to recognise a process: command, executable, container.

use std::{fs, path::Path, time::Duration};

use crate::model::ProcessIdentity;

/// Whether `pid` still has a /proc entry (running, or a zombie not yet reaped).
pub fn exists(proc_root: &Path, pid: u32) -> bool {
    proc_root.join(pid.to_string()).exists()
}

/// `pid`'s command name; empty if it is gone.
pub fn comm(proc_root: &Path, pid: u32) -> String {
    let comm = fs::read_to_string(proc_root.join(pid.to_string()).join("comm")).unwrap_or_default();
    comm.trim_end().to_string()
}

/// Reads what is readable; a process that exits meanwhile leaves blanks, not an error.
pub fn identity(proc_root: &Path, pid: u32) -> ProcessIdentity {
    let dir = proc_root.join(pid.to_string());
    let exe = fs::read_link(dir.join("exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let cgroup = fs::read_to_string(dir.join("cgroup")).unwrap_or_default();
    let stat = fs::read_to_string(dir.join("stat")).unwrap_or_default();
    ProcessIdentity {
        pid,
        ppid: parent(&stat).unwrap_or(0),
        comm: comm(proc_root, pid),
        exe,
        container_id: container_id(&cgroup),
    }
}

/// When `pid` started at the latest, since boot (see
/// [`crate::clock::since_boot`]): the end of the kernel clock tick it started
/// in (10 ms where `USER_HZ` is 100). /proc keeps no finer time; what happened
/// after this happened after the process started.
pub fn started(proc_root: &Path, pid: u32) -> Option<Duration> {
    let stat = fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    start_ticks(&stat).map(|t| Duration::from_secs_f64((t + 1) as f64 / ticks_per_second.max(1) as f64))
}

/// Field 22 of `/proc/PID/stat`, the start time in clock ticks since boot.
fn start_ticks(stat: &str) -> Option<u64> {
    let (_, after_comm) = stat.rsplit_once(')')?;
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// The mount namespace `pid` lives in (the inode `/proc/PID/ns/mnt` names).
pub fn mount_namespace(proc_root: &Path, pid: u32) -> Option<u64> {
    let link = fs::read_link(proc_root.join(pid.to_string()).join("ns/mnt")).ok()?;
    link.to_str()?
        .strip_prefix("mnt:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The parent pid from `/proc/PID/stat` (`pid (comm) state ppid ...`; comm may hold spaces and parentheses).
fn parent(stat: &str) -> Option<u32> {
    let (_, after_comm) = stat.rsplit_once(')')?;
    after_comm.split_whitespace().nth(1)?.parse().ok()
}

/// The container ID in a `/proc/PID/cgroup` listing: the 64-hex-digit name that
/// Docker, containerd, CRI-O and Kubernetes give a container's cgroup
/// (`docker-<id>.scope`, `cri-containerd-<id>.scope`, `crio-<id>`, `.../<id>`).
pub fn container_id(cgroup: &str) -> Option<String> {
    cgroup.lines().find_map(|line| {
        let path = line.splitn(3, ':').nth(2)?;
        path.rsplit('/').find_map(|part| {
            let part = part.strip_suffix(".scope").unwrap_or(part);
            let id = part.rsplit(['-', ':']).next()?;
            (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_string())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e1c2b9a8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f";

    #[test]
    fn the_parent_is_read_past_a_command_name_with_spaces_and_parentheses() {
        assert_eq!(parent("4242 (python3 (vllm) x) S 4200 4242 1 0 -1"), Some(4200));
        assert_eq!(parent("4242 (short"), None);
        assert_eq!(parent(""), None);
    }

    #[test]
    fn the_start_time_is_field_22_whatever_the_command_name() {
        let stat = "4242 (a) b) 1 2) S 4200 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 98765 1000 200";
        assert_eq!(start_ticks(stat), Some(98765));
        assert_eq!(start_ticks("4242 (short) S 1 2"), None);
    }

    #[test]
    fn this_process_has_a_start_time_and_a_mount_namespace() {
        let proc_root = Path::new("/proc");
        let me = std::process::id();
        let started = started(proc_root, me).expect("own start time");
        // The end of its start's clock tick may lie up to a tick ahead of now.
        // SAFETY: sysconf has no preconditions.
        let tick = Duration::from_secs(1) / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u32;
        assert!(started <= crate::clock::since_boot() + tick);
        assert_eq!(mount_namespace(proc_root, me), mount_namespace(proc_root, me));
        assert!(mount_namespace(proc_root, me).is_some());
        assert_eq!(mount_namespace(proc_root, u32::MAX), None);
    }

    #[test]
    fn container_ids_are_found_in_the_usual_runtimes_cgroup_names() {
        for cgroup in [
            format!("0::/system.slice/docker-{ID}.scope\n"),
            format!("0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-{ID}.scope\n"),
            format!("0::/kubepods/besteffort/pod1/crio-{ID}\n"),
            format!("12:memory:/docker/{ID}\n"),
        ] {
            assert_eq!(container_id(&cgroup).as_deref(), Some(ID), "{cgroup}");
        }
    }

    #[test]
    fn host_processes_have_no_container_id() {
        assert_eq!(
            container_id("0::/user.slice/user-0.slice/session-1.scope\n"),
            None
        );
        assert_eq!(container_id(""), None);
    }
}
