//! `dr-agent`: parse, init tracing, build the runtime, run until SIGTERM,
//! map the outcome to an exit code (0 after a clean stop, 2 for
//! configuration errors, 3 for other failures; see `dr_cli::exit`).

use std::io::Write;

use clap::Parser;
use dr_cli::{agent, args::AgentArgs, exit, init_tracing, signals};

fn main() {
    let args = AgentArgs::parse();
    init_tracing(args.verbose.max(1));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let outcome = runtime.block_on(async {
        let shutdown = signals::first()?;
        agent::run(args, shutdown).await
    });
    let code = match outcome {
        Ok(_) => exit::EXIT_OK,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {}", exit::message(&e));
            exit::code(&e)
        }
    };
    std::process::exit(code);
}
