//! A ground-truth server shaped like TGI's router (Rust, axum): `POST
//! /generate_stream` answers with TGI's server-sent events, one token each on a
//! schedule the request sets, then a final event with `details.generated_tokens`.
//! After each stream it prints, as one JSON line, when each token event was
//! handed to the framework (CLOCK_MONOTONIC, the kernel's clock).
//!
//! usage: axum_sse_server   (prints "listening PORT")
//! request: {"inputs": "...", "parameters": {"max_new_tokens": N}, "ttft_ms": T, "gap_ms": G}

use std::{convert::Infallible, time::Duration};

use axum::{
    Json, Router,
    response::sse::{Event, Sse},
    routing::post,
};
use futures_util::stream::{self, Stream};
use inferscope_tests::monotonic_ns;
use serde_json::{Value, json};

async fn generate_stream(Json(req): Json<Value>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let tokens = req["parameters"]["max_new_tokens"].as_u64().unwrap_or(1);
    let ttft = Duration::from_millis(req["ttft_ms"].as_u64().unwrap_or(0));
    let gap = Duration::from_millis(req["gap_ms"].as_u64().unwrap_or(0));
    // State: (next token index, when each token event was yielded).
    let events = stream::unfold((0u64, Vec::new()), move |(i, mut yielded)| async move {
        if i > tokens {
            println!("{}", json!({ "yields": yielded }));
            return None;
        }
        tokio::time::sleep(if i == 0 { ttft } else { gap }).await;
        let event = if i < tokens {
            json!({"index": i, "token": {"id": i, "text": format!(" tok{i}"), "logprob": -0.1, "special": false},
                   "generated_text": null, "details": null})
        } else {
            json!({"index": i, "token": {"id": 2, "text": "</s>", "logprob": 0.0, "special": true},
                   "generated_text": "...", "details": {"finish_reason": "length", "generated_tokens": tokens, "seed": null}})
        };
        if i < tokens {
            yielded.push(monotonic_ns());
        }
        Some((Ok(Event::default().data(event.to_string())), (i + 1, yielded)))
    });
    Sse::new(events)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    println!("listening {}", listener.local_addr().expect("address").port());
    let app = Router::new().route("/generate_stream", post(generate_stream));
    axum::serve(listener, app).await.expect("serve");
}
