//! `inferscope top`: a live view of inference servers and GPU processes.
//!
//! [`Top`] is the view's whole state: the latest snapshot, the requests that
//! finished in the last [`REQUEST_WINDOW`], and what the person chose (sort,
//! filter, selection, the process drilled into). It is fed by [`Feed`], a sink
//! like any other, and drawn by [`view`]; keys arrive as [`Key`]s, so the
//! terminal is only the CLI's concern and the view is tested on a buffer.

pub mod rows;
mod view;

use std::{
    collections::VecDeque,
    io,
    sync::mpsc::Sender,
    time::{Duration, SystemTime},
};

pub use rows::{Row, SortKey};

use crate::{
    model::{RequestRecord, Snapshot},
    sinks::Sink,
};

/// Request figures (rates, percentiles) cover the requests finished this long back.
pub const REQUEST_WINDOW: Duration = Duration::from_secs(10);
/// Most finished requests kept for the window (a bound on memory at any rate).
const MAX_RECENT: usize = 100_000;

/// What the pipeline hands the view.
#[derive(Debug)]
pub enum Update {
    Snapshot(Box<Snapshot>),
    Request(Box<RequestRecord>),
}

/// The sink that sends every snapshot and finished request to the view.
pub struct Feed(pub Sender<Update>);

impl Sink for Feed {
    fn snapshot(&mut self, snapshot: &Snapshot) -> io::Result<()> {
        // The view gone means it is quitting: nothing left to deliver to.
        let _ = self.0.send(Update::Snapshot(Box::new(snapshot.clone())));
        Ok(())
    }

    fn request(&mut self, request: &RequestRecord) -> io::Result<()> {
        let _ = self.0.send(Update::Request(Box::new(request.clone())));
        Ok(())
    }
}

/// Keys the view understands (the CLI maps the terminal's to these).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Up,
    Down,
    Enter,
    Escape,
    Backspace,
    Char(char),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Continue,
    Quit,
}

pub struct Top {
    latest: Option<Snapshot>,
    /// When the first snapshot's interval began: rates cover at most the time watched.
    started: Option<SystemTime>,
    recent: VecDeque<RequestRecord>,
    sort: SortKey,
    filter: String,
    editing_filter: bool,
    selected: usize,
    /// The pid whose details are shown.
    detail: Option<u32>,
    colour: bool,
    /// The agent's latest log line (warnings: what is unavailable).
    status: Option<String>,
}

impl Top {
    /// `colour`: false honours NO_COLOR and terminals without colour.
    pub fn new(colour: bool) -> Self {
        Self {
            latest: None,
            started: None,
            recent: VecDeque::new(),
            sort: SortKey::default(),
            filter: String::new(),
            editing_filter: false,
            selected: 0,
            detail: None,
            colour,
            status: None,
        }
    }

    pub fn update(&mut self, update: Update) {
        match update {
            Update::Snapshot(s) => {
                self.started.get_or_insert(s.start());
                let horizon = s.time.checked_sub(REQUEST_WINDOW).unwrap_or(s.time);
                while self.recent.front().is_some_and(|r| r.time < horizon) {
                    self.recent.pop_front();
                }
                self.latest = Some(*s);
                self.selected = self.selected.min(self.rows().len().saturating_sub(1));
            }
            Update::Request(r) => {
                if self.recent.len() == MAX_RECENT {
                    self.recent.pop_front();
                }
                self.recent.push_back(*r);
            }
        }
    }

    pub fn set_status(&mut self, line: Option<String>) {
        self.status = line;
    }

    /// The rows shown: filtered, sorted.
    pub fn rows(&self) -> Vec<Row> {
        let Some(s) = &self.latest else {
            return Vec::new();
        };
        let watched = self
            .started
            .and_then(|t| s.time.duration_since(t).ok())
            .unwrap_or(REQUEST_WINDOW);
        let span = watched.min(REQUEST_WINDOW);
        // The window ends at the snapshot: requests finished since belong to the next.
        let horizon = s.time.checked_sub(span).unwrap_or(s.time);
        let recent = self
            .recent
            .iter()
            .filter(|r| r.time > horizon && r.time <= s.time);
        let mut rows = rows::rows(s, recent, span);
        let filter = self.filter.to_lowercase();
        rows.retain(|r| {
            filter.is_empty() || r.comm.to_lowercase().contains(&filter) || r.pid.to_string() == filter
        });
        self.sort.sort(&mut rows);
        rows
    }

    pub fn on_key(&mut self, key: Key) -> Action {
        if self.editing_filter {
            match key {
                Key::Enter => self.editing_filter = false,
                Key::Escape => {
                    self.editing_filter = false;
                    self.filter.clear();
                }
                Key::Backspace => {
                    self.filter.pop();
                }
                Key::Char(c) => self.filter.push(c),
                Key::Up | Key::Down => {}
            }
            self.selected = 0;
            return Action::Continue;
        }
        let rows = self.rows();
        self.selected = self.selected.min(rows.len().saturating_sub(1));
        match key {
            Key::Char('q') => return Action::Quit,
            Key::Escape | Key::Backspace if self.detail.is_some() => self.detail = None,
            Key::Escape => self.filter.clear(),
            Key::Up | Key::Char('k') => self.selected = self.selected.saturating_sub(1),
            Key::Down | Key::Char('j') => {
                self.selected = (self.selected + 1).min(rows.len().saturating_sub(1))
            }
            Key::Enter => self.detail = rows.get(self.selected).map(|r| r.pid),
            Key::Char('s') => self.sort = self.sort.next(),
            Key::Char('/') => self.editing_filter = true,
            _ => {}
        }
        Action::Continue
    }

    /// Draws the whole view into `frame`.
    pub fn render(&self, frame: &mut ratatui::Frame) {
        view::render(self, frame);
    }
}

#[cfg(test)]
mod tests;
