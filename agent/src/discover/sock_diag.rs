//! Listening TCP sockets from the kernel's socket diagnostics (netlink
//! `NETLINK_SOCK_DIAG`), filtered to LISTEN by the kernel: it walks only the
//! listening hash, so the cost does not grow with the connections a busy
//! server holds, as reading `/proc/PID/net/tcp` does (a walk of every
//! established socket, per read).
//!
//! A netlink socket answers for the network namespace it was made in: for
//! another namespace (a container's) it is made on a short-lived thread of its
//! own that enters that namespace, so that no thread of the agent ever changes
//! namespace.

use std::{
    fs::File,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const TCP_LISTEN_STATE: u32 = 10;
const NLMSG_HEADER: usize = 16;
/// struct inet_diag_req_v2: family, protocol, ext, pad, states, inet_diag_sockid.
const REQUEST: usize = 8 + 48;
/// struct inet_diag_msg up to and with `idiag_inode`.
const MESSAGE: usize = 72;
const SPORT: usize = 4;
const INODE: usize = 68;

/// (port, socket inode) of every listening TCP socket, IPv4 and IPv6, in the
/// network namespace `netns` (a `/proc/PID/ns/net` path), or in the agent's
/// own when `None`.
pub fn listeners(netns: Option<&Path>) -> io::Result<Vec<(u16, u64)>> {
    let socket = match netns {
        None => open()?,
        Some(ns) => open_in(ns)?,
    };
    let mut found = Vec::new();
    for family in [libc::AF_INET, libc::AF_INET6] {
        dump(&socket, family as u8, &mut found)?;
    }
    Ok(found)
}

fn open() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the descriptor is owned from here on.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A diagnostics socket of the namespace at `netns`, made on a thread that
/// enters it and ends there.
fn open_in(netns: &Path) -> io::Result<OwnedFd> {
    let namespace = File::open(netns)?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: changes this short-lived thread's network namespace only.
                if unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                open()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")))
    })
}

/// Asks for one family's listening TCP sockets and reads the whole answer.
fn dump(socket: &OwnedFd, family: u8, found: &mut Vec<(u16, u64)>) -> io::Result<()> {
    let mut request = [0u8; NLMSG_HEADER + REQUEST];
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    request[0..4].copy_from_slice(&((NLMSG_HEADER + REQUEST) as u32).to_ne_bytes());
    request[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    request[6..8].copy_from_slice(&flags.to_ne_bytes());
    request[16] = family;
    request[17] = libc::IPPROTO_TCP as u8;
    request[20..24].copy_from_slice(&(1u32 << TCP_LISTEN_STATE).to_ne_bytes());
    // SAFETY: sends `request`, which outlives the call; the kernel is the default peer.
    let sent = unsafe { libc::send(socket.as_raw_fd(), request.as_ptr().cast(), request.len(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: receives into `buf`, within its length.
        let n = unsafe { libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if parse_dump(&buf[..n as usize], found)? == Dump::Done {
            return Ok(());
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Dump {
    More,
    Done,
}

/// Reads one datagram of a dump answer into `found`: whatever the bytes, a
/// result or an error, never a panic.
fn parse_dump(mut bytes: &[u8], found: &mut Vec<(u16, u64)>) -> io::Result<Dump> {
    let malformed = || io::Error::new(io::ErrorKind::InvalidData, "malformed sock_diag answer");
    while !bytes.is_empty() {
        let header = bytes.get(..NLMSG_HEADER).ok_or_else(malformed)?;
        let len = u32::from_ne_bytes(header[0..4].try_into().map_err(|_| malformed())?) as usize;
        let kind = u16::from_ne_bytes(header[4..6].try_into().map_err(|_| malformed())?);
        let message = bytes
            .get(NLMSG_HEADER..len.max(NLMSG_HEADER))
            .ok_or_else(malformed)?;
        match kind as i32 {
            libc::NLMSG_DONE => return Ok(Dump::Done),
            libc::NLMSG_ERROR => {
                let code = message.get(..4).ok_or_else(malformed)?;
                let code = i32::from_ne_bytes(code.try_into().map_err(|_| malformed())?);
                return Err(io::Error::from_raw_os_error(-code));
            }
            _ => {
                let m = message.get(..MESSAGE).ok_or_else(malformed)?;
                let port = u16::from_be_bytes([m[SPORT], m[SPORT + 1]]);
                let inode = u32::from_ne_bytes([m[INODE], m[INODE + 1], m[INODE + 2], m[INODE + 3]]);
                found.push((port, inode.into()));
            }
        }
        // Messages are 4-byte aligned.
        let next = len.checked_add(3).ok_or_else(malformed)? & !3;
        bytes = bytes.get(next.max(NLMSG_HEADER)..).unwrap_or_default();
    }
    Ok(Dump::More)
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn a_listening_socket_of_this_process_is_found_with_its_inode() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let link = std::fs::read_link(format!("/proc/self/fd/{}", listener.as_raw_fd())).unwrap();
        let inode: u64 = link
            .to_str()
            .and_then(|l| l.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
            .unwrap();
        let found = listeners(None).unwrap();
        assert!(
            found.contains(&(port, inode)),
            "({port}, {inode}) not in {found:?}"
        );
        // The same, asked from a thread that entered this very namespace.
        let found = listeners(Some(Path::new("/proc/self/ns/net"))).unwrap();
        assert!(
            found.contains(&(port, inode)),
            "({port}, {inode}) not in {found:?}"
        );
    }

    #[test]
    fn truncated_or_garbled_answers_are_errors() {
        let mut found = Vec::new();
        // A header announcing more than there is.
        let mut short = [0u8; 20];
        short[0..4].copy_from_slice(&72u32.to_ne_bytes());
        short[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        assert!(parse_dump(&short, &mut found).is_err());
        assert!(parse_dump(&[1, 2, 3], &mut found).is_err());
        // A length below the header's own size still moves on.
        let mut tiny = [0u8; 16];
        tiny[4..6].copy_from_slice(&(libc::NLMSG_DONE as u16).to_ne_bytes());
        assert_eq!(parse_dump(&tiny, &mut found).unwrap(), Dump::Done);
        assert!(found.is_empty());
    }
}
