//! etcd: a snapshot through the v3 maintenance API (`Maintenance.Snapshot`),
//! streamed into the repository and verified on the way, with the revision
//! and the keyspace hash in the manifest.
//!
//! # The snapshot's own checksum
//! etcd appends the SHA-256 of the database to the snapshot stream (etcd
//! `server/etcdserver/api/v3rpc/maintenance.go`, `Snapshot`: "send the
//! sha256 of the snapshot at the end"); `etcdctl snapshot restore` checks it.
//! The source checks it while streaming, and checks the bbolt meta page's
//! magic number (`0xED0CDAED`, go.etcd.io/bbolt `db.go`), so a truncated or
//! garbled snapshot fails the backup instead of being stored.
//!
//! # Restore
//! A snapshot is restored on each member's node, with etcd stopped, by
//! `etcdctl snapshot restore FILE --data-dir NEW_DIR --name NAME
//! --initial-cluster ... --initial-advertise-peer-urls ...` (etcd 3.4;
//! `etcdutl snapshot restore` from 3.5), then etcd starts on the new data
//! directory. [`EtcdSnapshotFile`] is the [`dr_core::Restorer`] that puts
//! the verified snapshot file on the node for that command.

mod restore;
mod snapshot;

pub use restore::EtcdSnapshotFile;
pub use snapshot::{
    verify_snapshot, EtcdMetadata, EtcdSnapshot, EtcdSourceConfig, SnapshotDigest, KIND_ETCD,
    SNAPSHOT_ARTIFACT,
};
