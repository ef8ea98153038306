//! Progress of `backfill` and `reconcile`: a bar when stdout is a terminal, otherwise a
//! structured log line every few seconds (what a Kubernetes Job's log shows).

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::domain::Entity;

/// How often a log line is written when there is no terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Reports how far a command got.
pub struct Progress {
    /// The command, in log lines.
    command: &'static str,
    bar: Option<ProgressBar>,
    terminal: bool,
    kind: Option<Entity>,
    fetched: u64,
    total: Option<u64>,
    started: Instant,
    logged: Instant,
}

impl Progress {
    /// A bar when `terminal`, log lines otherwise.
    pub fn new(command: &'static str, terminal: bool) -> Self {
        Progress {
            command,
            bar: None,
            terminal,
            kind: None,
            fetched: 0,
            total: None,
            started: Instant::now(),
            logged: Instant::now(),
        }
    }

    /// No output at all (tests).
    pub fn hidden() -> Self {
        Progress::new("", false)
    }

    /// A new kind of object starts; `total` when Clerk said how many there are.
    pub(crate) fn start(&mut self, kind: Entity, total: Option<u64>) {
        self.kind = Some(kind);
        self.fetched = 0;
        self.total = total;
        self.started = Instant::now();
        if self.terminal {
            let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stdout());
            let template = if total.is_some() {
                "{prefix:>14} [{bar:30}] {pos}/{len} fetched, {msg} published, {per_sec}, ETA {eta}"
            } else {
                "{prefix:>14} {spinner} {pos} fetched, {msg} published, {per_sec}"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(kind.name());
            bar.set_message("0");
            self.bar = Some(bar);
        }
    }

    /// One more object of `kind` fetched; `published` in all so far.
    pub(crate) fn advance(&mut self, kind: Entity, published: u64) {
        if self.kind != Some(kind) {
            // Memberships met while going through organizations: counted, not barred.
            return;
        }
        self.fetched += 1;
        if let Some(bar) = &self.bar {
            bar.inc(1);
            bar.set_message(published.to_string());
        } else if !self.command.is_empty() && self.logged.elapsed() >= LOG_EVERY {
            self.logged = Instant::now();
            self.log(published);
        }
    }

    /// The kind in progress is done.
    pub(crate) fn finish(&mut self, kind: Entity) {
        if self.kind != Some(kind) {
            return;
        }
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
        self.kind = None;
    }

    fn log(&self, published: u64) {
        let seconds = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = self.fetched as f64 / seconds;
        let eta = self
            .total
            .filter(|_| rate > 0.0)
            .map(|t| (t.saturating_sub(self.fetched) as f64 / rate).round() as u64);
        tracing::info!(
            command = self.command,
            kind = self.kind.map(Entity::name),
            fetched = self.fetched,
            total = self.total,
            published,
            per_second = (rate * 10.0).round() / 10.0,
            eta_seconds = eta,
            "progress"
        );
    }
}
