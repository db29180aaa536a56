//! Proves the Rust mirror and the C header agree: every struct's size and every
//! field's offset, read back from the BTF that clang wrote into the committed
//! objects (the very bytes the agent loads).

use std::{collections::BTreeMap, mem::offset_of, path::Path};

use btf_rs::{Btf, Type};
use inferscope_shared::{AllocKey, GpuStats, NET_CAPTURE_MAX, NetEventHeader, ProcEvent};
use object::{Object as _, ObjectSection as _};

/// (size, field name -> byte offset) of `name` in the object's BTF.
fn c_layout(object_file: &str, name: &str) -> (usize, BTreeMap<String, usize>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ebpf-programs/obj")
        .join(object_file);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let elf = object::File::parse(&*bytes).expect("an ELF object");
    let section = elf
        .section_by_name(".BTF")
        .expect("objects are built with -g, so they carry BTF");
    let btf = Btf::from_bytes(section.data().unwrap()).expect("valid BTF");
    let ty = btf
        .resolve_types_by_name(name)
        .unwrap_or_else(|e| panic!("struct {name} not in {object_file}: {e}"))
        .into_iter()
        .find_map(|t| match t {
            Type::Struct(s) => Some(s),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{name} is not a struct in {object_file}"));
    let fields = ty
        .members
        .iter()
        .map(|m| (btf.resolve_name(m).unwrap(), m.bit_offset() as usize / 8))
        .collect();
    (ty.size(), fields)
}

macro_rules! assert_same_layout {
    ($object:literal, $c_name:literal, $rust:ty { $($field:ident),+ $(,)? }) => {{
        let (size, fields) = c_layout($object, $c_name);
        assert_eq!(size, size_of::<$rust>(), "size of struct {} vs {}", $c_name, stringify!($rust));
        let rust: BTreeMap<String, usize> =
            [$((stringify!($field).to_string(), offset_of!($rust, $field))),+].into();
        assert_eq!(fields, rust, "field offsets of struct {} vs {}", $c_name, stringify!($rust));
    }};
}

#[test]
fn gpu_stats_matches_the_c_header() {
    assert_same_layout!(
        "gpu_calls.bpf.o",
        "gpu_stats",
        GpuStats {
            kernel_launches,
            graph_launches,
            memcpy_calls,
            memcpy_bytes,
            memset_calls,
            memset_bytes,
            alloc_calls,
            alloc_bytes,
            free_calls,
            live_bytes,
            sync_calls,
            sync_ns,
            errors,
            nccl_calls,
            nccl_bytes,
        }
    );
}

#[test]
fn alloc_key_matches_the_c_header() {
    assert_same_layout!("gpu_calls.bpf.o", "alloc_key", AllocKey { tgid, pad, ptr });
}

#[test]
fn proc_event_matches_the_c_header() {
    assert_same_layout!("process.bpf.o", "proc_event", ProcEvent { kind, pid, ktime_ns });
}

#[test]
fn net_event_header_matches_the_c_header_and_data_follows_it() {
    let (size, mut fields) = c_layout("net_capture.bpf.o", "net_event");
    assert_eq!(
        fields.remove("data"),
        Some(size_of::<NetEventHeader>()),
        "data[] must follow the header"
    );
    assert_eq!(size, size_of::<NetEventHeader>() + NET_CAPTURE_MAX);
    let rust: BTreeMap<String, usize> = [
        ("ktime_ns", offset_of!(NetEventHeader, ktime_ns)),
        ("sock_cookie", offset_of!(NetEventHeader, sock_cookie)),
        ("pid", offset_of!(NetEventHeader, pid)),
        ("len", offset_of!(NetEventHeader, len)),
        ("captured", offset_of!(NetEventHeader, captured)),
        ("local_port", offset_of!(NetEventHeader, local_port)),
        ("remote_port", offset_of!(NetEventHeader, remote_port)),
        ("kind", offset_of!(NetEventHeader, kind)),
        ("direction", offset_of!(NetEventHeader, direction)),
        ("flags", offset_of!(NetEventHeader, flags)),
        ("pad", offset_of!(NetEventHeader, pad)),
    ]
    .map(|(k, v)| (k.to_string(), v))
    .into();
    assert_eq!(fields, rust);
}
