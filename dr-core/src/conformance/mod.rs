//! Conformance suites: the contract of each of `dr-core`'s traits as free
//! functions that every implementation runs (the in-memory ones on every
//! `cargo test`, the real ones against real servers), each with an `all()`
//! entry point.
//!
//! - [`source`]: [`BackupSource`](crate::BackupSource) and
//!   [`Restorer`](crate::Restorer); its functions are re-exported here
//!   ([`all`], [`backup_is_listed_and_readable`], ...).
//! - [`dns`]: [`DnsProvider`](crate::dns::DnsProvider), picking checks by
//!   [`DnsCapabilities`](crate::dns::DnsCapabilities).
//!
//! - [`ports`]: loopback ports for the servers tests start.
//!
//! Enabled by the `conformance` feature.

pub mod dns;
pub mod ports;
pub mod source;

pub use source::{
    all, backup_is_listed_and_readable, restore_then_check_matches, verify_with_scratch_restore,
    wrong_key_fails_before_the_target_is_touched,
};
