//! Shared helpers of the example programs: running the `dr` binary that was
//! built beside them and timing it.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The `dr` binary next to the running example (same target directory).
///
/// # Panics
/// When it is not built (`cargo build --release -p dr-cli`).
pub fn dr_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("exe dir");
    for candidate in [dir.join("dr"), dir.join("../dr")] {
        if candidate.exists() {
            return candidate;
        }
    }
    panic!(
        "the dr binary is not built beside {}: run cargo build -p dr-cli",
        exe.display()
    );
}

/// What a timed command did.
#[derive(Debug)]
pub struct Timed {
    /// Wall time.
    pub elapsed: Duration,
    /// Peak resident set of the process itself (VmHWM), bytes, when sampled.
    pub peak_rss: Option<u64>,
    /// Standard output.
    pub stdout: String,
}

/// Runs `cmd` to completion, sampling its own peak RSS (`VmHWM` in
/// `/proc/<pid>/status`, a high-water mark) every 20 ms.
///
/// # Errors
/// When it cannot start or exits non-zero (with its stderr).
pub fn run_timed(mut cmd: Command) -> anyhow::Result<Timed> {
    let started = Instant::now();
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let pid = child.id();
    let mut stdout_pipe = child.stdout.take().expect("piped");
    let mut stderr_pipe = child.stderr.take().expect("piped");
    let out_thread = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout_pipe, &mut s).ok();
        s
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr_pipe, &mut s).ok();
        s
    });
    let mut peak = None;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            if let Some(kb) = text
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
            {
                peak = Some(kb * 1024);
            }
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    let stdout = out_thread.join().unwrap_or_default();
    let stderr = err_thread.join().unwrap_or_default();
    if !status.success() {
        anyhow::bail!("{cmd:?} failed with {status}: {stderr}");
    }
    Ok(Timed {
        elapsed,
        peak_rss: peak,
        stdout,
    })
}

/// Megabytes with two decimals.
pub fn mib(n: u64) -> String {
    format!("{:.2} MiB", n as f64 / (1024.0 * 1024.0))
}
