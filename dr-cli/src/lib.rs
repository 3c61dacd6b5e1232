//! The `dr` command line: argument and configuration parsing, wiring of the
//! configuration to the libraries' trait objects, table and JSON rendering,
//! the progress bar and exit codes. Everything else lives in the libraries.

pub mod agent;
pub mod args;
pub mod commands;
pub mod config;
pub mod dns_cmd;
pub mod exit;
pub mod plan_cmd;
pub mod progress;
pub mod render;
pub mod wal;

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
