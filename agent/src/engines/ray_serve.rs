//! Ray Serve LLM: the per-node proxy actor holds the HTTP port and passes
//! requests to replicas running vLLM (`ray::ServeReplica:…`, on the GPU).

use super::{EngineSpec, apis::*};

pub static ENGINE: EngineSpec = EngineSpec {
    name: "ray-serve",
    // Ray titles its actors `ray::ClassName` (comm holds 15 bytes of it);
    // older releases named the proxy `HTTPProxyActor`.
    commands: &["ray::ProxyActor", "ray::HTTPProxyA"],
    programs: &[],
    titles: &["ray::ProxyActor", "ray::HTTPProxyActor"],
    apis: &[&OPENAI_CHAT, &OPENAI_COMPLETIONS, &OPENAI_EMBEDDINGS],
    prefixes: &[],
};

#[cfg(test)]
mod tests {
    #[test]
    fn recognised_by_its_proxy_actor_title() {
        super::super::tests::recognised_as(
            "ray-serve",
            &[
                ("ray::ProxyActor", "ray::ProxyActor"),
                ("python3", "ray::HTTPProxyActor"),
            ],
        );
    }
}
