//! Repository locks: leases with an expiry, taken with a conditional create.
//!
//! `locks/<name>.json` holds who took the lease and until when. Taking it is a
//! create-only put, so of two racing processes exactly one wins. The holder
//! renews it with a conditional update on the object's ETag (S3 `If-Match`)
//! before it expires; a store without conditional updates (the local file
//! system) renews by replacing the object after checking that it still holds
//! it. A lease past its expiry is stale: it is broken only when the caller
//! says so (`dr prune --break-stale-lock`), never silently. A lease whose
//! holder is a process of this host (same host name and PID namespace)
//! that no longer exists is broken at once, with a warning: a killed
//! `dr prune` does not block the next one for the lease's lifetime.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::repo::Repository;

/// The content of a lease object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseInfo {
    /// Lock name (`prune`, `backup-<source>`).
    pub name: String,
    /// Who holds it: `host:pid:random`.
    pub holder: String,
    /// What it is held for.
    pub purpose: String,
    /// When it was taken.
    pub acquired_at: DateTime<Utc>,
    /// When it expires unless renewed.
    pub expires_at: DateTime<Utc>,
    /// The holder's PID namespace (`/proc/self/ns/pid`, e.g.
    /// `pid:[4026531836]`): with the host name, it says whether the pid in
    /// `holder` can be looked up here. Absent in leases of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_namespace: Option<String>,
}

impl LeaseInfo {
    /// Whether the holder is a process of this host that has exited: the
    /// host name and PID namespace are this process's and `/proc/<pid>`
    /// does not exist. `false` whenever that cannot be told (another host,
    /// another namespace, an unreadable holder).
    pub fn holder_is_gone(&self) -> bool {
        let mut parts = self.holder.splitn(3, ':');
        let (Some(host), Some(pid)) = (parts.next(), parts.next()) else {
            return false;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            return false;
        };
        if host != host_name()
            || self.pid_namespace.is_none()
            || self.pid_namespace != pid_namespace()
        {
            return false;
        }
        pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
    }
}

/// How to take a lease.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LeaseOptions {
    /// Lifetime of the lease between renewals (default 5 minutes).
    pub ttl: Duration,
    /// How long to wait for a held lease before giving up (default: not at all).
    pub wait: Duration,
    /// Break a lease whose holder let it expire.
    pub break_stale: bool,
    /// What the lease is for, shown to whoever finds it held.
    pub purpose: String,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        LeaseOptions {
            ttl: Duration::from_secs(300),
            wait: Duration::ZERO,
            break_stale: false,
            purpose: String::new(),
        }
    }
}

/// A held lease. Renew it with [`Lease::renew`] before `ttl` passes; release
/// it with [`Lease::release`].
#[derive(Debug)]
pub struct Lease {
    store: Arc<dyn ObjectStore>,
    path: String,
    info: LeaseInfo,
    version: UpdateVersion,
    ttl: Duration,
}

fn lock_path(name: &str) -> String {
    format!("locks/{name}.json")
}

/// This host's name (`/proc/sys/kernel/hostname`; `host` when it cannot be
/// read), as lease holders and probe objects name it.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into())
}

fn pid_namespace() -> Option<String> {
    std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

fn holder_id() -> String {
    format!(
        "{}:{}:{}",
        host_name(),
        std::process::id(),
        hex::encode(rand::random::<[u8; 4]>())
    )
}

impl Repository {
    /// Takes the lease `name`.
    ///
    /// # Errors
    /// [`Error::Locked`] when another holder has it (after waiting up to
    /// `options.wait`), naming the holder, its purpose and expiry, and saying
    /// how to break it when it is stale.
    pub async fn acquire_lease(&self, name: &str, options: &LeaseOptions) -> Result<Lease> {
        let store = self.store().clone();
        let path = lock_path(name);
        let deadline = tokio::time::Instant::now() + options.wait;
        let holder = holder_id();
        loop {
            let now = Utc::now();
            let info = LeaseInfo {
                name: name.to_string(),
                holder: holder.clone(),
                purpose: options.purpose.clone(),
                acquired_at: now,
                expires_at: now
                    + chrono::Duration::from_std(options.ttl).unwrap_or(chrono::Duration::MAX),
                pid_namespace: pid_namespace(),
            };
            let body = serde_json::to_vec_pretty(&info).expect("serialisable");
            let put = store
                .put_opts(
                    &Path::from(path.as_str()),
                    PutPayload::from(body),
                    PutOptions {
                        mode: PutMode::Create,
                        ..Default::default()
                    },
                )
                .await;
            match put {
                Ok(r) => {
                    tracing::info!(lock = %name, holder = %holder, "lease taken");
                    return Ok(Lease {
                        store,
                        path,
                        info,
                        version: UpdateVersion {
                            e_tag: r.e_tag,
                            version: r.version,
                        },
                        ttl: options.ttl,
                    });
                }
                Err(object_store::Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(Error::store(path, e)),
            }
            let current = match read_lease(&store, &path).await? {
                Some(c) => c,
                None => continue, // released meanwhile: try again
            };
            if current.0.expires_at < Utc::now() && options.break_stale {
                tracing::warn!(lock = %name, holder = %current.0.holder, expired = %current.0.expires_at,
                    "breaking a stale lease");
                delete_if_version(&store, &path, &current.1).await?;
                continue;
            }
            if current.0.holder_is_gone() {
                // Read again right before the delete (the store has no
                // conditional delete): only the gone holder's lease is
                // removed, not one a racing process took meanwhile.
                let again = read_lease(&store, &path).await?;
                if again
                    .as_ref()
                    .is_some_and(|a| a.0.holder == current.0.holder)
                {
                    tracing::warn!(lock = %name, holder = %current.0.holder, purpose = %current.0.purpose,
                        "breaking the lease of a process of this host that has exited");
                    delete_if_version(&store, &path, &current.1).await?;
                }
                continue;
            }
            if tokio::time::Instant::now() >= deadline {
                let stale = current.0.expires_at < Utc::now();
                return Err(Error::Locked {
                    name: name.to_string(),
                    holder: current.0.holder,
                    purpose: current.0.purpose,
                    expires_at: current.0.expires_at,
                    stale,
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The current lease `name`, if any.
    ///
    /// # Errors
    /// Store errors.
    pub async fn lease_info(&self, name: &str) -> Result<Option<LeaseInfo>> {
        Ok(read_lease(self.store(), &lock_path(name))
            .await?
            .map(|l| l.0))
    }
}

async fn read_lease(
    store: &Arc<dyn ObjectStore>,
    path: &str,
) -> Result<Option<(LeaseInfo, UpdateVersion)>> {
    let got = match store.get(&Path::from(path)).await {
        Ok(g) => g,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(Error::store(path, e)),
    };
    let version = UpdateVersion {
        e_tag: got.meta.e_tag.clone(),
        version: got.meta.version.clone(),
    };
    let bytes = got.bytes().await.map_err(|e| Error::store(path, e))?;
    let info = serde_json::from_slice(&bytes).map_err(|source| Error::Format {
        object: path.to_string(),
        what: "lease",
        source,
    })?;
    Ok(Some((info, version)))
}

async fn delete_if_version(
    store: &Arc<dyn ObjectStore>,
    path: &str,
    _seen: &UpdateVersion,
) -> Result<()> {
    match store.delete(&Path::from(path)).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(Error::store(path, e)),
    }
}

impl Lease {
    /// The lease as held.
    pub fn info(&self) -> &LeaseInfo {
        &self.info
    }

    /// Extends the lease by its ttl.
    ///
    /// # Errors
    /// [`Error::Locked`] when the lease was lost (broken by someone else).
    pub async fn renew(&mut self) -> Result<()> {
        let mut info = self.info.clone();
        info.expires_at =
            Utc::now() + chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::MAX);
        let body = PutPayload::from(serde_json::to_vec_pretty(&info).expect("serialisable"));
        let put = self
            .store
            .put_opts(
                &Path::from(self.path.as_str()),
                body.clone(),
                PutOptions {
                    mode: PutMode::Update(self.version.clone()),
                    ..Default::default()
                },
            )
            .await;
        let result = match put {
            Ok(r) => Ok(r),
            Err(object_store::Error::NotImplemented) => {
                // No conditional update (local files): check, then replace.
                match read_lease(&self.store, &self.path).await? {
                    Some((cur, _)) if cur.holder == self.info.holder => self
                        .store
                        .put(&Path::from(self.path.as_str()), body)
                        .await
                        .map_err(|e| Error::store(self.path.clone(), e)),
                    other => return Err(self.lost(other.map(|o| o.0))),
                }
            }
            Err(
                object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. },
            ) => {
                let cur = read_lease(&self.store, &self.path).await?.map(|o| o.0);
                return Err(self.lost(cur));
            }
            Err(e) => Err(Error::store(self.path.clone(), e)),
        }?;
        self.version = UpdateVersion {
            e_tag: result.e_tag,
            version: result.version,
        };
        self.info = info;
        Ok(())
    }

    fn lost(&self, current: Option<LeaseInfo>) -> Error {
        match current {
            Some(c) => Error::Locked {
                name: self.info.name.clone(),
                holder: c.holder,
                purpose: c.purpose,
                expires_at: c.expires_at,
                stale: false,
            },
            None => Error::Aborted {
                what: format!("lease {} (it was broken)", self.info.name),
            },
        }
    }

    /// Releases the lease if this process still holds it.
    ///
    /// # Errors
    /// Store errors.
    pub async fn release(self) -> Result<()> {
        if let Some((cur, version)) = read_lease(&self.store, &self.path).await? {
            if cur.holder == self.info.holder {
                delete_if_version(&self.store, &self.path, &version).await?;
                tracing::info!(lock = %self.info.name, "lease released");
            }
        }
        Ok(())
    }
}

/// The lease name that marks backup `id` of `source` as in progress.
pub(crate) fn backup_lease_name(source: &str, id: &str) -> String {
    format!("backup-{source}-{id}")
}

/// A backup's in-progress mark: the lease `backup-<source>-<id>`, renewed
/// every third of its ttl by a background task until
/// [`BackupMark::release`] (or until the mark is dropped, which stops the
/// renewal and releases it from the task). A killed process's mark expires
/// after the ttl; [`Repository::backup_in_progress`] then says no.
#[derive(Debug)]
pub(crate) struct BackupMark {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl BackupMark {
    pub(crate) async fn take(
        repo: &Repository,
        source: &str,
        id: &str,
        ttl: Duration,
    ) -> Result<Self> {
        let options = LeaseOptions {
            ttl,
            purpose: format!("backup {source}/{id} in progress"),
            ..LeaseOptions::default()
        };
        let mut lease = repo
            .acquire_lease(&backup_lease_name(source, id), &options)
            .await?;
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    () = tokio::time::sleep(ttl / 3) => {
                        if let Err(e) = lease.renew().await {
                            tracing::warn!(lock = %lease.info().name, error = %e, "renewing the backup's in-progress mark failed");
                        }
                    }
                }
            }
            if let Err(e) = lease.release().await {
                tracing::warn!(error = %e, "releasing the backup's in-progress mark failed; it expires on its own");
            }
        });
        Ok(BackupMark {
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Stops the renewal and removes the mark.
    pub(crate) async fn release(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for BackupMark {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Repository {
    /// Whether backup `id` of `source` is marked in progress by a writer that
    /// is still alive: its mark (see [`Repository::begin_backup_marked`])
    /// exists, has not expired, and its holder is not a process of this host
    /// that has exited.
    ///
    /// # Errors
    /// Store errors reading the mark; [`Error::Format`] for a mark that does
    /// not parse.
    pub async fn backup_in_progress(&self, source: &str, id: &str) -> Result<bool> {
        Ok(self
            .lease_info(&backup_lease_name(source, id))
            .await?
            .is_some_and(|l| l.expires_at > Utc::now() && !l.holder_is_gone()))
    }

    /// The in-progress marks (`locks/backup-*`) that have expired or whose
    /// holder has exited, as lease names: left by killed backups. Prune
    /// removes them ([`Repository::remove_lease`]).
    ///
    /// # Errors
    /// Store errors of the listing.
    pub async fn stale_backup_marks(&self) -> Result<Vec<String>> {
        use futures::TryStreamExt;
        let objects: Vec<_> = self
            .store()
            .list(Some(&Path::from("locks")))
            .try_collect()
            .await
            .map_err(|e| Error::store("locks/", e))?;
        let mut out = Vec::new();
        for o in objects {
            let Some(name) = o
                .location
                .filename()
                .and_then(|f| f.strip_suffix(".json"))
                .filter(|n| n.starts_with("backup-"))
            else {
                continue;
            };
            match self.lease_info(name).await {
                Ok(Some(l)) if l.expires_at > Utc::now() && !l.holder_is_gone() => {}
                Ok(None) => {}
                // Expired, gone, or unreadable: a killed writer's leftover.
                _ => out.push(name.to_string()),
            }
        }
        Ok(out)
    }

    /// Deletes lease `name` whoever holds it (for leftovers found by
    /// [`Repository::stale_backup_marks`]).
    ///
    /// # Errors
    /// Store errors.
    pub async fn remove_lease(&self, name: &str) -> Result<()> {
        let path = lock_path(name);
        match self.store().delete(&Path::from(path.as_str())).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::store(path, e)),
        }
    }
}
