//! The `dr` and `dr-agent` binaries: argument parsing (every clap type is
//! in [`args`]), rendering, the progress bar, exit codes, signals and the
//! agent's HTTP server. Every operation is `dr_ops`'s: a second front end
//! would call the same functions.

pub mod agent;
pub mod args;
pub mod commands;
pub mod exit;
pub mod progress;
pub mod render;
pub mod signals;

/// Installs the tracing subscriber on stderr: `DR_LOG` as a filter, else
/// warnings (info with -v, debug with -vv).
pub fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("DR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
