//! Function symbols of an ELF file, as the file offsets a uprobe is set at.
//!
//! Read once per file identity by the caller: a real `libcuda.so` is tens of
//! megabytes, and aya's own by-name attach would parse it for every symbol.

use std::{collections::HashMap, fs, path::Path};

use anyhow::{Context as _, Result};
use object::{Object as _, ObjectSection as _, ObjectSymbol as _, SymbolKind};

/// File offsets of those `wanted` functions the file defines (dynamic or static
/// symbol table; version suffixes such as `@@libcudart.so.12` play no part).
pub fn function_offsets<'a>(
    path: &Path,
    wanted: impl IntoIterator<Item = &'a str>,
) -> Result<HashMap<&'a str, u64>> {
    let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let elf = object::File::parse(&*data).with_context(|| format!("parsing ELF {}", path.display()))?;
    let mut by_name = HashMap::new();
    for sym in elf.dynamic_symbols().chain(elf.symbols()) {
        if sym.kind() != SymbolKind::Text || sym.is_undefined() || sym.address() == 0 {
            continue;
        }
        let (Ok(name), Some(index)) = (sym.name(), sym.section_index()) else {
            continue;
        };
        let Ok(section) = elf.section_by_index(index) else {
            continue;
        };
        let Some((file_offset, _)) = section.file_range() else {
            continue;
        };
        by_name
            .entry(name.to_string())
            .or_insert(sym.address() - section.address() + file_offset);
    }
    Ok(wanted
        .into_iter()
        .filter_map(|name| Some((name, *by_name.get(name)?)))
        .collect())
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
