//! What running a PostgreSQL server needs from this host: the user it runs
//! as and a free port. Shared by the restores ([`crate::physical`]) and the
//! test harness.

/// `(uid, gid)` of the `postgres` user when this process runs as root
/// (`initdb`, `pg_ctl` and the server refuse to run as root, PostgreSQL 15
/// docs §19.1 "The PostgreSQL User Account"); `None` when not root or when
/// there is no such user.
pub(crate) fn default_owner() -> Option<(u32, u32)> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    nix::unistd::User::from_name("postgres")
        .ok()
        .flatten()
        .map(|u| (u.uid.as_raw(), u.gid.as_raw()))
}

/// A TCP port on the loopback interface that was free a moment ago (the
/// kernel's choice for port 0).
///
/// # Errors
/// When no socket can be bound.
pub(crate) fn free_port() -> std::io::Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
}
