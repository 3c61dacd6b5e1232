//! `dr dns get|set|failover|rollback`: the `[dns]` provider of dr.toml, and
//! the library calls of `dr_dns`.

use anyhow::{Context, Result};
use dr_core::dns::{Expect, RecordKey, RecordSet, RecordType, WaitOptions};
use dr_dns::{FailoverOptions, FailoverSpec};

use dr_ops::Ops;

use crate::args::DnsCommand;
use crate::exit::{Usage, EXIT_OK};

/// Runs a `dr dns` command.
///
/// # Errors
/// No `[dns]` section, bad record names, provider errors.
pub(super) async fn run(ops: &Ops, cmd: &DnsCommand, json: bool) -> Result<i32> {
    let provider = ops.dns_provider().await?;
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
