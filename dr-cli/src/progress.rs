//! The progress bar: bytes and rate on a terminal, nothing elsewhere.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A [`dr_storage::Progress`] drawn with indicatif on stderr.
#[derive(Debug)]
pub struct Bar(ProgressBar);

impl Bar {
    /// A bar when stderr is a terminal and progress is wanted, else `None`.
    pub fn new(enabled: bool) -> Option<Arc<Self>> {
        if !enabled || !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {msg:20} {bytes:>10} {binary_bytes_per_sec:>12} {elapsed}",
            )
            .expect("valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        Some(Arc::new(Bar(bar)))
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}

impl dr_storage::Progress for Bar {
    fn add_bytes(&self, bytes: u64) {
        self.0.inc(bytes);
    }

    fn phase(&self, message: &str) {
        self.0.set_message(message.to_string());
    }
}
