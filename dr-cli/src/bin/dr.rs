//! `dr`: parse, init tracing, run, map the outcome to an exit code.

use std::io::Write;

use clap::Parser;
use dr_cli::{args::Cli, commands, exit, init_tracing};

fn main() {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let json = cli.json;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        // A reader that went away (`dr list | head`) is not an error.
        Err(e) if exit::is_broken_pipe(&e) => exit::EXIT_OK,
        Err(e) => {
            let code = exit::code(&e);
            if json {
                let body = serde_json::json!({ "error": format!("{e:#}"), "exit_code": code });
                let _ = writeln!(std::io::stdout(), "{body}");
            }
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            code
        }
    };
    std::process::exit(code);
}
