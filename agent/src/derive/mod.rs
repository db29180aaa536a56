//! Turns cumulative kernel counters into what happened in each interval.

pub mod gpu;
pub mod llm;
pub mod requests;
