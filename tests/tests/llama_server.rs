//! A real LLM server: llama.cpp's `llama-server` running SmolLM2-135M on the
//! CPU (built by `cargo xtask fixtures`). The agent finds it by name, with no
//! port given, and its figures are held against what the server itself reports:
//! token usage exactly, timing against its own `timings`, queue depth against
//! its `--metrics`.

use std::{
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
};

use inferscope_tests::{
    Agent, finished_requests,
    llama::{LlamaServer, chat, sse_events},
};
use serde_json::Value;

static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn streaming_and_plain_chat_completions_match_the_servers_own_accounting() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut agent = Agent::start_with_output("requests", &[]);
    let server = LlamaServer::start(1);
    agent.wait_for_log(&format!("capturing requests to port {}", server.port));

    let response = server.exchange("POST", "/v1/chat/completions", Some(&chat(true, 32)));
    let events = sse_events(&response);
    let last = events
        .iter()
        .rev()
        .find(|e| e.get("usage").is_some_and(|u| !u.is_null()))
        .expect("usage in the stream");
    let timings = events
        .iter()
        .rev()
        .find_map(|e| e.get("timings"))
        .expect("timings in the stream")
        .clone();
    let r = agent.next_report("the streamed request");
    eprintln!("agent: {r}\nserver timings: {timings}");
    assert_eq!(r["output_tokens"], last["usage"]["completion_tokens"], "{r}");
    assert_eq!(r["input_tokens"], last["usage"]["prompt_tokens"], "{r}");
    assert_eq!(r["token_source"], "usage");
    assert_eq!(r["outcome"], "ok");
    // Recognised by its command: exported as gen_ai.provider.name.
    assert_eq!(r["engine"], "llama.cpp");

    // The server's clock: prompt processing, then decoding at predicted_per_token_ms.
    let ms = |k: &str| timings[k].as_f64().unwrap() / 1e3;
    let (prompt, per_token) = (ms("prompt_ms"), ms("predicted_per_token_ms"));
    let ttft = r["ttft_s"].as_f64().unwrap();
    // TTFT covers prompt processing and the first token's decode, plus HTTP handling:
    // at least the prompt time, at most that plus two token times and 50 ms.
    assert!(
        ttft >= prompt && ttft <= prompt + 2.0 * per_token + 0.050,
        "ttft {ttft} vs prompt {prompt} + token {per_token}"
    );
    let gaps: Vec<f64> = r["itl_s"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_f64().unwrap())
        .collect();
    let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
    // Mean inter-token gap within 25 % (+1 ms) of the server's own per-token decode time.
    assert!(
        (mean - per_token).abs() <= 0.25 * per_token + 0.001,
        "mean gap {mean} vs {per_token} per token"
    );

    let plain = server.exchange("POST", "/v1/chat/completions", Some(&chat(false, 16)));
    let body: Value = serde_json::from_str(&plain[plain.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    let r = agent.next_report("the plain request");
    assert_eq!(r["output_tokens"], body["usage"]["completion_tokens"], "{r}");
    assert_eq!(
        (r["stream"].as_bool(), r["ttft_s"].is_null()),
        (Some(false), true),
        "{r}"
    );
    let t = &body["timings"];
    let server_busy = (t["prompt_ms"].as_f64().unwrap() + t["predicted_ms"].as_f64().unwrap()) / 1e3;
    assert!(
        r["duration_s"].as_f64().unwrap() >= server_busy,
        "{r} vs {server_busy}"
    );
}

#[test]
fn queue_depth_agrees_with_the_servers_metrics_with_two_slots_and_four_clients() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut agent = Agent::start(&[]);
    let server = Arc::new(LlamaServer::start(2));
    agent.wait_for_log(&format!("capturing requests to port {}", server.port));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let server = server.clone();
            thread::spawn(move || server.exchange("POST", "/v1/chat/completions", Some(&chat(true, 96))))
        })
        .collect();
    // The server's own view, sampled while the clients run.
    let running = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (server, running) = (server.clone(), running.clone());
        thread::spawn(move || {
            let mut max = (0.0f64, 0.0f64);
            while running.load(Ordering::Relaxed) {
                max.0 = max.0.max(server.metric("requests_processing"));
                max.1 = max.1.max(server.metric("requests_deferred"));
            }
            max
        })
    };
    let mut seen = (0u64, 0u64);
    let mut finished = 0;
    while finished < 4 {
        let report = agent.next_report("reports while four clients share two slots");
        for s in report["servers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["port"] == server.port)
        {
            seen.0 = seen.0.max(s["queue"]["running"].as_u64().unwrap());
            seen.1 = seen.1.max(s["queue"]["waiting"].as_u64().unwrap());
            finished += finished_requests(s);
        }
    }
    clients
        .into_iter()
        .for_each(|c| assert!(c.join().unwrap().contains("[DONE]")));
    running.store(false, Ordering::Relaxed);
    let (processing, deferred) = sampler.join().unwrap();
    assert_eq!(processing, 2.0, "the server never ran both slots");
    assert!(deferred >= 1.0, "the server never deferred a request");
    // Running: as many as the server processes at once. Waiting: the deferred ones
    // at least, and never more than all four.
    assert_eq!(
        seen.0, processing as u64,
        "agent's max running vs server's requests_processing"
    );
    assert!(
        seen.1 >= deferred as u64 && seen.1 <= 4,
        "agent's max waiting {} vs deferred {deferred}",
        seen.1
    );
}

/// The OpenAI Responses API and Anthropic's Messages API, as agent frameworks
/// and coding tools send them: streamed and whole, through the official Python
/// clients. Each request is reported with the tokens the client was told, and
/// a first token no later than the client saw it and not long before (where the
/// client's clock times the request alone: see tests/clients).
#[test]
fn responses_and_messages_apis_through_the_official_clients_match_the_clients_view() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut agent = Agent::start_with_output("requests", &[]);
    let server = LlamaServer::start(1);
    agent.wait_for_log(&format!("capturing requests to port {}", server.port));
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/api_clients.py");
    let out = Command::new(inferscope_tests::venv_python())
        .arg(&script)
        .arg(format!("http://127.0.0.1:{}", server.port))
        .arg("smollm2")
        .output()
        .expect("running the API clients");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let views: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(views.len(), 6, "{views:?}");
    for view in &views {
        let path = format!("/v1/{}", view["api"].as_str().unwrap());
        let r = agent.next_report(&format!("the request the client saw as {view}"));
        eprintln!("client: {view}\nagent: {r}");
        assert_eq!(
            (r["path"].as_str(), r["outcome"].as_str()),
            (Some(path.as_str()), Some("ok")),
            "{r}"
        );
        assert_eq!(r["model"], "smollm2", "{r}");
        assert_eq!(r["stream"], view["stream"], "{r}");
        assert_eq!(r["output_tokens"], view["output_tokens"], "{r} vs {view}");
        assert_eq!(r["input_tokens"], view["input_tokens"], "{r} vs {view}");
        assert_eq!(r["token_source"], "usage", "{r}");
        if view["stream"] == false {
            assert!(r["ttft_s"].is_null(), "{r}");
        } else if view["timed"] == true {
            // The server sent the first token before the client read it, and
            // the client sent the request before the server read it.
            let client_ttft =
                (view["first_token_ns"].as_u64().unwrap() - view["sent_ns"].as_u64().unwrap()) as f64 / 1e9;
            let ttft = r["ttft_s"].as_f64().expect("a streamed request has a TTFT");
            assert!(
                ttft <= client_ttft && ttft >= client_ttft - 0.1,
                "agent's TTFT {ttft} s vs the client's {client_ttft} s"
            );
        }
    }
}
