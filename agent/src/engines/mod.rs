//! Inference engines as data. One file per engine says how its serving
//! process is recognised (command name, program or Python module, process
//! title), which APIs it serves (`apis.rs`: endpoints, their operation, where
//! the response carries token usage) and under which route prefixes. Adding
//! an engine is its file, with its test, and one line in [`ALL`].
//!
//! Response bodies are read by their shape, whatever the engine
//! (`derive/llm/mod.rs`): a server that is not recognised is measured all the same
//! when it speaks a known API; recognising it names it (`gen_ai.provider.name`)
//! and has its listening ports watched without `--port`.

pub mod apis;
mod kserve;
mod llama_cpp;
mod lmdeploy;
mod nim;
mod ollama;
mod ray_serve;
mod sglang;
mod sglang_router;
mod tgi;
mod triton;
mod trtllm;
mod vllm;

use apis::{Api, Operation};

use crate::model::Engine;

/// One inference engine.
#[derive(Debug)]
pub struct EngineSpec {
    /// Its name in reports and exports (`gen_ai.provider.name`).
    pub name: &'static str,
    /// What `/proc/PID/comm` starts with (the kernel keeps 15 bytes of it).
    pub commands: &'static [&'static str],
    /// Programs or Python modules among its first command-line arguments, by
    /// base name: `vllm` matches `/usr/local/bin/vllm` and `vllm.entrypoints.…`.
    pub programs: &'static [&'static str],
    /// What its command line starts with when it sets its own process title
    /// (Ray's actors: `ray::ProxyActor`).
    pub titles: &'static [&'static str],
    /// The APIs it serves.
    pub apis: &'static [&'static Api],
    /// Prefixes its routes may carry before an API's path (KServe: `/openai`).
    pub prefixes: &'static [&'static str],
}

/// Every engine recognised, in the order they are tried: a more specific
/// program (`sglang_router`) before one whose name it starts with.
pub static ALL: &[&EngineSpec] = &[
    &llama_cpp::ENGINE,
    &ollama::ENGINE,
    &triton::ENGINE,
    &tgi::ENGINE,
    &vllm::ENGINE,
    &sglang_router::ENGINE,
    &sglang::ENGINE,
    &trtllm::ENGINE,
    &ray_serve::ENGINE,
    &lmdeploy::ENGINE,
    &nim::ENGINE,
    &kserve::ENGINE,
];

impl EngineSpec {
    /// Whether a process with this command name and command line (its
    /// arguments NUL-separated, as `/proc/PID/cmdline` holds them) runs it.
    pub fn runs(&self, comm: &str, cmdline: &str) -> bool {
        let program = |arg: &str| {
            let base = arg.rsplit('/').next().unwrap_or(arg);
            self.programs.iter().any(|p| {
                base.strip_prefix(p)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
            })
        };
        self.commands.iter().any(|c| comm.starts_with(c))
            || self.titles.iter().any(|t| cmdline.starts_with(t))
            || cmdline.split('\0').take(3).any(program)
    }
}

/// The engine a process runs, if recognised.
pub fn recognise(comm: &str, cmdline: &str) -> Option<Engine> {
    ALL.iter()
        .find(|e| e.runs(comm, cmdline))
        .map(|e| Engine::named(e.name))
}

/// What a request to `path` asked for, in the GenAI conventions'
/// `gen_ai.operation.name` terms; `None` for endpoints that do not generate.
pub fn operation_name(path: &str) -> Option<&'static str> {
    operation(path).map(Operation::name)
}

/// What a request to `path` asks for, if some engine serves it as a
/// generation endpoint (directly, or under one of an engine's prefixes).
pub fn operation(path: &str) -> Option<Operation> {
    let path = path.split('?').next().unwrap_or(path);
    let direct = ALL
        .iter()
        .flat_map(|e| e.apis)
        .find_map(|api| api.operation(path));
    direct.or_else(|| {
        ALL.iter().find_map(|e| {
            e.prefixes
                .iter()
                .filter_map(|prefix| path.strip_prefix(prefix).filter(|rest| rest.starts_with('/')))
                .find_map(|rest| e.apis.iter().find_map(|api| api.operation(rest)))
        })
    })
}

/// Whether a request to `path` generates (or embeds): its requests are measured.
pub fn is_generation_endpoint(path: &str) -> bool {
    operation(path).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_engine_has_a_unique_name_a_way_to_be_recognised_and_an_api() {
        let mut names = std::collections::HashSet::new();
        for e in ALL {
            assert!(names.insert(e.name), "{} listed twice", e.name);
            assert!(
                !(e.commands.is_empty() && e.programs.is_empty() && e.titles.is_empty()),
                "{} cannot be recognised",
                e.name
            );
            assert!(!e.apis.is_empty(), "{} serves nothing", e.name);
            assert!(
                e.prefixes.iter().all(|p| p.starts_with('/') && !p.ends_with('/')),
                "{}",
                e.name
            );
        }
    }

    #[test]
    fn generation_endpoints_are_told_from_the_rest() {
        for (path, op) in [
            ("/v1/chat/completions", Some(Operation::Chat)),
            ("/v1/chat/completions?stream=true", Some(Operation::Chat)),
            ("/v1/responses", Some(Operation::Chat)),
            ("/v1/messages", Some(Operation::Chat)),
            ("/v1/completions", Some(Operation::TextCompletion)),
            ("/v1/embeddings", Some(Operation::Embeddings)),
            ("/api/chat", Some(Operation::Chat)),
            ("/v2/models/m/generate_stream", Some(Operation::TextCompletion)),
            (
                "/inference.GRPCInferenceService/ModelStreamInfer",
                Some(Operation::TextCompletion),
            ),
            ("/openai/v1/chat/completions", Some(Operation::Chat)),
            ("/v1/messages/count_tokens", None),
            ("/v1/models", None),
            ("/v2/models/m/ready", None),
            ("/openai/v1/models", None),
            ("/openai", None),
            ("/openaiv1/chat/completions", None),
            ("/health", None),
            ("/metrics", None),
        ] {
            assert_eq!(operation(path), op, "{path}");
            assert_eq!(is_generation_endpoint(path), op.is_some(), "{path}");
        }
    }

    /// The first matching engine names the process: none shadows another's
    /// command lines (checked with each engine's own examples, in its file).
    pub(super) fn recognised_as(name: &str, cases: &[(&str, &str)]) {
        for (comm, cmdline) in cases {
            assert_eq!(
                recognise(comm, cmdline).as_ref().map(Engine::name),
                Some(name),
                "{comm} {cmdline:?}"
            );
        }
    }

    #[test]
    fn other_processes_are_no_engine() {
        for (comm, cmdline) in [
            ("python3", "python3\0train.py\0--data\0vllm-logs"),
            ("bash", "bash\0"),
            ("ray", "ray\0start\0--head"),
            ("python3", "python3\0-m\0sglangx"),
        ] {
            assert_eq!(recognise(comm, cmdline), None, "{comm} {cmdline:?}");
        }
    }
}
