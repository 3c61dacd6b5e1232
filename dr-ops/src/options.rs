//! The options of the operations that a command line flattens (`clap`
//! feature): what to restore into, and how.

use std::path::PathBuf;

use dr_postgres::physical::{self, PitrOptions, RecoveryTarget, TargetAction};

use crate::error::{Error, Result};

/// How to restore; the fields of the kinds that do not apply are ignored.
/// With the `clap` feature these are `dr restore`'s flags.
#[derive(Debug, Clone, Default)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[non_exhaustive]
pub struct RestoreOptions {
    /// Target PostgreSQL database (a DSN); created if missing.
    #[cfg_attr(feature = "clap", arg(long, value_name = "DSN"))]
    pub to: Option<String>,
    /// Password file for the target.
    #[cfg_attr(feature = "clap", arg(long, value_name = "FILE"))]
    pub password_file: Option<PathBuf>,
    /// Replace a target database that already holds objects; with
    /// `--pgdata`, empty the leftover of an interrupted dr restore first
    /// (only a directory holding dr's restore lock file, held by no process).
    #[cfg_attr(feature = "clap", arg(long))]
    pub clean: bool,
    /// Apply the backup's globals (roles, tablespaces) first.
    #[cfg_attr(feature = "clap", arg(long))]
    pub globals: bool,
    /// Parallel pg_restore jobs (above 1 the dump is staged to a local file).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 1))]
    pub jobs: u32,
    /// Directory for the staged dump of a parallel restore.
    #[cfg_attr(feature = "clap", arg(long, value_name = "DIR"))]
    pub staging_dir: Option<PathBuf>,
    /// Restore even when the target server cannot give the database its
    /// recorded properties (encoding and locale, owner, privileges,
    /// settings): each one dropped is listed in the report's warnings.
    /// Without it such a restore fails before creating anything.
    #[cfg_attr(feature = "clap", arg(long))]
    pub ignore_database_properties: bool,
    /// Point-in-time restore of a physical backup (`--pgdata DIR` and a target).
    #[cfg_attr(feature = "clap", command(flatten))]
    pub pitr: PitrArgs,
    /// Vault: use `snapshot-force` (a snapshot of another cluster).
    #[cfg_attr(feature = "clap", arg(long))]
    pub force: bool,
    /// Vault: unseal key files to unseal a node that sealed itself after a
    /// forced restore (repeatable).
    #[cfg_attr(feature = "clap", arg(long, value_name = "FILE"))]
    pub unseal_key_file: Vec<PathBuf>,
    /// Kubernetes: map a namespace to another, `OLD=NEW` (repeatable).
    #[cfg_attr(feature = "clap", arg(long, value_name = "OLD=NEW"))]
    pub namespace_map: Vec<String>,
    /// Kubernetes: what to do with objects that exist.
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value_t = ExistingMode::Report))]
    pub existing: ExistingMode,
    /// Kubernetes: a server-side dry run.
    #[cfg_attr(feature = "clap", arg(long))]
    pub server_dry_run: bool,
    /// etcd: write the verified snapshot file into this directory (then run
    /// `etcdctl snapshot restore` on it on the target node).
    #[cfg_attr(feature = "clap", arg(long, value_name = "DIR"))]
    pub etcd_snapshot_dir: Option<PathBuf>,
}

/// Kubernetes: what a restore does with an object that exists already.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ExistingMode {
    /// Leave it, and report it.
    #[default]
    Report,
    /// Update it to the backup's version (server-side apply).
    Update,
}

impl From<ExistingMode> for dr_k8s::ExistingPolicy {
    fn from(m: ExistingMode) -> Self {
        match m {
            ExistingMode::Report => dr_k8s::ExistingPolicy::Report,
            ExistingMode::Update => dr_k8s::ExistingPolicy::Update,
        }
    }
}

/// `--target`: the ends of the archive as recovery targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum RecoveryTargetArg {
    /// The end of the base backup (`recovery_target = 'immediate'`).
    Immediate,
    /// The end of the archived WAL.
    Latest,
}

/// `--target-action`: what the server does at the recovery target
/// (`recovery_target_action`, PostgreSQL "Recovery Target" settings).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum TargetActionArg {
    /// End recovery and accept writes.
    #[default]
    Promote,
    /// Pause recovery (read-only) for inspection.
    Pause,
    /// Stop the server.
    Shutdown,
}

impl From<TargetActionArg> for TargetAction {
    fn from(a: TargetActionArg) -> Self {
        match a {
            TargetActionArg::Promote => TargetAction::Promote,
            TargetActionArg::Pause => TargetAction::Pause,
            TargetActionArg::Shutdown => TargetAction::Shutdown,
        }
    }
}

/// The point-in-time restore flags of `dr restore`.
#[derive(Debug, Clone, Default)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[non_exhaustive]
pub struct PitrArgs {
    /// Restore a physical backup into this data directory (absent or empty).
    #[cfg_attr(feature = "clap", arg(long, value_name = "DIR"))]
    pub pgdata: Option<PathBuf>,
    /// Recover to this time; give an offset (`+00`), else UTC is assumed.
    #[cfg_attr(
        feature = "clap",
        arg(long, value_name = "TIME", group = "pitr_target")
    )]
    pub target_time: Option<String>,
    /// Recover to this LSN.
    #[cfg_attr(feature = "clap", arg(long, value_name = "LSN", group = "pitr_target"))]
    pub target_lsn: Option<String>,
    /// Recover to the commit of this transaction.
    #[cfg_attr(feature = "clap", arg(long, value_name = "XID", group = "pitr_target"))]
    pub target_xid: Option<u64>,
    /// Recover to this restore point.
    #[cfg_attr(
        feature = "clap",
        arg(long, value_name = "NAME", group = "pitr_target")
    )]
    pub target_name: Option<String>,
    /// `immediate` (end of the backup) or `latest` (end of the archive).
    #[cfg_attr(feature = "clap", arg(long, value_enum, group = "pitr_target"))]
    pub target: Option<RecoveryTargetArg>,
    /// What the server does at the target.
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value_t = TargetActionArg::Promote))]
    pub target_action: TargetActionArg,
    /// Start the server and wait until recovery ends.
    #[cfg_attr(feature = "clap", arg(long))]
    pub start: bool,
    /// Port to write into the restored configuration.
    #[cfg_attr(feature = "clap", arg(long))]
    pub port: Option<u16>,
    /// Keep the cluster's archive_mode and archive_command in the restored
    /// copy. Without it the copy runs with archive_mode = off: a test or
    /// verification restore that promotes must never push its new timeline
    /// into the production archive (later restores would follow it). Pass
    /// it when the restored cluster is to become the new primary.
    #[cfg_attr(feature = "clap", arg(long))]
    pub archive: bool,
    /// Deprecated: archive_mode = off is the default now.
    #[cfg_attr(feature = "clap", arg(long, hide = true))]
    pub no_archive: bool,
    /// Follow this timeline (`recovery_target_timeline`, a number; default:
    /// the newest timeline in the archive). Use it to recover along an older
    /// timeline when a newer one branched off it.
    #[cfg_attr(feature = "clap", arg(long, value_name = "TLI"))]
    pub target_timeline: Option<u32>,
    /// With `--target latest`: restore even though archived WAL has a gap
    /// after the backup (recovery ends at the gap; without this flag the
    /// gap is an error naming it).
    #[cfg_attr(feature = "clap", arg(long))]
    pub allow_wal_gap: bool,
    /// Restore a tablespace into DIR instead of its original directory
    /// (`OID-or-NAME=DIR`, DIR absolute and empty; repeatable).
    #[cfg_attr(feature = "clap", arg(long, value_name = "OID-or-NAME=DIR"))]
    pub tablespace_mapping: Vec<String>,
}

impl PitrArgs {
    /// The point-in-time flags given, by name (`--target-time`, ...): they
    /// mean something only with `--pgdata`.
    pub fn given(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        let mut flag = |set: bool, name: &'static str| {
            if set {
                v.push(name);
            }
        };
        flag(self.target_time.is_some(), "--target-time");
        flag(self.target_lsn.is_some(), "--target-lsn");
        flag(self.target_xid.is_some(), "--target-xid");
        flag(self.target_name.is_some(), "--target-name");
        flag(self.target.is_some(), "--target");
        flag(self.start, "--start");
        flag(self.port.is_some(), "--port");
        flag(self.archive, "--archive");
        flag(self.target_timeline.is_some(), "--target-timeline");
        flag(self.allow_wal_gap, "--allow-wal-gap");
        flag(!self.tablespace_mapping.is_empty(), "--tablespace-mapping");
        v
    }

    /// The recovery target the flags ask for, and whether a `--target-time`
    /// without an offset was read as UTC (the front end says so).
    ///
    /// # Errors
    /// [`Error::Config`] naming the flag of a malformed value;
    /// [`Error::Usage`] when no target is given.
    pub fn recovery_target(&self) -> Result<(RecoveryTarget, bool)> {
        Ok(if let Some(t) = &self.target_time {
            let (t, explicit) =
                physical::parse_target_time(t).map_err(|e| Error::config("--target-time", e))?;
            (RecoveryTarget::Time(t), !explicit)
        } else if let Some(l) = &self.target_lsn {
            let lsn = l.parse().map_err(|e| Error::config("--target-lsn", e))?;
            (RecoveryTarget::Lsn(lsn), false)
        } else if let Some(x) = self.target_xid {
            (RecoveryTarget::Xid(x), false)
        } else if let Some(n) = &self.target_name {
            (RecoveryTarget::Name(n.clone()), false)
        } else {
            match self.target {
                Some(RecoveryTargetArg::Immediate) => (RecoveryTarget::Immediate, false),
                Some(RecoveryTargetArg::Latest) => (RecoveryTarget::Latest, false),
                None => {
                    return Err(Error::usage(
                        "a point-in-time restore needs a target: --target-time, --target-lsn, \
                         --target-xid, --target-name or --target immediate|latest",
                    ))
                }
            }
        })
    }

    /// The library's options for a restore into `--pgdata` (absolute),
    /// with `dr_program` and `fetch_args` for the `restore_command`.
    ///
    /// # Errors
    /// As [`PitrArgs::recovery_target`]; no `--pgdata`; a malformed
    /// `--tablespace-mapping`.
    pub fn options(&self, dr_program: PathBuf, fetch_args: Vec<String>) -> Result<PitrOptions> {
        let (target, _) = self.recovery_target()?;
        let pgdata = self
            .pgdata
            .clone()
            .ok_or_else(|| Error::usage("--pgdata DIR is required for a physical restore"))?;
        // pg_ctl and the server need an absolute data directory.
        let pgdata = std::path::absolute(&pgdata)
            .map_err(|e| Error::io(format!("--pgdata {}", pgdata.display()), e))?;
        let mut opts = PitrOptions::new(pgdata, target, dr_program, fetch_args);
        opts.action = self.target_action.into();
        opts.start = self.start;
        opts.port = self.port;
        opts.archive_mode_off = !self.archive || self.no_archive;
        opts.timeline = self.target_timeline;
        opts.allow_wal_gap = self.allow_wal_gap;
        opts.tablespace_mapping = self
            .tablespace_mapping
            .iter()
            .map(|m| {
                m.parse()
                    .map_err(|e| Error::config(format!("--tablespace-mapping {m}"), e))
            })
            .collect::<Result<_>>()?;
        Ok(opts)
    }
}
