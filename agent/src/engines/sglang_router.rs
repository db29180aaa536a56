//! SGLang's router (the model gateway): a Rust binary, or launched from
//! Python, that spreads requests over SGLang workers and proxies their answers.

use super::{EngineSpec, apis::*};

pub static ENGINE: EngineSpec = EngineSpec {
    name: "sglang-router",
    // The gateway binary as the kernel keeps its name (15 bytes), and the
    // Python launcher's title (`setproctitle("sglang::router")`).
    commands: &["sgl-model-gatew", "sglang-router", "sglang::router"],
    programs: &["sglang_router", "sgl-model-gateway", "sglang-router", "smg"],
    titles: &["sglang::router"],
    apis: &[
        &OPENAI_CHAT,
        &OPENAI_COMPLETIONS,
        &OPENAI_EMBEDDINGS,
        &OPENAI_RESPONSES,
        &SGLANG_GENERATE,
    ],
    prefixes: &[],
};

#[cfg(test)]
mod tests {
    #[test]
    fn recognised_by_its_binaries_module_or_title() {
        super::super::tests::recognised_as(
            "sglang-router",
            &[
                (
                    "python3",
                    "python3\0-m\0sglang_router.launch_router\0--worker-urls\0http://w:30000",
                ),
                ("sglang::router", "sglang::router\0"),
                (
                    "sgl-model-gatew",
                    "/usr/local/bin/sgl-model-gateway\0--worker-urls\0http://w:30000",
                ),
                ("smg", "/usr/local/bin/smg\0--port=30000"),
            ],
        );
    }
}
