//! Function symbols of an ELF file, as the file offsets a uprobe is set at.
//!
//! Read once per file identity by the caller. GPU libraries are large (a real
//! `libnccl.so.2` is 218 MB, `libcuda.so` tens of MB), so the file is read
//! through a cache of the ranges the ELF parser asks for (headers, section
//! table, symbol and string tables), never whole, and only the wanted names
//! are kept: reading whole files took 256 MiB of RSS and seconds with PyTorch.

use std::{collections::HashMap, fs::File, path::Path};

use anyhow::{Context as _, Result};
use object::{Object as _, ObjectSection as _, ObjectSymbol as _, ReadCache, ReadRef, SymbolKind};

/// File offsets of those `wanted` functions the file defines (dynamic or static
/// symbol table, the dynamic one first; version suffixes such as
/// `@@libcudart.so.12` play no part).
pub fn function_offsets<'a>(
    path: &Path,
    wanted: impl IntoIterator<Item = &'a str>,
) -> Result<HashMap<&'a str, u64>> {
    let file = File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let cache = ReadCache::new(file);
    elf_function_offsets(&cache, wanted).with_context(|| format!("parsing ELF {}", path.display()))
}

/// [`function_offsets`] of an ELF image read through `data` (a file cache, or
/// bytes in memory): whatever the bytes, an error or a table, never a panic.
pub fn elf_function_offsets<'a, 'data, R: ReadRef<'data>>(
    data: R,
    wanted: impl IntoIterator<Item = &'a str>,
) -> object::Result<HashMap<&'a str, u64>> {
    let elf = object::File::parse(data)?;
    let wanted: HashMap<&[u8], &'a str> = wanted.into_iter().map(|w| (w.as_bytes(), w)).collect();
    let mut found = HashMap::new();
    for sym in elf.dynamic_symbols().chain(elf.symbols()) {
        if found.len() == wanted.len() {
            break;
        }
        if sym.kind() != SymbolKind::Text || sym.is_undefined() || sym.address() == 0 {
            continue;
        }
        let Some(&name) = sym.name_bytes().ok().and_then(|n| wanted.get(n)) else {
            continue;
        };
        if found.contains_key(name) {
            continue;
        }
        let Some(section) = sym.section_index().and_then(|i| elf.section_by_index(i).ok()) else {
            continue;
        };
        let Some((file_offset, _)) = section.file_range() else {
            continue;
        };
        // A malformed file can place a symbol outside its section.
        let Some(in_section) = sym.address().checked_sub(section.address()) else {
            continue;
        };
        found.insert(name, file_offset.saturating_add(in_section));
    }
    Ok(found)
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
    fn a_file_that_is_not_elf_is_an_error_not_a_panic() {
        let err = function_offsets(Path::new("/proc/self/status"), ["main"]).unwrap_err();
        assert!(format!("{err:#}").contains("parsing ELF"), "{err:#}");
    }
}
