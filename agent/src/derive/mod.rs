//! Meaning from captured bytes: LLM API semantics (`llm`) and per-request
//! state machines with each server's queue (`requests`).

pub mod llm;
pub mod requests;
