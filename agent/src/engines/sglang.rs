//! SGLang's server: the OpenAI- and Anthropic-compatible APIs and its native
//! `/generate`, whose records carry the text so far and `meta_info` with the
//! token counts.

use super::{EngineSpec, apis::*};

pub static ENGINE: EngineSpec = EngineSpec {
    name: "sglang",
    commands: &[],
    programs: &["sglang"],
    titles: &[],
    apis: &[
        &OPENAI_CHAT,
        &OPENAI_COMPLETIONS,
        &OPENAI_EMBEDDINGS,
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
    fn recognised_by_its_module() {
        super::super::tests::recognised_as(
            "sglang",
            &[
                ("python3", "python3\0-m\0sglang.launch_server\0--model-path\0m"),
                ("sglang", "/usr/bin/python3\0/usr/local/bin/sglang\0serve\0"),
            ],
        );
    }

    /// `/generate`'s streamed records (`tokenizer_manager.py`): the text so
    /// far, and the counts in `meta_info`.
    #[test]
    fn native_generate_records_carry_text_and_their_usage_in_meta_info() {
        let chunk = br#"{"text":"Once upon","output_ids":[9,8],"meta_info":{"id":"a1","finish_reason":null,"prompt_tokens":7,"completion_tokens":2,"cached_tokens":0,"e2e_latency":0.05},"index":0}"#;
        let r = read_record(chunk);
        assert!(r.content);
        assert_eq!((r.usage.input_tokens, r.usage.output_tokens), (Some(7), Some(2)));
        let last = br#"{"text":"Once upon a time","output_ids":[9,8,7,6],"meta_info":{"id":"a1","finish_reason":{"type":"length","length":4},"prompt_tokens":7,"completion_tokens":4}}"#;
        assert_eq!(read_record(last).usage.output_tokens, Some(4));
        // A Responses API event's whole text is not a token.
        assert!(!read_record(br#"{"type":"response.output_text.done","text":"Once upon a time"}"#).content);
    }
}
