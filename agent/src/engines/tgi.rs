//! Hugging Face Text Generation Inference: the Rust router (which holds the
//! port) and its Python shards.

use super::{EngineSpec, apis::*};

pub static ENGINE: EngineSpec = EngineSpec {
    name: "tgi",
    // The router's and launcher's names, as the kernel keeps them (15 bytes).
    commands: &["text-generation"],
    programs: &["text-generation-server"],
    titles: &[],
    apis: &[&TGI_GENERATE, &OPENAI_CHAT, &OPENAI_COMPLETIONS, &GRPC_INFERENCE],
    prefixes: &[],
};

#[cfg(test)]
mod tests {
    #[test]
    fn recognised_by_the_router_or_the_python_server() {
        super::super::tests::recognised_as(
            "tgi",
            &[
                ("text-generation", "text-generation-router\0--port\08080"),
                (
                    "python3",
                    "/opt/conda/bin/python3\0/opt/conda/bin/text-generation-server\0serve\0m",
                ),
            ],
        );
    }
}
