//! `dr-dns`: DNS providers and the DNS failover of recovery plans.
//!
//! - [`Route53`]: Amazon Route53 through `aws-sdk-route53` (zone by id or
//!   name; A, AAAA, CNAME, TXT, alias, weighted and failover sets; atomic
//!   change batches with compare-and-swap; `GetChange` polling; retries of
//!   throttling; signed for `us-east-1`; `AWS_ENDPOINT_URL` for emulators).
//! - [`Rfc2136`]: dynamic updates signed with TSIG for on-premise zones
//!   (BIND, Knot), prerequisites for compare-and-swap, authoritative reads.
//! - [`failover()`], [`rollback()`], [`get()`], [`set()`]: what `dr dns
//!   failover|get|set` call; [`register`] adds the `dns.failover` plan step.
//! - [`DnsConfig`] and [`connect`]: the `[dns]` section of `dr.toml`.
//!
//! Both providers implement [`dr_core::dns::DnsProvider`] and pass its
//! conformance suite (`dr_core::conformance::dns`). On the in-memory
//! provider:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> dr_core::Result<()> {
//! use dr_core::dns::{Change, DnsProviderExt, InMemoryDnsProvider, RecordSet, RecordType};
//! use dr_dns::{failover, rollback, FailoverOptions, FailoverSpec};
//!
//! let dns = InMemoryDnsProvider::new("example.test");
//! dns.apply_one(Change::create(RecordSet::new("api.example.test", RecordType::A, 60, ["10.0.0.10"])))
//!     .await?;
//! let spec = FailoverSpec::new("api.example.test", RecordType::A, ["10.1.0.10"]).from_values(["10.0.0.10"]);
//! let report = failover(&dns, &spec, &FailoverOptions::default()).await?;
//! assert_eq!(report.confirmed, Some(vec!["10.1.0.10".to_string()]));
//! rollback(&dns, &report, &Default::default()).await?;
//! # Ok(()) }
//! ```

mod action;
mod config;
mod error;
mod failover;
mod rfc2136;
mod route53;

pub use action::{register, DnsFailover, FAILOVER_ACTION};
pub use config::{connect, connect_lazily, DnsConfig};
pub use error::DnsError;
pub use failover::{
    failover, get, rollback, set, FailoverOptions, FailoverReport, FailoverSpec, SetReport,
    DEFAULT_TTL,
};
pub use rfc2136::{Rfc2136, Rfc2136Builder, Rfc2136Config, TsigKey, DEFAULT_SECRET_ENV};
pub use route53::{Route53, Route53Builder, Route53Config, ROUTE53_SIGNING_REGION};
