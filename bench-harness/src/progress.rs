//! The live progress bar and status lines, shown only on a terminal and without `--quiet`.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

/// Where human-oriented output goes: a progress bar on a terminal, plain status lines on
/// stderr otherwise, nothing with `--quiet`.
#[derive(Clone, Copy, Debug)]
pub struct Ui {
    pub quiet: bool,
    /// Whether to draw progress bars (stdout is a terminal and not quiet).
    pub bars: bool,
}

impl Ui {
    pub fn new(quiet: bool) -> Self {
        Ui {
            quiet,
            bars: !quiet && std::io::stdout().is_terminal() && std::io::stderr().is_terminal(),
        }
    }

    /// A status line on stderr (suppressed by `--quiet`).
    pub fn status(&self, line: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("{}", line.as_ref());
        }
    }

    /// A bar over `len` units labelled `prefix`; hidden unless bars are on.
    pub fn bar(&self, prefix: &str, len: u64, template: &str) -> Progress {
        if !self.bars {
            return Progress { bar: None };
        }
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(template)
                .expect("progress template is valid")
                .progress_chars("=> "),
        );
        bar.set_prefix(prefix.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress { bar: Some(bar) }
    }

    /// A bar for a timed run: position in milliseconds, message with the live throughput.
    pub fn run_bar(&self, system: &str, duration: Duration) -> Progress {
        let template = format!(
            "{{prefix:>6}} [{{bar:30}}] {{elapsed:>3}}/{} {{msg}}",
            humantime::format_duration(duration)
        );
        self.bar(system, duration.as_millis() as u64, &template)
    }

    /// A bar for loading `n` requests.
    pub fn load_bar(&self, system: &str, n: u64) -> Progress {
        self.bar(
            system,
            n,
            "{prefix:>6} loading [{bar:30}] {human_pos}/{human_len} ({per_sec})",
        )
    }
}

/// A progress bar that may be hidden; every method is a no-op then.
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Another handle to the same bar (for a ticker task).
    pub fn clone_handle(&self) -> Progress {
        Progress {
            bar: self.bar.clone(),
        }
    }

    pub fn set_position(&self, pos: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(pos);
        }
    }

    pub fn set_message(&self, msg: impl Into<String>) {
        if let Some(bar) = &self.bar {
            bar.set_message(msg.into());
        }
    }

    pub fn is_visible(&self) -> bool {
        self.bar.is_some()
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
