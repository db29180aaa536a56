//! LMDeploy's `api_server`: OpenAI- and Anthropic-compatible, and a native
//! `/generate` whose records carry `meta_info` as SGLang's do.

use super::{EngineSpec, apis::*};

pub static ENGINE: EngineSpec = EngineSpec {
    name: "lmdeploy",
    commands: &["lmdeploy"],
    programs: &["lmdeploy"],
    titles: &[],
    apis: &[
        &OPENAI_CHAT,
        &OPENAI_COMPLETIONS,
        &OPENAI_RESPONSES,
        &ANTHROPIC_MESSAGES,
        &SGLANG_GENERATE,
    ],
    prefixes: &[],
};

#[cfg(test)]
mod tests {
    use crate::derive::llm::read_record;

    #[test]
    fn recognised_by_its_command_or_module() {
        super::super::tests::recognised_as(
            "lmdeploy",
            &[
                (
                    "lmdeploy",
                    "/usr/bin/python3\0/usr/local/bin/lmdeploy\0serve\0api_server\0m",
                ),
                ("python3", "python3\0-m\0lmdeploy.serve.openai.api_server\0m"),
            ],
        );
    }

    /// `/generate`'s response (`serve/openai/protocol.py`).
    #[test]
    fn native_generate_reports_usage_in_meta_info() {
        let body = br#"{"text":"Hello","output_ids":[1,2],"meta_info":{"prompt_tokens":3,"completion_tokens":2,"finish_reason":{"type":"stop"}}}"#;
        let r = read_record(body);
        assert!(r.content);
        assert_eq!((r.usage.input_tokens, r.usage.output_tokens), (Some(3), Some(2)));
    }
}
