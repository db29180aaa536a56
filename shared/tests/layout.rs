//! Proves the Rust mirror and the C header agree: every struct's size and every
//! field's offset, and every enum's values, read back from the BTF that clang
//! wrote into the committed objects (the very bytes the agent loads).

use std::{collections::BTreeMap, mem::offset_of, path::Path};

use btf_rs::{Btf, Type};
use inferscope_shared::{
    AllocKey, CALL_ARGS_MAX, COOKIE_AUX_ARG_SHIFT, COOKIE_CODE_AFTER_SHIFT, COOKIE_CODE_BEFORE_SHIFT,
    COOKIE_CODE_SCALE_SHIFT, COOKIE_DIR_SHIFT, COOKIE_DRIVER_SHIFT, COOKIE_NCCL_OP_SHIFT,
    COOKIE_RETURN_PROBE_SHIFT, COOKIE_SIZE_ARG_SHIFT, COPY_DIRECTIONS, CopyDir, DropReason, GpuOp,
    GpuProcess, GpuStats, MappedFile, NCCL_OPS, NET_CAPTURE_MAX, NET_CLOSED, NET_DATA, NET_FLAG_AFTER_LOSS,
    NET_FLAG_RESET_BY_PEER, NET_FLAG_TLS, NET_FLAG_UNREADABLE, NET_PEER_CLOSED, NET_RECV, NET_SEND,
    NetEventHeader, PROC_EXEC, PROC_EXIT, PROC_LIBS_CHANGED, ProcEvent, WATCH_ANY_NETNS,
};
use object::{Object as _, ObjectSection as _};

fn object_btf(object_file: &str) -> Btf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ebpf-programs/obj")
        .join(object_file);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let elf = object::File::parse(&*bytes).expect("an ELF object");
    let section = elf
        .section_by_name(".BTF")
        .expect("objects are built with -g, so they carry BTF");
    Btf::from_bytes(section.data().unwrap()).expect("valid BTF")
}

/// (size, field name -> byte offset) of `name` in the object's BTF.
fn c_layout(object_file: &str, name: &str) -> (usize, BTreeMap<String, usize>) {
    let btf = object_btf(object_file);
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
fn gpu_process_matches_the_c_header() {
    assert_same_layout!("gpu_calls.bpf.o", "gpu_process", GpuProcess { comm, ppid, pad });
}

#[test]
fn proc_event_matches_the_c_header() {
    assert_same_layout!("process.bpf.o", "proc_event", ProcEvent { kind, pid, ktime_ns });
}

#[test]
fn mapped_file_matches_the_c_header() {
    assert_same_layout!("process.bpf.o", "mapped_file", MappedFile { start, dev, ino });
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

/// Enumerator name -> value of `enum name` in net_capture.bpf.o, which names
/// every ABI enum (`struct abi_enums` in events.h).
fn c_enum(name: &str) -> BTreeMap<String, u64> {
    let btf = object_btf("net_capture.bpf.o");
    let ty = btf
        .resolve_types_by_name(name)
        .unwrap_or_else(|e| panic!("enum {name} not in net_capture.bpf.o: {e}"))
        .into_iter()
        .find_map(|t| match t {
            Type::Enum(e) => Some(e),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{name} is not an enum"));
    ty.members
        .iter()
        .map(|m| (btf.resolve_name(m).unwrap(), u64::from(m.val())))
        .collect()
}

fn expect<K: ToString>(name: &str, pairs: impl IntoIterator<Item = (K, u64)>) {
    let want: BTreeMap<String, u64> = pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    assert_eq!(c_enum(name), want, "enum {name}: C (left) vs Rust (right)");
}

#[test]
fn every_enum_and_constant_of_the_abi_matches_the_c_header() {
    use CopyDir::*;
    use GpuOp::*;
    expect(
        "gpu_op",
        [
            ("GPU_OP_KERNEL_LAUNCH", KernelLaunch as u64),
            ("GPU_OP_GRAPH_LAUNCH", GraphLaunch as u64),
            ("GPU_OP_MEMCPY", Memcpy as u64),
            ("GPU_OP_MEMSET", Memset as u64),
            ("GPU_OP_ALLOC", Alloc as u64),
            ("GPU_OP_FREE", Free as u64),
            ("GPU_OP_SYNC", Sync as u64),
            ("GPU_OP_NCCL", Nccl as u64),
        ],
    );
    expect(
        "copy_dir",
        [
            ("COPY_HTOD", HostToDevice as u64),
            ("COPY_DTOH", DeviceToHost as u64),
            ("COPY_DTOD", DeviceToDevice as u64),
            ("COPY_OTHER", Other as u64),
            ("COPY_DIRECTIONS", COPY_DIRECTIONS as u64),
            ("COPY_FROM_KIND_ARG", FromKindArg as u64),
        ],
    );
    // Names, not just a count: the order is the index into nccl_calls/nccl_bytes.
    expect(
        "nccl_op",
        NCCL_OPS
            .iter()
            .enumerate()
            .map(|(i, op)| (format!("NCCL_{}", op.to_uppercase()), i as u64))
            .chain([("NCCL_OPS".to_string(), NCCL_OPS.len() as u64)]),
    );
    expect(
        "drop_reason",
        DropReason::ALL
            .iter()
            .map(|&reason| (format!("DROP_{}", reason.name().to_uppercase()), reason as u64))
            .chain([("DROP_REASONS".to_string(), DropReason::ALL.len() as u64)]),
    );
    assert!(DropReason::ALL.iter().enumerate().all(|(i, &r)| r as usize == i));
    expect(
        "cookie_layout",
        [
            ("COOKIE_SIZE_ARG_SHIFT", COOKIE_SIZE_ARG_SHIFT.into()),
            ("COOKIE_AUX_ARG_SHIFT", COOKIE_AUX_ARG_SHIFT.into()),
            ("COOKIE_DIR_SHIFT", COOKIE_DIR_SHIFT.into()),
            ("COOKIE_NCCL_OP_SHIFT", COOKIE_NCCL_OP_SHIFT.into()),
            ("COOKIE_DRIVER_SHIFT", COOKIE_DRIVER_SHIFT.into()),
            ("COOKIE_RETURN_PROBE_SHIFT", COOKIE_RETURN_PROBE_SHIFT.into()),
            ("COOKIE_CODE_SCALE_SHIFT", COOKIE_CODE_SCALE_SHIFT.into()),
            ("COOKIE_CODE_BEFORE_SHIFT", COOKIE_CODE_BEFORE_SHIFT.into()),
            ("COOKIE_CODE_AFTER_SHIFT", COOKIE_CODE_AFTER_SHIFT.into()),
            ("CALL_ARGS_MAX", CALL_ARGS_MAX.into()),
        ],
    );
    expect(
        "proc_event_kind",
        [
            ("PROC_EXEC", PROC_EXEC.into()),
            ("PROC_EXIT", PROC_EXIT.into()),
            ("PROC_LIBS_CHANGED", PROC_LIBS_CHANGED.into()),
        ],
    );
    expect("net_capture_size", [("NET_CAPTURE_MAX", NET_CAPTURE_MAX as u64)]);
    expect(
        "watch_netns",
        [("WATCH_NONE", 0), ("WATCH_ANY_NETNS", WATCH_ANY_NETNS.into())],
    );
    expect(
        "net_event_kind",
        [
            ("NET_DATA", NET_DATA.into()),
            ("NET_PEER_CLOSED", NET_PEER_CLOSED.into()),
            ("NET_CLOSED", NET_CLOSED.into()),
        ],
    );
    expect(
        "net_direction",
        [("NET_RECV", NET_RECV.into()), ("NET_SEND", NET_SEND.into())],
    );
    expect(
        "net_flag",
        [
            ("NET_FLAG_UNREADABLE", NET_FLAG_UNREADABLE.into()),
            ("NET_FLAG_RESET_BY_PEER", NET_FLAG_RESET_BY_PEER.into()),
            ("NET_FLAG_TLS", NET_FLAG_TLS.into()),
            ("NET_FLAG_AFTER_LOSS", NET_FLAG_AFTER_LOSS.into()),
        ],
    );
}
