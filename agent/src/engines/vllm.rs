//! vLLM's OpenAI-compatible server (its engine core runs in processes of its own).

use super::{EngineSpec, apis::*};

pub static ENGINE: EngineSpec = EngineSpec {
    name: "vllm",
    commands: &[],
    programs: &["vllm"],
    titles: &[],
    apis: &[
        &OPENAI_CHAT,
        &OPENAI_COMPLETIONS,
        &OPENAI_EMBEDDINGS,
        &OPENAI_RESPONSES,
        &ANTHROPIC_MESSAGES,
    ],
    prefixes: &[],
};

#[cfg(test)]
mod tests {
    #[test]
    fn recognised_by_its_command_or_module() {
        super::super::tests::recognised_as(
            "vllm",
            &[
                ("python3", "python3\0-m\0vllm.entrypoints.openai.api_server\0"),
                ("vllm", "/usr/bin/python3\0/usr/local/bin/vllm\0serve\0"),
            ],
        );
    }
}
