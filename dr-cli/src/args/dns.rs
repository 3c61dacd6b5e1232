//! `dr dns`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;

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
