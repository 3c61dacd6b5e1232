//! `check`: a host's set-up against `dr.toml`, line by line
//! ([`dr_core::setup_check`]): the repository (reachable, of a known format,
//! writable, the clock against the object store's), the key, each
//! PostgreSQL source ([`dr_postgres::check`]) and Vault source
//! ([`dr_vault::check`]) and etcd source (each endpoint answers), and the
//! backup schedules against each logical source's RPO. Kubernetes sources
//! are not checked yet.

use std::time::Duration;

use chrono::Utc;
use dr_core::setup_check::{Finding, SetupReport};
use dr_storage::object_store::{path::Path, PutPayload};
use dr_storage::WalArchive;

use crate::config::SourceConfig;
use crate::ops::Ops;

/// Clock skew against the object store that is reported as a warning
/// (object stores compare request signatures with their clock: AWS refuses
/// requests more than 15 minutes off, "RequestTimeTooSkewed"; and backup
/// times and the RPO are read from this host's clock).
pub const SKEW_WARN: Duration = Duration::from_secs(30);
/// Clock skew that fails the check.
pub const SKEW_FAIL: Duration = Duration::from_secs(300);

/// Options of [`Ops::check`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CheckOptions {
    /// Force a WAL switch on each physical source and wait for its segment
    /// in the repository (writes WAL on the server).
    pub switch_wal: bool,
}

impl CheckOptions {
    /// With [`CheckOptions::switch_wal`] set as given.
    pub fn with_switch_wal(mut self, on: bool) -> Self {
        self.switch_wal = on;
        self
    }
}

impl Ops {
    /// Checks this host's set-up. Never fails: everything that goes wrong is
    /// a FAIL line ([`SetupReport::worst`]).
    pub async fn check(&self, options: &CheckOptions) -> SetupReport {
        let mut report = SetupReport::default();
        let f = &mut report.findings;
        let url = self
            .settings()
            .url
            .clone()
            .unwrap_or_else(|| "(no repository configured)".into());
        let repo = match self.open().await {
            Ok(r) => {
                f.push(Finding::ok(
                    "repository",
                    "reachable",
                    format!("{url} (format known)"),
                ));
                Some(r)
            }
            Err(e) => {
                f.push(Finding::fail(
                    "repository",
                    "reachable",
                    format!("{url}: {}", dr_core::error_chain(&e)),
                    "check the URL and the store's credentials; create it with `dr repo init`",
                ));
                None
            }
        };
        if let Some(repo) = &repo {
            f.push(probe_write(repo).await);
            f.extend(self.key_finding(repo));
        }
        let schedules = self.config().schedules();
        for (name, entry) in &self.config().sources {
            let (conn_config, physical) = match &entry.config {
                SourceConfig::Postgres(c) => (c, false),
                SourceConfig::PostgresPhysical(c) => (c, true),
                SourceConfig::VaultRaft(c) => {
                    match c.clone().with_env() {
                        Ok(c) => f.extend(dr_vault::check::check_vault(&c, name).await),
                        Err(e) => f.push(Finding::fail(
                            format!("source {name}"),
                            "settings",
                            dr_core::error_chain(&e),
                            "fix the source's Vault settings (VAULT_ADDR, the token or auth method)",
                        )),
                    }
                    continue;
                }
                SourceConfig::Etcd(c) => {
                    match c.source() {
                        Ok(source) => f.extend(source.check(name).await),
                        Err(e) => f.push(Finding::fail(
                            format!("source {name}"),
                            "settings",
                            dr_core::error_chain(&e),
                            "fix the source's etcd settings",
                        )),
                    }
                    continue;
                }
                SourceConfig::Kubernetes(_) => continue,
            };
            let subject = format!("source {name}");
            let rpo = self.config().objectives.for_source(name).rpo;
            let conn = match conn_config.connection() {
                Ok(c) => c,
                Err(e) => {
                    f.push(Finding::fail(
                        &subject,
                        "settings",
                        dr_core::error_chain(&e),
                        "fix the DSN or password_file",
                    ));
                    continue;
                }
            };
            let mut check = dr_postgres::check::SourceCheck::new(name, physical);
            check.rpo = Some(rpo);
            check.bin_dir = self.pg_bin(name);
            check.identity_file = self.settings().identity_file.clone();
            f.extend(dr_postgres::check::check_source(&conn, &check).await);
            if !physical {
                f.push(schedule_finding(&subject, schedules.backups.get(name), rpo));
            }
            if physical && options.switch_wal {
                f.push(match &repo {
                    Some(repo) => switch_wal(repo, name, conn).await,
                    None => Finding::fail(
                        &subject,
                        "WAL switch",
                        "no repository to archive into",
                        "fix the repository first",
                    ),
                });
            }
        }
        report
    }

    fn key_finding(&self, repo: &dr_storage::Repository) -> Option<Finding> {
        let s = self.settings();
        if s.identity_file.is_none()
            && s.passphrase_file.is_none()
            && std::env::var_os("DR_PASSPHRASE").is_none()
        {
            return Some(Finding::ok(
                "key",
                "opens the repository",
                "no key on this host: it can write backups and WAL, not read them (restores need one)",
            ));
        }
        Some(match self.identities(repo) {
            // An identity opens the repository's data when its recipient is
            // one the data is encrypted to (a passphrase was checked by
            // decrypting the repository's own key).
            Ok(Some(ids))
                if s.passphrase_file.is_none()
                    && std::env::var_os("DR_PASSPHRASE").is_none()
                    && !ids
                        .recipients()
                        .to_strings()
                        .iter()
                        .any(|r| repo.config().recipients.contains(r)) =>
            {
                Finding::fail(
                    "key",
                    "opens the repository",
                    format!(
                        "the key's recipient ({}) is not one this repository encrypts to ({})",
                        ids.recipients().to_strings().join(", "),
                        repo.config().recipients.join(", ")
                    ),
                    "point --identity (identity_file) at a key whose recipient the repository was created with",
                )
            }
            Ok(_) => Finding::ok("key", "opens the repository", "the configured key decrypts this repository"),
            Err(e) => Finding::fail(
                "key",
                "opens the repository",
                dr_core::error_chain(&e),
                "point --identity (identity_file) at a key whose recipient the repository was created with",
            ),
        })
    }
}

/// Writes, reads back and deletes a probe object; compares its
/// last-modified time, the store's clock, with this host's.
async fn probe_write(repo: &dr_storage::Repository) -> Finding {
    let host = dr_storage::host_name().replace('/', "_");
    let path = Path::from(format!(
        "check/probe-{host}-{}-{}",
        std::process::id(),
        Utc::now().timestamp_millis()
    ));
    let before = Utc::now();
    let store = repo.store();
    let written = async {
        store
            .put(&path, PutPayload::from_static(b"dr check"))
            .await?;
        let meta = store.head(&path).await?;
        store.delete(&path).await?;
        Ok::<_, dr_storage::object_store::Error>(meta)
    }
    .await;
    let after = Utc::now();
    match written {
        Err(e) => Finding::fail(
            "repository",
            "writable",
            format!("writing {path}: {e}"),
            "give this host's credentials put, get and delete on the repository (see examples/ for IAM policies)",
        ),
        Ok(meta) => {
            let mid = before + (after - before) / 2;
            let skew = (meta.last_modified - mid).abs().to_std().unwrap_or_default();
            // Object stores keep whole seconds.
            let shown = humantime::format_duration(Duration::from_secs(skew.as_secs()));
            if skew > SKEW_FAIL {
                Finding::fail("repository", "clock", format!("this host's clock is {shown} off the store's"), "synchronise the clock (chrony, systemd-timesyncd)")
            } else if skew > SKEW_WARN {
                Finding::warn("repository", "clock", format!("this host's clock is {shown} off the store's"), "synchronise the clock (chrony, systemd-timesyncd)")
            } else {
                Finding::ok("repository", "writable", format!("wrote, read and deleted {path}; clocks agree within {}", humantime::format_duration(SKEW_WARN)))
            }
        }
    }
}

/// A logical source's RPO is met only by its backups: the longest gap
/// between two runs of its schedule over the next 8 days must not exceed
/// it.
fn schedule_finding(
    subject: &str,
    schedule: Option<&dr_core::schedule::CronSchedule>,
    rpo: Duration,
) -> Finding {
    let rpo_text = humantime::format_duration(rpo);
    let Some(schedule) = schedule else {
        return Finding::warn(
            subject,
            "schedule",
            format!("no schedule: dr-agent takes no backups of it (RPO {rpo_text})"),
            "set schedule = \"...\" in its section, or make sure another scheduler runs dr backup",
        );
    };
    let gap = longest_gap(schedule, Utc::now(), chrono::Duration::days(8));
    match gap {
        Some(g) if g <= rpo => Finding::ok(
            subject,
            "schedule",
            format!("{} runs at least every {} (RPO {rpo_text})", schedule.expression(), humantime::format_duration(g)),
        ),
        Some(g) => Finding::fail(
            subject,
            "schedule",
            format!(
                "{} leaves up to {} between backups, longer than the RPO ({rpo_text})",
                schedule.expression(),
                humantime::format_duration(g)
            ),
            "schedule backups at least once per RPO, or archive WAL with a postgres-physical source",
        ),
        None => Finding::fail(
            subject,
            "schedule",
            format!("{} never runs in the next 8 days", schedule.expression()),
            "fix the cron expression",
        ),
    }
}

/// The longest time between consecutive runs of `schedule` from `from`
/// over `span`; `None` when it does not run twice.
fn longest_gap(
    schedule: &dr_core::schedule::CronSchedule,
    from: chrono::DateTime<Utc>,
    span: chrono::Duration,
) -> Option<Duration> {
    let end = from + span;
    let mut prev = schedule.next_after(from)?;
    let mut longest: Option<chrono::Duration> = None;
    for _ in 0..20_000 {
        let Some(next) = schedule.next_after(prev) else {
            break;
        };
        longest = Some(longest.map_or(next - prev, |l| l.max(next - prev)));
        if next > end {
            break;
        }
        prev = next;
    }
    longest.and_then(|l| l.to_std().ok())
}

/// Forces a WAL switch and waits for the segment in the repository
/// ([`dr_postgres::physical::PostgresPhysical::preflight`]).
async fn switch_wal(
    repo: &dr_storage::Repository,
    name: &str,
    conn: dr_postgres::ConnectionSettings,
) -> Finding {
    let subject = format!("source {name}");
    let result = async {
        let archive = WalArchive::new(repo, name).map_err(|e| e.to_string())?;
        let client = conn.connect().await.map_err(|e| dr_core::error_chain(&e))?;
        let source = dr_postgres::physical::PostgresPhysical::new(conn, Default::default());
        source
            .preflight(&client, &archive)
            .await
            .map_err(|e| dr_core::error_chain(&e))
    }
    .await;
    match result {
        Ok(segment) => Finding::ok(&subject, "WAL switch", format!("segment {segment} arrived in the repository")),
        Err(e) => Finding::fail(
            &subject,
            "WAL switch",
            e,
            "see the server log for archive_command's errors (pg_stat_archiver shows the last failure)",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_is_judged_by_its_longest_gap() {
        let tz = dr_core::schedule::parse_time_zone("UTC").unwrap();
        let hourly = dr_core::schedule::CronSchedule::parse("0 * * * *", tz).unwrap();
        let h = Duration::from_secs(3600);
        let from = Utc::now();
        assert_eq!(
            longest_gap(&hourly, from, chrono::Duration::days(1)),
            Some(h)
        );
        // Weekdays at 02:00: the weekend gap is three days.
        let weekdays = dr_core::schedule::CronSchedule::parse("0 2 * * 1-5", tz).unwrap();
        assert_eq!(
            longest_gap(&weekdays, from, chrono::Duration::days(8)),
            Some(72 * h)
        );
        let s = |c, rpo| schedule_finding("s", Some(c), rpo).status;
        use dr_core::setup_check::FindingStatus;
        assert_eq!(s(&hourly, h), FindingStatus::Ok);
        assert_eq!(s(&hourly, h / 2), FindingStatus::Fail);
        assert_eq!(s(&weekdays, 24 * h), FindingStatus::Fail);
        assert_eq!(schedule_finding("s", None, h).status, FindingStatus::Warn);
    }
}
