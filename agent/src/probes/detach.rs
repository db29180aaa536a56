//! Detaching uprobes without stalling the agent.
//!
//! Closing a uprobe's link returns only once the kernel has unregistered it,
//! which waits for RCU grace periods under a global lock, one link after
//! another even when closed from many threads at once: seconds for one CUDA
//! runtime library (docs/architecture.md, *Probes outlive their last
//! process*). On the pipeline thread that stalled every report and every new
//! process's discovery for as long (on a GPU machine a process started
//! meanwhile lost its calls). So links are closed on a thread of their own.

use std::thread::{self, JoinHandle};

/// Links being detached in the background.
pub struct Detaching(Option<JoinHandle<()>>);

impl Detaching {
    /// Whether every link is detached.
    pub fn is_done(&self) -> bool {
        self.0.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Waits until every link is detached.
    pub fn wait(self) {
        if let Some(handle) = self.0 {
            // The thread only drops links, which never panics.
            let _ = handle.join();
        }
    }
}

/// Detaches `links` (by dropping them) on a thread of its own.
pub fn in_background<L: Send + 'static>(links: Vec<L>) -> Detaching {
    if links.is_empty() {
        return Detaching(None);
    }
    match thread::Builder::new()
        .name("detach".into())
        .spawn(move || drop(links))
    {
        Ok(handle) => Detaching(Some(handle)),
        Err(e) => {
            // The closure was dropped, and the links with it: detached in place.
            log::debug!("no thread to detach probes on ({e}): detached in place");
            Detaching(None)
        }
    }
}
