//! The status page: [`StatusReport`] as one self-contained HTML document,
//! written by `dr status --html FILE` and served by `dr-agent` at `/`.
//!
//! No script, no external asset (it works in an air-gapped region, and
//! without JavaScript), every value HTML-escaped, no secret (the report
//! holds none: names, times, sizes, object names).

use chrono::{DateTime, Utc};
use std::fmt::Write as _;
use std::time::Duration;

use crate::status::StatusReport;

pub use dr_core::html::escape;

fn human(secs: f64) -> String {
    humantime::format_duration(Duration::from_secs(secs.max(0.0) as u64)).to_string()
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "never".into(),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

impl StatusReport {
    /// The report as a self-contained HTML page, generated at `now`: per
    /// source the newest recovery point against the RPO (a bar of age over
    /// RPO), WAL continuity and its gaps, the last verification, problems and
    /// warnings; then the last drill against its RTO.
    pub fn to_html(&self, now: DateTime<Utc>) -> String {
        let overall = if self.ok() {
            ("ok", "OK")
        } else {
            ("bad", "PROBLEMS")
        };
        let mut h = dr_core::html::head("dr status");
        let _ = write!(
            h,
            "<h1>dr status: <span class=\"{}\">{}</span></h1>\n<p>Generated {}.</p>\n",
            overall.0,
            overall.1,
            escape(&time(Some(now)))
        );
        h.push_str(
            "<table><tr><th>source</th><th>kind</th><th>state</th><th>newest backup</th>\
             <th>recovery point age / RPO</th><th>WAL</th><th>last verification</th><th>problems and warnings</th></tr>\n",
        );
        for s in &self.sources {
            let state = if s.ok() {
                ("ok", "OK")
            } else {
                ("bad", "VIOLATED")
            };
            let age = s.last_backup_at.map(|t| (now - t).num_seconds() as f64);
            let point_age = match (s.last_wal_archived_at, s.last_backup_at) {
                (Some(w), Some(b)) if w > b => Some((now - w).num_seconds() as f64),
                _ => age,
            };
            let bar = match point_age {
                Some(a) => {
                    let pct = (a / s.rpo_seconds.max(1.0) * 100.0).clamp(2.0, 100.0);
                    format!(
                        "<div class=\"bar\" title=\"{} of {}\"><div class=\"fill {}\" style=\"width:{pct:.0}%\"></div></div>{} / {}",
                        escape(&human(a)),
                        escape(&human(s.rpo_seconds)),
                        if s.rpo_met { "ok" } else { "bad" },
                        escape(&human(a)),
                        escape(&human(s.rpo_seconds))
                    )
                }
                None => format!("none / {}", escape(&human(s.rpo_seconds))),
            };
            let wal = match &s.wal {
                None => "-".to_string(),
                Some(w) if w.gaps.is_empty() => format!(
                    "<span class=\"ok\">continuous</span> ({} segments from {} to {})",
                    w.segments_checked,
                    escape(w.checked_from.as_deref().unwrap_or("-")),
                    escape(w.last_segment.as_deref().unwrap_or("-"))
                ),
                Some(w) => {
                    let mut g = format!("<span class=\"bad\">{} gap(s)</span><ul>", w.gaps.len());
                    for gap in &w.gaps {
                        let _ = write!(
                            g,
                            "<li>timeline {}: {} missing from {}{}</li>",
                            gap.timeline,
                            gap.missing_segments,
                            escape(&gap.first_missing),
                            gap.next
                                .as_deref()
                                .map(|n| format!(", next archived {}", escape(n)))
                                .unwrap_or_default()
                        );
                    }
                    g.push_str("</ul>");
                    g
                }
            };
            let verify = match &s.last_verify {
                None => "never".to_string(),
                Some(v) => format!(
                    "<span class=\"{}\">{}</span> {:?} of {} at {}",
                    if v.ok { "ok" } else { "bad" },
                    if v.ok {
                        "passed"
                    } else if v.unproven {
                        "unproven"
                    } else {
                        "FAILED"
                    },
                    v.level,
                    escape(&v.backup_id),
                    escape(&time(Some(v.verified_at)))
                ),
            };
            let mut notes = String::new();
            for p in &s.problems {
                let _ = write!(notes, "<li class=\"bad\">{}</li>", escape(p));
            }
            for w in &s.warnings {
                let _ = write!(notes, "<li class=\"warn\">{}</li>", escape(w));
            }
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}<br>{}</td><td>{bar}</td><td>{wal}</td><td>{verify}</td><td>{}</td></tr>",
                escape(&s.source),
                escape(s.kind.as_deref().unwrap_or("-")),
                state.0,
                state.1,
                escape(&time(s.last_backup_at)),
                escape(s.last_backup_id.as_deref().unwrap_or("")),
                if notes.is_empty() { "-".to_string() } else { format!("<ul>{notes}</ul>") }
            );
        }
        h.push_str("</table>\n<h2>Last drill</h2>\n");
        match &self.last_drill {
            None => h.push_str("<p>No drill has run.</p>\n"),
            Some(d) => {
                // A failed drill restored nothing in time: its RTO is not met.
                let within = d.rto_secs.map(|r| d.passed && d.duration_secs <= r);
                let _ = writeln!(
                    h,
                    "<p><span class=\"{}\">{}</span>: {} of plan {} at {}, took {}{}.</p>",
                    if d.passed { "ok" } else { "bad" },
                    if d.passed { "passed" } else { "FAILED" },
                    escape(&d.id),
                    escape(&d.plan),
                    escape(&time(Some(d.started_at))),
                    escape(&human(d.duration_secs)),
                    match (d.rto_secs, within) {
                        (Some(r), Some(true)) => format!(" (RTO {}: met)", escape(&human(r))),
                        (Some(r), _) => format!(
                            " (RTO {}: <span class=\"bad\">not met</span>)",
                            escape(&human(r))
                        ),
                        _ => String::new(),
                    }
                );
            }
        }
        h.push_str("</body></html>\n");
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_is_escaped_and_nothing_is_fetched() {
        let s = dr_core::status::SourceStatus {
            source: "<script>alert(1)</script>".into(),
            kind: Some("postgres-physical".into()),
            last_backup_id: Some("20261208T000000Z-abcdef".into()),
            last_backup_at: Some(Utc::now() - chrono::Duration::hours(2)),
            last_backup_age_seconds: Some(7200.0),
            last_backup_stored_bytes: Some(1),
            last_backup_plain_bytes: Some(1),
            backups: 1,
            last_wal_archived_at: None,
            rpo_seconds: 900.0,
            rto_seconds: 3600.0,
            rpo_met: false,
            wal: None,
            problems: vec!["gap \"after\" <b>".into()],
            warnings: vec![],
            last_verify: None,
        };
        let report = StatusReport {
            sources: vec![s],
            last_drill: None,
        };
        let html = report.to_html(Utc::now());
        let drill = |passed| dr_core::drill::DrillSummary {
            id: "d1".into(),
            plan: "p".into(),
            started_at: Utc::now(),
            passed,
            duration_secs: 10.0,
            rto_secs: Some(60.0),
        };
        // A failed drill did not meet its RTO, however fast it failed.
        let page = |d| {
            StatusReport {
                sources: vec![],
                last_drill: Some(d),
            }
            .to_html(Utc::now())
        };
        let failed = page(drill(false));
        assert!(
            failed.contains("(RTO 1m: <span class=\"bad\">not met</span>)"),
            "{failed}"
        );
        assert!(page(drill(true)).contains("(RTO 1m: met)"));
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("gap &quot;after&quot; &lt;b&gt;"));
        assert!(html.contains("VIOLATED") && html.contains("PROBLEMS"));
        for fetch in ["src=", "href=", "url(", "@import"] {
            assert!(!html.contains(fetch), "{fetch} in {html}");
        }
        assert_eq!(escape("a&b'c"), "a&amp;b&#39;c");
    }
}
