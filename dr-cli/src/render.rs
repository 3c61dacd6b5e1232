//! Human output: tables and summaries. (`--json` output is the serde form of
//! the library types.)

use comfy_table::{presets::NOTHING, Cell, CellAlignment, Table};
use dr_core::job::VerifyReport;
use dr_core::RestoreReport;
use dr_storage::Manifest;

/// Bytes in binary units.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Seconds with one decimal.
pub fn secs(d: std::time::Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header(header.iter().map(Cell::new));
    t
}

/// `dr list`.
pub fn list(manifests: &[Manifest]) -> String {
    if manifests.is_empty() {
        return "no backups".into();
    }
    let mut t = table(&[
        "SOURCE",
        "BACKUP ID",
        "KIND",
        "STARTED (UTC)",
        "DURATION",
        "SIZE",
        "STORED",
    ]);
    for m in manifests {
        t.add_row(vec![
            Cell::new(&m.source.name),
            Cell::new(&m.backup_id),
            Cell::new(&m.source.kind),
            Cell::new(m.started_at.format("%Y-%m-%d %H:%M:%S")),
            Cell::new(secs(m.duration().to_std().unwrap_or_default()))
                .set_alignment(CellAlignment::Right),
            Cell::new(bytes(m.plain_size())).set_alignment(CellAlignment::Right),
            Cell::new(bytes(m.stored_size())).set_alignment(CellAlignment::Right),
        ]);
    }
    t.to_string()
}

/// The one-line summary of a committed backup.
pub fn backup_summary(m: &Manifest) -> String {
    format!(
        "backup {} of {} ({}): {} artifact(s), {} -> {} stored in {}",
        m.backup_id,
        m.source.name,
        m.source.kind,
        m.artifacts.len(),
        bytes(m.plain_size()),
        bytes(m.stored_size()),
        secs(m.duration().to_std().unwrap_or_default())
    )
}

/// `dr show`.
pub fn show(m: &Manifest) -> String {
    let mut out = format!(
        "backup     {}\nsource     {} ({})\nstarted    {}\nfinished   {}\nsize       {} ({} stored, zstd {} + {})\n\n",
        m.backup_id,
        m.source.name,
        m.source.kind,
        m.started_at.to_rfc3339(),
        m.finished_at.to_rfc3339(),
        bytes(m.plain_size()),
        bytes(m.stored_size()),
        m.codec.zstd_level,
        m.codec.encryption
    );
    let mut t = table(&["ARTIFACT", "SIZE", "STORED", "SHA-256 (STORED)"]);
    for a in &m.artifacts {
        t.add_row(vec![
            Cell::new(&a.name),
            Cell::new(bytes(a.plain_size)).set_alignment(CellAlignment::Right),
            Cell::new(bytes(a.stored_size)).set_alignment(CellAlignment::Right),
            Cell::new(&a.stored_sha256),
        ]);
    }
    out.push_str(&t.to_string());
    let logical = (m.source.kind == dr_postgres::KIND_LOGICAL)
        .then(|| dr_postgres::LogicalMetadata::from_manifest(m).ok())
        .flatten();
    if let Some(meta) = logical {
        out.push_str("\n\n");
        let mut t = table(&["TABLE", "ROWS"]);
        for (name, n) in &meta.row_counts {
            t.add_row(vec![
                Cell::new(name),
                Cell::new(n).set_alignment(CellAlignment::Right),
            ]);
        }
        out.push_str(&t.to_string());
    }
    out
}

/// `dr restore`.
pub fn restore(m: &Manifest, r: &RestoreReport) -> String {
    let mut out = format!(
        "restored backup {} of {} into {}: {} in {}",
        m.backup_id,
        m.source.name,
        r.target,
        bytes(r.bytes_read),
        secs(r.duration)
    );
    for w in &r.warnings {
        out.push_str(&format!("\nwarning: {w}"));
    }
    out
}

/// The lines of a physical backup's WAL check, as `dr verify` prints them:
/// one `ok` line with the range, or one `FAILED` line per problem.
pub fn wal_verification(w: &dr_postgres::wal::WalVerification) -> String {
    let range = match (&w.first_segment, &w.last_segment) {
        (Some(a), Some(b)) if a != b => format!("{a} .. {b}"),
        (Some(a), _) => a.clone(),
        _ => "no segment".into(),
    };
    if w.ok {
        let how = if w.decoded {
            "decrypted, digests match"
        } else {
            "present and readable; no key, not decrypted"
        };
        let scope = if w.whole_chain {
            "to the newest archived segment"
        } else {
            "start to stop of the backup"
        };
        return format!(
            "  ok      WAL {range} ({} segment(s), {scope}; {how})",
            w.segments_checked
        );
    }
    w.problems
        .iter()
        .map(|p| format!("  FAILED  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `dr verify`.
pub fn verify(r: &VerifyReport) -> String {
    let mut out = format!("verify of backup {} of {}\n", r.backup_id, r.source);
    for a in &r.artifacts {
        let what = if a.decoded {
            "decrypted, digests match"
        } else {
            "stored digest matches"
        };
        match &a.error {
            None => out.push_str(&format!("  ok      {}  ({what})\n", a.name)),
            Some(e) => out.push_str(&format!("  FAILED  {}  {e}\n", a.name)),
        }
    }
    if let Some(rr) = &r.restore {
        out.push_str(&format!(
            "  ok      restore into {} ({} in {})\n",
            rr.target,
            bytes(rr.bytes_read),
            secs(rr.duration)
        ));
        for w in &rr.warnings {
            out.push_str(&format!("  warning {w}\n"));
        }
    }
    if let Some(e) = &r.restore_error {
        out.push_str(&format!("  FAILED  {e}\n"));
    }
    if let Some(c) = &r.checks {
        let failures: Vec<_> = c.failures().collect();
        if failures.is_empty() {
            out.push_str(&format!(
                "  ok      {} comparisons with the backup's snapshot match\n",
                c.checks.len()
            ));
        } else {
            out.push_str(&format!(
                "  FAILED  {} of {} comparisons differ:\n",
                failures.len(),
                c.checks.len()
            ));
            for f in failures {
                out.push_str(&format!(
                    "            {}: expected {}, found {}\n",
                    f.name, f.expected, f.actual
                ));
            }
        }
    }
    if let Some(d) = r.discarded {
        out.push_str(if d {
            "  ok      scratch target removed\n"
        } else {
            "  WARNING scratch target NOT removed\n"
        });
    }
    out.push_str(&format!(
        "{} in {}",
        if r.ok() {
            "verified"
        } else {
            "VERIFICATION FAILED"
        },
        secs(r.duration)
    ));
    out
}

/// `dr prune --dry-run`.
pub fn prune_plan(p: &dr_core::prune::PrunePlan) -> String {
    let mut t = table(&["SOURCE", "BACKUP ID", "STARTED (UTC)", "STORED", "DECISION"]);
    for d in &p.retention.backups {
        t.add_row(vec![
            Cell::new(&d.backup.source),
            Cell::new(&d.backup.id),
            Cell::new(d.backup.started_at.format("%Y-%m-%d %H:%M:%S")),
            Cell::new(bytes(d.backup.stored_bytes)).set_alignment(CellAlignment::Right),
            Cell::new(if d.keep() {
                format!("keep ({})", d.kept_by.join(", "))
            } else {
                "DELETE".into()
            }),
        ]);
    }
    let mut out = if p.retention.backups.is_empty() {
        "no backups".to_string()
    } else {
        t.to_string()
    };
    for w in &p.retention.wal {
        out.push_str(&format!(
            "\nWAL {} (system {}): keep from LSN {}, {} kept, {} deleted ({})",
            w.source,
            w.system_id,
            w.keep_from_lsn
                .map(|l| format!("{:X}/{:X}", l >> 32, l & 0xffff_ffff))
                .unwrap_or_else(|| "-".into()),
            w.kept.len(),
            w.deleted.len(),
            bytes(w.bytes_freed)
        ));
    }
    for d in &p.damaged {
        out.push_str(&format!(
            "\nDAMAGED manifest {} (kept with its data, nothing of source {} deleted by it): {}",
            d.object, d.source, d.reason
        ));
    }
    for f in &p.staging {
        out.push_str(&format!(
            "\nstaging file of an interrupted write, to delete: {} ({}, last written {})",
            f.path,
            bytes(f.size),
            f.last_modified.format("%Y-%m-%d %H:%M:%S")
        ));
    }
    for dir in &p.in_progress {
        out.push_str(&format!(
            "\nbackup in progress (marked by a running dr), left alone: {dir}"
        ));
    }
    out.push_str(&format!(
        "\norphans: {} to delete, {} younger than the grace period\nverification records of pruned backups: {} to delete\n{} to free",
        p.orphans.len() + p.staging.len(),
        p.orphans_in_grace,
        p.verifications.len(),
        bytes(p.bytes_freed())
    ));
    out
}

/// `dr check`: one line per finding (status, subject, check, what was
/// found), the fix indented below a WARN or FAIL, then the counts.
pub fn setup_report(report: &dr_core::setup_check::SetupReport) -> String {
    use dr_core::setup_check::FindingStatus;
    let subject_w = report
        .findings
        .iter()
        .map(|f| f.subject.len())
        .max()
        .unwrap_or(0);
    let check_w = report
        .findings
        .iter()
        .map(|f| f.check.len())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for f in &report.findings {
        out.push_str(&format!(
            "{:<4}  {:<subject_w$}  {:<check_w$}  {}\n",
            f.status.as_str(),
            f.subject,
            f.check,
            f.detail
        ));
        if let Some(fix) = &f.fix {
            out.push_str(&format!("{:<4}  {:>subject_w$}  fix: {fix}\n", "", ""));
        }
    }
    out.push_str(&format!(
        "{} ok, {} warning(s), {} failed\n",
        report.count(FindingStatus::Ok),
        report.count(FindingStatus::Warn),
        report.count(FindingStatus::Fail)
    ));
    out
}

/// `dr status`.
pub fn status(statuses: &[dr_core::status::SourceStatus]) -> String {
    if statuses.is_empty() {
        return "no sources".into();
    }
    let mut t = table(&[
        "SOURCE",
        "LAST BACKUP (UTC)",
        "AGE",
        "SIZE",
        "RPO",
        "STATUS",
    ]);
    for s in statuses {
        t.add_row(vec![
            Cell::new(&s.source),
            Cell::new(
                s.last_backup_at
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_else(|| "-".into()),
            ),
            Cell::new(
                s.last_backup_age_seconds
                    .map(|a| {
                        humantime::format_duration(std::time::Duration::from_secs(a as u64))
                            .to_string()
                    })
                    .unwrap_or_else(|| "-".into()),
            ),
            Cell::new(
                s.last_backup_stored_bytes
                    .map(bytes)
                    .unwrap_or_else(|| "-".into()),
            ),
            Cell::new(humantime::format_duration(std::time::Duration::from_secs(
                s.rpo_seconds as u64,
            ))),
            Cell::new(if s.ok() {
                "ok".to_string()
            } else {
                "VIOLATED".to_string()
            }),
        ]);
    }
    let mut out = t.to_string();
    for s in statuses {
        if let Some(w) = &s.wal {
            out.push_str(&format!(
                "\n{}: WAL last archived {}{}",
                s.source,
                w.last_archived_at
                    .map(|t| format!(
                        "{} ({} ago)",
                        t.format("%Y-%m-%d %H:%M:%S UTC"),
                        humantime::format_duration(std::time::Duration::from_secs(
                            (chrono::Utc::now() - t).num_seconds().max(0) as u64
                        ))
                    ))
                    .unwrap_or_else(|| "never".into()),
                w.last_segment
                    .as_ref()
                    .map(|l| format!(" (newest segment {l})"))
                    .unwrap_or_default()
            ));
            match &w.checked_from {
                Some(from) => out.push_str(&format!(
                    "; continuity from {from} (start of the anchoring base backup): {} segment(s), {}{}",
                    w.segments_checked,
                    match w.gaps.len() {
                        0 => "no gaps".to_string(),
                        1 => "1 GAP".to_string(),
                        n => format!("{n} GAPS"),
                    },
                    if w.history_read {
                        ""
                    } else {
                        " (timeline switches inferred from names: no key to read .history files)"
                    }
                )),
                None => out.push_str("; continuity not checked (no physical base backup)"),
            }
        }
        match &s.last_verify {
            Some(v) => out.push_str(&format!(
                "\n{}: last verified {} ({:?}, backup {}): {}",
                s.source,
                v.verified_at.format("%Y-%m-%d %H:%M:%S UTC"),
                v.level,
                v.backup_id,
                match (v.ok, v.unproven) {
                    (true, _) => "ok",
                    (false, true) => "UNPROVEN (the scratch restore could not run)",
                    (false, false) => "FAILED",
                }
            )),
            None => out.push_str(&format!("\n{}: never verified", s.source)),
        }
        for p in &s.problems {
            out.push_str(&format!("\n{}: {p}", s.source));
        }
        for w in &s.warnings {
            out.push_str(&format!("\n{}: warning: {w}", s.source));
        }
    }
    out
}

/// A physical point-in-time restore: what was restored where, and the
/// point recovery reached when the server was started.
pub fn pitr(r: &dr_postgres::physical::PitrReport) -> String {
    let mut out = format!(
        "restored backup {} of {} into {} ({}, {:.1} s)\ntarget: {}, timeline {}",
        r.plan.backup_id,
        r.plan.source,
        r.pgdata.display(),
        bytes(r.bytes),
        r.elapsed_secs,
        r.plan.target,
        r.plan.timeline
    );
    for t in &r.plan.tablespaces {
        out.push_str(&format!(
            "\ntablespace {} (oid {}): {} (was {})",
            t.name,
            t.oid,
            t.dir.display(),
            t.original.display()
        ));
    }
    let archive_off = r
        .plan
        .settings
        .iter()
        .any(|(k, v)| k == "archive_mode" && v == "off");
    out.push_str(if archive_off {
        "\narchive_mode = off in the restored copy (pass --archive for a copy that becomes the new primary)"
    } else {
        "\narchive_mode and archive_command kept: the copy archives into the repository once promoted"
    });
    match (&r.reached, r.port) {
        (Some(p), port) => out.push_str(&format!(
            "\nserver started{}: reached LSN {} on timeline {}{}{}",
            port.map(|p| format!(" on port {p}")).unwrap_or_default(),
            p.lsn,
            p.timeline,
            p.last_replayed_commit
                .map(|t| format!(
                    ", last replayed commit {}",
                    t.format("%Y-%m-%d %H:%M:%S%.3f UTC")
                ))
                .unwrap_or_default(),
            if p.in_recovery {
                " (still in recovery: paused or shut down at the target)"
            } else {
                " (promoted)"
            }
        )),
        (None, _) => out.push_str(&format!(
            "\nnot started: start it with pg_ctl -D {} start (recovery runs then)",
            r.pgdata.display()
        )),
    }
    for w in &r.warnings {
        out.push_str(&format!("\nwarning: {w}"));
    }
    out
}
