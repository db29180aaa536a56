//! Socket payload capture (`net_capture.bpf.c`): what watched servers send and
//! receive on their listening ports, as records that decode into
//! [`NetEvent`](crate::decode::NetEvent)s.

use std::{collections::HashMap, num::NonZeroU32};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, HashMap as BpfHashMap, MapData, RingBuf},
    programs::uprobe::{UProbeAttachLocation, UProbeLink, UProbeScope},
};
use inferscope_shared::{NET_CAPTURE_MAX, WATCH_ANY_NETNS};

use super::{compat, detach, read_drops};
use crate::discover::{TlsLibraries, symbols};

/// The object, as the program table names it.
const OBJECT: &str = compat::ON_SOCK_STATE.object;

/// The kernel hooks capture runs on here: for each program the table attaches
/// at load, it or the first of its fallbacks this kernel took.
#[derive(Clone, Debug)]
pub struct SocketHook(Vec<&'static compat::Program>);

impl SocketHook {
    /// The programs attached.
    pub fn programs(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.0.iter().map(|p| p.name)
    }
}

impl std::fmt::Display for SocketHook {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let hooks: Vec<String> = self.0.iter().map(|p| p.hook.to_string()).collect();
        f.write_str(&hooks.join(" + "))
    }
}

/// Which OpenSSL library a probed function is in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OpenSsl {
    Ssl,
    Crypto,
}

/// A probed OpenSSL function.
struct TlsFunction {
    library: OpenSsl,
    symbol: &'static str,
    entry: &'static str,
    /// Whose plaintext is captured at its return (`TLS_RETURN`).
    plaintext: bool,
}

/// OpenSSL functions probed in a TLS server: the calls whose plaintext is
/// captured, and those that tie an SSL object to its connection (its read BIO,
/// and the ciphertext an event loop writes to that BIO).
#[rustfmt::skip]
const TLS_FUNCTIONS: [TlsFunction; 6] = [
    TlsFunction { library: OpenSsl::Ssl, symbol: "SSL_read", entry: compat::SSL_READ_ENTER.name, plaintext: true },
    TlsFunction { library: OpenSsl::Ssl, symbol: "SSL_read_ex", entry: compat::SSL_READ_EX_ENTER.name, plaintext: true },
    TlsFunction { library: OpenSsl::Ssl, symbol: "SSL_write", entry: compat::SSL_WRITE_ENTER.name, plaintext: true },
    TlsFunction { library: OpenSsl::Ssl, symbol: "SSL_write_ex", entry: compat::SSL_WRITE_EX_ENTER.name, plaintext: true },
    TlsFunction { library: OpenSsl::Ssl, symbol: "SSL_set_bio", entry: compat::SSL_SET_BIO.name, plaintext: false },
    TlsFunction { library: OpenSsl::Crypto, symbol: "BIO_write", entry: compat::BIO_WRITE.name, plaintext: false },
];
const TLS_RETURN: &str = compat::SSL_RETURN.name;

pub struct NetProbes {
    ebpf: Ebpf,
    hook: SocketHook,
    /// Per process: the TLS uprobes attached to its libssl.
    tls: HashMap<u32, Vec<UProbeLink>>,
    /// What `watched_ports` holds.
    ports: HashMap<u16, u32>,
}

impl NetProbes {
    /// Loads and attaches; `capture_bytes` bounds the payload copied per send or receive.
    pub fn load(btf: &Btf, capture_bytes: u32) -> Result<Self> {
        let capture_bytes = capture_bytes.min(NET_CAPTURE_MAX as u32);
        let mut ebpf = EbpfLoader::new()
            .btf(Some(btf))
            .override_global("capture_bytes", &capture_bytes, true)
            // Task storage (the TLS per-thread state) has no typed map in aya: only the kernel side uses it.
            .allow_unsupported_maps()
            .load(super::NET_CAPTURE_OBJ)
            .with_context(|| format!("loading {OBJECT}"))?;
        let hook = SocketHook(
            compat::kernel_hooks(OBJECT)
                .map(|p| compat::attach(&mut ebpf, btf, p))
                .collect::<Result<_>>()?,
        );
        for program in TLS_FUNCTIONS.iter().map(|f| f.entry).chain([TLS_RETURN]) {
            super::uprobe(&mut ebpf, program)?
                .load()
                .with_context(|| format!("verifying {program}"))?;
        }
        Ok(Self {
            ebpf,
            hook,
            tls: HashMap::new(),
            ports: HashMap::new(),
        })
    }

    pub fn socket_hook(&self) -> &SocketHook {
        &self.hook
    }

    /// Starts capturing connections accepted on this local port, in the network
    /// namespace with this inode (`None`: in every namespace). A port watched in
    /// two namespaces is watched in all.
    pub fn watch_port(&mut self, port: u16, netns: Option<u32>) -> Result<()> {
        let wanted = netns.unwrap_or(WATCH_ANY_NETNS);
        let value = match self.ports.get(&port) {
            None => wanted,
            Some(&v) if v == wanted => return Ok(()),
            Some(_) => WATCH_ANY_NETNS,
        };
        set_entry(&mut self.ebpf, "watched_ports", u32::from(port), value)
            .with_context(|| format!("watching port {port}"))?;
        self.ports.insert(port, value);
        Ok(())
    }

    /// Captures the plaintext of one server process's OpenSSL calls (uprobes on
    /// its `libssl` and `libcrypto`, for that process only). Returns how many
    /// functions were probed.
    pub fn attach_tls(&mut self, pid: u32, libraries: &TlsLibraries) -> Result<usize> {
        if self.tls.contains_key(&pid) {
            return Ok(0);
        }
        let scope = UProbeScope::OneProcess(NonZeroU32::new(pid).ok_or_else(|| anyhow!("pid 0"))?);
        let mut links = Vec::new();
        let mut probed = 0;
        let mut result = Ok(());
        for (library, target) in [
            (OpenSsl::Ssl, Some(&libraries.libssl)),
            (OpenSsl::Crypto, libraries.libcrypto.as_ref()),
        ] {
            let Some(target) = target else {
                continue;
            };
            let functions: Vec<&TlsFunction> =
                TLS_FUNCTIONS.iter().filter(|f| f.library == library).collect();
            let path = &target.open_path;
            let offsets = match symbols::function_offsets(path, functions.iter().map(|f| f.symbol)) {
                Ok(offsets) => offsets,
                Err(e) => {
                    result = Err(e.context(format!("reading the symbols of {}", target.path.display())));
                    continue;
                }
            };
            for f in functions {
                let Some(&offset) = offsets.get(f.symbol) else {
                    continue;
                };
                probed += 1;
                let programs = if f.plaintext {
                    &[f.entry, TLS_RETURN][..]
                } else {
                    &[f.entry][..]
                };
                for &program in programs {
                    match super::uprobe(&mut self.ebpf, program).and_then(|p| {
                        let link = p.attach(UProbeAttachLocation::AbsoluteOffset(offset), path, scope)?;
                        Ok(p.take_link(link)?)
                    }) {
                        Ok(link) => links.push(link),
                        Err(e) => result = Err(e.context(format!("attaching {program} to {}", f.symbol))),
                    }
                }
            }
        }
        self.tls.insert(pid, links);
        match result.and_then(|()| self.count_tls_processes()) {
            Ok(()) => Ok(probed),
            Err(e) => {
                self.detach_tls(pid);
                Err(e)
            }
        }
    }

    /// Tells the capture programs which processes have OpenSSL probes (their
    /// receive buffers are remembered), and how many: with none, they skip the
    /// per-thread TLS bookkeeping on every send and receive.
    fn count_tls_processes(&mut self) -> Result<()> {
        let mut pids: BpfHashMap<_, u32, u8> = BpfHashMap::try_from(
            self.ebpf
                .map_mut("tls_pids")
                .ok_or_else(|| anyhow!("tls_pids missing"))?,
        )?;
        let stale: Vec<u32> = pids
            .keys()
            .flatten()
            .filter(|p| !self.tls.contains_key(p))
            .collect();
        for pid in stale {
            pids.remove(&pid).context("forgetting a process's TLS probes")?;
        }
        for &pid in self.tls.keys() {
            pids.insert(pid, 1, 0)
                .context("naming a process with TLS probes")?;
        }
        set_entry(&mut self.ebpf, "tls_processes", 0, self.tls.len() as u32)
            .context("counting processes with TLS probes")
    }

    pub fn has_tls(&self, pid: u32) -> bool {
        self.tls.contains_key(&pid)
    }

    /// Detaches a process's OpenSSL probes, in the background (see [`detach`]):
    /// they are its own, so nothing waits for them to go.
    pub fn detach_tls(&mut self, pid: u32) {
        if let Some(links) = self.tls.remove(&pid) {
            drop(detach::in_background(links));
        }
        if let Err(e) = self.count_tls_processes() {
            log::warn!("{e:#}");
        }
    }

    /// The ring buffer of captured events; call once.
    pub fn events(&mut self) -> Result<RingBuf<MapData>> {
        super::take_ring_buf(&mut self.ebpf, "net_events")
    }

    pub fn drops(&self) -> Result<super::Drops> {
        read_drops(&self.ebpf)
    }
}

/// Writes one entry of a `u32` array through which the agent configures the capture programs.
fn set_entry(ebpf: &mut Ebpf, map: &str, index: u32, value: u32) -> Result<()> {
    let map = ebpf.map_mut(map).ok_or_else(|| anyhow!("{map} missing"))?;
    Array::<_, u32>::try_from(map)?.set(index, value, 0)?;
    Ok(())
}
