//! The `/proc` readers, given truncated or garbled files: memory maps,
//! socket tables, cgroup listings, command lines.
#![no_main]

use inferscope::discover::{listeners::parse_listeners, maps, process};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    maps::parse(text);
    parse_listeners(text);
    process::container_id(text);
    process::server_engine(text, text);
});
