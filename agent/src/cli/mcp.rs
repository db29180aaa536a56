//! `inferscope mcp`: the Model Context Protocol server, over standard input
//! and output (an assistant on this host) or streamable HTTP (`--listen`),
//! watching as `run` does.

use std::{
    convert::Infallible,
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, combinators::BoxBody};
use rmcp::{
    ServiceExt as _,
    transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    },
};
use tokio::sync::Notify;

use super::{
    parse_duration,
    run::{ProfilingArgs, WatchArgs},
};
use crate::{
    mcp::{Tools, Window},
    pipeline::{WatchOptions, watch},
    profile::Destination,
    sinks::Sink,
    store::Store,
};

/// Where HTTP clients post: the path MCP clients use by convention.
const HTTP_PATH: &str = "/mcp";
/// Host names a loopback address is reached by.
const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

#[derive(clap::Args)]
pub struct McpArgs {
    /// How far back the tools can look (snapshots and finished requests kept).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    keep: Duration,
    /// Serve streamable HTTP on this address (path /mcp) instead of standard
    /// input and output; a loopback address unless clients elsewhere need it.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// A file holding the bearer token HTTP clients must send; required when
    /// --listen is not a loopback address.
    #[arg(long, value_name = "PATH", requires = "listen")]
    token_file: Option<PathBuf>,
    /// A host name clients reach --listen by (repeatable), checked against
    /// their Host header with localhost's names; off loopback without any,
    /// every host name is taken from clients that hold the token.
    #[arg(long = "allowed-host", value_name = "NAME", requires = "listen")]
    allowed_hosts: Vec<String>,
    /// Also answer from this metrics store the agents export to (Prometheus,
    /// VictoriaMetrics, Thanos, Mimir: its query API's base URL): the
    /// `diagnose_fleet` and `query_store` tools.
    #[arg(long, value_name = "URL")]
    prometheus: Option<String>,
    #[command(flatten)]
    profiling: ProfilingArgs,
    #[command(flatten)]
    watch: WatchArgs,
}

/// How long one query of the store may take.
const STORE_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves until a signal comes, or over stdio until the client goes.
pub fn mcp(args: McpArgs) -> Result<ExitCode> {
    let window = Window::new(args.keep);
    let store = args
        .prometheus
        .as_deref()
        .map(|url| Store::new(url, STORE_TIMEOUT));
    let profiler = args.profiling.start(args.watch.pids())?;
    let tools = Tools::new(window.clone(), store, profiler.is_some());
    let http = match args.listen {
        Some(addr) => Some(Http::bind(addr, &args)?),
        None => None,
    };
    let session_over = Arc::new(Notify::new());
    let server = std::thread::Builder::new().name("mcp".into()).spawn({
        let session_over = session_over.clone();
        move || {
            let served = match http {
                Some(http) => http.serve(tools),
                // The protocol owns standard output; the log goes to standard error.
                None => serve_stdio(tools),
            };
            session_over.notify_one();
            served
        }
    })?;
    let options = WatchOptions {
        stop: Some(session_over),
        ..args.profiling.options(profiler.clone(), None)
    };
    watch(&args.watch.config(), options, |_| {
        let mut sinks = vec![Box::new(window.clone()) as Box<dyn Sink>];
        if let Some(profiler) = profiler {
            let destinations = vec![Box::new(window) as Box<dyn Destination>];
            sinks.push(Box::new(args.profiling.continuous(profiler, destinations)));
        }
        Ok(sinks)
    })?;
    // Ended by the server (a session over, or a server that failed), or by a
    // signal while it still serves: then its thread goes with the process.
    if server.is_finished() {
        server
            .join()
            .map_err(|_| anyhow::anyhow!("the MCP server panicked"))??;
    }
    Ok(ExitCode::SUCCESS)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the MCP runtime")
}

/// One session over standard input and output, to its end.
fn serve_stdio(tools: Tools) -> Result<()> {
    runtime()?.block_on(async {
        let session = tools
            .serve(rmcp::transport::stdio())
            .await
            .context("starting the MCP session")?;
        session.waiting().await.context("serving MCP")?;
        Ok(())
    })
}

/// Streamable HTTP: bound before the watch starts, so that a taken port or a
/// missing token is said at once.
struct Http {
    listener: TcpListener,
    token: Option<Arc<str>>,
    config: StreamableHttpServerConfig,
}

impl Http {
    fn bind(addr: SocketAddr, args: &McpArgs) -> Result<Self> {
        let token = match &args.token_file {
            Some(path) => {
                let token = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the token from {}", path.display()))?;
                let token = token.trim();
                anyhow::ensure!(!token.is_empty(), "{} holds no token", path.display());
                Some(Arc::from(token))
            }
            None => None,
        };
        let loopback = addr.ip().is_loopback();
        anyhow::ensure!(
            loopback || token.is_some(),
            "--listen {addr} is reachable from other hosts: name the bearer token clients must send with --token-file"
        );
        let mut config = StreamableHttpServerConfig::default();
        if !args.allowed_hosts.is_empty() {
            config = config.with_allowed_hosts(
                LOOPBACK_HOSTS
                    .into_iter()
                    .map(String::from)
                    .chain(args.allowed_hosts.clone()),
            );
        } else if !loopback {
            // The token keeps out what the Host check would (a page rebinding a name to this address).
            config = config.disable_allowed_hosts();
        }
        let listener = TcpListener::bind(addr).with_context(|| format!("listening on {addr}"))?;
        listener.set_nonblocking(true)?;
        log::info!(
            "MCP over streamable HTTP at http://{}{HTTP_PATH}{}",
            listener.local_addr()?,
            if token.is_some() {
                ", bearer token required"
            } else {
                ""
            }
        );
        Ok(Self {
            listener,
            token,
            config,
        })
    }

    /// Serves every client, each connection on a task of its own, until the process ends.
    fn serve(self, tools: Tools) -> Result<()> {
        runtime()?.block_on(async {
            let listener = tokio::net::TcpListener::from_std(self.listener)?;
            let service = Arc::new(StreamableHttpService::new(
                move || Ok(tools.clone()),
                LocalSessionManager::default().into(),
                self.config,
            ));
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    // Out of descriptors, say: the next client may fare better.
                    Err(e) => {
                        log::warn!("MCP: accepting a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (service, token) = (service.clone(), self.token.clone());
                tokio::spawn(async move {
                    let handler = hyper::service::service_fn(move |request| {
                        let (service, token) = (service.clone(), token.clone());
                        async move { Ok::<_, Infallible>(answer(&service, token.as_deref(), request).await) }
                    });
                    let connection = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), handler);
                    if let Err(e) = connection.await {
                        log::debug!("MCP: a connection ended: {e}");
                    }
                });
            }
        })
    }
}

type Response = http::Response<BoxBody<Bytes, Infallible>>;

/// The MCP service's answer, for a request to [`HTTP_PATH`] that carries the token.
async fn answer(
    service: &StreamableHttpService<Tools, LocalSessionManager>,
    token: Option<&str>,
    request: http::Request<hyper::body::Incoming>,
) -> Response {
    if request.uri().path() != HTTP_PATH {
        return refusal(http::StatusCode::NOT_FOUND, "MCP is served at /mcp\n");
    }
    if let Some(token) = token
        && !carries_token(request.headers(), token)
    {
        let mut refused = refusal(http::StatusCode::UNAUTHORIZED, "a bearer token is required\n");
        refused.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
        return refused;
    }
    service.handle(request).await
}

fn refusal(status: http::StatusCode, why: &'static str) -> Response {
    let mut response = http::Response::new(Full::new(Bytes::from_static(why.as_bytes())).boxed());
    *response.status_mut() = status;
    response
}

/// Whether `Authorization: Bearer TOKEN` names `token`, compared in time
/// that does not depend on where they differ.
fn carries_token(headers: &http::HeaderMap, token: &str) -> bool {
    let Some(sent) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
    else {
        return false;
    };
    sent.len() == token.len()
        && sent
            .iter()
            .zip(token.as_bytes())
            .fold(0, |diff, (a, b)| diff | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_named_bearer_token_is_taken() {
        let with = |value: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(http::header::AUTHORIZATION, value.parse().unwrap());
            headers
        };
        assert!(carries_token(&with("Bearer s3cret"), "s3cret"));
        assert!(!carries_token(&with("Bearer s3cre"), "s3cret"));
        assert!(!carries_token(&with("Bearer s3cretX"), "s3cret"));
        assert!(!carries_token(&with("Basic s3cret"), "s3cret"));
        assert!(!carries_token(&http::HeaderMap::new(), "s3cret"));
    }
}
