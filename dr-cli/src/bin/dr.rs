//! `dr`: parse, init tracing, run, map the outcome to an exit code.

use std::io::Write;

use clap::Parser;
use dr_cli::{args::Cli, commands, exit, init_tracing};

fn main() {
    // `println!` panics when stdout is a pipe its reader closed (`dr drill
    // list | head`): like a reader that went away in any other write, that
    // is not an error (exit 0, nothing on stderr).
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if text.contains("failed printing to stdout") && text.contains("Broken pipe") {
            std::process::exit(exit::EXIT_OK);
        }
        default_hook(info);
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors; usage errors exit 2, and
            // under --json also say so on stdout like every other failure.
            let code = if e.use_stderr() {
                exit::EXIT_USAGE
            } else {
                exit::EXIT_OK
            };
            if code != exit::EXIT_OK && std::env::args().any(|a| a == "--json") {
                let text = e.render().to_string();
                let first = text.lines().next().unwrap_or_default();
                let body = serde_json::json!({
                    "error": first.trim_start_matches("error: "),
                    "exit_code": code,
                });
                let _ = writeln!(std::io::stdout(), "{body}");
            }
            let _ = e.print();
            std::process::exit(code);
        }
    };
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
                let body = serde_json::json!({ "error": exit::message(&e), "exit_code": code });
                let _ = writeln!(std::io::stdout(), "{body}");
            }
            let _ = writeln!(std::io::stderr(), "error: {}", exit::message(&e));
            code
        }
    };
    std::process::exit(code);
}
