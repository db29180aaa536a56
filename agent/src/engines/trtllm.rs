//! NVIDIA TensorRT-LLM's `trtllm-serve`: OpenAI-compatible, its SSE lines
//! written `data: {json} \n\n` (a space before the line end).

use super::{EngineSpec, apis::*};

pub static ENGINE: EngineSpec = EngineSpec {
    name: "tensorrt-llm",
    commands: &["trtllm-serve"],
    programs: &["trtllm-serve", "tensorrt_llm.commands.serve"],
    titles: &[],
    apis: &[
        &OPENAI_CHAT,
        &OPENAI_COMPLETIONS,
        &OPENAI_RESPONSES,
        &ANTHROPIC_MESSAGES,
    ],
    prefixes: &[],
};

#[cfg(test)]
mod tests {
    use crate::derive::llm::read_record;

    #[test]
    fn recognised_by_its_command_or_module() {
        super::super::tests::recognised_as(
            "tensorrt-llm",
            &[
                (
                    "trtllm-serve",
                    "/usr/bin/python3\0/usr/local/bin/trtllm-serve\0serve\0/models/llama",
                ),
                ("python3", "python3\0-m\0tensorrt_llm.commands.serve\0serve\0m"),
            ],
        );
    }

    /// Its stream chunks (`postprocess_handlers.py`): extra fields beside
    /// OpenAI's, and a space before the line end.
    #[test]
    fn its_chunks_read_as_openai_chunks() {
        let chunk = br#"{"id":"chatcmpl-1","object":"chat.completion.chunk","model":"llama","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null,"stop_reason":null,"avg_decoded_tokens_per_iter":1.0}]} "#;
        let r = read_record(chunk);
        assert!(r.content);
        assert_eq!(r.model.as_deref(), Some("llama"));
        let usage = br#"{"id":"chatcmpl-1","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":9,"total_tokens":14}} "#;
        assert_eq!(read_record(usage).usage.output_tokens, Some(9));
    }
}
