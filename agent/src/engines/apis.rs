//! The APIs inference engines serve: each one's endpoints, what a request to
//! each asks for (`gen_ai.operation.name`), and where its responses carry
//! token usage. An engine's file lists the ones it serves.

/// What a request asks for, in the GenAI conventions' `gen_ai.operation.name` terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Chat,
    TextCompletion,
    Embeddings,
}

impl Operation {
    pub fn name(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::TextCompletion => "text_completion",
            Self::Embeddings => "embeddings",
        }
    }
}

/// Which request paths an endpoint is.
#[derive(Debug)]
pub enum Route {
    /// This path.
    Path(&'static str),
    /// Paths with this start and end and a name between (Triton's `/v2/models/NAME/generate`).
    Around(&'static str, &'static str),
    /// A gRPC method, whatever its service (`/pkg.Service/Method`).
    GrpcMethod(&'static str),
}

impl Route {
    fn matches(&self, path: &str) -> bool {
        match *self {
            Path(p) => path == p,
            Around(start, end) => path
                .strip_prefix(start)
                .and_then(|rest| rest.strip_suffix(end))
                .is_some_and(|name| !name.is_empty() && !name.contains('/')),
            GrpcMethod(m) => path
                .rsplit_once('/')
                .is_some_and(|(service, method)| method == m && service.len() > 1),
        }
    }
}

/// One API: its endpoints and where its responses carry usage.
#[derive(Debug)]
pub struct Api {
    pub name: &'static str,
    pub endpoints: &'static [(Route, Operation)],
    /// Where its responses report token usage (`docs/engines.md`).
    pub usage: &'static str,
}

impl Api {
    /// What a request to `path` (without its query) asks for, if this API serves it.
    pub fn operation(&self, path: &str) -> Option<Operation> {
        self.endpoints
            .iter()
            .find(|(route, _)| route.matches(path))
            .map(|&(_, op)| op)
    }
}

use Operation::{Chat, Embeddings, TextCompletion};
use Route::{Around, GrpcMethod, Path};

pub static OPENAI_CHAT: Api = Api {
    name: "OpenAI chat completions",
    endpoints: &[(Path("/v1/chat/completions"), Chat)],
    usage: "`usage` of the response, or of the last chunk when streamed with `stream_options.include_usage`; otherwise one token per content chunk",
};

pub static OPENAI_COMPLETIONS: Api = Api {
    name: "OpenAI completions",
    endpoints: &[(Path("/v1/completions"), TextCompletion)],
    usage: "as chat completions",
};

pub static OPENAI_EMBEDDINGS: Api = Api {
    name: "OpenAI embeddings",
    endpoints: &[(Path("/v1/embeddings"), Embeddings)],
    usage: "`usage.prompt_tokens`",
};

pub static OPENAI_RESPONSES: Api = Api {
    name: "OpenAI Responses",
    endpoints: &[(Path("/v1/responses"), Chat)],
    usage: "`response.usage` of `response.completed` (input_tokens, output_tokens)",
};

pub static ANTHROPIC_MESSAGES: Api = Api {
    name: "Anthropic Messages",
    endpoints: &[(Path("/v1/messages"), Chat)],
    usage: "`usage` of `message_delta` (output_tokens) and `message_start` (input_tokens)",
};

/// Text Generation Inference's native API; SGLang's `/generate` has the same path.
pub static TGI_GENERATE: Api = Api {
    name: "TGI generate",
    endpoints: &[
        (Path("/generate"), TextCompletion),
        (Path("/generate_stream"), TextCompletion),
    ],
    usage: "`details.generated_tokens` (of the last event when streamed)",
};

pub static SGLANG_GENERATE: Api = Api {
    name: "SGLang generate",
    endpoints: &[(Path("/generate"), TextCompletion)],
    usage: "`meta_info.completion_tokens` and `meta_info.prompt_tokens`",
};

pub static LLAMA_CPP_COMPLETION: Api = Api {
    name: "llama.cpp completion",
    endpoints: &[
        (Path("/completion"), TextCompletion),
        (Path("/completions"), TextCompletion),
    ],
    usage: "`tokens_predicted` and `tokens_evaluated` of the last event (`timings.predicted_n`)",
};

pub static OLLAMA: Api = Api {
    name: "Ollama",
    endpoints: &[
        (Path("/api/generate"), TextCompletion),
        (Path("/api/chat"), Chat),
        (Path("/api/embed"), Embeddings),
        (Path("/api/embeddings"), Embeddings),
    ],
    usage: "`eval_count` and `prompt_eval_count` of the last (`done`) line",
};

pub static TRITON_GENERATE: Api = Api {
    name: "Triton generate extension",
    endpoints: &[
        (Around("/v2/models/", "/generate"), TextCompletion),
        (Around("/v2/models/", "/generate_stream"), TextCompletion),
    ],
    usage: "none reported: one token per streamed event",
};

/// gRPC inference and generate services: KServe v2 (Triton) and TGI-style generate.
pub static GRPC_INFERENCE: Api = Api {
    name: "gRPC inference (KServe v2) and generate services",
    endpoints: &[
        (GrpcMethod("ModelInfer"), TextCompletion),
        (GrpcMethod("ModelStreamInfer"), TextCompletion),
        (GrpcMethod("Generate"), TextCompletion),
        (GrpcMethod("GenerateStream"), TextCompletion),
    ],
    usage: "none read: one token per streamed message",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_whole_paths_and_one_name_where_a_name_goes() {
        assert!(Path("/generate").matches("/generate"));
        assert!(!Path("/generate").matches("/generate/x"));
        let triton = Around("/v2/models/", "/generate");
        assert!(triton.matches("/v2/models/ensemble/generate"));
        assert!(!triton.matches("/v2/models//generate"));
        assert!(!triton.matches("/v2/models/a/b/generate"));
        let grpc = GrpcMethod("ModelInfer");
        assert!(grpc.matches("/inference.GRPCInferenceService/ModelInfer"));
        assert!(!grpc.matches("/ModelInfer"));
        assert!(!grpc.matches("/inference.GRPCInferenceService/ModelInferX"));
    }
}
