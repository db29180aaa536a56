//! Ollama (Go): its own API, and the OpenAI- and Anthropic-compatible ones.

use super::{EngineSpec, apis::*};

pub static ENGINE: EngineSpec = EngineSpec {
    name: "ollama",
    commands: &["ollama"],
    programs: &[],
    titles: &[],
    apis: &[
        &OLLAMA,
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
    fn recognised_by_its_binary() {
        super::super::tests::recognised_as("ollama", &[("ollama", "/usr/bin/ollama\0serve")]);
    }
}
