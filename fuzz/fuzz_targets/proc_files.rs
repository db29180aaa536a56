//! The `/proc` readers, given truncated or garbled files: memory maps,
//! socket tables, cgroup listings, command lines, environments.
#![no_main]

use inferscope::{
    discover::{installed::LoaderEnv, listeners::parse_listeners, maps, process},
    engines,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    maps::parse(text);
    parse_listeners(text);
    process::container_id(text);
    engines::recognise(text, text);
    LoaderEnv::parse(text.as_bytes());
});
