//! DNS: the [`DnsProvider`] trait, record sets and change batches, the
//! [`InMemoryDnsProvider`], and (with the `conformance` feature) the suite
//! every provider runs.
//!
//! The model follows Route53's, the richest of the providers `dr` drives
//! (<https://docs.aws.amazon.com/Route53/latest/APIReference/API_ResourceRecordSet.html>):
//! a record set is identified by name, type and an optional set identifier
//! (weighted and failover sets); a change batch of `CREATE`, `UPSERT` and
//! `DELETE` is applied all or nothing. RFC 2136 servers express the same with
//! prerequisites (RFC 2136 section 2.4).
//!
//! Names are absolute, lower case, with a trailing dot (`api.example.com.`).
//! Values are in presentation form: addresses for `A`/`AAAA`, an absolute name
//! for `CNAME`, and the unquoted text for `TXT`.
//!
//! One module per concern, re-exported here: the record model
//! ([`RecordSet`], [`normalize_name`]), change batches ([`ChangeBatch`],
//! [`check_batch_against`]), the trait ([`DnsProvider`], [`DnsProviderExt`],
//! [`DnsCapabilities`], [`WaitOptions`]) and [`InMemoryDnsProvider`]. The
//! conformance suite is `dr_core::conformance::dns` (feature `conformance`).

mod change;
mod memory;
mod provider;
mod record;

pub use change::{
    check_batch_against, Change, ChangeAction, ChangeBatch, ChangeInfo, ChangeStatus, Expect,
};
pub use memory::InMemoryDnsProvider;
pub use provider::{DnsCapabilities, DnsProvider, DnsProviderExt, WaitOptions};
pub use record::{
    normalize_name, AliasTarget, FailoverRole, RecordKey, RecordSet, RecordType, Routing,
};

/// The DNS conformance suite under its earlier path; it lives in
/// [`crate::conformance::dns`].
#[cfg(feature = "conformance")]
#[doc(hidden)]
pub use crate::conformance::dns as conformance;
