//! Which TCP ports a process listens on: its socket inodes (`/proc/PID/fd`)
//! matched against the listening sockets of its network namespace, from
//! socket diagnostics ([`super::sock_diag`]), or where those cannot be had (no
//! privilege to enter the namespace) from `/proc/PID/net/tcp` and `tcp6`.
//!
//! Reading a `/proc` table is expensive: the kernel walks every bucket of the
//! established-connection hash to produce it (what that cost the agent:
//! docs/architecture.md). Callers read a namespace's listeners once and reuse
//! them.

use std::{collections::HashSet, fs, path::Path, sync::OnceLock};

use super::sock_diag;

/// TCP_LISTEN in the `st` column.
const LISTEN: &str = "0A";

/// (port, socket inode) of every listening TCP socket in `pid`'s network
/// namespace, `netns` ([`net_namespace`] of `pid`, which the caller has).
pub fn namespace_listeners(proc_root: &Path, pid: u32, netns: Option<u32>) -> Vec<(u16, u64)> {
    let dir = proc_root.join(pid.to_string());
    let asked = match (own_net_namespace(), netns) {
        (Some(own), Some(theirs)) if own == theirs => sock_diag::listeners(None),
        _ => sock_diag::listeners(Some(&dir.join("ns/net"))),
    };
    match asked {
        Ok(listeners) => return listeners,
        Err(e) => log::debug!("pid {pid}: socket diagnostics: {e}; reading /proc tables"),
    }
    ["net/tcp", "net/tcp6"]
        .iter()
        .filter_map(|f| fs::read_to_string(dir.join(f)).ok())
        .flat_map(|table| parse_listeners(&table))
        .collect()
}

/// The ports of `listeners` (its namespace's) whose sockets `pid` holds.
pub fn listening_ports(proc_root: &Path, pid: u32, listeners: &[(u16, u64)]) -> Vec<u16> {
    let dir = proc_root.join(pid.to_string());
    let Ok(fds) = fs::read_dir(dir.join("fd")) else {
        return Vec::new();
    };
    let inodes: HashSet<u64> = fds
        .filter_map(|fd| {
            let link = fs::read_link(fd.ok()?.path()).ok()?;
            link.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect();
    let mut ports: Vec<u16> = listeners
        .iter()
        .filter(|(_, inode)| inodes.contains(inode))
        .map(|&(port, _)| port)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The agent's own network namespace (from its own `/proc`, whatever
/// `proc_root` the host's processes are read from), read once.
fn own_net_namespace() -> Option<u32> {
    static OWN: OnceLock<Option<u32>> = OnceLock::new();
    *OWN.get_or_init(|| net_namespace(Path::new("/proc"), std::process::id()))
}

/// The inode of a process's network namespace (`/proc/PID/ns/net` -> `net:[4026531840]`).
pub fn net_namespace(proc_root: &Path, pid: u32) -> Option<u32> {
    let link = fs::read_link(proc_root.join(pid.to_string()).join("ns/net")).ok()?;
    link.to_str()?
        .strip_prefix("net:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// (port, inode) of each LISTEN row of a `/proc/net/tcp*` table.
pub fn parse_listeners(table: &str) -> Vec<(u16, u64)> {
    table
        .lines()
        .skip(1)
        .filter_map(|row| {
            let cols: Vec<&str> = row.split_whitespace().collect();
            let (local, state, inode) = (cols.get(1)?, cols.get(3)?, cols.get(9)?);
            if *state != LISTEN {
                return None;
            }
            let port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            Some((port, inode.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_rows_give_port_and_inode() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 123456 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F40 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 123457 1 0000000000000000 20 4 30 10 -1
";
        assert_eq!(parse_listeners(table), [(8000, 123456)]);
    }

    #[test]
    fn a_process_listening_on_a_port_is_found() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (proc_root, pid) = (Path::new("/proc"), std::process::id());
        let netns = net_namespace(proc_root, pid);
        assert!(netns.is_some_and(|ino| ino > 1));
        let ports = listening_ports(proc_root, pid, &namespace_listeners(proc_root, pid, netns));
        assert!(ports.contains(&port), "{port} not in {ports:?}");
    }
}
