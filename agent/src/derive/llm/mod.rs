//! What LLM serving APIs mean, read from the few fields a metric needs: which
//! endpoints generate text, the requested model, whether a streamed record
//! carries generated content, and the token usage a server reports. Prompt and
//! answer text are looked at (is it empty?) but never kept.

use std::{borrow::Cow, ops::Range};

mod scan;

/// The model a request names: the body's top-level `"model"`, else Triton's path
/// segment; for Triton's gRPC service, `model_name` (field 1 of the request message).
pub fn requested_model(path: &str, body: &[u8]) -> Option<String> {
    if path.starts_with("/inference.GRPCInferenceService/") {
        return protobuf_string_field(body, 1);
    }
    // Typed: the prompt is skipped, not built into a tree of strings. Only an
    // object names a model (serde would also read a struct from an array).
    match serde_json::from_slice::<shape::Request>(body) {
        Ok(r) if body.trim_ascii_start().starts_with(b"{") => r.model.0.map(Cow::into_owned),
        Ok(_) => None,
        // Truncated capture (a long prompt): scan for the key instead.
        Err(_) => scan_string_field(body, "model"),
    }
    .or_else(|| {
        let rest = path.strip_prefix("/v2/models/")?;
        Some(rest.split('/').next()?.to_string())
    })
}

/// A top-level length-delimited field of a protobuf message, as UTF-8.
fn protobuf_string_field(mut msg: &[u8], field: u64) -> Option<String> {
    fn varint(buf: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = buf.split_first()?;
            *buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    while !msg.is_empty() {
        let key = varint(&mut msg)?;
        let len = match key & 7 {
            0 => {
                varint(&mut msg)?;
                continue;
            }
            1 => 8,
            5 => 4,
            2 => usize::try_from(varint(&mut msg)?).ok()?,
            _ => return None,
        };
        let value = msg.get(..len)?;
        if key >> 3 == field && key & 7 == 2 {
            return String::from_utf8(value.to_vec()).ok();
        }
        msg = &msg[len..];
    }
    None
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
/// It borrows from the record's bytes: read once per token, it allocates nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record<'a> {
    /// It carries generated content (a token), not just a role, an empty delta or a summary.
    pub content: bool,
    pub usage: Usage,
    /// The model the response names, for servers whose requests do not.
    pub model: Option<Cow<'a, str>>,
    /// The stream's end marker (OpenAI's `data: [DONE]`, the Responses API's
    /// `response.completed`, the Messages API's `message_stop`): the generation
    /// is complete, whatever happens to the connection next.
    pub end: bool,
    /// The stream reports that the generation failed (an `error` event, the
    /// Responses API's `response.failed`) after a successful status line.
    pub failed: bool,
}

pub fn read_record(bytes: &[u8]) -> Record<'_> {
    scan::record(bytes).map_or_else(|| read_record_typed(bytes), Record::from)
}

/// Reads the records of one stream. A server writes each like the one before
/// but for the token's text (`{"id":"chatcmpl-1",…,"choices":[{"delta":{"content":"…"}}]}`),
/// so a record that differs from the last one read in full only inside that
/// string is known to read the same. Checking that takes two comparisons of
/// its ends instead of a scan of its fields.
#[derive(Default)]
pub struct StreamReader {
    /// The last record read in full that has such a string.
    template: Vec<u8>,
    /// Where that string's contents are in it.
    text: Range<usize>,
    /// What it read as, but for its model: a record borrows that from its own bytes.
    read: Record<'static>,
    model: Option<ModelAt>,
    /// Records read in full in a row: a stream whose records differ in other
    /// places too (a timestamp each, say) stops being compared.
    misses: u8,
}

/// Without the template's bytes: they are an answer's text.
impl std::fmt::Debug for StreamReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamReader")
            .field("template_len", &self.template.len())
            .field("text", &self.text)
            .field("misses", &self.misses)
            .finish_non_exhaustive()
    }
}

/// Where a template's model name is: before the varying text, at the same
/// offset in every record; or after it, at the same distance from the end.
#[derive(Clone, Copy)]
enum ModelAt {
    Head(usize, usize),
    Tail(usize, usize),
}

/// Records read in full in a row before a stream's records stop being compared.
const MISSES_BEFORE_GIVING_UP: u8 = 8;

impl StreamReader {
    /// The same as `read_record`.
    pub fn read<'b>(&mut self, bytes: &'b [u8]) -> Record<'b> {
        if let Some(record) = self.like_template(bytes) {
            self.misses = 0;
            return record;
        }
        if self.misses >= MISSES_BEFORE_GIVING_UP {
            return read_record(bytes);
        }
        self.misses += 1;
        let Some((shape, text)) = scan::record_noting_unkept(bytes) else {
            return read_record_typed(bytes);
        };
        let record = Record::from(shape);
        if let Some(text) = text {
            self.remember(bytes, text, &record);
        }
        record
    }

    fn remember(&mut self, bytes: &[u8], text: Range<usize>, record: &Record<'_>) {
        let model = match record.model.as_deref() {
            None => None,
            // The fast path's strings are slices of the record.
            Some(m) => match (m.as_ptr() as usize).checked_sub(bytes.as_ptr() as usize) {
                Some(start) if start + m.len() <= text.start => Some(ModelAt::Head(start, m.len())),
                Some(start) if start >= text.end && start + m.len() <= bytes.len() => {
                    Some(ModelAt::Tail(bytes.len() - start, m.len()))
                }
                _ => return,
            },
        };
        self.template.clear();
        self.template.extend_from_slice(bytes);
        self.model = model;
        self.text = text;
        self.read = Record {
            model: None,
            ..record.clone()
        };
    }

    /// The record, if it is the template with other text in the same place.
    fn like_template<'b>(&self, bytes: &'b [u8]) -> Option<Record<'b>> {
        if self.template.is_empty() {
            return None;
        }
        let head = self.template.get(..self.text.start)?;
        let tail = self.template.get(self.text.end..)?;
        let text_len = bytes.len().checked_sub(head.len() + tail.len())?;
        if text_len == 0 || !bytes.starts_with(head) || !bytes.ends_with(tail) {
            return None;
        }
        // A string's contents as the fast path reads them whole: nothing that
        // would end it, escape or be refused, and valid UTF-8.
        let text = &bytes[head.len()..head.len() + text_len];
        if text.iter().any(|&b| b == b'"' || b == b'\\' || b < 0x20) || std::str::from_utf8(text).is_err() {
            return None;
        }
        let model = match self.model {
            None => None,
            Some(ModelAt::Head(start, len)) => Some(&bytes[start..start + len]),
            Some(ModelAt::Tail(from_end, len)) => {
                let start = bytes.len() - from_end;
                Some(&bytes[start..start + len])
            }
        };
        let model = match model {
            Some(m) => Some(Cow::Borrowed(std::str::from_utf8(m).ok()?)),
            None => None,
        };
        Some(Record {
            model,
            ..self.read.clone()
        })
    }
}

/// The reference reader: serde over the typed shape. `read_record` answers the
/// same, faster, for the records servers send (the `llm_json` fuzz target
/// compares the two on any input).
pub fn read_record_typed(bytes: &[u8]) -> Record<'_> {
    // Not JSON: the fast path leaves it here.
    if bytes.trim_ascii() == b"[DONE]" {
        return Record {
            end: true,
            ..Record::default()
        };
    }
    serde_json::from_slice::<shape::Record>(bytes)
        .map(Record::from)
        .unwrap_or_default()
}

impl<'a> From<shape::Record<'a>> for Record<'a> {
    fn from(r: shape::Record<'a>) -> Self {
        let event = r.event;
        Record {
            content: r.carries_content(),
            usage: r.usage(),
            model: r.model.0,
            end: matches!(event, shape::Event::End | shape::Event::Failed),
            failed: event == shape::Event::Failed,
        }
    }
}

/// The fields read, typed so that parsing skips the rest without building a
/// tree (the decode path's hot spot), and tolerant of each field's type
/// differing between servers: a mismatch reads as absent, not as an error.
mod shape {
    use std::fmt;

    use serde::{
        Deserialize, Deserializer,
        de::{IgnoredAny, MapAccess, SeqAccess, Visitor, value::MapAccessDeserializer},
    };

    use super::{Cow, Usage};

    /// Whether a value is a non-empty string or array.
    #[derive(Default)]
    pub struct NonEmpty(pub bool);
    /// A value if it is an unsigned integer.
    #[derive(Default)]
    pub struct Count(pub Option<u64>);
    /// A value if it is a string: borrowed from the record unless it has escapes.
    #[derive(Default)]
    pub struct Text<'a>(pub Option<Cow<'a, str>>);
    /// Whether any element of an array of choices carries content (no array is built).
    #[derive(Default)]
    pub struct AnyContent(pub bool);

    /// Reads any JSON value as its `Kind`, mapped by the function to what a field keeps.
    struct Any<'de, T>(fn(Kind<'_, 'de>) -> T);
    pub(super) enum Kind<'a, 'de> {
        /// A string with escapes, decoded into a buffer that lives only for the call.
        Str(&'a str),
        /// A string as it is in the record.
        Borrowed(&'de str),
        U64(u64),
        Seq(bool),
        Other,
    }

    impl<'de, T> Visitor<'de> for Any<'de, T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_str<E>(self, v: &str) -> Result<T, E> {
            Ok((self.0)(Kind::Str(v)))
        }
        fn visit_borrowed_str<E>(self, v: &'de str) -> Result<T, E> {
            Ok((self.0)(Kind::Borrowed(v)))
        }
        fn visit_u64<E>(self, v: u64) -> Result<T, E> {
            Ok((self.0)(Kind::U64(v)))
        }
        fn visit_i64<E>(self, _: i64) -> Result<T, E> {
            Ok((self.0)(Kind::Other))
        }
        fn visit_f64<E>(self, _: f64) -> Result<T, E> {
            Ok((self.0)(Kind::Other))
        }
        fn visit_bool<E>(self, _: bool) -> Result<T, E> {
            Ok((self.0)(Kind::Other))
        }
        fn visit_unit<E>(self) -> Result<T, E> {
            Ok((self.0)(Kind::Other))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
            let mut any = false;
            while seq.next_element::<IgnoredAny>()?.is_some() {
                any = true;
            }
            Ok((self.0)(Kind::Seq(any)))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok((self.0)(Kind::Other))
        }
    }

    /// What a field keeps of any value: serde's visitors and the fast path both map through it.
    pub(super) trait FromKind<'de> {
        fn from_kind(k: Kind<'_, 'de>) -> Self;
    }

    /// A field that keeps nothing of a string but whether it is empty.
    pub(super) trait Unkept {}
    impl Unkept for NonEmpty {}
    impl Unkept for Count {}

    impl FromKind<'_> for NonEmpty {
        fn from_kind(k: Kind<'_, '_>) -> Self {
            NonEmpty(match k {
                Kind::Str(s) => !s.is_empty(),
                Kind::Borrowed(s) => !s.is_empty(),
                Kind::Seq(any) => any,
                _ => false,
            })
        }
    }

    impl FromKind<'_> for Count {
        fn from_kind(k: Kind<'_, '_>) -> Self {
            Count(if let Kind::U64(n) = k { Some(n) } else { None })
        }
    }

    impl<'a> FromKind<'a> for Text<'a> {
        fn from_kind(k: Kind<'_, 'a>) -> Self {
            Text(match k {
                Kind::Borrowed(s) => Some(Cow::Borrowed(s)),
                Kind::Str(s) => Some(Cow::Owned(s.to_string())),
                _ => None,
            })
        }
    }

    impl<'de> Deserialize<'de> for NonEmpty {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(Any(NonEmpty::from_kind))
        }
    }

    impl<'de> Deserialize<'de> for Count {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(Any(Count::from_kind))
        }
    }

    impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(Any(Text::from_kind))
        }
    }

    impl<'de> Deserialize<'de> for AnyContent {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Choices;
            impl<'de> Visitor<'de> for Choices {
                type Value = AnyContent;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("an array of choices")
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AnyContent, A::Error> {
                    let mut any = false;
                    while let Some(choice) = seq.next_element::<Choice>()? {
                        any |= choice.carries_content();
                    }
                    Ok(AnyContent(any))
                }
            }
            d.deserialize_seq(Choices)
        }
    }

    #[derive(Default, Deserialize)]
    #[serde(default)]
    pub struct Delta {
        pub(super) content: NonEmpty,
        pub(super) reasoning_content: NonEmpty,
        /// vLLM's name for `reasoning_content` since 0.10.
        pub(super) reasoning: NonEmpty,
        pub(super) tool_calls: NonEmpty,
    }

    #[derive(Default, Deserialize)]
    #[serde(default)]
    pub struct Choice {
        pub(super) delta: Option<Delta>,
        pub(super) text: NonEmpty,
    }

    impl Choice {
        /// OpenAI chat (delta) and completions (text).
        pub(super) fn carries_content(&self) -> bool {
            self.text.0
                || self
                    .delta
                    .as_ref()
                    .is_some_and(|d| d.content.0 || d.reasoning_content.0 || d.reasoning.0 || d.tool_calls.0)
        }
    }

    #[derive(Default, Deserialize)]
    #[serde(default)]
    pub struct Token {
        pub(super) text: NonEmpty,
        pub(super) special: Option<bool>,
    }

    /// Ollama chat's message, or the Messages API's `message_start` message.
    #[derive(Default, Deserialize)]
    #[serde(default)]
    pub struct Message {
        pub(super) content: NonEmpty,
        /// Ollama's reasoning models' thoughts, before the answer.
        pub(super) thinking: NonEmpty,
        pub(super) usage: Option<OpenAiUsage>,
    }

    /// Token counts as chat completions name them, or as the Responses and
    /// Messages APIs do (separate fields, so that a server sending both names
    /// is still read).
    #[derive(Default, Deserialize)]
    #[serde(default)]
    pub struct OpenAiUsage {
        pub(super) completion_tokens: Count,
        pub(super) prompt_tokens: Count,
        pub(super) output_tokens: Count,
        pub(super) input_tokens: Count,
    }

    impl OpenAiUsage {
        pub(super) fn read(&self) -> Usage {
            Usage {
                output_tokens: self.completion_tokens.0.or(self.output_tokens.0),
                input_tokens: self.prompt_tokens.0.or(self.input_tokens.0),
            }
        }
    }

    /// What a record's `type` says of the stream (the Responses and Messages
    /// APIs name each event).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub enum Event {
        /// `response.completed`, `response.incomplete`, `message_stop`: the generation is over.
        End,
        /// `error` (both APIs), `response.failed`.
        Failed,
        /// Anything else, or no `type`. Lifecycle events (`response.created`,
        /// `message_start`, …) carry no token: their other fields say so.
        #[default]
        Other,
    }

    impl FromKind<'_> for Event {
        fn from_kind(k: Kind<'_, '_>) -> Self {
            let name = match k {
                Kind::Str(s) => s,
                Kind::Borrowed(s) => s,
                _ => return Event::Other,
            };
            match name {
                "response.completed" | "response.incomplete" | "message_stop" => Event::End,
                "error" | "response.failed" => Event::Failed,
                _ => Event::Other,
            }
        }
    }

    impl<'de> Deserialize<'de> for Event {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(Any(Event::from_kind))
        }
    }

    /// A field that is text in some servers' records and an object in others'
    /// (`response`: Ollama's generated text, or the Responses API's response;
    /// `delta`: the Responses API's token text, or a Messages API content
    /// block's delta). Anything but an object keeps what `NonEmpty` keeps.
    pub enum TextOr<T> {
        Text(NonEmpty),
        Object(T),
    }

    impl<T> Default for TextOr<T> {
        fn default() -> Self {
            TextOr::Text(NonEmpty(false))
        }
    }

    impl<T> TextOr<T> {
        pub(super) fn text(&self) -> bool {
            matches!(self, TextOr::Text(NonEmpty(true)))
        }

        pub(super) fn object(&self) -> Option<&T> {
            match self {
                TextOr::Object(o) => Some(o),
                TextOr::Text(_) => None,
            }
        }
    }

    impl<'de, T: Deserialize<'de>> Deserialize<'de> for TextOr<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            /// An object as `T`; anything else as `NonEmpty`'s visitor reads it.
            struct Either<T>(std::marker::PhantomData<T>);
            impl<'de, T: Deserialize<'de>> Visitor<'de> for Either<T> {
                type Value = TextOr<T>;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("any JSON value")
                }
                fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<TextOr<T>, A::Error> {
                    T::deserialize(MapAccessDeserializer::new(map)).map(TextOr::Object)
                }
                fn visit_str<E>(self, v: &str) -> Result<TextOr<T>, E> {
                    Ok(TextOr::Text(NonEmpty::from_kind(Kind::Str(v))))
                }
                fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<TextOr<T>, A::Error> {
                    Any(NonEmpty::from_kind).visit_seq(seq).map(TextOr::Text)
                }
                fn visit_u64<E>(self, _: u64) -> Result<TextOr<T>, E> {
                    Ok(TextOr::default())
                }
                fn visit_i64<E>(self, _: i64) -> Result<TextOr<T>, E> {
                    Ok(TextOr::default())
                }
                fn visit_f64<E>(self, _: f64) -> Result<TextOr<T>, E> {
                    Ok(TextOr::default())
                }
                fn visit_bool<E>(self, _: bool) -> Result<TextOr<T>, E> {
                    Ok(TextOr::default())
                }
                fn visit_unit<E>(self) -> Result<TextOr<T>, E> {
                    Ok(TextOr::default())
                }
            }
            d.deserialize_any(Either(std::marker::PhantomData))
        }
    }

    /// The Responses API's response object in its lifecycle events: only its usage.
    #[derive(Default, Deserialize)]
    #[serde(default)]
    pub struct ResponseObject {
        pub(super) usage: Option<OpenAiUsage>,
    }

    /// A Messages API `content_block_delta`'s delta: text, thinking or a tool's input.
    #[derive(Default, Deserialize)]
    #[serde(default)]
    pub struct BlockDelta {
        pub(super) text: NonEmpty,
        pub(super) thinking: NonEmpty,
        pub(super) partial_json: NonEmpty,
    }

    impl BlockDelta {
        pub(super) fn carries_content(&self) -> bool {
            self.text.0 || self.thinking.0 || self.partial_json.0
        }
    }

    #[derive(Default, Deserialize)]
    #[serde(default)]
    pub struct Details {
        pub(super) generated_tokens: Count,
    }

    /// SGLang's and LMDeploy's `/generate` counts, beside the text so far.
    #[derive(Default, Deserialize)]
    #[serde(default)]
    pub struct MetaInfo {
        pub(super) prompt_tokens: Count,
        pub(super) completion_tokens: Count,
    }

    /// A request body: only its model is read.
    #[derive(Default, Deserialize)]
    #[serde(default)]
    pub struct Request<'a> {
        #[serde(borrow)]
        pub(super) model: Text<'a>,
    }

    #[derive(Default, Deserialize)]
    #[serde(default)]
    pub struct Record<'a> {
        #[serde(rename = "type")]
        pub(super) event: Event,
        pub(super) choices: Option<AnyContent>,
        pub(super) token: Option<Token>,
        /// Ollama chat's message, the Messages API's `message_start` message;
        /// a string in errors (the Responses API's `error` event), which is no content.
        pub(super) message: TextOr<Message>,
        pub(super) response: TextOr<ResponseObject>,
        pub(super) delta: TextOr<BlockDelta>,
        pub(super) output: NonEmpty,
        /// Ollama's `/api/generate` reasoning, beside `response`.
        pub(super) thinking: NonEmpty,
        pub(super) content: NonEmpty,
        pub(super) text_output: NonEmpty,
        pub(super) usage: Option<OpenAiUsage>,
        pub(super) eval_count: Count,
        pub(super) prompt_eval_count: Count,
        pub(super) tokens_predicted: Count,
        pub(super) tokens_evaluated: Count,
        pub(super) details: Option<Details>,
        /// SGLang's and LMDeploy's `/generate` text: content only beside
        /// their `meta_info` (a Responses API `*.done` event's `text` is the
        /// whole answer again).
        pub(super) text: NonEmpty,
        pub(super) meta_info: Option<MetaInfo>,
        #[serde(borrow)]
        pub(super) model: Text<'a>,
    }

    impl Record<'_> {
        pub fn carries_content(&self) -> bool {
            if let Some(choices) = &self.choices {
                return choices.0;
            }
            // TGI: special tokens (end of sequence) are not content.
            if let Some(token) = &self.token {
                return token.text.0 && token.special != Some(true);
            }
            // The Responses API's deltas (output text, reasoning, a function
            // call's arguments) and a Messages API content block delta.
            if self.delta.text() || self.delta.object().is_some_and(BlockDelta::carries_content) {
                return true;
            }
            // Ollama chat and generate, llama.cpp /completion, Triton
            // generate_stream, whole Messages and Responses API answers.
            self.message.object().is_some_and(|m| m.content.0 || m.thinking.0)
                || self.response.text()
                || self.thinking.0
                || self.content.0
                || self.output.0
                || self.text_output.0
                || (self.text.0 && self.meta_info.is_some())
        }

        pub fn usage(&self) -> Usage {
            if let Some(u) = &self.usage {
                return u.read();
            }
            // The Responses API's `response.completed` (and `incomplete`, `failed`).
            if let Some(u) = self.response.object().and_then(|r| r.usage.as_ref()) {
                return u.read();
            }
            // The Messages API's `message_start`: the prompt's tokens; its output
            // count is a placeholder that `message_delta` replaces.
            if let Some(u) = self.message.object().and_then(|m| m.usage.as_ref()) {
                return Usage {
                    output_tokens: None,
                    input_tokens: u.read().input_tokens,
                };
            }
            // Ollama's final record.
            if self.eval_count.0.is_some() || self.prompt_eval_count.0.is_some() {
                return Usage {
                    output_tokens: self.eval_count.0,
                    input_tokens: self.prompt_eval_count.0,
                };
            }
            // llama.cpp /completion's final record.
            if self.tokens_predicted.0.is_some() {
                return Usage {
                    output_tokens: self.tokens_predicted.0,
                    input_tokens: self.tokens_evaluated.0,
                };
            }
            // TGI's final stream record and /generate response.
            if let Some(d) = &self.details {
                return Usage {
                    output_tokens: d.generated_tokens.0,
                    input_tokens: None,
                };
            }
            // SGLang's and LMDeploy's /generate, every record.
            if let Some(m) = &self.meta_info {
                return Usage {
                    output_tokens: m.completion_tokens.0,
                    input_tokens: m.prompt_tokens.0,
                };
            }
            Usage::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `reader` read `record` through its template, and as `read_record` does.
    fn read_alike(reader: &mut StreamReader, record: &str) -> bool {
        let through_template = reader.like_template(record.as_bytes()).is_some();
        assert_eq!(
            reader.read(record.as_bytes()),
            read_record(record.as_bytes()),
            "{record}"
        );
        through_template
    }

    #[test]
    fn a_stream_of_tokens_is_read_through_the_template_of_its_first_token() {
        let chunk = |delta: &str, finish: &str| {
            format!(
                r#"{{"id":"chatcmpl-7","object":"chat.completion.chunk","created":1700000000,"model":"smol","choices":[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}]}}"#
            )
        };
        let mut reader = StreamReader::default();
        assert!(!read_alike(
            &mut reader,
            &chunk(r#"{"role":"assistant","content":""}"#, "null")
        ));
        assert!(!read_alike(&mut reader, &chunk(r#"{"content":"Once"}"#, "null")));
        for token in [" upon", " a", " time", "\u{e9}t\u{e9}"] {
            let record = chunk(&format!(r#"{{"content":"{token}"}}"#), "null");
            assert!(read_alike(&mut reader, &record), "{record}");
            assert_eq!(reader.read(record.as_bytes()).model.as_deref(), Some("smol"));
        }
        // Escapes, an empty delta, the finish and usage records: read in full, and alike.
        assert!(!read_alike(&mut reader, &chunk(r#"{"content":"a\nb"}"#, "null")));
        assert!(!read_alike(&mut reader, &chunk(r#"{"content":""}"#, "null")));
        assert!(!read_alike(&mut reader, &chunk("{}", r#""stop""#)));
        let usage = r#"{"id":"chatcmpl-7","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":6}}"#;
        assert!(!read_alike(&mut reader, usage));
        assert!(!read_alike(&mut reader, "[DONE]"));
    }

    #[test]
    fn a_stream_whose_records_differ_elsewhere_stops_being_compared() {
        let mut reader = StreamReader::default();
        for i in 0..20 {
            let record = format!(
                r#"{{"model":"llama3","created_at":"2024-01-01T00:00:{i:02}Z","response":"x","done":false}}"#
            );
            assert!(!read_alike(&mut reader, &record));
        }
        assert_eq!(reader.misses, MISSES_BEFORE_GIVING_UP);
    }

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

    /// The Responses API as its streams send it: the first token is the first
    /// delta of output text, reasoning or a function call's arguments; lifecycle
    /// events and the `done` events that repeat the whole text are not tokens.
    #[test]
    fn responses_api_events_are_read_by_their_type() {
        let not_tokens = [
            r#"{"type":"response.created","sequence_number":0,"response":{"id":"resp_1","object":"response","status":"in_progress","model":"smol","output":[],"usage":null}}"#,
            r#"{"type":"response.in_progress","response":{"id":"resp_1","output":[]}}"#,
            r#"{"type":"response.output_item.added","output_index":0,"item":{"id":"msg_1","type":"message","content":[]}}"#,
            r#"{"type":"response.content_part.added","item_id":"msg_1","part":{"type":"output_text","text":""}}"#,
            r#"{"type":"response.output_text.delta","item_id":"msg_1","delta":""}"#,
            r#"{"type":"response.output_text.done","item_id":"msg_1","text":"Once upon a time"}"#,
            r#"{"type":"response.output_item.done","item":{"type":"message","content":[{"type":"output_text","text":"Once"}]}}"#,
        ];
        for r in not_tokens {
            let read = read_record(r.as_bytes());
            assert!(!read.content && !read.end && !read.failed, "{r}");
        }
        for delta in [
            "output_text",
            "reasoning_text",
            "reasoning_summary_text",
            "function_call_arguments",
        ] {
            let r = format!(
                r#"{{"type":"response.{delta}.delta","item_id":"x","output_index":0,"delta":"tok","sequence_number":4}}"#
            );
            assert!(read_record(r.as_bytes()).content, "{r}");
        }
        let completed = br#"{"type":"response.completed","response":{"id":"resp_1","status":"completed","output":[{"type":"message","content":[{"type":"output_text","text":"Once"}]}],"usage":{"input_tokens":11,"output_tokens":7,"total_tokens":18}}}"#;
        let r = read_record(completed);
        assert_eq!(
            (r.content, r.end, r.failed, r.usage),
            (
                false,
                true,
                false,
                Usage {
                    output_tokens: Some(7),
                    input_tokens: Some(11)
                }
            )
        );
        let failed = br#"{"type":"response.failed","response":{"status":"failed","error":{"code":"server_error"},"usage":null}}"#;
        assert!(read_record(failed).failed && read_record(failed).end);
        assert!(read_record(br#"{"type":"error","code":"x","message":"y","sequence_number":3}"#).failed);
        // A whole (not streamed) response: its output is content, its usage counts.
        let whole = br#"{"id":"resp_1","object":"response","status":"completed","model":"smol","output":[{"type":"message","content":[{"type":"output_text","text":"Hi"}]}],"usage":{"input_tokens":3,"output_tokens":2}}"#;
        let r = read_record(whole);
        assert_eq!(
            (r.content, r.usage.output_tokens, r.model.as_deref()),
            (true, Some(2), Some("smol"))
        );
    }

    /// Anthropic's Messages API: the first token is the first content block
    /// delta with text, thinking or a tool's input; `message_start` gives the
    /// prompt's tokens, `message_delta` the answer's.
    #[test]
    fn messages_api_events_are_read_by_their_type() {
        let start = br#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"smol","stop_reason":null,"usage":{"input_tokens":25,"output_tokens":1}}}"#;
        let r = read_record(start);
        assert_eq!(
            (r.content, r.usage),
            (
                false,
                Usage {
                    output_tokens: None,
                    input_tokens: Some(25)
                }
            )
        );
        for r in [
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            r#"{"type": "ping"}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":""}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"abc"}}"#,
            r#"{"type":"content_block_stop","index":0}"#,
        ] {
            assert!(!read_record(r.as_bytes()).content, "{r}");
        }
        for delta in [
            r#"{"type":"text_delta","text":"Hello"}"#,
            r#"{"type":"thinking_delta","thinking":"Let me"}"#,
            r#"{"type":"input_json_delta","partial_json":"{\"city\":"}"#,
        ] {
            let r = format!(r#"{{"type":"content_block_delta","index":0,"delta":{delta}}}"#);
            assert!(read_record(r.as_bytes()).content, "{r}");
        }
        let delta = br#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}"#;
        let r = read_record(delta);
        assert_eq!(
            (r.content, r.usage.output_tokens, r.end),
            (false, Some(15), false)
        );
        assert!(read_record(br#"{"type":"message_stop"}"#).end);
        let error = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        assert!(read_record(error).failed);
        // A whole (not streamed) message.
        let whole = br#"{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"Hi"}],"model":"smol","usage":{"input_tokens":4,"output_tokens":2}}"#;
        let r = read_record(whole);
        assert_eq!(
            (r.content, r.usage),
            (
                true,
                Usage {
                    output_tokens: Some(2),
                    input_tokens: Some(4)
                }
            )
        );
    }

    #[test]
    fn ollama_and_completions_content_is_seen() {
        assert!(read_record(br#"{"message":{"role":"assistant","content":"x"},"done":false}"#).content);
        assert!(read_record(br#"{"response":"x","done":false}"#).content);
        // Reasoning before the answer is generated content too.
        assert!(
            read_record(br#"{"message":{"role":"assistant","content":"","thinking":"Hm"},"done":false}"#)
                .content
        );
        assert!(read_record(br#"{"response":"","thinking":"Hm","done":false}"#).content);
        assert!(read_record(br#"{"choices":[{"delta":{"reasoning":"Hm"}}]}"#).content);
        assert!(read_record(br#"{"choices":[{"delta":{"reasoning_content":"Hm"}}]}"#).content);
        assert!(read_record(br#"{"choices":[{"text":"x"}]}"#).content);
        assert!(!read_record(b"[DONE]").content);
        assert!(read_record(b"[DONE]").end && read_record(b" [DONE]\r").end);
        assert!(!read_record(br#"{"choices":[{"delta":{"content":"[DONE]"}}]}"#).end);
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
    fn tritons_grpc_model_name_is_field_one_of_the_request() {
        // model_name = "ensemble" (field 1), model_version = "1" (field 2), id = "a" (field 3)
        let msg = b"\x0a\x08ensemble\x12\x011\x1a\x01a";
        let path = "/inference.GRPCInferenceService/ModelStreamInfer";
        assert_eq!(requested_model(path, msg).as_deref(), Some("ensemble"));
        assert_eq!(requested_model(path, b"\xff\xff\xff"), None);
    }
}
