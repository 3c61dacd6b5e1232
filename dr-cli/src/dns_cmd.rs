//! `dr dns get|set|failover|rollback`: the `[dns]` provider of dr.toml, and
//! the library calls of `dr_dns`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Subcommand;
use dr_core::dns::{Expect, RecordKey, RecordSet, RecordType, WaitOptions};
use dr_dns::{FailoverOptions, FailoverSpec};

use crate::config::DrConfig;
use crate::exit::{Usage, EXIT_OK};

/// `dr dns ...`
#[derive(Debug, Subcommand)]
pub enum DnsCommand {
    /// Read a record set from the provider.
    Get {
        /// Record name (`api.example.com.`).
        name: String,
        /// Record type: A, AAAA, CNAME, TXT.
        #[arg(long = "type", default_value = "A")]
        rtype: String,
    },
    /// Write a record set (UPSERT), optionally only if it holds `--expect` now.
    Set {
        /// Record name.
        name: String,
        /// Record type.
        #[arg(long = "type", default_value = "A")]
        rtype: String,
        /// New values (repeatable).
        #[arg(long = "value", required = true)]
        values: Vec<String>,
        /// TTL in seconds.
        #[arg(long, default_value_t = 60)]
        ttl: u32,
        /// Apply only if the record holds exactly these values now (repeatable).
        #[arg(long = "expect")]
        expect: Vec<String>,
        /// Wait until the change is in sync.
        #[arg(long)]
        wait: bool,
    },
    /// Switch a record to the DR values: record the current value, apply
    /// with a precondition, wait for sync, confirm with the authoritative
    /// servers. Prints the report (`--json` keeps it for `rollback`).
    Failover {
        /// Record name.
        name: String,
        /// Record type.
        #[arg(long = "type", default_value = "A")]
        rtype: String,
        /// The DR values (repeatable).
        #[arg(long = "to", required = true)]
        to: Vec<String>,
        /// The values the record must hold now (repeatable; default: any).
        #[arg(long = "from")]
        from: Vec<String>,
        /// TTL of the new record.
        #[arg(long)]
        ttl: Option<u32>,
        /// Bound on waiting for sync (e.g. `5m`).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
        wait_timeout: Duration,
    },
    /// Switch back to the value a failover recorded (its `--json` report).
    Rollback {
        /// The failover's JSON report.
        report: PathBuf,
    },
}

/// Runs a `dr dns` command.
///
/// # Errors
/// No `[dns]` section, bad record names, provider errors.
pub async fn run(config: &DrConfig, cmd: &DnsCommand, json: bool) -> Result<i32> {
    let dns = config.dns.as_ref().ok_or_else(|| {
        Usage::msg(
            "dr dns needs a [dns] section in dr.toml (provider = \"route53\" or \"rfc2136\")",
        )
    })?;
    let provider = dr_dns::connect(dns).await.map_err(dr_core::Error::from)?;
    let rtype = |t: &str| -> Result<RecordType> {
        t.parse::<RecordType>()
            .map_err(|e| Usage::msg(format!("record type {t:?}: {e}")))
    };
    let print = |v: &serde_json::Value, human: String| {
        if json {
            println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        } else {
            println!("{human}");
        }
    };
    match cmd {
        DnsCommand::Get { name, rtype: t } => {
            let key = RecordKey::new(name, rtype(t)?).map_err(Usage::wrap)?;
            let got = dr_dns::get(provider.as_ref(), &key).await?;
            let human = match &got {
                Some(r) => format!(
                    "{} {} ttl {} {}",
                    r.name,
                    t,
                    r.ttl.unwrap_or_default(),
                    r.values.join(" ")
                ),
                None => format!("{name} {t}: no such record"),
            };
            print(&serde_json::to_value(&got)?, human);
        }
        DnsCommand::Set {
            name,
            rtype: t,
            values,
            ttl,
            expect,
            wait,
        } => {
            let rt = rtype(t)?;
            let record = RecordSet::new(name, rt, *ttl, values.iter().cloned());
            let expect = if expect.is_empty() {
                Expect::Any
            } else {
                Expect::Current(RecordSet::new(name, rt, *ttl, expect.iter().cloned()))
            };
            let wait_opts = WaitOptions::default();
            let report = dr_dns::set(
                provider.as_ref(),
                &record,
                expect,
                wait.then_some(&wait_opts),
            )
            .await?;
            print(
                &serde_json::to_value(&report)?,
                format!("{name} {t} set to {}", values.join(" ")),
            );
        }
        DnsCommand::Failover {
            name,
            rtype: t,
            to,
            from,
            ttl,
            wait_timeout,
        } => {
            let mut spec = FailoverSpec::new(name, rtype(t)?, to.iter().cloned());
            if !from.is_empty() {
                spec = spec.from_values(from.iter().cloned());
            }
            spec.ttl = *ttl;
            spec.wait_timeout = *wait_timeout;
            let report =
                dr_dns::failover(provider.as_ref(), &spec, &FailoverOptions::default()).await?;
            print(&serde_json::to_value(&report)?, report.summary());
        }
        DnsCommand::Rollback { report } => {
            let text = std::fs::read_to_string(report)
                .with_context(|| format!("reading {}", report.display()))?;
            let report: dr_dns::FailoverReport = serde_json::from_str(&text)
                .map_err(|e| Usage::msg(format!("{}: {e}", report.display())))?;
            let back =
                dr_dns::rollback(provider.as_ref(), &report, &WaitOptions::default()).await?;
            print(&serde_json::to_value(&back)?, back.summary());
        }
    }
    Ok(EXIT_OK)
}
