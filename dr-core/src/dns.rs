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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Debug, Display};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The record types `dr` manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
#[non_exhaustive]
pub enum RecordType {
    /// IPv4 address.
    A,
    /// IPv6 address.
    #[allow(clippy::upper_case_acronyms)]
    AAAA,
    /// Canonical name.
    #[allow(clippy::upper_case_acronyms)]
    CNAME,
    /// Text.
    #[allow(clippy::upper_case_acronyms)]
    TXT,
}

impl RecordType {
    /// The type's mnemonic (`A`, `AAAA`, `CNAME`, `TXT`).
    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::A => "A",
            RecordType::AAAA => "AAAA",
            RecordType::CNAME => "CNAME",
            RecordType::TXT => "TXT",
        }
    }
}

impl Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RecordType {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_uppercase().as_str() {
            "A" => Ok(RecordType::A),
            "AAAA" => Ok(RecordType::AAAA),
            "CNAME" => Ok(RecordType::CNAME),
            "TXT" => Ok(RecordType::TXT),
            _ => Err(Error::InvalidConfig {
                key: "record.type".into(),
                reason: format!("unsupported record type {s:?}; supported: A, AAAA, CNAME, TXT"),
            }),
        }
    }
}

/// Identifies one record set: name, type and, for weighted or failover sets,
/// the set identifier.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordKey {
    /// Absolute name with a trailing dot.
    pub name: String,
    /// Record type.
    #[serde(rename = "type")]
    pub rtype: RecordType,
    /// Set identifier of a weighted or failover record set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_identifier: Option<String>,
}

impl RecordKey {
    /// A key with a normalised name and no set identifier.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when the name is not a valid DNS name.
    pub fn new(name: &str, rtype: RecordType) -> Result<Self> {
        Ok(RecordKey {
            name: normalize_name(name)?,
            rtype,
            set_identifier: None,
        })
    }

    /// The same key with a set identifier.
    pub fn with_set_identifier(mut self, id: impl Into<String>) -> Self {
        self.set_identifier = Some(id.into());
        self
    }
}

impl Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.rtype)?;
        if let Some(id) = &self.set_identifier {
            write!(f, " [{id}]")?;
        }
        Ok(())
    }
}

/// An alias to another resource (Route53 only): the target's hosted zone and
/// name.
/// Source: <https://docs.aws.amazon.com/Route53/latest/APIReference/API_AliasTarget.html>.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AliasTarget {
    /// Hosted zone of the target (the record's own zone for an alias to a
    /// record in the same zone).
    pub hosted_zone_id: String,
    /// Target name, absolute.
    pub dns_name: String,
    /// Whether Route53 checks the target's health.
    #[serde(default)]
    pub evaluate_target_health: bool,
}

/// Role of a record set in a failover pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum FailoverRole {
    /// Answered while healthy.
    Primary,
    /// Answered when the primary is unhealthy.
    Secondary,
}

/// Routing policy of a record set with a set identifier.
/// Source: <https://docs.aws.amazon.com/Route53/latest/DeveloperGuide/routing-policy.html>.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "lowercase", deny_unknown_fields)]
pub enum Routing {
    /// Weighted: answered in proportion to `weight` (0 to 255).
    Weighted {
        /// Set identifier, unique among the sets of the name and type.
        set_identifier: String,
        /// Relative weight, 0 to 255.
        weight: u8,
    },
    /// Failover: the primary while healthy, else the secondary.
    Failover {
        /// Set identifier.
        set_identifier: String,
        /// Primary or secondary.
        role: FailoverRole,
        /// Health check that decides, for a primary.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        health_check_id: Option<String>,
    },
}

impl Routing {
    /// The set identifier.
    pub fn set_identifier(&self) -> &str {
        match self {
            Routing::Weighted { set_identifier, .. } | Routing::Failover { set_identifier, .. } => {
                set_identifier
            }
        }
    }
}

/// A record set: its key, TTL and values, or an alias.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordSet {
    /// Absolute name with a trailing dot.
    pub name: String,
    /// Record type.
    #[serde(rename = "type")]
    pub rtype: RecordType,
    /// Time to live in seconds; `None` for an alias (Route53 uses the target's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
    /// Values in presentation form; empty for an alias.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// Alias target, instead of values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<AliasTarget>,
    /// Weighted or failover routing, with the set identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<Routing>,
}

impl RecordSet {
    /// A simple record set with a TTL and values (normalised; check with
    /// [`RecordSet::validate`]).
    pub fn new<I, S>(name: &str, rtype: RecordType, ttl: u32, values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        RecordSet {
            name: name.to_string(),
            rtype,
            ttl: Some(ttl),
            values: values.into_iter().map(Into::into).collect(),
            alias: None,
            routing: None,
        }
    }

    /// The same record set with a routing policy.
    pub fn with_routing(mut self, routing: Routing) -> Self {
        self.routing = Some(routing);
        self
    }

    /// The key of this record set.
    pub fn key(&self) -> RecordKey {
        RecordKey {
            name: self.name.clone(),
            rtype: self.rtype,
            set_identifier: self
                .routing
                .as_ref()
                .map(|r| r.set_identifier().to_string()),
        }
    }

    /// Checks the record set and returns it normalised: name lower case and
    /// absolute, addresses canonical, `CNAME` targets absolute.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the field: an invalid name, no value and
    /// no alias, both, a value that does not parse for the type, more than one
    /// `CNAME` value, a TTL above 2147483647 (RFC 2181 section 8).
    pub fn validate(&self) -> Result<RecordSet> {
        let name = normalize_name(&self.name)?;
        let bad = |key: &str, reason: String| Error::InvalidConfig {
            key: key.into(),
            reason: format!("{name} {}: {reason}", self.rtype),
        };
        match (&self.alias, self.values.is_empty()) {
            (Some(_), false) => {
                return Err(bad("record.values", "an alias record has no values".into()))
            }
            (None, true) => {
                return Err(bad(
                    "record.values",
                    "a record set needs at least one value".into(),
                ))
            }
            _ => {}
        }
        if let Some(ttl) = self.ttl {
            if ttl > 2_147_483_647 {
                return Err(bad("record.ttl", format!("TTL {ttl} is above 2147483647")));
            }
        } else if self.alias.is_none() {
            return Err(bad(
                "record.ttl",
                "a record set with values needs a TTL".into(),
            ));
        }
        if self.rtype == RecordType::CNAME && self.values.len() > 1 {
            return Err(bad("record.values", "a CNAME has exactly one value".into()));
        }
        let mut values = Vec::with_capacity(self.values.len());
        for v in &self.values {
            values.push(
                normalize_value(self.rtype, v).map_err(|reason| bad("record.values", reason))?,
            );
        }
        let alias = match &self.alias {
            Some(a) => {
                if a.hosted_zone_id.trim().is_empty() {
                    return Err(bad("record.alias.hosted_zone_id", "empty".into()));
                }
                Some(AliasTarget {
                    hosted_zone_id: a.hosted_zone_id.clone(),
                    dns_name: normalize_name(&a.dns_name)?,
                    evaluate_target_health: a.evaluate_target_health,
                })
            }
            None => None,
        };
        if let Some(r) = &self.routing {
            if r.set_identifier().is_empty() || r.set_identifier().len() > 128 {
                return Err(bad(
                    "record.routing.set_identifier",
                    "must be 1 to 128 characters".into(),
                ));
            }
        }
        Ok(RecordSet {
            name,
            rtype: self.rtype,
            ttl: self.ttl,
            values,
            alias,
            routing: self.routing.clone(),
        })
    }

    /// Whether two record sets hold the same data: type, values (in any
    /// order), alias and routing. TTLs are not compared (RFC 2136
    /// prerequisites cannot compare them).
    pub fn same_data(&self, other: &RecordSet) -> bool {
        let a: BTreeSet<&str> = self.values.iter().map(String::as_str).collect();
        let b: BTreeSet<&str> = other.values.iter().map(String::as_str).collect();
        self.name.eq_ignore_ascii_case(&other.name)
            && self.rtype == other.rtype
            && a == b
            && self.alias == other.alias
            && self.routing == other.routing
    }

    /// `api.example.com. A 60 10.0.0.1,10.0.0.2` for logs and reports.
    pub fn summary(&self) -> String {
        let data = match &self.alias {
            Some(a) => format!("ALIAS {}", a.dns_name),
            None => self.values.join(","),
        };
        match self.ttl {
            Some(ttl) => format!("{} {ttl} {data}", self.key()),
            None => format!("{} {data}", self.key()),
        }
    }
}

/// Normalises a DNS name: lower case, absolute (trailing dot), each label 1 to
/// 63 octets, the whole at most 253 characters without the final dot
/// (RFC 1035 section 2.3.4). A leading `*` label is allowed.
///
/// # Errors
/// [`Error::InvalidConfig`] with key `record.name` naming what is wrong.
pub fn normalize_name(name: &str) -> Result<String> {
    let bad = |reason: &str| Error::InvalidConfig {
        key: "record.name".into(),
        reason: format!("{name:?}: {reason}"),
    };
    let trimmed = name.trim().trim_end_matches('.');
    if trimmed.is_empty() {
        return Err(bad("empty name"));
    }
    if trimmed.len() > 253 {
        return Err(bad("longer than 253 characters"));
    }
    for (i, label) in trimmed.split('.').enumerate() {
        if label.is_empty() {
            return Err(bad("empty label"));
        }
        if label.len() > 63 {
            return Err(bad("a label is longer than 63 characters"));
        }
        if label == "*" && i == 0 {
            continue;
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(bad(
                "a label has characters other than letters, digits, '-' and '_'",
            ));
        }
    }
    Ok(format!("{}.", trimmed.to_ascii_lowercase()))
}

fn normalize_value(rtype: RecordType, value: &str) -> std::result::Result<String, String> {
    match rtype {
        RecordType::A => value
            .trim()
            .parse::<Ipv4Addr>()
            .map(|a| a.to_string())
            .map_err(|_| format!("{value:?} is not an IPv4 address")),
        RecordType::AAAA => value
            .trim()
            .parse::<Ipv6Addr>()
            .map(|a| a.to_string())
            .map_err(|_| format!("{value:?} is not an IPv6 address")),
        RecordType::CNAME => normalize_name(value).map_err(|e| e.to_string()),
        RecordType::TXT => {
            if value.len() > 4000 {
                Err("a TXT value is longer than 4000 characters".into())
            } else {
                Ok(value.to_string())
            }
        }
    }
}

/// What a [`Change`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ChangeAction {
    /// Create; the record set must not exist.
    Create,
    /// Create or replace.
    Upsert,
    /// Delete; the record set must exist with exactly these values.
    Delete,
}

/// What the current value must be for a change to apply: the precondition
/// that keeps a failover from clobbering a change it did not expect.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// No precondition.
    #[default]
    Any,
    /// The record set must not exist.
    Absent,
    /// The record set must hold this data ([`RecordSet::same_data`]).
    Current(RecordSet),
}

/// One change of a [`ChangeBatch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    /// Create, upsert or delete.
    pub action: ChangeAction,
    /// The record set created, written or deleted.
    pub record: RecordSet,
    /// Precondition on the current value of `record`'s key.
    #[serde(default)]
    pub expect: Expect,
}

impl Change {
    /// A `CREATE`.
    pub fn create(record: RecordSet) -> Self {
        Change {
            action: ChangeAction::Create,
            record,
            expect: Expect::Any,
        }
    }

    /// An `UPSERT`.
    pub fn upsert(record: RecordSet) -> Self {
        Change {
            action: ChangeAction::Upsert,
            record,
            expect: Expect::Any,
        }
    }

    /// A `DELETE`.
    pub fn delete(record: RecordSet) -> Self {
        Change {
            action: ChangeAction::Delete,
            record,
            expect: Expect::Any,
        }
    }

    /// The same change with a precondition.
    pub fn expecting(mut self, expect: Expect) -> Self {
        self.expect = expect;
        self
    }
}

/// Changes applied together, all or nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeBatch {
    /// A comment kept by providers that keep one (Route53).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// The changes, in order.
    pub changes: Vec<Change>,
}

impl ChangeBatch {
    /// A batch of these changes.
    pub fn new(changes: Vec<Change>) -> Self {
        ChangeBatch {
            comment: None,
            changes,
        }
    }

    /// The same batch with a comment.
    pub fn with_comment(mut self, comment: impl Into<String>) -> Self {
        self.comment = Some(comment.into());
        self
    }

    /// Checks every record of the batch and returns the batch normalised.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an empty batch or an invalid record.
    pub fn validate(&self) -> Result<ChangeBatch> {
        if self.changes.is_empty() {
            return Err(Error::InvalidConfig {
                key: "changes".into(),
                reason: "a change batch needs at least one change".into(),
            });
        }
        let mut changes = Vec::with_capacity(self.changes.len());
        for c in &self.changes {
            let record = c.record.validate()?;
            let expect = match &c.expect {
                Expect::Current(r) => {
                    let r = r.validate()?;
                    if r.key() != record.key() {
                        return Err(Error::InvalidConfig {
                            key: "expect".into(),
                            reason: format!(
                                "the expected record {} is not the changed one {}",
                                r.key(),
                                record.key()
                            ),
                        });
                    }
                    Expect::Current(r)
                }
                other => other.clone(),
            };
            changes.push(Change {
                action: c.action,
                record,
                expect,
            });
        }
        Ok(ChangeBatch {
            comment: self.comment.clone(),
            changes,
        })
    }
}

/// Whether a submitted change has reached all of the provider's
/// authoritative servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChangeStatus {
    /// Accepted, not yet everywhere.
    Pending,
    /// Served by every authoritative server.
    InSync,
}

/// A submitted change batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeInfo {
    /// The provider's change id (Route53 `C2682N5HXP0BZ4`).
    pub id: String,
    /// Its status when last seen.
    pub status: ChangeStatus,
    /// When the provider accepted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_at: Option<DateTime<Utc>>,
}

/// What a provider can do. An operation outside its capabilities returns
/// [`Error::Unsupported`], never silently nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DnsCapabilities {
    /// Alias records ([`RecordSet::alias`]).
    pub alias: bool,
    /// Weighted record sets.
    pub weighted: bool,
    /// Failover record sets.
    pub failover: bool,
    /// A batch is applied all or nothing by the server.
    pub atomic_batches: bool,
    /// Changes are `PENDING` before `INSYNC`, and [`DnsProvider::change_status`]
    /// reports it.
    pub change_status: bool,
    /// [`DnsProvider::query_authoritative`] asks the zone's authoritative servers.
    pub authoritative_query: bool,
}

impl DnsCapabilities {
    /// Everything.
    pub fn all() -> Self {
        DnsCapabilities {
            alias: true,
            weighted: true,
            failover: true,
            atomic_batches: true,
            change_status: true,
            authoritative_query: true,
        }
    }

    /// Nothing beyond the required core.
    pub fn none() -> Self {
        Self::default()
    }

    /// Sets [`alias`](Self::alias).
    pub fn with_alias(mut self, v: bool) -> Self {
        self.alias = v;
        self
    }
    /// Sets [`weighted`](Self::weighted).
    pub fn with_weighted(mut self, v: bool) -> Self {
        self.weighted = v;
        self
    }
    /// Sets [`failover`](Self::failover).
    pub fn with_failover(mut self, v: bool) -> Self {
        self.failover = v;
        self
    }
    /// Sets [`atomic_batches`](Self::atomic_batches).
    pub fn with_atomic_batches(mut self, v: bool) -> Self {
        self.atomic_batches = v;
        self
    }
    /// Sets [`change_status`](Self::change_status).
    pub fn with_change_status(mut self, v: bool) -> Self {
        self.change_status = v;
        self
    }
    /// Sets [`authoritative_query`](Self::authoritative_query).
    pub fn with_authoritative_query(mut self, v: bool) -> Self {
        self.authoritative_query = v;
        self
    }

    /// [`Error::Unsupported`] when `record` needs a capability this provider
    /// lacks.
    ///
    /// # Errors
    /// [`Error::Unsupported`] naming the feature and the provider.
    pub fn check_record(&self, record: &RecordSet, provider: &dyn Display) -> Result<()> {
        let missing = if record.alias.is_some() && !self.alias {
            Some("alias records")
        } else {
            match record.routing {
                Some(Routing::Weighted { .. }) if !self.weighted => Some("weighted record sets"),
                Some(Routing::Failover { .. }) if !self.failover => Some("failover record sets"),
                _ => None,
            }
        };
        match missing {
            Some(m) => Err(Error::Unsupported {
                what: format!("{m} on {provider}"),
            }),
            None => Ok(()),
        }
    }
}

/// How long and how often [`DnsProviderExt::wait_for_sync`] polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WaitOptions {
    /// Pause between two status requests.
    #[serde(with = "crate::serde_secs")]
    pub interval: Duration,
    /// Give up after this long with [`Error::Timeout`].
    #[serde(with = "crate::serde_secs")]
    pub timeout: Duration,
}

impl Default for WaitOptions {
    /// Polls every 5 s for up to 5 minutes: Route53 usually propagates within
    /// 60 s (<https://docs.aws.amazon.com/Route53/latest/APIReference/API_GetChange.html>).
    fn default() -> Self {
        WaitOptions {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(300),
        }
    }
}

impl WaitOptions {
    /// Waits up to `timeout`, polling every `interval`.
    pub fn new(interval: Duration, timeout: Duration) -> Self {
        WaitOptions { interval, timeout }
    }
}

/// A DNS provider: reads record sets, applies change batches, reports change
/// status.
///
/// # Contract
/// - [`get`](Self::get) returns `Ok(None)` for a record set that does not
///   exist, never an error; names in the result are normalised
///   ([`normalize_name`]) and values in presentation form.
/// - [`apply`](Self::apply) validates the batch first ([`ChangeBatch::validate`]:
///   [`Error::InvalidConfig`]) and checks capabilities
///   ([`Error::Unsupported`]). A batch whose precondition fails (a `CREATE` of
///   an existing set, a `DELETE` whose values differ or whose set is missing,
///   an [`Expect`] that does not hold) returns [`Error::Conflict`] and changes
///   nothing. With [`DnsCapabilities::atomic_batches`] the server guarantees
///   that no other change slips between the check and the write.
/// - [`change_status`](Self::change_status) reports a change accepted by
///   `apply`; an unknown id is [`Error::NotFound`]. A provider without
///   [`DnsCapabilities::change_status`] returns changes already
///   [`ChangeStatus::InSync`].
/// - [`query_authoritative`](Self::query_authoritative) asks the zone's
///   authoritative servers (not a cache) what they answer for a name and type;
///   without [`DnsCapabilities::authoritative_query`] it is
///   [`Error::Unsupported`].
/// - Transient failures are [`Error::Unavailable`] (retryable) after the
///   provider's own retries.
#[async_trait]
pub trait DnsProvider: Debug + Display + Send + Sync + 'static {
    /// What this provider supports.
    fn capabilities(&self) -> DnsCapabilities;

    /// Reads one record set.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an invalid name, [`Error::Unavailable`],
    /// [`Error::PermissionDenied`], [`Error::NotFound`] when the zone itself
    /// is missing.
    async fn get(&self, key: &RecordKey) -> Result<Option<RecordSet>>;

    /// Applies a change batch, all or nothing.
    ///
    /// # Errors
    /// See the contract: [`Error::InvalidConfig`], [`Error::Unsupported`],
    /// [`Error::Conflict`], [`Error::PermissionDenied`], [`Error::Unavailable`].
    async fn apply(&self, batch: &ChangeBatch) -> Result<ChangeInfo>;

    /// The current status of a change.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown id, [`Error::Unavailable`].
    async fn change_status(&self, id: &str) -> Result<ChangeStatus>;

    /// What the zone's authoritative servers answer for `name` and `rtype`:
    /// the values, empty when the name or type does not exist.
    ///
    /// # Errors
    /// [`Error::Unsupported`] by default; [`Error::Unavailable`] when no server
    /// answers; [`Error::VerificationFailed`] when the servers disagree.
    async fn query_authoritative(&self, name: &str, rtype: RecordType) -> Result<Vec<String>> {
        let _ = (name, rtype);
        Err(Error::Unsupported {
            what: format!("authoritative queries on {self}"),
        })
    }
}

/// Conveniences over any [`DnsProvider`]; implementors never write them.
#[async_trait]
pub trait DnsProviderExt: DnsProvider {
    /// Polls [`DnsProvider::change_status`] every `options.interval` until the
    /// change is [`ChangeStatus::InSync`].
    ///
    /// # Errors
    /// [`Error::Timeout`] after `options.timeout`; the errors of `change_status`.
    async fn wait_for_sync(
        &self,
        change: &ChangeInfo,
        options: &WaitOptions,
    ) -> Result<ChangeInfo> {
        let start = tokio::time::Instant::now();
        let mut status = change.status;
        loop {
            if status == ChangeStatus::InSync {
                tracing::debug!(change = %change.id, waited = ?start.elapsed(), "DNS change in sync");
                return Ok(ChangeInfo {
                    status,
                    ..change.clone()
                });
            }
            let elapsed = start.elapsed();
            if elapsed >= options.timeout {
                return Err(Error::Timeout {
                    what: format!("DNS change {} on {self} reaching INSYNC", change.id),
                    after: options.timeout,
                });
            }
            tokio::time::sleep(options.interval.min(options.timeout - elapsed)).await;
            status = self.change_status(&change.id).await?;
        }
    }

    /// Applies one change.
    ///
    /// # Errors
    /// Those of [`DnsProvider::apply`].
    async fn apply_one(&self, change: Change) -> Result<ChangeInfo> {
        self.apply(&ChangeBatch::new(vec![change])).await
    }
}

impl<T: DnsProvider + ?Sized> DnsProviderExt for T {}

/// Checks a validated batch against current state, in order, as a working
/// copy: what every provider without server-side preconditions (and the
/// in-memory one) uses.
///
/// `current` returns the record set of a key before the batch.
///
/// # Errors
/// [`Error::Conflict`] naming the record and the broken precondition.
pub fn check_batch_against<F>(batch: &ChangeBatch, mut current: F) -> Result<()>
where
    F: FnMut(&RecordKey) -> Option<RecordSet>,
{
    let mut working: BTreeMap<RecordKey, Option<RecordSet>> = BTreeMap::new();
    for change in &batch.changes {
        let key = change.record.key();
        let now = working
            .entry(key.clone())
            .or_insert_with(|| current(&key))
            .clone();
        let conflict = |reason: String| Error::Conflict {
            what: format!("DNS record {key}"),
            reason,
        };
        match &change.expect {
            Expect::Any => {}
            Expect::Absent => {
                if let Some(n) = &now {
                    return Err(conflict(format!(
                        "expected no record set, found {}",
                        n.summary()
                    )));
                }
            }
            Expect::Current(e) => match &now {
                Some(n) if n.same_data(e) => {}
                Some(n) => {
                    return Err(conflict(format!(
                        "expected {}, found {}",
                        e.summary(),
                        n.summary()
                    )))
                }
                None => {
                    return Err(conflict(format!(
                        "expected {}, found no record set",
                        e.summary()
                    )))
                }
            },
        }
        let next = match change.action {
            ChangeAction::Create => {
                if let Some(n) = &now {
                    return Err(conflict(format!(
                        "cannot create: it already exists as {}",
                        n.summary()
                    )));
                }
                Some(change.record.clone())
            }
            ChangeAction::Upsert => Some(change.record.clone()),
            ChangeAction::Delete => match &now {
                None => return Err(conflict("cannot delete: it was not found".into())),
                Some(n) if !(n.same_data(&change.record) && (n.ttl == change.record.ttl)) => {
                    return Err(conflict(format!(
                        "cannot delete: the values given ({}) do not match the current values ({})",
                        change.record.summary(),
                        n.summary()
                    )))
                }
                Some(_) => None,
            },
        };
        working.insert(key, next);
    }
    Ok(())
}

/// A [`DnsProvider`] in memory, for tests and examples: one zone, every
/// capability, changes `PENDING` for a configurable number of status polls.
#[derive(Debug)]
pub struct InMemoryDnsProvider {
    zone: String,
    state: Mutex<MemoryState>,
    pending_polls: u32,
}

#[derive(Debug, Default)]
struct MemoryState {
    records: BTreeMap<RecordKey, RecordSet>,
    changes: BTreeMap<String, u32>,
    next_change: u64,
}

impl InMemoryDnsProvider {
    /// An empty zone (`example.test.`); changes are in sync at once.
    ///
    /// # Panics
    /// When `zone` is not a valid DNS name.
    pub fn new(zone: &str) -> Self {
        InMemoryDnsProvider {
            zone: normalize_name(zone).expect("valid zone name"),
            state: Mutex::default(),
            pending_polls: 0,
        }
    }

    /// Changes stay `PENDING` for `polls` status requests, as Route53's do.
    pub fn with_pending_polls(mut self, polls: u32) -> Self {
        self.pending_polls = polls;
        self
    }

    /// The zone's name.
    pub fn zone(&self) -> &str {
        &self.zone
    }

    fn in_zone(&self, name: &str) -> Result<()> {
        if name == self.zone || name.ends_with(&format!(".{}", self.zone)) {
            Ok(())
        } else {
            Err(Error::InvalidConfig {
                key: "record.name".into(),
                reason: format!("{name} is not in zone {}", self.zone),
            })
        }
    }
}

impl Display for InMemoryDnsProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "memory:{}", self.zone)
    }
}

#[async_trait]
impl DnsProvider for InMemoryDnsProvider {
    fn capabilities(&self) -> DnsCapabilities {
        DnsCapabilities::all()
    }

    async fn get(&self, key: &RecordKey) -> Result<Option<RecordSet>> {
        let key = RecordKey {
            name: normalize_name(&key.name)?,
            ..key.clone()
        };
        Ok(self.state.lock().expect("lock").records.get(&key).cloned())
    }

    async fn apply(&self, batch: &ChangeBatch) -> Result<ChangeInfo> {
        let batch = batch.validate()?;
        for c in &batch.changes {
            self.in_zone(&c.record.name)?;
            self.capabilities().check_record(&c.record, self)?;
        }
        let mut state = self.state.lock().expect("lock");
        check_batch_against(&batch, |k| state.records.get(k).cloned())?;
        for c in batch.changes {
            let key = c.record.key();
            match c.action {
                ChangeAction::Create | ChangeAction::Upsert => {
                    state.records.insert(key, c.record);
                }
                ChangeAction::Delete => {
                    state.records.remove(&key);
                }
            }
        }
        state.next_change += 1;
        let id = format!("MEM{:08}", state.next_change);
        state.changes.insert(id.clone(), self.pending_polls);
        Ok(ChangeInfo {
            id,
            status: if self.pending_polls == 0 {
                ChangeStatus::InSync
            } else {
                ChangeStatus::Pending
            },
            submitted_at: Some(Utc::now()),
        })
    }

    async fn change_status(&self, id: &str) -> Result<ChangeStatus> {
        let mut state = self.state.lock().expect("lock");
        let left = state.changes.get_mut(id).ok_or_else(|| Error::NotFound {
            what: format!("DNS change {id}"),
        })?;
        if *left == 0 {
            Ok(ChangeStatus::InSync)
        } else {
            *left -= 1;
            Ok(ChangeStatus::Pending)
        }
    }

    async fn query_authoritative(&self, name: &str, rtype: RecordType) -> Result<Vec<String>> {
        let key = RecordKey::new(name, rtype)?;
        Ok(self
            .state
            .lock()
            .expect("lock")
            .records
            .get(&key)
            .map(|r| r.values.clone())
            .unwrap_or_default())
    }
}

/// The contract of [`DnsProvider`] as free functions that every provider
/// runs: the in-memory one on every `cargo test`, Route53 against the
/// emulator, RFC 2136 against BIND. Enabled by the `conformance` feature.
///
/// Every check works under `base`, a name of the caller's own (a random label
/// under the test zone, `c1a2b3.dr-test.`), and deletes what it created.
#[cfg(feature = "conformance")]
pub mod conformance {
    use super::*;

    fn name(base: &str, label: &str) -> String {
        format!("{label}.{}", base.trim_end_matches('.')) + "."
    }

    async fn cleanup(provider: &dyn DnsProvider, records: &[RecordSet]) {
        for r in records {
            if let Ok(Some(cur)) = provider.get(&r.key()).await {
                let _ = provider
                    .apply(&ChangeBatch::new(vec![Change::delete(cur)]))
                    .await;
            }
        }
    }

    fn assert_conflict(r: Result<ChangeInfo>, rule: &str) {
        match r {
            Err(Error::Conflict { .. }) => {}
            other => panic!("{rule}: expected a Conflict, got {other:?}"),
        }
    }

    /// Runs every check that the provider's capabilities allow.
    ///
    /// # Panics
    /// On the first broken rule, naming it.
    pub async fn all(provider: &dyn DnsProvider, base: &str, wait: &WaitOptions) {
        let caps = provider.capabilities();
        missing_record_is_none(provider, base).await;
        invalid_input_is_rejected_before_anything_changes(provider, base).await;
        create_then_get(provider, base, wait).await;
        create_of_existing_conflicts(provider, base).await;
        upsert_replaces(provider, base).await;
        expect_current_guards_upsert(provider, base).await;
        expect_absent_guards_upsert(provider, base).await;
        delete_must_match(provider, base).await;
        record_types_round_trip(provider, base).await;
        failed_batch_changes_nothing(provider, base).await;
        if caps.weighted {
            weighted_sets_are_distinct(provider, base).await;
        } else {
            unsupported_routing_is_refused(provider, base).await;
        }
        if caps.failover {
            failover_sets_round_trip(provider, base).await;
        }
        if caps.authoritative_query {
            authoritative_answer_follows_change(provider, base, wait).await;
        }
    }

    /// A record set that does not exist reads as `None`, not an error.
    pub async fn missing_record_is_none(provider: &dyn DnsProvider, base: &str) {
        let key = RecordKey::new(&name(base, "missing"), RecordType::A).unwrap();
        let got = provider
            .get(&key)
            .await
            .expect("get of a missing record succeeds");
        assert_eq!(got, None, "a missing record set reads as None");
    }

    /// Bad names, values and empty batches are `InvalidConfig`, and the
    /// provider's state is unchanged.
    pub async fn invalid_input_is_rejected_before_anything_changes(
        provider: &dyn DnsProvider,
        base: &str,
    ) {
        let good = RecordSet::new(&name(base, "inv-good"), RecordType::A, 60, ["192.0.2.1"]);
        let bad_value = RecordSet::new(
            &name(base, "inv-bad"),
            RecordType::A,
            60,
            ["not-an-address"],
        );
        let r = provider
            .apply(&ChangeBatch::new(vec![
                Change::create(good.clone()),
                Change::create(bad_value),
            ]))
            .await;
        assert!(
            matches!(r, Err(Error::InvalidConfig { .. })),
            "an invalid A value is InvalidConfig, got {r:?}"
        );
        assert_eq!(
            provider.get(&good.key()).await.unwrap(),
            None,
            "nothing applied"
        );
        let bad_name = RecordSet::new("bad name.example.", RecordType::A, 60, ["192.0.2.1"]);
        let r = provider
            .apply(&ChangeBatch::new(vec![Change::create(bad_name)]))
            .await;
        assert!(
            matches!(r, Err(Error::InvalidConfig { .. })),
            "a bad name is InvalidConfig, got {r:?}"
        );
        let r = provider.apply(&ChangeBatch::default()).await;
        assert!(
            matches!(r, Err(Error::InvalidConfig { .. })),
            "an empty batch is InvalidConfig, got {r:?}"
        );
    }

    /// A created record set reads back with its TTL and values; its change
    /// reaches `INSYNC` within the bound.
    pub async fn create_then_get(provider: &dyn DnsProvider, base: &str, wait: &WaitOptions) {
        let r = RecordSet::new(
            &name(base, "create"),
            RecordType::A,
            300,
            ["192.0.2.10", "192.0.2.11"],
        );
        let info = provider
            .apply(&ChangeBatch::new(vec![Change::create(r.clone())]))
            .await
            .expect("create");
        assert!(!info.id.is_empty(), "a change has an id");
        let synced = provider
            .wait_for_sync(&info, wait)
            .await
            .expect("change reaches INSYNC");
        assert_eq!(synced.status, ChangeStatus::InSync);
        let got = provider
            .get(&r.key())
            .await
            .unwrap()
            .expect("created record reads back");
        assert!(got.same_data(&r), "read back {got:?}, wrote {r:?}");
        assert_eq!(got.ttl, Some(300), "TTL kept");
        cleanup(provider, &[r]).await;
    }

    /// A `CREATE` of an existing record set is a conflict and leaves it.
    pub async fn create_of_existing_conflicts(provider: &dyn DnsProvider, base: &str) {
        let r = RecordSet::new(&name(base, "dup"), RecordType::A, 60, ["192.0.2.20"]);
        provider
            .apply_one(Change::create(r.clone()))
            .await
            .expect("first create");
        let other = RecordSet::new(&r.name, RecordType::A, 60, ["192.0.2.21"]);
        assert_conflict(
            provider.apply_one(Change::create(other)).await,
            "CREATE of an existing set",
        );
        let got = provider.get(&r.key()).await.unwrap().expect("still there");
        assert!(
            got.same_data(&r),
            "a refused CREATE left the record as it was, got {got:?}"
        );
        cleanup(provider, &[r]).await;
    }

    /// `UPSERT` creates, then replaces values and TTL.
    pub async fn upsert_replaces(provider: &dyn DnsProvider, base: &str) {
        let a = RecordSet::new(&name(base, "upsert"), RecordType::A, 60, ["192.0.2.30"]);
        provider
            .apply_one(Change::upsert(a.clone()))
            .await
            .expect("upsert creates");
        let b = RecordSet::new(&a.name, RecordType::A, 120, ["192.0.2.31"]);
        provider
            .apply_one(Change::upsert(b.clone()))
            .await
            .expect("upsert replaces");
        let got = provider.get(&a.key()).await.unwrap().expect("exists");
        assert!(got.same_data(&b), "upsert replaced the values, got {got:?}");
        assert_eq!(got.ttl, Some(120), "upsert replaced the TTL");
        cleanup(provider, &[b]).await;
    }

    /// An `UPSERT` expecting a value that is not current is a conflict and
    /// changes nothing; expecting the current value, it applies.
    pub async fn expect_current_guards_upsert(provider: &dyn DnsProvider, base: &str) {
        let cur = RecordSet::new(&name(base, "cas"), RecordType::A, 60, ["192.0.2.40"]);
        provider
            .apply_one(Change::create(cur.clone()))
            .await
            .expect("create");
        let wrong = RecordSet::new(&cur.name, RecordType::A, 60, ["192.0.2.99"]);
        let new = RecordSet::new(&cur.name, RecordType::A, 60, ["192.0.2.41"]);
        assert_conflict(
            provider
                .apply_one(Change::upsert(new.clone()).expecting(Expect::Current(wrong)))
                .await,
            "UPSERT expecting a value that is not current",
        );
        let got = provider.get(&cur.key()).await.unwrap().expect("exists");
        assert!(
            got.same_data(&cur),
            "a refused compare-and-swap changed nothing, got {got:?}"
        );
        provider
            .apply_one(Change::upsert(new.clone()).expecting(Expect::Current(cur.clone())))
            .await
            .expect("compare-and-swap with the current value applies");
        let got = provider.get(&cur.key()).await.unwrap().expect("exists");
        assert!(got.same_data(&new), "compare-and-swap applied, got {got:?}");
        cleanup(provider, &[new]).await;
    }

    /// An `UPSERT` expecting no record set conflicts when one exists, and
    /// applies when none does.
    pub async fn expect_absent_guards_upsert(provider: &dyn DnsProvider, base: &str) {
        let r = RecordSet::new(&name(base, "absent"), RecordType::A, 60, ["192.0.2.50"]);
        provider
            .apply_one(Change::upsert(r.clone()).expecting(Expect::Absent))
            .await
            .expect("expecting absence of a missing record applies");
        let again = RecordSet::new(&r.name, RecordType::A, 60, ["192.0.2.51"]);
        assert_conflict(
            provider
                .apply_one(Change::upsert(again).expecting(Expect::Absent))
                .await,
            "UPSERT expecting absence of an existing set",
        );
        let got = provider.get(&r.key()).await.unwrap().expect("exists");
        assert!(got.same_data(&r), "unchanged, got {got:?}");
        cleanup(provider, &[r]).await;
    }

    /// `DELETE` needs the current values: other values or a missing set are
    /// conflicts; the exact set is removed.
    pub async fn delete_must_match(provider: &dyn DnsProvider, base: &str) {
        let r = RecordSet::new(&name(base, "del"), RecordType::A, 60, ["192.0.2.60"]);
        provider
            .apply_one(Change::create(r.clone()))
            .await
            .expect("create");
        let other = RecordSet::new(&r.name, RecordType::A, 60, ["192.0.2.61"]);
        assert_conflict(
            provider.apply_one(Change::delete(other)).await,
            "DELETE with other values",
        );
        assert!(
            provider.get(&r.key()).await.unwrap().is_some(),
            "a refused DELETE left the record"
        );
        provider
            .apply_one(Change::delete(r.clone()))
            .await
            .expect("DELETE of the exact set");
        assert_eq!(provider.get(&r.key()).await.unwrap(), None, "deleted");
        assert_conflict(
            provider.apply_one(Change::delete(r)).await,
            "DELETE of a missing set",
        );
    }

    /// `AAAA`, `CNAME` and `TXT` (with spaces and quotes) read back as written.
    pub async fn record_types_round_trip(provider: &dyn DnsProvider, base: &str) {
        let records = vec![
            RecordSet::new(
                &name(base, "v6"),
                RecordType::AAAA,
                60,
                ["2001:db8::1", "2001:DB8:0:0::2"],
            ),
            RecordSet::new(
                &name(base, "alias-name"),
                RecordType::CNAME,
                60,
                ["Target.Example.NET"],
            ),
            RecordSet::new(
                &name(base, "txt"),
                RecordType::TXT,
                60,
                ["v=dr1 region=eu-west-1", "say \"hello\""],
            ),
        ];
        let changes = records.iter().cloned().map(Change::create).collect();
        provider
            .apply(&ChangeBatch::new(changes))
            .await
            .expect("create records of every type");
        for r in &records {
            let want = r.validate().unwrap();
            let got = provider
                .get(&r.key())
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{} reads back", r.key()));
            assert!(
                got.same_data(&want),
                "{}: read back {got:?}, wrote {want:?}",
                r.key()
            );
        }
        cleanup(provider, &records).await;
    }

    /// A batch with one conflicting change applies none of its changes.
    pub async fn failed_batch_changes_nothing(provider: &dyn DnsProvider, base: &str) {
        let existing = RecordSet::new(&name(base, "atomic-old"), RecordType::A, 60, ["192.0.2.70"]);
        provider
            .apply_one(Change::create(existing.clone()))
            .await
            .expect("create");
        let fresh = RecordSet::new(&name(base, "atomic-new"), RecordType::A, 60, ["192.0.2.71"]);
        let replaced = RecordSet::new(&existing.name, RecordType::A, 60, ["192.0.2.72"]);
        assert_conflict(
            provider
                .apply(&ChangeBatch::new(vec![
                    Change::create(fresh.clone()),
                    Change::upsert(replaced.clone()).expecting(Expect::Absent),
                ]))
                .await,
            "a batch whose second change conflicts",
        );
        assert_eq!(
            provider.get(&fresh.key()).await.unwrap(),
            None,
            "the first change was not applied"
        );
        let got = provider
            .get(&existing.key())
            .await
            .unwrap()
            .expect("exists");
        assert!(got.same_data(&existing), "unchanged, got {got:?}");
        cleanup(provider, &[existing, fresh]).await;
    }

    /// The status of a change that was never submitted is `NotFound`. Not in
    /// [`all`]: moto's Route53 answers `INSYNC` for any id, so each provider's
    /// tests call it where the server is faithful.
    pub async fn unknown_change_is_not_found(provider: &dyn DnsProvider) {
        let r = provider.change_status("CDRNOSUCHCHANGE0").await;
        if provider.capabilities().change_status {
            assert!(
                matches!(r, Err(Error::NotFound { .. })),
                "unknown change id is NotFound, got {r:?}"
            );
        }
    }

    /// Weighted sets of one name and type are separate record sets, read by
    /// set identifier.
    pub async fn weighted_sets_are_distinct(provider: &dyn DnsProvider, base: &str) {
        let n = name(base, "weighted");
        let blue =
            RecordSet::new(&n, RecordType::A, 60, ["192.0.2.80"]).with_routing(Routing::Weighted {
                set_identifier: "blue".into(),
                weight: 100,
            });
        let green =
            RecordSet::new(&n, RecordType::A, 60, ["192.0.2.81"]).with_routing(Routing::Weighted {
                set_identifier: "green".into(),
                weight: 0,
            });
        provider
            .apply(&ChangeBatch::new(vec![
                Change::create(blue.clone()),
                Change::create(green.clone()),
            ]))
            .await
            .expect("create two weighted sets");
        for r in [&blue, &green] {
            let got = provider
                .get(&r.key())
                .await
                .unwrap()
                .expect("weighted set reads back");
            assert!(got.same_data(r), "read {got:?}, wrote {r:?}");
        }
        let plain = RecordKey::new(&n, RecordType::A).unwrap();
        assert_eq!(
            provider.get(&plain).await.unwrap(),
            None,
            "no set without identifier"
        );
        cleanup(provider, &[blue, green]).await;
    }

    /// A provider without weighted sets refuses them as `Unsupported`.
    pub async fn unsupported_routing_is_refused(provider: &dyn DnsProvider, base: &str) {
        let r = RecordSet::new(&name(base, "weighted"), RecordType::A, 60, ["192.0.2.82"])
            .with_routing(Routing::Weighted {
                set_identifier: "blue".into(),
                weight: 1,
            });
        let got = provider.apply_one(Change::create(r)).await;
        assert!(
            matches!(got, Err(Error::Unsupported { .. })),
            "weighted set refused, got {got:?}"
        );
    }

    /// Primary and secondary failover sets round-trip.
    pub async fn failover_sets_round_trip(provider: &dyn DnsProvider, base: &str) {
        let n = name(base, "failover");
        let primary =
            RecordSet::new(&n, RecordType::A, 60, ["192.0.2.90"]).with_routing(Routing::Failover {
                set_identifier: "primary".into(),
                role: FailoverRole::Primary,
                health_check_id: None,
            });
        let secondary =
            RecordSet::new(&n, RecordType::A, 60, ["192.0.2.91"]).with_routing(Routing::Failover {
                set_identifier: "secondary".into(),
                role: FailoverRole::Secondary,
                health_check_id: None,
            });
        provider
            .apply(&ChangeBatch::new(vec![
                Change::create(primary.clone()),
                Change::create(secondary.clone()),
            ]))
            .await
            .expect("create failover sets");
        for r in [&primary, &secondary] {
            let got = provider
                .get(&r.key())
                .await
                .unwrap()
                .expect("failover set reads back");
            assert!(got.same_data(r), "read {got:?}, wrote {r:?}");
        }
        cleanup(provider, &[primary, secondary]).await;
    }

    /// Once a change is in sync, the authoritative servers answer the new
    /// values.
    pub async fn authoritative_answer_follows_change(
        provider: &dyn DnsProvider,
        base: &str,
        wait: &WaitOptions,
    ) {
        let r = RecordSet::new(&name(base, "auth"), RecordType::A, 60, ["192.0.2.100"]);
        let info = provider
            .apply_one(Change::create(r.clone()))
            .await
            .expect("create");
        provider.wait_for_sync(&info, wait).await.expect("in sync");
        let answer = provider
            .query_authoritative(&r.name, RecordType::A)
            .await
            .expect("query");
        assert_eq!(
            answer,
            vec!["192.0.2.100".to_string()],
            "authoritative answer"
        );
        cleanup(provider, &[r]).await;
        let gone = provider
            .query_authoritative(&name(base, "auth"), RecordType::A)
            .await
            .expect("query");
        assert!(gone.is_empty(), "no answer once deleted, got {gone:?}");
    }

    /// The alias capability: an alias record reads back with its target.
    /// Not part of [`all`] because the target zone id is the caller's.
    pub async fn alias_round_trip(provider: &dyn DnsProvider, base: &str, target_zone_id: &str) {
        let target = RecordSet::new(
            &name(base, "alias-target"),
            RecordType::A,
            60,
            ["192.0.2.110"],
        );
        let alias = RecordSet {
            name: name(base, "alias"),
            rtype: RecordType::A,
            ttl: None,
            values: vec![],
            alias: Some(AliasTarget {
                hosted_zone_id: target_zone_id.into(),
                dns_name: target.name.clone(),
                evaluate_target_health: false,
            }),
            routing: None,
        };
        provider
            .apply(&ChangeBatch::new(vec![
                Change::create(target.clone()),
                Change::create(alias.clone()),
            ]))
            .await
            .expect("create alias");
        let got = provider
            .get(&alias.key())
            .await
            .unwrap()
            .expect("alias reads back");
        assert!(
            got.same_data(&alias.validate().unwrap()),
            "read {got:?}, wrote {alias:?}"
        );
        cleanup(provider, &[alias, target]).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalise() {
        assert_eq!(
            normalize_name("API.Example.com").unwrap(),
            "api.example.com."
        );
        assert_eq!(normalize_name("*.example.com.").unwrap(), "*.example.com.");
        for bad in ["", ".", "a..b", "a b.c", &format!("{}.com", "x".repeat(64))] {
            assert!(
                matches!(normalize_name(bad), Err(Error::InvalidConfig { .. })),
                "{bad:?} is refused"
            );
        }
    }

    #[test]
    fn values_validate_per_type() {
        let r = RecordSet::new("a.example.", RecordType::AAAA, 60, ["2001:DB8:0::1"]);
        assert_eq!(r.validate().unwrap().values, vec!["2001:db8::1"]);
        let r = RecordSet::new(
            "a.example.",
            RecordType::CNAME,
            60,
            ["x.example.", "y.example."],
        );
        assert!(r.validate().is_err(), "two CNAME values refused");
        let r = RecordSet::new("a.example.", RecordType::A, 60, Vec::<String>::new());
        assert!(r.validate().is_err(), "no value refused");
    }

    #[test]
    fn record_type_parses_and_refuses() {
        assert_eq!("aaaa".parse::<RecordType>().unwrap(), RecordType::AAAA);
        let e = "MX".parse::<RecordType>().unwrap_err();
        assert!(e.to_string().contains("MX"), "{e}");
    }

    #[tokio::test]
    async fn wait_times_out_on_a_change_that_stays_pending() {
        let p = InMemoryDnsProvider::new("example.test").with_pending_polls(1000);
        let info = p
            .apply_one(Change::create(RecordSet::new(
                "a.example.test",
                RecordType::A,
                60,
                ["192.0.2.1"],
            )))
            .await
            .unwrap();
        assert_eq!(info.status, ChangeStatus::Pending);
        let opts = WaitOptions::new(Duration::from_millis(5), Duration::from_millis(40));
        let e = p.wait_for_sync(&info, &opts).await.unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
        assert!(e.is_retryable());
    }

    #[tokio::test]
    async fn out_of_zone_names_are_refused() {
        let p = InMemoryDnsProvider::new("example.test");
        let e = p
            .apply_one(Change::create(RecordSet::new(
                "a.other.test",
                RecordType::A,
                60,
                ["192.0.2.1"],
            )))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::InvalidConfig { .. }), "{e:?}");
    }
}

#[cfg(all(test, feature = "conformance"))]
mod conformance_tests {
    use super::*;

    #[tokio::test]
    async fn in_memory_provider_conforms() {
        let p = InMemoryDnsProvider::new("example.test").with_pending_polls(2);
        let wait = WaitOptions::new(Duration::from_millis(1), Duration::from_secs(5));
        conformance::all(&p, "conf.example.test.", &wait).await;
        conformance::alias_round_trip(&p, "conf.example.test.", "ZMEMORY").await;
        conformance::unknown_change_is_not_found(&p).await;
        let left = p.state.lock().unwrap().records.len();
        assert_eq!(left, 0, "the suite cleaned up after itself");
    }
}
