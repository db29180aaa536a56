//! `inferscope mcp`: the Model Context Protocol server over standard input
//! and output, for an assistant on this host, watching as `run` does.

use std::{process::ExitCode, sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use rmcp::ServiceExt as _;
use tokio::sync::Notify;

use super::{parse_duration, run::WatchArgs};
use crate::{
    mcp::{Tools, Window},
    pipeline::{WatchOptions, watch},
    sinks::Sink,
};

#[derive(clap::Args)]
pub struct McpArgs {
    /// How far back the tools can look (snapshots and finished requests kept).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    keep: Duration,
    #[command(flatten)]
    watch: WatchArgs,
}

/// Serves until the client goes (standard input closes) or a signal comes.
pub fn mcp(args: McpArgs) -> Result<ExitCode> {
    let window = Window::new(args.keep);
    let tools = Tools::new(window.clone());
    let session_over = Arc::new(Notify::new());
    // The protocol owns standard output; the log goes to standard error.
    std::thread::Builder::new().name("mcp".into()).spawn({
        let session_over = session_over.clone();
        move || {
            if let Err(e) = serve(tools) {
                log::error!("MCP session: {e:#}");
            }
            session_over.notify_one();
        }
    })?;
    let options = WatchOptions {
        stop: Some(session_over),
        ..WatchOptions::default()
    };
    watch(&args.watch.config(), options, |_| {
        Ok(vec![Box::new(window) as Box<dyn Sink>])
    })?;
    Ok(ExitCode::SUCCESS)
}

fn serve(tools: Tools) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the MCP runtime")?;
    runtime.block_on(async {
        let session = tools
            .serve(rmcp::transport::stdio())
            .await
            .context("starting the MCP session")?;
        session.waiting().await.context("serving MCP")?;
        Ok(())
    })
}
