//! KServe's Hugging Face serving runtime: the OpenAI-compatible APIs under
//! the route prefix `/openai` (`KSERVE_OPENAI_ROUTE_PREFIX`), as InferenceServices serve them.

use super::{EngineSpec, apis::*};

pub static ENGINE: EngineSpec = EngineSpec {
    name: "kserve",
    commands: &[],
    programs: &["huggingfaceserver"],
    titles: &[],
    apis: &[&OPENAI_CHAT, &OPENAI_COMPLETIONS, &OPENAI_EMBEDDINGS],
    prefixes: &["/openai"],
};

#[cfg(test)]
mod tests {
    use crate::engines::{apis::Operation, operation};

    #[test]
    fn recognised_by_its_module() {
        super::super::tests::recognised_as(
            "kserve",
            &[(
                "python3",
                "python3\0-m\0huggingfaceserver\0--model_name=llama\0--model_id=meta/llama",
            )],
        );
    }

    #[test]
    fn its_routes_carry_the_openai_prefix() {
        assert_eq!(operation("/openai/v1/chat/completions"), Some(Operation::Chat));
        assert_eq!(
            operation("/openai/v1/completions"),
            Some(Operation::TextCompletion)
        );
        assert_eq!(operation("/openai/v1/embeddings"), Some(Operation::Embeddings));
        // Its v1 and v2 inference protocols' other routes are not generation.
        assert_eq!(operation("/v1/models/llama:predict"), None);
        assert_eq!(operation("/openai/v1/models"), None);
    }
}
