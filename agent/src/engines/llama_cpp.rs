//! llama.cpp's `llama-server` (C++), and llama-cpp-python's server (uvicorn).

use super::{EngineSpec, apis::*};

pub static ENGINE: EngineSpec = EngineSpec {
    name: "llama.cpp",
    commands: &["llama-server"],
    programs: &["llama_cpp.server"],
    titles: &[],
    apis: &[
        &OPENAI_CHAT,
        &OPENAI_COMPLETIONS,
        &OPENAI_EMBEDDINGS,
        &OPENAI_RESPONSES,
        &ANTHROPIC_MESSAGES,
        &LLAMA_CPP_COMPLETION,
    ],
    prefixes: &[],
};

#[cfg(test)]
mod tests {
    #[test]
    fn recognised_by_its_binary_or_the_python_module() {
        super::super::tests::recognised_as(
            "llama.cpp",
            &[
                ("llama-server", "llama-server\0-m\0x.gguf"),
                ("python3", "python3\0-m\0llama_cpp.server\0--model\0x.gguf"),
            ],
        );
    }
}
