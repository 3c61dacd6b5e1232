//! SIGINT and SIGTERM as futures: the operations take a "stop" future and
//! clean up when it completes; a second signal quits at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// 128 + the number of the first signal received, 0 before one.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

/// The exit code of a command that a signal stopped: 130 after SIGINT, 143
/// after SIGTERM (128 + the signal's number, as shells report it); `None`
/// when no signal was received.
pub fn exit_code() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        c => Some(c),
    }
}

/// A boxed future that completes on a signal (or never).
pub type Stop = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A future that never completes: no signal handling, the default action
/// (the process ends) stays.
pub fn never() -> Stop {
    Box::pin(std::future::pending())
}

/// Completes on the first SIGTERM or SIGINT.
///
/// # Errors
/// The signal handlers cannot be installed.
pub fn first() -> Result<Stop> {
    let (first, _) = twice()?;
    Ok(first)
}

/// Two futures: the first completes on the first SIGTERM or SIGINT, the
/// second on the next one.
///
/// # Errors
/// The signal handlers cannot be installed.
pub fn twice() -> Result<(Stop, Stop)> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let (tx, rx) = watch::channel(0u32);
    tokio::spawn(async move {
        loop {
            let code = tokio::select! {
                Some(()) = term.recv() => {
                    tracing::info!("SIGTERM received");
                    128 + 15
                }
                Some(()) = int.recv() => {
                    tracing::info!("SIGINT received");
                    128 + 2
                }
                else => break,
            };
            let _ = RECEIVED.compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst);
            tx.send_modify(|n| *n += 1);
        }
    });
    let after = |n: u32| -> Stop {
        let mut rx = rx.clone();
        Box::pin(async move {
            let _ = rx.wait_for(|c| *c >= n).await;
        })
    };
    Ok((after(1), after(2)))
}
