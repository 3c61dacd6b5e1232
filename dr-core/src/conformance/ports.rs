//! Loopback ports for test servers, without the "bind port 0, release it,
//! hand the number to a server" race.
//!
//! A port the kernel picked for port 0 comes from the ephemeral range
//! (`/proc/sys/net/ipv4/ip_local_port_range`, 32768–60999 by default on
//! Linux). Released, it is the first kind of port the kernel hands to the
//! next outgoing connection or the next `bind(0)` of a parallel test, so a
//! server started on it a moment later can find it taken. The ports given
//! here come from below that range, each one at most once per process,
//! starting at an offset derived from the process id so that two test
//! binaries running side by side start far apart, and each is checked free
//! by binding it before it is handed out. A server that still finds its port
//! taken (another program chose the same number) should be restarted on the
//! next one: see `dr_postgres::testing::TestCluster`, which does.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// First port handed out (inclusive).
const LOW: u32 = 20_000;
/// Ports handed out lie in `LOW..LOW + SPAN`, below the default ephemeral
/// range.
const SPAN: u32 = 12_000;

static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);

/// A loopback TCP port that is free now, was never handed out before by
/// this process, and lies outside the kernel's default ephemeral range.
///
/// # Panics
/// When no port of the range can be bound (this is test support).
pub fn free_port() -> u16 {
    let start = (std::process::id() % (SPAN / 100)) * 100;
    // The first call sets the counter to the process's offset.
    let _ = NEXT.compare_exchange(u32::MAX, start, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = (LOW + n % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {LOW}..{}", LOW + SPAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let unique: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(unique.len(), ports.len(), "{ports:?}");
        for p in &ports {
            assert!((20_000..32_000).contains(&u32::from(*p)), "{p}");
        }
        // The next candidate taken by someone else: skipped, not handed out.
        let candidate = (LOW + NEXT.load(Ordering::SeqCst) % SPAN) as u16;
        let held = TcpListener::bind(("127.0.0.1", candidate));
        let next = free_port();
        if held.is_ok() {
            assert_ne!(next, candidate);
        }
        assert!(TcpListener::bind(("127.0.0.1", next)).is_ok());
    }
}
