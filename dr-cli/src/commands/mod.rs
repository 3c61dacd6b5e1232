//! The commands: arguments to an operation of `dr_ops`, its result rendered.

mod dns;
mod plan;
mod wal;

use std::io::Write;
use std::ops::ControlFlow;
use std::path::Path;

use anyhow::{Context, Result};
use dr_ops::{BackupTarget, DrConfig, Ops};

use crate::args::{
    BackupArgs, CheckArgs, Cli, Command, KeyCommand, ListArgs, PruneArgs, RepoArgs, RepoCommand,
    RestoreArgs, ShowArgs, StatusArgs, VerifyArgs,
};
use crate::exit::{EXIT_FAILED, EXIT_OK, EXIT_VERIFY_FAILED};
use crate::progress::Bar;
use crate::{render, signals};

/// Runs the parsed command line; returns the exit code.
///
/// # Errors
/// Any failure; the caller maps it to an exit code with
/// [`crate::exit::code`].
pub async fn run(cli: Cli) -> Result<i32> {
    // Generated from the argument definitions: no configuration needed.
    match &cli.command {
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut cmd, "dr", &mut script);
            return write_stdout(&script);
        }
        Command::Man { dir } => return man(dir.as_deref()),
        _ => {}
    }
    let config = match DrConfig::discover(cli.config.as_deref()) {
        Ok(c) => c,
        // A Nagios plugin that cannot run its check says UNKNOWN.
        Err(e) if matches!(&cli.command, Command::Check(a) if a.nagios) => {
            println!(
                "DR UNKNOWN - {}",
                dr_core::setup_check::one_line(&dr_core::error_chain(&e))
            );
            return Ok(3);
        }
        Err(e) => return Err(e.into()),
    };
    let ctx = Ctx { cli: &cli, config };
    match &cli.command {
        Command::Key(KeyCommand::Generate { output, force }) => ctx.key_generate(output, *force),
        Command::Repo(RepoCommand::Init { repo, recipients }) => {
            ctx.repo_init(repo, recipients).await
        }
        Command::Backup(a) => ctx.backup(a).await,
        Command::List(a) => ctx.list(a).await,
        Command::Show(a) => ctx.show(a).await,
        Command::Verify(a) => ctx.verify(a).await,
        Command::Restore(a) => ctx.restore(a).await,
        Command::Prune(a) => ctx.prune(a).await,
        Command::Status(a) => ctx.status(a).await,
        Command::Check(a) => ctx.check(a).await,
        Command::WalPush(a) => Ok(wal::push(&ctx.ops(&a.repo), a, cli.json).await),
        Command::WalFetch(a) => Ok(wal::fetch(&ctx.ops(&a.repo), a, cli.json).await),
        Command::Plan(c) => plan::run(&ctx, c).await,
        Command::Drill(a) => plan::drill(&ctx, a).await,
        Command::Dns(c) => dns::run(&ctx.ops(&RepoArgs::default()), c, cli.json).await,
        Command::Completions { .. } | Command::Man { .. } => unreachable!("handled above"),
    }
}

/// `dr man`: the top page to stdout, or every command's page into `dir`.
fn man(dir: Option<&Path>) -> Result<i32> {
    let cmd = <Cli as clap::CommandFactory>::command();
    match dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut page)?;
            return write_stdout(&page);
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(cmd, dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?;
        }
    }
    Ok(EXIT_OK)
}

/// Writes `bytes` to `path` atomically (a temporary file beside it, then a
/// rename; the temporary file is removed when the rename fails), or to
/// stdout when `path` is `-`.
///
/// # Errors
/// The file cannot be written or renamed, naming it.
pub(crate) fn write_output(path: &Path, bytes: &[u8]) -> Result<()> {
    if path.as_os_str() == "-" {
        write_stdout(bytes)?;
        return Ok(());
    }
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(anyhow::Error::new(e).context(format!("writing {}", path.display())));
    }
    Ok(())
}

/// Writes `bytes` to stdout; a reader that closed the pipe early (`| head`)
/// is not an error.
fn write_stdout(bytes: &[u8]) -> Result<i32> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(EXIT_OK),
    }
}

/// The result of an operation that a first SIGINT or SIGTERM stops (and
/// which then undoes what it wrote): `Break(130 or 143)`, after printing
/// the error, when a signal was received and the operation failed; its
/// value, or its error, otherwise.
fn stopped_by_signal<T, E>(result: std::result::Result<T, E>) -> Result<ControlFlow<i32, T>>
where
    E: std::error::Error + Send + Sync + 'static,
{
    match (result, signals::exit_code()) {
        (Err(e), Some(code)) => {
            let e = anyhow::Error::new(e);
            eprintln!("error: {}", crate::exit::message(&e));
            Ok(ControlFlow::Break(code))
        }
        (r, _) => Ok(ControlFlow::Continue(r?)),
    }
}

struct Ctx<'a> {
    cli: &'a Cli,
    config: DrConfig,
}

impl Ctx<'_> {
    fn print_json(&self, value: &impl serde::Serialize) -> Result<()> {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, value)?;
        writeln!(out)?;
        Ok(())
    }

    /// The operations with `args` over the file's `[repository]`.
    fn ops(&self, args: &RepoArgs) -> Ops {
        Ops::new(self.config.clone(), args.clone()).with_pg_bin(self.cli.pg_bin.clone())
    }

    /// As [`Ctx::ops`], with a progress bar on a terminal.
    fn ops_with_bar(&self, args: &RepoArgs) -> (Ops, Option<std::sync::Arc<Bar>>) {
        let ops = self.ops(args);
        let bar = Bar::new(!self.cli.no_progress && !self.cli.json);
        match &bar {
            Some(b) => (ops.with_progress(b.clone()), bar),
            None => (ops, bar),
        }
    }

    fn key_generate(&self, output: &Path, force: bool) -> Result<i32> {
        let recipient = dr_ops::generate_key(output, force)?;
        if self.cli.json {
            self.print_json(
                &serde_json::json!({ "recipient": recipient, "identity_file": output }),
            )?;
        } else {
            println!("{recipient}");
            eprintln!(
                "identity written to {} (mode 0600); keep it away from the repository",
                output.display()
            );
        }
        Ok(EXIT_OK)
    }

    async fn repo_init(&self, args: &RepoArgs, recipients: &[String]) -> Result<i32> {
        let ops = self.ops(args);
        let repo = ops.init_repository(recipients).await?;
        let location = ops.settings().location()?;
        if self.cli.json {
            self.print_json(
                &serde_json::json!({ "location": location.to_string(), "config": repo.config() }),
            )?;
        } else {
            println!(
                "initialised repository {} at {location} ({} recipient(s))",
                repo.config().repository_id,
                repo.config().recipients.len()
            );
        }
        Ok(EXIT_OK)
    }

    async fn backup(&self, a: &BackupArgs) -> Result<i32> {
        let target = match (&a.postgres, &a.name) {
            (Some(dsn), name) => BackupTarget::Postgres {
                name: name.clone(),
                dsn: dsn.clone(),
                password_file: a.password_file.clone(),
                no_globals: a.no_globals,
                physical: a.physical,
            },
            (None, Some(name)) => BackupTarget::Source(name.clone()),
            (None, None) => BackupTarget::All,
        };
        let (ops, bar) = self.ops_with_bar(&a.repo);
        let json = self.cli.json;
        // SIGINT or SIGTERM: the running backup is abandoned, its upload
        // and data objects removed, nothing listed; exit 130 or 143.
        let stop = signals::first()?;
        let result = ops
            .backup(&target, stop, |m| {
                if let Some(b) = &bar {
                    b.finish();
                }
                if !json {
                    println!("{}", render::backup_summary(m));
                }
            })
            .await;
        if let Some(b) = &bar {
            b.finish();
        }
        let done = match stopped_by_signal(result)? {
            ControlFlow::Continue(done) => done,
            ControlFlow::Break(code) => return Ok(code),
        };
        if json {
            self.print_json(&done)?;
        }
        Ok(EXIT_OK)
    }

    async fn list(&self, a: &ListArgs) -> Result<i32> {
        let (all, damaged) = self.ops(&a.repo).list(a.source.as_deref()).await?;
        for d in &damaged {
            eprintln!(
                "warning: damaged manifest {} (backup not listed): {}",
                d.object, d.reason
            );
        }
        if self.cli.json {
            self.print_json(&all)?;
        } else {
            writeln!(std::io::stdout(), "{}", render::list(&all))?;
        }
        Ok(EXIT_OK)
    }

    async fn show(&self, a: &ShowArgs) -> Result<i32> {
        let m = self
            .ops(&a.repo)
            .show(a.source.as_deref(), &a.backup)
            .await?;
        if self.cli.json {
            self.print_json(&m)?;
        } else {
            println!("{}", render::show(&m));
        }
        Ok(EXIT_OK)
    }

    async fn verify(&self, a: &VerifyArgs) -> Result<i32> {
        let (ops, bar) = self.ops_with_bar(&a.repo);
        // SIGINT or SIGTERM during a scratch restore: stopped, and the
        // scratch target removed.
        let stop = if a.options.restore {
            signals::first()?
        } else {
            signals::never()
        };
        let outcome = ops
            .verify(a.source.as_deref(), &a.backup, &a.options, stop)
            .await;
        if let Some(b) = &bar {
            b.finish();
        }
        let outcome = match stopped_by_signal(outcome)? {
            ControlFlow::Continue(outcome) => outcome,
            ControlFlow::Break(code) => return Ok(code),
        };
        if let Some(e) = &outcome.record_error {
            eprintln!("warning: the verification result was not recorded in the repository: {e}");
        }
        if self.cli.json {
            self.print_json(&outcome)?;
        } else {
            println!("{}", render::verify(&outcome.report));
            match &outcome.archive {
                Some(c) if c.ok => {
                    println!("  ok      raft snapshot archive: members and SHA256SUMS match")
                }
                Some(c) => println!("  FAILED  {}", c.error.as_deref().unwrap_or_default()),
                None => {}
            }
            if let Some(w) = &outcome.wal {
                println!("{}", render::wal_verification(w));
            }
        }
        // An unreachable scratch server proves nothing about the backup: exit 3,
        // not "verification failed".
        Ok(if outcome.ok() {
            EXIT_OK
        } else if outcome.unproven() {
            EXIT_FAILED
        } else {
            EXIT_VERIFY_FAILED
        })
    }

    async fn restore(&self, a: &RestoreArgs) -> Result<i32> {
        if let (Some(t), Ok((_, true))) = (
            &a.options.pitr.target_time,
            a.options.pitr.recovery_target(),
        ) {
            eprintln!("note: --target-time {t:?} has no offset; it is read as UTC");
        }
        let (ops, bar) = self.ops_with_bar(&a.repo);
        let pgdata = a.options.pitr.pgdata.clone();
        // SIGINT or SIGTERM while a physical restore writes its files: it
        // stops and removes what it wrote; a second signal quits at once.
        let (first, second) = if pgdata.is_some() {
            signals::twice()?
        } else {
            (signals::never(), signals::never())
        };
        let first = async move {
            first.await;
            if let Some(p) = &pgdata {
                eprintln!(
                    "interrupted: stopping the restore and removing what it wrote into {} (again to quit at once)",
                    p.display()
                );
            }
        };
        let restore = ops.restore(a.source.as_deref(), &a.backup, &a.options, first);
        let outcome = tokio::select! {
            r = restore => r,
            () = second => anyhow::bail!(
                "interrupted twice: {} may hold a partial restore; remove it before restoring again",
                a.options.pitr.pgdata.as_deref().unwrap_or(Path::new("the target")).display()
            ),
        };
        if let Some(b) = &bar {
            b.finish();
        }
        let outcome = match stopped_by_signal(outcome)? {
            ControlFlow::Continue(outcome) => outcome,
            ControlFlow::Break(code) => return Ok(code),
        };
        if self.cli.json {
            match &outcome.pitr {
                Some(p) => self.print_json(p)?,
                None => self.print_json(&outcome.report)?,
            }
        } else {
            match &outcome.pitr {
                Some(p) => println!("{}", render::pitr(p)),
                None => println!("{}", render::restore(&outcome.manifest, &outcome.report)),
            }
        }
        // A Kubernetes restore can be partial: visible, and not exit 0.
        Ok(if outcome.complete() {
            EXIT_OK
        } else {
            EXIT_FAILED
        })
    }

    async fn prune(&self, a: &PruneArgs) -> Result<i32> {
        let ops = self.ops(&a.repo);
        if a.dry_run {
            let plan = ops.plan_prune(&a.options).await?;
            if self.cli.json {
                self.print_json(&plan)?;
            } else {
                println!("{}", render::prune_plan(&plan));
            }
            // A damaged manifest: kept, and the operator told by the exit code.
            return Ok(if plan.damaged.is_empty() {
                EXIT_OK
            } else {
                EXIT_VERIFY_FAILED
            });
        }
        let outcome = ops.prune(&a.options).await?;
        if self.cli.json {
            self.print_json(&outcome)?;
        } else {
            let report = &outcome.report;
            println!("{}", render::prune_plan(&outcome.plan));
            println!(
                "pruned: {} backup(s), {} WAL object(s), {} orphan(s), {} verification record(s); {} freed",
                report.backups_deleted.len(),
                report.wal_deleted,
                report.orphans_deleted,
                report.verifications_deleted,
                render::bytes(report.bytes_freed)
            );
            for d in &report.damaged {
                eprintln!("error: kept backup with a DAMAGED manifest: {d}");
            }
        }
        Ok(if outcome.ok() {
            EXIT_OK
        } else {
            EXIT_VERIFY_FAILED
        })
    }

    async fn check(&self, a: &CheckArgs) -> Result<i32> {
        let options = dr_ops::CheckOptions::default().with_switch_wal(a.switch_wal);
        let report = self.ops(&a.repo).check(&options).await;
        if a.nagios {
            println!("{}", report.nagios_line());
            return Ok(report.nagios_code());
        }
        if self.cli.json {
            self.print_json(&report)?;
        } else {
            print!("{}", render::setup_report(&report));
        }
        Ok(match report.worst() {
            dr_core::setup_check::FindingStatus::Fail => EXIT_VERIFY_FAILED,
            _ => EXIT_OK,
        })
    }

    async fn status(&self, a: &StatusArgs) -> Result<i32> {
        let status = self.ops(&a.repo).status().await?;
        if let Some(path) = &a.html {
            write_output(path, status.to_html(chrono::Utc::now()).as_bytes())?;
        }
        if let Some(path) = &a.prometheus {
            let text = status.to_prometheus();
            if path.as_os_str() == "-" {
                print!("{text}");
            } else {
                let tmp = path.with_extension("prom.tmp");
                std::fs::write(&tmp, &text)
                    .with_context(|| format!("writing {}", tmp.display()))?;
                std::fs::rename(&tmp, path)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        if self.cli.json {
            self.print_json(&status)?;
        } else if a.prometheus.as_deref() != Some(Path::new("-")) {
            println!("{}", render::status(&status.sources));
            match &status.last_drill {
                Some(d) => println!(
                    "last drill: {} of {} at {}: {} in {:.1} s",
                    d.id,
                    d.plan,
                    d.started_at.to_rfc3339(),
                    if d.passed { "passed" } else { "FAILED" },
                    d.duration_secs
                ),
                None => println!("last drill: none"),
            }
        }
        Ok(if status.ok() {
            EXIT_OK
        } else {
            EXIT_VERIFY_FAILED
        })
    }
}
