//! Progress reporting: libraries never print; they report to an injected
//! [`Progress`], which the CLI draws as a progress bar.

/// Receives progress of long operations. Every method has a no-op default.
pub trait Progress: Send + Sync {
    /// `bytes` more plaintext bytes were processed.
    fn add_bytes(&self, _bytes: u64) {}
    /// A new phase started (`"dumping database"`).
    fn phase(&self, _message: &str) {}
}

/// The no-op [`Progress`].
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}
