//! The findings of `dr check`: a host's set-up checked line by line against
//! its configuration, each line OK, WARN or FAIL with the fix, and how they
//! add up (the exit status, and the Nagios plugin form).
//!
//! The Nagios form follows the Nagios Plugins Development Guidelines,
//! "Plugin Return Codes" and "Plugin Output": exit 0 OK, 1 WARNING,
//! 2 CRITICAL, 3 UNKNOWN, and one status line `SERVICE STATUS - text`.

use serde::{Deserialize, Serialize};

/// How one check came out. Ordered: `Ok < Warn < Fail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FindingStatus {
    /// As it should be.
    Ok,
    /// Works, but not as well as it should (an RPO an idle server can miss,
    /// a check that could not be made from here).
    Warn,
    /// Broken: backups, archiving or a recovery will fail.
    Fail,
}

impl FindingStatus {
    /// `OK`, `WARN` or `FAIL`.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingStatus::Ok => "OK",
            FindingStatus::Warn => "WARN",
            FindingStatus::Fail => "FAIL",
        }
    }
}

/// One line of the check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// What was checked: `repository`, `source db`, `key`.
    pub subject: String,
    /// The check's name: `reachable`, `archive_mode`, `archive_command`.
    pub check: String,
    /// How it came out.
    pub status: FindingStatus,
    /// What was found.
    pub detail: String,
    /// What to do about it (for WARN and FAIL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    /// An OK line.
    pub fn ok(
        subject: impl Into<String>,
        check: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Finding {
            subject: subject.into(),
            check: check.into(),
            status: FindingStatus::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    /// A WARN line with its fix.
    pub fn warn(
        subject: impl Into<String>,
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Finding::ok(subject, check, detail).with_fix(FindingStatus::Warn, fix)
    }

    /// A FAIL line with its fix.
    pub fn fail(
        subject: impl Into<String>,
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Finding::ok(subject, check, detail).with_fix(FindingStatus::Fail, fix)
    }

    fn with_fix(self, status: FindingStatus, fix: impl Into<String>) -> Self {
        Finding {
            status,
            fix: Some(fix.into()),
            ..self
        }
    }
}

/// Every finding of one `dr check`, in the order checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetupReport {
    /// The lines.
    pub findings: Vec<Finding>,
}

impl SetupReport {
    /// The worst status found; `Ok` for an empty report.
    pub fn worst(&self) -> FindingStatus {
        self.findings
            .iter()
            .map(|f| f.status)
            .max()
            .unwrap_or(FindingStatus::Ok)
    }

    /// How many findings have `status`.
    pub fn count(&self, status: FindingStatus) -> usize {
        self.findings.iter().filter(|f| f.status == status).count()
    }

    /// The Nagios exit code: 0 OK, 1 WARNING, 2 CRITICAL.
    pub fn nagios_code(&self) -> i32 {
        match self.worst() {
            FindingStatus::Ok => 0,
            FindingStatus::Warn => 1,
            FindingStatus::Fail => 2,
        }
    }

    /// The Nagios status line: `DR OK - 9 checks passed`, or
    /// `DR CRITICAL - 1 failed, 2 warnings: source db archive_mode: ...`
    /// naming the failures first, then the warnings.
    pub fn nagios_line(&self) -> String {
        let (fails, warns) = (
            self.count(FindingStatus::Fail),
            self.count(FindingStatus::Warn),
        );
        let state = ["OK", "WARNING", "CRITICAL"][self.nagios_code() as usize];
        if fails + warns == 0 {
            return format!("DR {state} - {} checks passed", self.findings.len());
        }
        let mut named: Vec<&Finding> = self
            .findings
            .iter()
            .filter(|f| f.status != FindingStatus::Ok)
            .collect();
        named.sort_by_key(|f| std::cmp::Reverse(f.status));
        let names: Vec<String> = named
            .iter()
            .map(|f| format!("{} {}: {}", f.subject, f.check, f.detail))
            .collect();
        format!(
            "DR {state} - {fails} failed, {warns} warning(s): {}",
            one_line(&names.join("; "))
        )
    }
}

/// `text` fit for a Nagios status line: one line (line breaks become
/// "; "), and no `|`, which starts the performance data.
pub fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
        .replace('|', "/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_finding_decides_the_nagios_state() {
        let mut r = SetupReport::default();
        assert_eq!((r.worst(), r.nagios_code()), (FindingStatus::Ok, 0));
        r.findings
            .push(Finding::ok("repository", "reachable", "file:///r"));
        assert_eq!(r.nagios_line(), "DR OK - 1 checks passed");
        r.findings.push(Finding::warn(
            "source db",
            "archive_timeout",
            "0 | off",
            "set it",
        ));
        assert_eq!((r.worst(), r.nagios_code()), (FindingStatus::Warn, 1));
        assert_eq!(
            r.nagios_line(),
            "DR WARNING - 0 failed, 1 warning(s): source db archive_timeout: 0 / off"
        );
        r.findings.push(Finding::fail(
            "source db",
            "archive_mode",
            "off",
            "turn it on",
        ));
        assert_eq!((r.worst(), r.nagios_code()), (FindingStatus::Fail, 2));
        assert!(r
            .nagios_line()
            .starts_with("DR CRITICAL - 1 failed, 1 warning(s): source db archive_mode: off; source db archive_timeout"));
        assert_eq!(
            (r.count(FindingStatus::Ok), r.count(FindingStatus::Fail)),
            (1, 1)
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["findings"][2]["status"], "fail");
        assert_eq!(one_line("a | b\n\n  c\n"), "a / b; c");
        assert!(json["findings"][0].get("fix").is_none());
    }
}
