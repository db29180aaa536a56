//! Symbols of an ELF file: functions as the file offsets a uprobe is set at,
//! and the linked addresses of others.
//!
//! Read once per file identity by the caller. GPU libraries are large, so the
//! file is read through a cache of the ranges the ELF parser asks for
//! (headers, section table, symbol and string tables), never whole, and only
//! the wanted names are kept (what whole files cost: docs/architecture.md,
//! *Discovery*).

use std::{collections::HashMap, fs::File, ops::Range, path::Path};

use anyhow::{Context as _, Result};
use object::{
    Object as _, ObjectSection as _, ObjectSegment as _, ObjectSymbol as _, ReadCache, ReadRef, SegmentFlags,
    SymbolKind,
};

/// File offsets of those `wanted` functions the file defines (dynamic or static
/// symbol table, the dynamic one first; version suffixes such as
/// `@@libcudart.so.12` play no part).
pub fn function_offsets<'a>(
    path: &Path,
    wanted: impl IntoIterator<Item = &'a str>,
) -> Result<HashMap<&'a str, u64>> {
    read_elf(path, |cache| elf_function_offsets(cache, wanted))
}

/// Reads the ELF file at `path` through a cache of the ranges the parser asks for.
fn read_elf<T>(path: &Path, read: impl FnOnce(&ReadCache<File>) -> object::Result<T>) -> Result<T> {
    let file = File::open(path).with_context(|| format!("reading {}", path.display()))?;
    read(&ReadCache::new(file)).with_context(|| format!("parsing ELF {}", path.display()))
}

/// [`function_offsets`] of an ELF image read through `data` (a file cache, or
/// bytes in memory): whatever the bytes, an error or a table, never a panic.
pub fn elf_function_offsets<'a, 'data, R: ReadRef<'data>>(
    data: R,
    wanted: impl IntoIterator<Item = &'a str>,
) -> object::Result<HashMap<&'a str, u64>> {
    let elf = object::File::parse(data)?;
    Ok(defined(&elf, wanted, |sym| {
        if sym.kind() != SymbolKind::Text {
            return None;
        }
        let section = elf.section_by_index(sym.section_index()?).ok()?;
        let (file_offset, _) = section.file_range()?;
        // A malformed file can place a symbol outside its section.
        let in_section = sym.address().checked_sub(section.address())?;
        Some(file_offset.saturating_add(in_section))
    }))
}

/// Virtual addresses (as linked, before any load bias) of those `wanted`
/// symbols the file defines, data as well as functions: the distance between
/// two of them is the same in every process that maps the file.
pub fn symbol_addresses<'a>(
    path: &Path,
    wanted: impl IntoIterator<Item = &'a str>,
) -> Result<HashMap<&'a str, u64>> {
    read_elf(path, |cache| {
        let elf = object::File::parse(cache)?;
        Ok(defined(&elf, wanted, |sym| Some(sym.address())))
    })
}

/// The address the file's first bytes are linked at (its segment at file
/// offset 0, page-aligned): 0 for shared objects and PIE executables, the
/// fixed base (such as 0x400000) of a non-PIE one. A mapping of offset 0 that
/// starts at `start` has the load bias `start - load_base`.
pub fn load_base(path: &Path) -> Result<u64> {
    read_elf(path, |cache| {
        let elf = object::File::parse(cache)?;
        Ok(elf
            .segments()
            .filter(|s| s.file_range().0 == 0)
            .map(|s| s.address() & !0xfff)
            .min()
            .unwrap_or(0))
    })
}

/// The file ranges of the file's executable segments: where its code is.
pub fn code_ranges(path: &Path) -> Result<Vec<Range<u64>>> {
    read_elf(path, |cache| {
        let elf = object::File::parse(cache)?;
        Ok(elf
            .segments()
            .filter(
                |s| matches!(s.flags(), SegmentFlags::Elf { p_flags } if p_flags & object::elf::PF_X != 0),
            )
            .map(|s| {
                let (start, size) = s.file_range();
                start..start.saturating_add(size)
            })
            .collect())
    })
}

/// The first definition of each wanted name (dynamic symbol table first) that
/// `value` accepts, with what it makes of it.
fn defined<'a, 'data, 'file, R: ReadRef<'data>>(
    elf: &'file object::File<'data, R>,
    wanted: impl IntoIterator<Item = &'a str>,
    value: impl Fn(&object::Symbol<'data, 'file, R>) -> Option<u64>,
) -> HashMap<&'a str, u64> {
    let wanted: HashMap<&[u8], &'a str> = wanted.into_iter().map(|w| (w.as_bytes(), w)).collect();
    let mut found = HashMap::new();
    for sym in elf.dynamic_symbols().chain(elf.symbols()) {
        if found.len() == wanted.len() {
            break;
        }
        if sym.is_undefined() || sym.address() == 0 {
            continue;
        }
        let Some(&name) = sym.name_bytes().ok().and_then(|n| wanted.get(n)) else {
            continue;
        };
        if found.contains_key(name) {
            continue;
        }
        if let Some(v) = value(&sym) {
            found.insert(name, v);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_defined_functions_of_a_real_library_and_skips_the_rest() {
        let libc = Path::new("/proc/self/exe");
        let offsets = function_offsets(libc, ["main", "no_such_function_anywhere"]).unwrap();
        assert!(offsets.contains_key("main"));
        assert!(!offsets.contains_key("no_such_function_anywhere"));
    }

    #[test]
    fn code_ranges_hold_the_functions() {
        let exe = Path::new("/proc/self/exe");
        let main = function_offsets(exe, ["main"]).unwrap()["main"];
        let code = code_ranges(exe).unwrap();
        assert!(
            code.iter().any(|r| r.contains(&main)),
            "main at {main:#x}, code {code:x?}"
        );
    }

    #[test]
    fn finds_data_symbols_by_address() {
        let loader = Path::new("/lib64/ld-linux-x86-64.so.2");
        let found = symbol_addresses(loader, ["_r_debug", "_dl_debug_state"]).unwrap();
        assert_eq!(found.len(), 2, "{found:?}");
        // Data lives after code in every ld.so layout.
        assert!(found["_r_debug"] > found["_dl_debug_state"], "{found:?}");
    }

    #[test]
    fn a_file_that_is_not_elf_is_an_error_not_a_panic() {
        let err = function_offsets(Path::new("/proc/self/status"), ["main"]).unwrap_err();
        assert!(format!("{err:#}").contains("parsing ELF"), "{err:#}");
    }
}
