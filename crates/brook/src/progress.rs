//! Progress of long commands (`bench produce|consume|e2e`, `consume
//! --max-messages`): a bar on stderr when stderr is a terminal, nothing
//! at all otherwise (a pipe or a log file gets only the results, and
//! `--json` output is never touched).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Debug, Clone)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar towards `total` (a spinner when unknown), counting `unit`s.
    pub fn new(total: Option<u64>, unit: &str) -> Progress {
        let bar = match total {
            Some(total) => ProgressBar::new(total),
            None => ProgressBar::new_spinner(),
        };
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr_with_hz(4)
        } else {
            ProgressDrawTarget::hidden()
        };
        bar.set_draw_target(target);
        let template = match total {
            Some(_) => format!("{{bar:30}} {{pos}}/{{len}} {unit} ({{per_sec}}, eta {{eta}}) {{msg}}"),
            None => format!("{{spinner}} {{pos}} {unit} ({{per_sec}}) {{msg}}"),
        };
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(250));
        Progress { bar }
    }

    pub fn set(&self, done: u64) {
        self.bar.set_position(done);
    }

    pub fn note(&self, message: String) {
        self.bar.set_message(message);
    }

    /// Removes the bar (the results print after it).
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
