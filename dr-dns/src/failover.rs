//! DNS failover and the operator commands: `dr dns get|set|failover`.
//!
//! A failover records the current value, applies the DR value with the
//! current value as precondition (so it never clobbers a change it did not
//! expect), waits until the change is in sync, confirms with the
//! authoritative servers, and returns a [`FailoverReport`] from which
//! [`rollback`] restores the recorded value, again with a precondition.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use dr_core::dns::{
    Change, ChangeBatch, ChangeInfo, DnsProvider, DnsProviderExt, Expect, RecordKey, RecordSet,
    RecordType, Routing, WaitOptions,
};
use dr_core::plan::Checkpoint;
use dr_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// Default TTL of a record a failover creates when none existed.
pub const DEFAULT_TTL: u32 = 60;

/// What a failover switches: one record set to the DR values. The parameters
/// of the `dns.failover` plan step.
///
/// ```toml
/// name = "api.example.com."
/// type = "A"
/// from = ["10.0.0.10"]   # optional: the primary values it must find
/// to = ["10.1.0.10"]
/// ttl = 60               # optional: else the current TTL
/// wait_timeout = "5m"
/// poll_interval = "5s"
/// confirm = true
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverSpec {
    /// The record's name.
    pub name: String,
    /// The record's type.
    #[serde(rename = "type")]
    pub rtype: RecordType,
    /// Weighted or failover routing of the set switched (Route53).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<Routing>,
    /// The values expected now (the primary region's). When given, a failover
    /// that finds anything else (other than `to`) refuses with a conflict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<String>>,
    /// The DR values.
    pub to: Vec<String>,
    /// TTL of the DR record; default: the current TTL, else 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
    /// How long to wait for the change to be in sync (default `5m`).
    #[serde(default = "default_wait", with = "dr_core::serde_duration::human")]
    pub wait_timeout: Duration,
    /// Pause between status polls (default `5s`).
    #[serde(default = "default_poll", with = "dr_core::serde_duration::human")]
    pub poll_interval: Duration,
    /// Confirm with the authoritative servers (default true; skipped with a
    /// note where the provider cannot, or for routed sets).
    #[serde(default = "default_true")]
    pub confirm: bool,
}

fn default_wait() -> Duration {
    Duration::from_secs(300)
}
fn default_poll() -> Duration {
    Duration::from_secs(5)
}
fn default_true() -> bool {
    true
}

impl FailoverSpec {
    /// A spec switching `name`/`rtype` to `to`, with the defaults.
    pub fn new<I, S>(name: &str, rtype: RecordType, to: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        FailoverSpec {
            name: name.to_string(),
            rtype,
            routing: None,
            from: None,
            to: to.into_iter().map(Into::into).collect(),
            ttl: None,
            wait_timeout: default_wait(),
            poll_interval: default_poll(),
            confirm: true,
        }
    }

    /// The same spec expecting these current values.
    pub fn from_values<I, S>(mut self, from: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.from = Some(from.into_iter().map(Into::into).collect());
        self
    }

    /// Checks names and values.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the parameter.
    pub fn validate(&self) -> Result<()> {
        self.target(DEFAULT_TTL)?;
        if let Some(from) = &self.from {
            self.record(from.clone(), DEFAULT_TTL)
                .validate()
                .map_err(|e| rename_key(e, "from"))?;
        }
        if self.poll_interval.is_zero() {
            return Err(Error::InvalidConfig {
                key: "poll_interval".into(),
                reason: "must be more than 0".into(),
            });
        }
        Ok(())
    }

    /// The record key switched.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an invalid name.
    pub fn key(&self) -> Result<RecordKey> {
        let mut key = RecordKey::new(&self.name, self.rtype)?;
        key.set_identifier = self
            .routing
            .as_ref()
            .map(|r| r.set_identifier().to_string());
        Ok(key)
    }

    fn record(&self, values: Vec<String>, ttl: u32) -> RecordSet {
        RecordSet {
            name: self.name.clone(),
            rtype: self.rtype,
            ttl: Some(ttl),
            values,
            alias: None,
            routing: self.routing.clone(),
        }
    }

    fn target(&self, current_ttl: u32) -> Result<RecordSet> {
        self.record(self.to.clone(), self.ttl.unwrap_or(current_ttl))
            .validate()
            .map_err(|e| rename_key(e, "to"))
    }

    fn wait(&self) -> WaitOptions {
        WaitOptions::new(self.poll_interval, self.wait_timeout)
    }
}

fn rename_key(e: Error, param: &str) -> Error {
    match e {
        Error::InvalidConfig { key, reason } if key == "record.values" => Error::InvalidConfig {
            key: param.into(),
            reason,
        },
        other => other,
    }
}

/// What a failover (or its rollback) did; serialisable for `--json`, plan
/// journals and rollback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailoverReport {
    /// The record set switched.
    pub record: RecordKey,
    /// The provider (`route53:Z123 (example.com.)`).
    pub provider: String,
    /// The value before, as read; `None` when the record did not exist.
    pub previous: Option<RecordSet>,
    /// The value now.
    pub applied: Option<RecordSet>,
    /// True when the record already held the target and nothing was sent.
    pub already_applied: bool,
    /// The change submitted, with its final status.
    pub change: Option<ChangeInfo>,
    /// Seconds from submission to in sync.
    pub sync_secs: Option<f64>,
    /// What the authoritative servers answered afterwards, when asked.
    pub confirmed: Option<Vec<String>>,
    /// Things an operator must know (a TTL longer than the RTO left, a
    /// skipped confirmation).
    pub warnings: Vec<String>,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Seconds it took.
    pub duration_secs: f64,
}

impl FailoverReport {
    /// One line: `api.example.com. A 10.0.0.10 -> 10.1.0.10 (in sync after 3.2 s)`.
    pub fn summary(&self) -> String {
        let show = |r: &Option<RecordSet>| match r {
            Some(r) => r.values.join(","),
            None => "(none)".into(),
        };
        let mut s = format!(
            "{} {} -> {}",
            self.record,
            show(&self.previous),
            show(&self.applied)
        );
        if self.already_applied {
            s.push_str(" (already applied)");
        } else if let Some(secs) = self.sync_secs {
            s.push_str(&format!(" (in sync after {secs:.1} s)"));
        }
        s
    }
}

/// How a [`failover`] runs beyond its spec.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct FailoverOptions {
    /// The RTO budget left; a previous TTL longer than it is a warning.
    pub rto_left: Option<Duration>,
    /// Where the value found is saved before anything changes (the plan
    /// run's journal), and where a re-run after a crash finds it.
    pub checkpoint: Option<Checkpoint>,
    /// The step's deadline: the wait for sync ends before it.
    pub deadline: Option<tokio::time::Instant>,
}

impl FailoverOptions {
    /// Sets [`rto_left`](Self::rto_left).
    pub fn rto_left(mut self, rto_left: Option<Duration>) -> Self {
        self.rto_left = rto_left;
        self
    }
}

#[derive(Serialize, Deserialize)]
struct Saved {
    previous: Option<RecordSet>,
}

/// Reads a record set (`dr dns get`).
///
/// # Errors
/// Those of [`DnsProvider::get`].
pub async fn get(provider: &dyn DnsProvider, key: &RecordKey) -> Result<Option<RecordSet>> {
    provider.get(key).await
}

/// What [`set`] did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetReport {
    /// The value before.
    pub previous: Option<RecordSet>,
    /// The value written.
    pub applied: RecordSet,
    /// The change, with its status after the wait.
    pub change: ChangeInfo,
}

/// Writes a record set (`dr dns set`): `UPSERT` with a precondition, then
/// waits for sync when `wait` is given.
///
/// # Errors
/// [`Error::Conflict`] when `expect` does not hold; those of
/// [`DnsProvider::apply`] and [`DnsProviderExt::wait_for_sync`].
pub async fn set(
    provider: &dyn DnsProvider,
    record: &RecordSet,
    expect: Expect,
    wait: Option<&WaitOptions>,
) -> Result<SetReport> {
    let record = record.validate()?;
    let previous = provider.get(&record.key()).await?;
    let mut change = provider
        .apply(
            &ChangeBatch::new(vec![Change::upsert(record.clone()).expecting(expect)])
                .with_comment("dr dns set"),
        )
        .await?;
    if let Some(w) = wait {
        change = provider.wait_for_sync(&change, w).await?;
    }
    Ok(SetReport {
        previous,
        applied: record,
        change,
    })
}

/// Switches a record to its DR values.
///
/// 1. Reads the current value. Already the target: nothing is sent
///    (idempotent re-run); the previous value is then the one a checkpoint
///    saved by an interrupted attempt, else `from`. Otherwise the value found
///    is saved in the checkpoint before anything changes.
/// 2. With `from` given, any other current value is a conflict.
/// 3. `UPSERT` of the target expecting the value read (or its absence).
/// 4. Waits until in sync, then asks the authoritative servers.
/// 5. Warns when the previous TTL exceeds `rto_left`: resolvers may keep
///    answering the old value that long.
///
/// # Errors
/// [`Error::InvalidConfig`] for a bad spec; [`Error::Conflict`] when the
/// record is not what `from` says or changed between read and write;
/// [`Error::Timeout`] when the change is not in sync in time;
/// [`Error::VerificationFailed`] when the authoritative answer is not the
/// target; the provider's errors.
pub async fn failover(
    provider: &dyn DnsProvider,
    spec: &FailoverSpec,
    options: &FailoverOptions,
) -> Result<FailoverReport> {
    let rto_left = options.rto_left;
    spec.validate()?;
    let started_at = Utc::now();
    let start = Instant::now();
    let key = spec.key()?;
    let span = tracing::info_span!("dns.failover", record = %key, provider = %provider);
    let _enter = span.enter();
    let current = provider.get(&key).await?;
    let target = spec.target(current.as_ref().and_then(|c| c.ttl).unwrap_or(DEFAULT_TTL))?;
    let mut warnings = Vec::new();

    if let (Some(c), Some(rto)) = (&current, rto_left) {
        if let Some(ttl) = c.ttl {
            if u64::from(ttl) > rto.as_secs() {
                let w = format!(
                    "{key}: TTL {ttl} s is longer than the {} s of RTO budget left; resolvers may serve the old value that long",
                    rto.as_secs()
                );
                tracing::warn!("{w}");
                warnings.push(w);
            }
        }
    }

    let from = match &spec.from {
        Some(v) => Some(
            spec.record(
                v.clone(),
                current.as_ref().and_then(|c| c.ttl).unwrap_or(DEFAULT_TTL),
            )
            .validate()?,
        ),
        None => None,
    };

    let saved: Option<Saved> = options
        .checkpoint
        .as_ref()
        .and_then(|c| c.previous())
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    if let Some(c) = &current {
        if c.same_data(&target) && c.ttl == target.ttl {
            tracing::info!("DNS record already holds the DR value; nothing sent");
            return Ok(FailoverReport {
                record: key,
                provider: provider.to_string(),
                previous: saved.map(|s| s.previous).unwrap_or(from),
                applied: current,
                already_applied: true,
                change: None,
                sync_secs: None,
                confirmed: None,
                warnings,
                started_at,
                duration_secs: start.elapsed().as_secs_f64(),
            });
        }
    }
    if let Some(f) = &from {
        let matches = current.as_ref().is_some_and(|c| c.same_data(f));
        if !matches {
            return Err(Error::Conflict {
                what: format!("DNS record {key}"),
                reason: format!(
                    "expected the primary value {} but found {}; refusing to overwrite a change this failover did not expect",
                    f.values.join(","),
                    current.as_ref().map_or("no record".to_string(), |c| c.values.join(","))
                ),
            });
        }
    }

    let expect = match &current {
        Some(c) => Expect::Current(c.clone()),
        None => Expect::Absent,
    };
    if let Some(cp) = &options.checkpoint {
        let state = serde_json::to_value(Saved {
            previous: current.clone(),
        })
        .map_err(|e| Error::failed("saving the DNS failover checkpoint", e.to_string()))?;
        cp.save(state).await?;
    }
    let batch = ChangeBatch::new(vec![Change::upsert(target.clone()).expecting(expect)])
        .with_comment(format!("dr failover of {key}"));
    let submitted = Instant::now();
    let change = provider.apply(&batch).await?;
    tracing::info!(change = %change.id, "DNS failover change submitted");
    let mut wait = spec.wait();
    if let Some(d) = options.deadline {
        // Leave the step a moment to report before the executor's timeout.
        let left = d.saturating_duration_since(tokio::time::Instant::now());
        wait.timeout = wait
            .timeout
            .min(left.saturating_sub(Duration::from_secs(1)));
    }
    let change = provider.wait_for_sync(&change, &wait).await?;
    let sync_secs = submitted.elapsed().as_secs_f64();
    let confirmed = confirm(provider, spec.confirm, &target, &mut warnings).await?;
    Ok(FailoverReport {
        record: key,
        provider: provider.to_string(),
        previous: current,
        applied: Some(target),
        already_applied: false,
        change: Some(change),
        sync_secs: Some(sync_secs),
        confirmed,
        warnings,
        started_at,
        duration_secs: start.elapsed().as_secs_f64(),
    })
}

async fn confirm(
    provider: &dyn DnsProvider,
    wanted: bool,
    target: &RecordSet,
    warnings: &mut Vec<String>,
) -> Result<Option<Vec<String>>> {
    if !wanted {
        return Ok(None);
    }
    if target.routing.is_some() || !provider.capabilities().authoritative_query {
        let w = format!(
            "{}: not confirmed with the authoritative servers ({})",
            target.key(),
            if target.routing.is_some() {
                "a routed set answers by policy"
            } else {
                "the provider cannot ask them"
            }
        );
        tracing::warn!("{w}");
        warnings.push(w);
        return Ok(None);
    }
    let mut answer = match provider
        .query_authoritative(&target.name, target.rtype)
        .await
    {
        Ok(a) => a,
        Err(Error::Unsupported { what }) => {
            let w = format!(
                "{}: not confirmed with the authoritative servers ({what})",
                target.key()
            );
            tracing::warn!("{w}");
            warnings.push(w);
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    answer.sort();
    let mut want = target.values.clone();
    want.sort();
    if answer != want {
        return Err(Error::VerificationFailed {
            what: format!("DNS record {}", target.key()),
            reason: format!("the authoritative servers answer {answer:?}, expected {want:?}"),
        });
    }
    tracing::info!(answer = ?answer, "authoritative servers confirm the DNS change");
    Ok(Some(answer))
}

/// Restores the value a failover recorded, expecting the value it applied
/// (so a later change by someone else is not clobbered). Nothing is sent when
/// the record already holds the recorded value.
///
/// # Errors
/// [`Error::Conflict`] when the record no longer holds what the failover
/// applied, or when the failover found the target already applied without a
/// `from` (the previous value is unknown); [`Error::Timeout`],
/// [`Error::VerificationFailed`] and the provider's errors as in [`failover`].
pub async fn rollback(
    provider: &dyn DnsProvider,
    report: &FailoverReport,
    wait: &WaitOptions,
) -> Result<FailoverReport> {
    let started_at = Utc::now();
    let start = Instant::now();
    let key = report.record.clone();
    let span = tracing::info_span!("dns.failover.rollback", record = %key, provider = %provider);
    let _enter = span.enter();
    if report.already_applied && report.previous.is_none() {
        return Err(Error::Conflict {
            what: format!("DNS record {key}"),
            reason: "the failover found the DR value already in place and no `from` value; the value to restore is unknown"
                .into(),
        });
    }
    let current = provider.get(&key).await?;
    let restore = report.previous.clone();
    let same = match (&current, &restore) {
        (Some(c), Some(r)) => c.same_data(r) && c.ttl == r.ttl,
        (None, None) => true,
        _ => false,
    };
    if same {
        tracing::info!("DNS record already holds the recorded value; nothing sent");
        return Ok(FailoverReport {
            record: key,
            provider: provider.to_string(),
            previous: current.clone(),
            applied: current,
            already_applied: true,
            change: None,
            sync_secs: None,
            confirmed: None,
            warnings: Vec::new(),
            started_at,
            duration_secs: start.elapsed().as_secs_f64(),
        });
    }
    let expect = match &report.applied {
        Some(a) => Expect::Current(a.clone()),
        None => Expect::Absent,
    };
    let change = match &restore {
        Some(r) => Change::upsert(r.clone()).expecting(expect),
        None => {
            let applied = current.clone().ok_or_else(|| Error::Conflict {
                what: format!("DNS record {key}"),
                reason: "nothing to roll back: the record is gone".into(),
            })?;
            Change::delete(applied).expecting(expect)
        }
    };
    let submitted = Instant::now();
    let info = provider
        .apply(&ChangeBatch::new(vec![change]).with_comment(format!("dr rollback of {key}")))
        .await?;
    let info = provider.wait_for_sync(&info, wait).await?;
    let sync_secs = submitted.elapsed().as_secs_f64();
    let mut warnings = Vec::new();
    let confirmed = match &restore {
        Some(r) => confirm(provider, true, r, &mut warnings).await?,
        None => None,
    };
    Ok(FailoverReport {
        record: key,
        provider: provider.to_string(),
        previous: current,
        applied: restore,
        already_applied: false,
        change: Some(info),
        sync_secs: Some(sync_secs),
        confirmed,
        warnings,
        started_at,
        duration_secs: start.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dr_core::dns::InMemoryDnsProvider;

    fn fast(spec: FailoverSpec) -> FailoverSpec {
        FailoverSpec {
            poll_interval: Duration::from_millis(1),
            wait_timeout: Duration::from_secs(2),
            ..spec
        }
    }

    async fn provider_with(values: &[&str], ttl: u32) -> InMemoryDnsProvider {
        let p = InMemoryDnsProvider::new("example.test").with_pending_polls(2);
        p.apply_one(Change::create(RecordSet::new(
            "api.example.test",
            RecordType::A,
            ttl,
            values.to_vec(),
        )))
        .await
        .unwrap();
        p
    }

    #[tokio::test]
    async fn failover_then_rollback_restores_the_recorded_value() {
        let p = provider_with(&["10.0.0.10"], 60).await;
        let spec = fast(
            FailoverSpec::new("api.example.test", RecordType::A, ["10.1.0.10"])
                .from_values(["10.0.0.10"]),
        );
        let report = failover(&p, &spec, &FailoverOptions::default())
            .await
            .unwrap();
        assert!(!report.already_applied);
        assert_eq!(report.previous.as_ref().unwrap().values, vec!["10.0.0.10"]);
        assert_eq!(report.confirmed, Some(vec!["10.1.0.10".to_string()]));
        let key = spec.key().unwrap();
        assert_eq!(
            p.get(&key).await.unwrap().unwrap().values,
            vec!["10.1.0.10"]
        );

        // Serialised and back, as a plan journal keeps it.
        let report: FailoverReport =
            serde_json::from_value(serde_json::to_value(&report).unwrap()).unwrap();
        let back = rollback(&p, &report, &spec.wait()).await.unwrap();
        assert_eq!(back.applied.unwrap().values, vec!["10.0.0.10"]);
        assert_eq!(
            p.get(&key).await.unwrap().unwrap().values,
            vec!["10.0.0.10"]
        );
    }

    #[tokio::test]
    async fn rerun_is_idempotent_and_rollback_uses_from() {
        let p = provider_with(&["10.1.0.10"], 60).await;
        let spec = fast(
            FailoverSpec::new("api.example.test", RecordType::A, ["10.1.0.10"])
                .from_values(["10.0.0.10"]),
        );
        let report = failover(&p, &spec, &FailoverOptions::default())
            .await
            .unwrap();
        assert!(report.already_applied, "{report:?}");
        rollback(&p, &report, &spec.wait()).await.unwrap();
        let got = p.get(&spec.key().unwrap()).await.unwrap().unwrap();
        assert_eq!(got.values, vec!["10.0.0.10"]);
    }

    #[tokio::test]
    async fn unexpected_current_value_is_not_clobbered() {
        let p = provider_with(&["10.9.9.9"], 60).await;
        let spec = fast(
            FailoverSpec::new("api.example.test", RecordType::A, ["10.1.0.10"])
                .from_values(["10.0.0.10"]),
        );
        let e = failover(&p, &spec, &FailoverOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Conflict { .. }), "{e:?}");
        assert_eq!(
            p.get(&spec.key().unwrap()).await.unwrap().unwrap().values,
            vec!["10.9.9.9"]
        );
    }

    #[tokio::test]
    async fn rollback_refuses_when_someone_changed_the_record_since() {
        let p = provider_with(&["10.0.0.10"], 60).await;
        let spec = fast(FailoverSpec::new(
            "api.example.test",
            RecordType::A,
            ["10.1.0.10"],
        ));
        let report = failover(&p, &spec, &FailoverOptions::default())
            .await
            .unwrap();
        p.apply_one(Change::upsert(RecordSet::new(
            "api.example.test",
            RecordType::A,
            60,
            ["10.2.0.10"],
        )))
        .await
        .unwrap();
        let e = rollback(&p, &report, &spec.wait()).await.unwrap_err();
        assert!(matches!(e, Error::Conflict { .. }), "{e:?}");
    }

    #[tokio::test]
    async fn long_ttl_against_a_short_rto_warns() {
        let p = provider_with(&["10.0.0.10"], 3600).await;
        let spec = fast(FailoverSpec::new(
            "api.example.test",
            RecordType::A,
            ["10.1.0.10"],
        ));
        let report = failover(
            &p,
            &spec,
            &FailoverOptions::default().rto_left(Some(Duration::from_secs(600))),
        )
        .await
        .unwrap();
        assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
        assert!(report.warnings[0].contains("3600"));
        assert_eq!(
            report.applied.unwrap().ttl,
            Some(3600),
            "current TTL kept without `ttl`"
        );
    }

    #[tokio::test]
    async fn sync_timeout_is_a_timeout() {
        let p = InMemoryDnsProvider::new("example.test").with_pending_polls(u32::MAX);
        let spec = FailoverSpec {
            poll_interval: Duration::from_millis(5),
            wait_timeout: Duration::from_millis(30),
            ..FailoverSpec::new("api.example.test", RecordType::A, ["10.1.0.10"])
        };
        let e = failover(&p, &spec, &FailoverOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    }

    #[test]
    fn bad_target_names_the_parameter() {
        let spec = FailoverSpec::new("api.example.test", RecordType::A, ["not-an-ip"]);
        match spec.validate() {
            Err(Error::InvalidConfig { key, .. }) => assert_eq!(key, "to"),
            other => panic!("{other:?}"),
        }
    }
}
