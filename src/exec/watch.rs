//! The watcher: reads every SOURCE again once per --ttl, and when what the
//! command would be given changes, leaves the new environment in the
//! supervisor's mailbox and wakes it.

use std::collections::HashSet;
use std::time::Duration;

use super::env::{Injected, Layer, LeftOut, Naming};
use super::signals::Waker;
use super::sources::Watched;
use super::supervisor::Mailbox;

/// Every SOURCE, and what they make.
pub struct Watch {
    sources: Vec<Watched>,
    naming: Naming,
    /// The environment last handed to the supervisor.
    current: Injected,
    /// Keys already warned about, so each is named once.
    warned: HashSet<LeftOut>,
    /// SOURCEs whose last read failed, so each failure is logged once.
    failing: HashSet<String>,
}

impl Watch {
    /// The watch over `sources`, read once already.
    pub fn new(sources: Vec<Watched>, naming: Naming) -> Watch {
        let mut watch = Watch {
            sources,
            naming,
            current: Injected::default(),
            warned: HashSet::new(),
            failing: HashSet::new(),
        };
        watch.current = watch.injected();
        watch
    }

    /// What the command is given now.
    pub fn current(&self) -> &Injected {
        &self.current
    }

    /// The environment the sources make, warning once about each key left
    /// out.
    fn injected(&mut self) -> Injected {
        let layers: Vec<Layer<'_>> = self
            .sources
            .iter()
            .map(|w| Layer {
                source: &w.name,
                secrets: w.secrets.iter().map(|s| &s.keys).collect(),
            })
            .collect();
        let injected = Injected::from_layers(&layers, &self.naming);
        for left in &injected.left_out {
            if self.warned.insert(left.clone()) {
                let variable = self.naming.variable(&left.key);
                let named = if variable == left.key.as_str() {
                    String::new()
                } else {
                    format!(" (as {variable})")
                };
                tracing::warn!(source = %left.source, key = %left.key, "key left out of the environment{named}: {}", left.why);
            }
        }
        injected
    }

    /// Reads every SOURCE once; the new environment when it changed.
    pub fn tick(&mut self) -> Option<Injected> {
        let mut any = false;
        for w in &mut self.sources {
            match w.reread() {
                Ok(changed) => {
                    if self.failing.remove(&w.name) {
                        tracing::info!(source = %w.name, "read again");
                    }
                    any |= changed;
                }
                Err(e) => {
                    if self.failing.insert(w.name.clone()) {
                        tracing::warn!(source = %e.source, reason = %e.reason, "cannot read the source again; the command keeps what it has");
                    }
                }
            }
        }
        if !any {
            return None;
        }
        let newer = self.injected();
        let changed = self.current.changed_names(&newer);
        if changed.is_empty() {
            // Said, so that nobody wonders why the command was left alone.
            tracing::info!("a source changed, but no variable the command sees: it keeps running");
            return None;
        }
        let sources: Vec<&str> = {
            let mut s: Vec<&str> = changed
                .iter()
                .filter_map(|n| newer.vars.get(n).or_else(|| self.current.vars.get(n)))
                .map(|v| v.source.as_str())
                .collect();
            s.sort_unstable();
            s.dedup();
            s
        };
        tracing::info!(variables = %changed.join(","), sources = %sources.join(","), "the environment changed");
        self.current = newer.clone();
        Some(newer)
    }

    /// Watches forever (on its own thread): once per `ttl`, a tick; a
    /// change goes to `mailbox`, and `waker` wakes the supervisor.
    pub fn run(mut self, ttl: Duration, mailbox: Mailbox, waker: Waker) {
        loop {
            // --ttl 0s must not become a busy loop against the store.
            std::thread::sleep(ttl.max(Duration::from_secs(1)));
            if let Some(newer) = self.tick() {
                *mailbox.lock().unwrap_or_else(|p| p.into_inner()) = Some(newer);
                waker.wake();
            }
        }
    }
}
