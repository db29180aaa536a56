//! NVIDIA NIM for LLMs. Its 1.x containers run vLLM under NVIDIA's own
//! module (`vllm_nvext`, later `nim_llm_sdk`); 2.x puts a proxy in front of
//! a vLLM or SGLang backend, each recognised as itself.

use super::{EngineSpec, apis::*};

pub static ENGINE: EngineSpec = EngineSpec {
    name: "nim",
    commands: &[],
    programs: &["vllm_nvext", "nim_llm_sdk"],
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
    fn recognised_by_its_module_not_as_vllm() {
        super::super::tests::recognised_as(
            "nim",
            &[
                (
                    "python3",
                    "python3\0-m\0vllm_nvext.entrypoints.openai.api_server\0",
                ),
                ("python3", "python3\0-m\0nim_llm_sdk.entrypoints.launch\0"),
            ],
        );
    }
}
