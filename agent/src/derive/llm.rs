//! What LLM serving APIs mean, read from the few fields a metric needs: which
//! endpoints generate text, the requested model, whether a streamed record
//! carries generated content, and the token usage a server reports. Prompt and
//! answer text are looked at (is it empty?) but never kept.

use serde_json::Value;

/// Paths of text-generation endpoints: OpenAI-compatible (vLLM, SGLang, TGI,
/// llama.cpp, Ollama), TGI native, llama.cpp native, Ollama native, Triton.
pub fn is_generation_endpoint(path: &str) -> bool {
    let path = path.split('?').next().unwrap_or(path);
    matches!(
        path,
        "/v1/chat/completions"
            | "/v1/completions"
            | "/v1/embeddings"
            | "/generate"
            | "/generate_stream"
            | "/completion"
            | "/completions"
            | "/api/generate"
            | "/api/chat"
            | "/api/embed"
            | "/api/embeddings"
    ) || (path.starts_with("/v2/models/")
        && (path.ends_with("/generate") || path.ends_with("/generate_stream")))
}

/// The model a request names: the body's top-level `"model"`, else Triton's path segment.
pub fn requested_model(path: &str, body: &[u8]) -> Option<String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => v.get("model").and_then(Value::as_str).map(str::to_string),
        // Truncated capture (a long prompt): scan for the key instead.
        Err(_) => scan_string_field(body, "model"),
    }
    .or_else(|| {
        let rest = path.strip_prefix("/v2/models/")?;
        Some(rest.split('/').next()?.to_string())
    })
}

/// `"key": "value"` anywhere in possibly truncated JSON; good enough for a model name.
fn scan_string_field(body: &[u8], key: &str) -> Option<String> {
    let text =
        std::str::from_utf8(body).unwrap_or_else(|e| std::str::from_utf8(&body[..e.valid_up_to()]).unwrap());
    let needle = format!("\"{key}\"");
    let after = &text[text.find(&needle)? + needle.len()..];
    let after = after
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .strip_prefix('"')?;
    let end = after.find('"')?;
    Some(after[..end].to_string())
}

/// Token counts a server reports about a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub output_tokens: Option<u64>,
    pub input_tokens: Option<u64>,
}

impl Usage {
    /// Later reports (the final chunk) win field by field.
    pub fn merge(&mut self, other: Usage) {
        self.output_tokens = other.output_tokens.or(self.output_tokens);
        self.input_tokens = other.input_tokens.or(self.input_tokens);
    }
}

/// One streamed record (SSE `data`, NDJSON line) or a whole JSON response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// It carries generated content (a token), not just a role, an empty delta or a summary.
    pub content: bool,
    pub usage: Usage,
    /// The model the response names, for servers whose requests do not.
    pub model: Option<String>,
}

pub fn read_record(bytes: &[u8]) -> Record {
    let Ok(v) = serde_json::from_slice::<Value>(bytes) else {
        return Record::default();
    };
    Record {
        content: carries_content(&v),
        usage: usage(&v),
        model: v.get("model").and_then(Value::as_str).map(str::to_string),
    }
}

fn non_empty(v: Option<&Value>) -> bool {
    match v {
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        _ => false,
    }
}

fn carries_content(v: &Value) -> bool {
    if let Some(choices) = v.get("choices").and_then(Value::as_array) {
        // OpenAI chat (delta) and completions (text).
        return choices.iter().any(|c| {
            let d = c.get("delta");
            non_empty(d.and_then(|d| d.get("content")))
                || non_empty(d.and_then(|d| d.get("reasoning_content")))
                || non_empty(d.and_then(|d| d.get("tool_calls")))
                || non_empty(c.get("text"))
        });
    }
    // TGI: {"token": {"text", "special"}}; special tokens (end of sequence) are not content.
    if let Some(token) = v.get("token") {
        return non_empty(token.get("text")) && token.get("special") != Some(&Value::Bool(true));
    }
    // Ollama chat and generate, llama.cpp /completion, Triton generate_stream.
    non_empty(v.get("message").and_then(|m| m.get("content")))
        || non_empty(v.get("response"))
        || non_empty(v.get("content"))
        || non_empty(v.get("text_output"))
}

fn usage(v: &Value) -> Usage {
    let n = |v: Option<&Value>| v.and_then(Value::as_u64);
    if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
        return Usage {
            output_tokens: n(u.get("completion_tokens")),
            input_tokens: n(u.get("prompt_tokens")),
        };
    }
    // Ollama's final record.
    if v.get("eval_count").is_some() || v.get("prompt_eval_count").is_some() {
        return Usage {
            output_tokens: n(v.get("eval_count")),
            input_tokens: n(v.get("prompt_eval_count")),
        };
    }
    // llama.cpp /completion's final record.
    if v.get("tokens_predicted").is_some() {
        return Usage {
            output_tokens: n(v.get("tokens_predicted")),
            input_tokens: n(v.get("tokens_evaluated")),
        };
    }
    // TGI's final stream record and /generate response.
    if let Some(d) = v.get("details").filter(|d| d.is_object()) {
        return Usage {
            output_tokens: n(d.get("generated_tokens")),
            input_tokens: None,
        };
    }
    Usage::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_only_delta_is_not_the_first_token() {
        let role = br#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#;
        assert!(!read_record(role).content);
        let token = br#"{"choices":[{"index":0,"delta":{"content":"Hi"}}],"model":"smol"}"#;
        let r = read_record(token);
        assert!(r.content);
        assert_eq!(r.model.as_deref(), Some("smol"));
    }

    #[test]
    fn final_usage_is_read_from_each_servers_shape() {
        let openai = br#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":34}}"#;
        assert_eq!(
            read_record(openai).usage,
            Usage {
                output_tokens: Some(34),
                input_tokens: Some(12)
            }
        );
        let ollama = br#"{"done":true,"eval_count":7,"prompt_eval_count":3}"#;
        assert_eq!(
            read_record(ollama).usage,
            Usage {
                output_tokens: Some(7),
                input_tokens: Some(3)
            }
        );
        let llama = br#"{"content":"","stop":true,"tokens_predicted":9,"tokens_evaluated":4}"#;
        let r = read_record(llama);
        assert_eq!(
            r.usage,
            Usage {
                output_tokens: Some(9),
                input_tokens: Some(4)
            }
        );
        assert!(!r.content);
        let tgi = br#"{"token":{"id":2,"text":"</s>","special":true},"details":{"generated_tokens":5}}"#;
        let r = read_record(tgi);
        assert_eq!((r.content, r.usage.output_tokens), (false, Some(5)));
    }

    #[test]
    fn ollama_and_completions_content_is_seen() {
        assert!(read_record(br#"{"message":{"role":"assistant","content":"x"},"done":false}"#).content);
        assert!(read_record(br#"{"response":"x","done":false}"#).content);
        assert!(read_record(br#"{"choices":[{"text":"x"}]}"#).content);
        assert!(!read_record(b"[DONE]").content);
        assert!(!read_record(b"\xff garbage").content);
    }

    #[test]
    fn the_model_is_found_even_in_a_truncated_body() {
        let full = br#"{"model":"llama-3","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
        assert_eq!(
            requested_model("/v1/chat/completions", full).as_deref(),
            Some("llama-3")
        );
        let truncated = br#"{"messages":[{"role":"user","content":"hi"}], "model" : "qwen", "stream": tr"#;
        assert_eq!(
            requested_model("/v1/chat/completions", truncated).as_deref(),
            Some("qwen")
        );
        assert_eq!(
            requested_model("/v2/models/ensemble/generate_stream", b"{}").as_deref(),
            Some("ensemble")
        );
        assert_eq!(requested_model("/generate", b"{\"inputs\":\"x\"}"), None);
    }

    #[test]
    fn generation_endpoints_are_recognised() {
        assert!(is_generation_endpoint("/v1/chat/completions"));
        assert!(is_generation_endpoint("/api/chat"));
        assert!(is_generation_endpoint("/v2/models/m/generate_stream"));
        assert!(!is_generation_endpoint("/health"));
        assert!(!is_generation_endpoint("/metrics"));
    }
}
