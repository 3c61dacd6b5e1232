//! Amazon Route53 through `aws-sdk-route53`.
//!
//! - Zone by id or by name (`ListHostedZonesByName`).
//! - Reads with `ListResourceRecordSets` starting at the name, type and set
//!   identifier; change batches with `ChangeResourceRecordSets`, which Route53
//!   applies all or nothing
//!   (<https://docs.aws.amazon.com/Route53/latest/APIReference/API_ChangeResourceRecordSets.html>).
//! - A precondition on the current value becomes a `DELETE` of the exact
//!   current record set followed by a `CREATE` in the same batch: Route53
//!   refuses the whole batch when the `DELETE` does not match, so a change made
//!   by someone else between read and write is never clobbered. `Expect::Absent`
//!   becomes a `CREATE`.
//! - `GetChange` reports `PENDING` then `INSYNC`; `TestDNSAnswer` asks
//!   Route53's authoritative servers.
//! - `Throttling` and `PriorRequestNotComplete` are retried by the SDK's
//!   standard retry strategy with exponential backoff and jitter (both are in
//!   its throttling error list); attempts and initial backoff are configurable.
//! - Requests are signed for `us-east-1` whatever the configured region:
//!   Route53 is a global service whose signing region is `us-east-1`
//!   (<https://docs.aws.amazon.com/general/latest/gr/r53.html>).

use std::fmt::{self, Display};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_route53::config::http::HttpResponse;
use aws_sdk_route53::config::{BehaviorVersion, Region};
use aws_sdk_route53::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_route53::types as r53;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use dr_core::dns::{
    check_batch_against, normalize_name, AliasTarget, ChangeAction, ChangeBatch, ChangeInfo,
    ChangeStatus, DnsCapabilities, DnsProvider, Expect, FailoverRole, RecordKey, RecordSet,
    RecordType, Routing,
};
use serde::{Deserialize, Serialize};

use crate::error::DnsError;

/// The signing region of Route53, a global service.
pub const ROUTE53_SIGNING_REGION: &str = "us-east-1";

/// Configuration of a [`Route53`] provider, as in `dr.toml`:
///
/// ```toml
/// [dns]
/// provider = "route53"
/// zone_name = "example.com."        # or zone_id = "Z0123456789ABC"
/// # endpoint_url = "http://127.0.0.1:5000"   # else AWS_ENDPOINT_URL
/// ```
///
/// Credentials come from the AWS default chain (environment, profile, web
/// identity, container, instance metadata), never from this file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route53Config {
    /// Hosted zone id (`Z0123456789ABC` or `/hostedzone/Z0123456789ABC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_id: Option<String>,
    /// Hosted zone name, when the id is not given; must match one zone only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_name: Option<String>,
    /// Endpoint (an emulator); else `AWS_ENDPOINT_URL_ROUTE_53` or
    /// `AWS_ENDPOINT_URL`, else AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    /// Attempts per request, retries of throttling included (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// First retry backoff (default `1s`; doubles, with jitter, up to 20 s).
    #[serde(
        default,
        with = "dr_core::serde_duration::human_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub initial_backoff: Option<Duration>,
    /// Confirm changes with `TestDNSAnswer` (default true). Set false for an
    /// emulator without it (moto): confirmations are then skipped with a
    /// warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authoritative_query: Option<bool>,
}

/// Builds a [`Route53`].
#[derive(Debug, Default)]
pub struct Route53Builder {
    config: Route53Config,
    sdk_config: Option<aws_config::SdkConfig>,
}

impl Route53Builder {
    /// A builder from a configuration.
    pub fn new(config: Route53Config) -> Self {
        Route53Builder {
            config,
            sdk_config: None,
        }
    }

    /// Uses this SDK configuration (credentials, HTTP client) instead of
    /// loading the default chain.
    pub fn sdk_config(mut self, sdk_config: aws_config::SdkConfig) -> Self {
        self.sdk_config = Some(sdk_config);
        self
    }

    /// Loads the AWS configuration and resolves the hosted zone.
    ///
    /// # Errors
    /// [`DnsError::InvalidConfig`] when neither or both of `zone_id` and
    /// `zone_name` are set or `max_attempts` is 0; [`DnsError::ZoneNotFound`]
    /// when no zone has the name; [`DnsError::InvalidConfig`] when several do;
    /// the errors of `ListHostedZonesByName`.
    pub async fn build(self) -> Result<Route53, DnsError> {
        let c = &self.config;
        let sdk_config = match self.sdk_config {
            Some(s) => s,
            None => {
                aws_config::defaults(BehaviorVersion::latest())
                    .http_client(https_client())
                    .load()
                    .await
            }
        };
        let mut retry = aws_sdk_route53::config::retry::RetryConfig::standard()
            .with_max_attempts(c.max_attempts.unwrap_or(5))
            .with_max_backoff(Duration::from_secs(20));
        if c.max_attempts == Some(0) {
            return Err(DnsError::InvalidConfig {
                key: "dns.max_attempts".into(),
                reason: "must be at least 1".into(),
            });
        }
        if let Some(b) = c.initial_backoff {
            retry = retry.with_initial_backoff(b);
        }
        let mut builder = aws_sdk_route53::config::Builder::from(&sdk_config)
            .region(Region::new(ROUTE53_SIGNING_REGION))
            .retry_config(retry);
        if sdk_config.http_client().is_none() {
            builder = builder.http_client(https_client());
        }
        if let Some(url) = &c.endpoint_url {
            builder = builder.endpoint_url(url);
        }
        let client = aws_sdk_route53::Client::from_conf(builder.build());
        let (zone_id, zone_name) = match (&c.zone_id, &c.zone_name) {
            (Some(id), None) => {
                let id = id.trim_start_matches("/hostedzone/").to_string();
                let out = client
                    .get_hosted_zone()
                    .id(&id)
                    .send()
                    .await
                    .map_err(|e| map_sdk_error("GetHostedZone", &id, e))?;
                let name = out
                    .hosted_zone()
                    .map(|z| decode_name(z.name()))
                    .unwrap_or_default();
                (id, name)
            }
            (None, Some(name)) => find_zone(&client, name).await?,
            _ => {
                return Err(DnsError::InvalidConfig {
                    key: "dns.zone_id".into(),
                    reason: "set exactly one of zone_id and zone_name".into(),
                })
            }
        };
        tracing::debug!(zone_id, zone_name, "Route53 zone resolved");
        Ok(Route53 {
            client,
            zone_id,
            zone_name,
            authoritative_query: c.authoritative_query.unwrap_or(true),
        })
    }
}

/// The HTTPS client: hyper with rustls on ring (no aws-lc, no OpenSSL).
fn https_client() -> aws_sdk_route53::config::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

async fn find_zone(
    client: &aws_sdk_route53::Client,
    name: &str,
) -> Result<(String, String), DnsError> {
    let want = normalize_name(name).map_err(|e| DnsError::InvalidConfig {
        key: "dns.zone_name".into(),
        reason: e.to_string(),
    })?;
    let out = client
        .list_hosted_zones_by_name()
        .dns_name(&want)
        .max_items(10)
        .send()
        .await
        .map_err(|e| map_sdk_error("ListHostedZonesByName", &want, e))?;
    let ids: Vec<String> = out
        .hosted_zones()
        .iter()
        .filter(|z| decode_name(z.name()) == want)
        .map(|z| z.id().trim_start_matches("/hostedzone/").to_string())
        .collect();
    match ids.as_slice() {
        [] => Err(DnsError::ZoneNotFound { zone: want }),
        [id] => Ok((id.clone(), want)),
        _ => Err(DnsError::InvalidConfig {
            key: "dns.zone_name".into(),
            reason: format!(
                "{} hosted zones are named {want} ({}); set dns.zone_id",
                ids.len(),
                ids.join(", ")
            ),
        }),
    }
}

/// A Route53 hosted zone as a [`DnsProvider`].
#[derive(Debug, Clone)]
pub struct Route53 {
    client: aws_sdk_route53::Client,
    zone_id: String,
    zone_name: String,
    authoritative_query: bool,
}

impl Display for Route53 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "route53:{} ({})", self.zone_id, self.zone_name)
    }
}

impl Route53 {
    /// The hosted zone id, without `/hostedzone/`.
    pub fn zone_id(&self) -> &str {
        &self.zone_id
    }

    /// The hosted zone name, absolute.
    pub fn zone_name(&self) -> &str {
        &self.zone_name
    }

    fn check_in_zone(&self, name: &str) -> Result<(), DnsError> {
        if name == self.zone_name || name.ends_with(&format!(".{}", self.zone_name)) {
            Ok(())
        } else {
            Err(DnsError::InvalidConfig {
                key: "record.name".into(),
                reason: format!("{name} is not in hosted zone {}", self.zone_name),
            })
        }
    }

    async fn read(&self, key: &RecordKey) -> Result<Option<RecordSet>, DnsError> {
        let mut start_name = key.name.clone();
        let mut start_id = key.set_identifier.clone();
        // Bounded: the sets of one name and type, 100 per page.
        for _ in 0..10 {
            let out = self
                .client
                .list_resource_record_sets()
                .hosted_zone_id(&self.zone_id)
                .start_record_name(&start_name)
                .start_record_type(r53::RrType::from(key.rtype.as_str()))
                .set_start_record_identifier(start_id.clone())
                .max_items(100)
                .send()
                .await
                .map_err(|e| map_sdk_error("ListResourceRecordSets", &key.to_string(), e))?;
            for rrs in out.resource_record_sets() {
                let name = decode_name(rrs.name());
                if name != key.name || rrs.r#type().as_str() != key.rtype.as_str() {
                    return Ok(None);
                }
                if rrs.set_identifier() == key.set_identifier.as_deref() {
                    return from_sdk(rrs, key.rtype).map(Some);
                }
            }
            match (out.is_truncated(), out.next_record_name()) {
                (true, Some(n)) if decode_name(n) == key.name => {
                    start_name = n.to_string();
                    start_id = out.next_record_identifier().map(str::to_string);
                }
                _ => return Ok(None),
            }
        }
        Ok(None)
    }
}

#[async_trait]
impl DnsProvider for Route53 {
    fn capabilities(&self) -> DnsCapabilities {
        DnsCapabilities::all().with_authoritative_query(self.authoritative_query)
    }

    async fn get(&self, key: &RecordKey) -> dr_core::Result<Option<RecordSet>> {
        let key = RecordKey {
            name: normalize_name(&key.name)?,
            ..key.clone()
        };
        Ok(self.read(&key).await?)
    }

    async fn apply(&self, batch: &ChangeBatch) -> dr_core::Result<ChangeInfo> {
        let batch = batch.validate()?;
        for c in &batch.changes {
            self.check_in_zone(&c.record.name)?;
        }
        // Read the current value of every key once: a failed precondition is
        // reported before anything is sent, and the exact current record set
        // is what the guarding DELETE names.
        let mut current = std::collections::BTreeMap::new();
        for c in &batch.changes {
            let key = c.record.key();
            if let std::collections::btree_map::Entry::Vacant(slot) = current.entry(key) {
                let now = self.read(slot.key()).await?;
                slot.insert(now);
            }
        }
        check_batch_against(&batch, |k| current.get(k).cloned().flatten())?;

        let mut changes = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for c in &batch.changes {
            let key = c.record.key();
            let first = seen.insert(key.clone());
            match (c.action, &c.expect) {
                (ChangeAction::Upsert, Expect::Current(_)) if first => {
                    let now =
                        current
                            .get(&key)
                            .cloned()
                            .flatten()
                            .ok_or_else(|| DnsError::Conflict {
                                record: key.to_string(),
                                reason: "expected a current value, found none".into(),
                            })?;
                    changes.push(to_sdk_change(r53::ChangeAction::Delete, &now)?);
                    changes.push(to_sdk_change(r53::ChangeAction::Create, &c.record)?);
                }
                (ChangeAction::Upsert, Expect::Absent) | (ChangeAction::Create, _) => {
                    changes.push(to_sdk_change(r53::ChangeAction::Create, &c.record)?)
                }
                (ChangeAction::Upsert, _) => {
                    changes.push(to_sdk_change(r53::ChangeAction::Upsert, &c.record)?)
                }
                (ChangeAction::Delete, _) => {
                    changes.push(to_sdk_change(r53::ChangeAction::Delete, &c.record)?)
                }
            }
        }
        let sdk_batch = r53::ChangeBatch::builder()
            .set_comment(batch.comment.clone())
            .set_changes(Some(changes))
            .build()
            .map_err(|e| DnsError::InvalidChangeBatch {
                reason: e.to_string(),
            })?;
        let what = batch
            .changes
            .iter()
            .map(|c| c.record.key().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let out = self
            .client
            .change_resource_record_sets()
            .hosted_zone_id(&self.zone_id)
            .change_batch(sdk_batch)
            .send()
            .await
            .map_err(|e| map_sdk_error("ChangeResourceRecordSets", &what, e))?;
        let info = out.change_info().ok_or_else(|| DnsError::Protocol {
            what: "ChangeResourceRecordSets".into(),
            reason: "the response has no ChangeInfo".into(),
        })?;
        let info = change_info(info);
        tracing::info!(zone = %self.zone_id, change = %info.id, status = ?info.status, records = %what, "Route53 change submitted");
        Ok(info)
    }

    async fn change_status(&self, id: &str) -> dr_core::Result<ChangeStatus> {
        let id = id.trim_start_matches("/change/");
        let out = self
            .client
            .get_change()
            .id(id)
            .send()
            .await
            .map_err(|e| map_sdk_error("GetChange", id, e))?;
        let info = out.change_info().ok_or_else(|| DnsError::Protocol {
            what: "GetChange".into(),
            reason: "the response has no ChangeInfo".into(),
        })?;
        Ok(change_info(info).status)
    }

    async fn query_authoritative(
        &self,
        name: &str,
        rtype: RecordType,
    ) -> dr_core::Result<Vec<String>> {
        if !self.authoritative_query {
            return Err(dr_core::Error::Unsupported {
                what: format!("authoritative queries on {self} (authoritative_query = false)"),
            });
        }
        let name = normalize_name(name)?;
        let out = self
            .client
            .test_dns_answer()
            .hosted_zone_id(&self.zone_id)
            .record_name(&name)
            .record_type(r53::RrType::from(rtype.as_str()))
            .send()
            .await
            .map_err(|e| map_sdk_error("TestDNSAnswer", &name, e))?;
        match out.response_code() {
            "NOERROR" | "NXDOMAIN" => {}
            code => {
                return Err(DnsError::Protocol {
                    what: format!("TestDNSAnswer {name} {rtype}"),
                    reason: format!("Route53 answered {code}"),
                }
                .into())
            }
        }
        let mut values = Vec::new();
        for v in out.record_data() {
            values.push(decode_value(rtype, v)?);
        }
        values.sort();
        Ok(values)
    }
}

fn change_info(info: &r53::ChangeInfo) -> ChangeInfo {
    let submitted = info.submitted_at();
    ChangeInfo {
        id: info.id().trim_start_matches("/change/").to_string(),
        status: match info.status() {
            r53::ChangeStatus::Insync => ChangeStatus::InSync,
            _ => ChangeStatus::Pending,
        },
        submitted_at: chrono::DateTime::from_timestamp(submitted.secs(), submitted.subsec_nanos()),
    }
}

fn to_sdk_change(action: r53::ChangeAction, r: &RecordSet) -> Result<r53::Change, DnsError> {
    let bad = |e: aws_smithy_types::error::operation::BuildError| DnsError::InvalidChangeBatch {
        reason: format!("{}: {e}", r.key()),
    };
    let mut b = r53::ResourceRecordSet::builder()
        .name(&r.name)
        .r#type(r53::RrType::from(r.rtype.as_str()))
        .set_ttl(r.ttl.map(i64::from));
    if !r.values.is_empty() {
        let mut records = Vec::new();
        for v in &r.values {
            records.push(
                r53::ResourceRecord::builder()
                    .value(encode_value(r.rtype, v))
                    .build()
                    .map_err(bad)?,
            );
        }
        b = b.set_resource_records(Some(records));
    }
    if let Some(a) = &r.alias {
        b = b.alias_target(
            r53::AliasTarget::builder()
                .hosted_zone_id(&a.hosted_zone_id)
                .dns_name(&a.dns_name)
                .evaluate_target_health(a.evaluate_target_health)
                .build()
                .map_err(bad)?,
        );
    }
    match &r.routing {
        Some(Routing::Weighted {
            set_identifier,
            weight,
        }) => {
            b = b.set_identifier(set_identifier).weight(i64::from(*weight));
        }
        Some(Routing::Failover {
            set_identifier,
            role,
            health_check_id,
        }) => {
            b = b
                .set_identifier(set_identifier)
                .failover(match role {
                    FailoverRole::Primary => r53::ResourceRecordSetFailover::Primary,
                    FailoverRole::Secondary => r53::ResourceRecordSetFailover::Secondary,
                })
                .set_health_check_id(health_check_id.clone());
        }
        None => {}
    }
    r53::Change::builder()
        .action(action)
        .resource_record_set(b.build().map_err(bad)?)
        .build()
        .map_err(bad)
}

fn from_sdk(rrs: &r53::ResourceRecordSet, rtype: RecordType) -> Result<RecordSet, DnsError> {
    let name = decode_name(rrs.name());
    let mut values = Vec::new();
    for rr in rrs.resource_records() {
        values.push(decode_value(rtype, rr.value())?);
    }
    let alias = rrs.alias_target().map(|a| AliasTarget {
        hosted_zone_id: a.hosted_zone_id().to_string(),
        dns_name: decode_name(a.dns_name()),
        evaluate_target_health: a.evaluate_target_health(),
    });
    let routing = match (rrs.set_identifier(), rrs.weight(), rrs.failover()) {
        (Some(id), Some(w), _) => Some(Routing::Weighted {
            set_identifier: id.to_string(),
            weight: u8::try_from(w).unwrap_or(u8::MAX),
        }),
        (Some(id), None, Some(f)) => Some(Routing::Failover {
            set_identifier: id.to_string(),
            role: if *f == r53::ResourceRecordSetFailover::Secondary {
                FailoverRole::Secondary
            } else {
                FailoverRole::Primary
            },
            health_check_id: rrs.health_check_id().map(str::to_string),
        }),
        (Some(id), None, None) => {
            return Err(DnsError::Protocol {
                what: format!("{name} {rtype} [{id}]"),
                reason: "a routing policy other than weighted or failover (geolocation, latency, ...) is not supported"
                    .into(),
            })
        }
        (None, ..) => None,
    };
    Ok(RecordSet {
        name,
        rtype,
        ttl: rrs.ttl().and_then(|t| u32::try_from(t).ok()),
        values,
        alias,
        routing,
    })
}

/// Route53 returns names with a trailing dot and escapes characters other
/// than letters, digits, `-` and `_` as `\ddd` octal (`*` is `\052`).
/// Source: <https://docs.aws.amazon.com/Route53/latest/DeveloperGuide/DomainNameFormat.html>.
pub(crate) fn decode_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let bytes = name.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = u8::from_str_radix(&name[i + 1..i + 4], 8).unwrap_or(b'?');
            out.push(v as char);
            i += 4;
        } else {
            out.push(bytes[i] as char);
            i += 1;
        }
    }
    let mut out = out.to_ascii_lowercase();
    if !out.ends_with('.') {
        out.push('.');
    }
    out
}

/// A TXT value as Route53 wants it: quoted character-strings of at most 255
/// octets, `"` and `\` escaped.
/// Source: <https://docs.aws.amazon.com/Route53/latest/DeveloperGuide/ResourceRecordTypes.html#TXTFormat>.
fn encode_value(rtype: RecordType, value: &str) -> String {
    if rtype != RecordType::TXT {
        return value.to_string();
    }
    let bytes = value.as_bytes();
    let mut parts = Vec::new();
    for chunk in bytes.chunks(255) {
        let mut s = String::from("\"");
        for &b in chunk {
            match b {
                b'"' => s.push_str("\\\""),
                b'\\' => s.push_str("\\\\"),
                0x20..=0x7e => s.push(b as char),
                _ => s.push_str(&format!("\\{b:03o}")),
            }
        }
        s.push('"');
        parts.push(s);
    }
    if parts.is_empty() {
        parts.push("\"\"".into());
    }
    parts.join(" ")
}

fn decode_value(rtype: RecordType, value: &str) -> Result<String, DnsError> {
    match rtype {
        RecordType::TXT => decode_txt(value).ok_or_else(|| DnsError::Protocol {
            what: "TXT value".into(),
            reason: format!("not a sequence of quoted strings: {value:?}"),
        }),
        RecordType::CNAME => Ok(decode_name(value)),
        _ => Ok(value.to_string()),
    }
}

/// Concatenates the quoted character-strings of a TXT value, unescaping
/// `\"`, `\\` and `\ddd`. An unquoted value is taken as it is.
fn decode_txt(value: &str) -> Option<String> {
    let v = value.trim();
    if !v.starts_with('"') {
        return Some(v.to_string());
    }
    let bytes = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b' ' | b'\t' => i += 1,
            b'"' => {
                i += 1;
                loop {
                    match *bytes.get(i)? {
                        b'"' => {
                            i += 1;
                            break;
                        }
                        b'\\' => {
                            let n = *bytes.get(i + 1)?;
                            if n.is_ascii_digit() {
                                let d = std::str::from_utf8(bytes.get(i + 1..i + 4)?).ok()?;
                                out.push(u8::from_str_radix(d, 8).ok()?);
                                i += 4;
                            } else {
                                out.push(n);
                                i += 2;
                            }
                        }
                        b => {
                            out.push(b);
                            i += 1;
                        }
                    }
                }
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// Maps an SDK error onto [`DnsError`] by the error code AWS returns.
/// Codes: <https://docs.aws.amazon.com/Route53/latest/APIReference/CommonErrors.html>
/// and the operation pages.
pub(crate) fn map_sdk_error<E>(op: &str, what: &str, err: SdkError<E, HttpResponse>) -> DnsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let target = format!("Route53 {op} {what}");
    match &err {
        SdkError::ServiceError(ctx) => {
            let code = ctx.err().code().unwrap_or("").to_string();
            let message = ctx.err().message().unwrap_or("").to_string();
            let status = ctx.raw().status().as_u16();
            tracing::debug!(op, code, message, "Route53 error");
            match code.as_str() {
                "InvalidChangeBatch" => {
                    let m = message.to_ascii_lowercase();
                    if m.contains("already exists")
                        || m.contains("was not found")
                        || m.contains("do not match the current values")
                    {
                        DnsError::Conflict {
                            record: what.to_string(),
                            reason: message,
                        }
                    } else {
                        DnsError::InvalidChangeBatch { reason: message }
                    }
                }
                "InvalidInput" | "InvalidArgument" | "InvalidDomainName" => {
                    DnsError::InvalidChangeBatch {
                        reason: format!("{op}: {message}"),
                    }
                }
                "NoSuchHostedZone" | "HostedZoneNotFound" => DnsError::ZoneNotFound {
                    zone: what.to_string(),
                },
                "NoSuchChange" => DnsError::ChangeNotFound {
                    id: what.to_string(),
                },
                "Throttling" | "ThrottlingException" | "PriorRequestNotComplete" => {
                    DnsError::Throttled {
                        what: target,
                        reason: format!("{code}: {message}"),
                    }
                }
                "AccessDenied"
                | "AccessDeniedException"
                | "InvalidClientTokenId"
                | "SignatureDoesNotMatch"
                | "UnrecognizedClientException"
                | "ExpiredToken"
                | "MissingAuthenticationToken" => DnsError::PermissionDenied {
                    what: target,
                    reason: format!("{code}: {message}"),
                },
                "ServiceUnavailable" | "InternalFailure" | "InternalError" => {
                    DnsError::Unavailable {
                        what: target,
                        source: format!("{code}: {message}").into(),
                    }
                }
                _ => DnsError::Protocol {
                    what: target,
                    reason: format!("HTTP {status} {code}: {message}"),
                },
            }
        }
        SdkError::ConstructionFailure(_) => DnsError::InvalidConfig {
            key: "aws".into(),
            reason: format!(
                "{target}: the request could not be built (are AWS credentials configured?): {}",
                aws_smithy_types::error::display::DisplayErrorContext(&err)
            ),
        },
        _ => DnsError::Unavailable {
            what: target,
            source: Box::new(err),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_values_round_trip() {
        for v in ["plain", "say \"hi\" \\ there", &"x".repeat(600), ""] {
            let enc = encode_value(RecordType::TXT, v);
            assert_eq!(decode_txt(&enc).as_deref(), Some(v), "{enc}");
        }
        assert_eq!(decode_txt("\"a\" \"b\"").as_deref(), Some("ab"));
        assert_eq!(decode_txt("\"unterminated"), None);
    }

    #[test]
    fn names_are_unescaped() {
        assert_eq!(decode_name("\\052.Example.com."), "*.example.com.");
        assert_eq!(decode_name("api.example.com"), "api.example.com.");
    }
}
