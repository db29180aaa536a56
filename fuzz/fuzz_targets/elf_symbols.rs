//! Function symbols of any bytes posing as an ELF file (a library replaced or
//! corrupted on disk): an error or a table, never a panic.
#![no_main]

use inferscope::discover::symbols::elf_function_offsets;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = elf_function_offsets(data, ["cudaLaunchKernel", "ncclAllReduce", "main"]);
});
