//! `inferscope top`: the pipeline on a thread of its own, the view on this one.

use std::{
    io::IsTerminal as _,
    process::ExitCode,
    sync::{Arc, mpsc},
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use tokio::sync::Notify;

use super::run::WatchArgs;
use crate::pipeline::{WatchOptions, watch};
use crate::top::{Action, Feed, Key, Top};

#[derive(clap::Args)]
pub struct TopArgs {
    #[command(flatten)]
    watch: WatchArgs,
}

/// How often keys are looked for between updates.
const KEY_POLL: Duration = Duration::from_millis(100);

pub fn top(args: TopArgs) -> Result<ExitCode> {
    if !std::io::stdout().is_terminal() {
        bail!("top needs a terminal; `inferscope run` writes to pipes and files");
    }
    // Before the terminal is taken over, so that the sentence is seen.
    crate::probes::host::require_privileges()?;
    let (tx, updates) = mpsc::channel();
    let stop = Arc::new(Notify::new());
    let pipeline = {
        let stop = stop.clone();
        thread::Builder::new().name("pipeline".into()).spawn(move || {
            let options = WatchOptions {
                stop: Some(stop),
                ..WatchOptions::default()
            };
            watch(&args.watch.config(), options, |_| Ok(vec![Box::new(Feed(tx))]))
        })?
    };
    super::hold_log();
    let colour = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let mut view = Top::new(colour);
    let mut terminal = match ratatui::try_init() {
        Ok(t) => t,
        Err(e) => {
            stop.notify_one();
            let _ = pipeline.join();
            super::release_log();
            return Err(e).context("setting up the terminal");
        }
    };
    let shown = (|| -> Result<()> {
        loop {
            // The pipeline ended by itself: a failure to start, or a signal.
            if pipeline.is_finished() {
                return Ok(());
            }
            view.set_status(super::latest_log());
            terminal.draw(|frame| view.render(frame))?;
            if event::poll(KEY_POLL)?
                && let Event::Key(k) = event::read()?
                && k.kind != KeyEventKind::Release
            {
                let key = match k.code {
                    KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => return Ok(()),
                    KeyCode::Char(c) => Key::Char(c),
                    KeyCode::Up => Key::Up,
                    KeyCode::Down => Key::Down,
                    KeyCode::Enter => Key::Enter,
                    KeyCode::Esc => Key::Escape,
                    KeyCode::Backspace => Key::Backspace,
                    _ => continue,
                };
                if view.on_key(key) == Action::Quit {
                    return Ok(());
                }
            }
            while let Ok(update) = updates.try_recv() {
                view.update(update);
            }
        }
    })();
    let restored = ratatui::try_restore();
    stop.notify_one();
    let ran = pipeline
        .join()
        .map_err(|_| anyhow::anyhow!("the pipeline thread panicked"))?;
    super::release_log();
    shown?;
    restored.context("restoring the terminal")?;
    ran?;
    Ok(ExitCode::SUCCESS)
}
