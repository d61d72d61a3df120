//! A node's listening addresses belong to it alone.
//!
//! Every shard binds the client (and replication) address with SO_REUSEPORT
//! so the kernel spreads connections over the shards. But the kernel lets
//! *any* socket of the same user that also sets SO_REUSEPORT join that
//! group: a second `ringlog serve` on the same address would start, print
//! "listening", and be handed some of our clients. So the node reads the
//! kernel's table of listening sockets (`/proc/net/tcp`, `/proc/net/tcp6`:
//! every user's, in this network namespace) and refuses an address where a
//! socket that is not one of its own descriptors (`/proc/self/fd`) listens:
//!
//! 1. before recovery, so the usual mistake fails at once, not after a long
//!    recovery;
//! 2. again once every shard listens: two nodes started at the same instant
//!    both pass the first check, then see each other and both refuse, which
//!    is the safe outcome.
//!
//! Only *listening* sockets count. A bind without SO_REUSEPORT as a probe
//! was tried and rejected: the connections of a SIGKILLed predecessor stay
//! in the port's bind bucket (TIME_WAIT, up to a minute) without
//! SO_REUSEADDR, so such a probe failed every restart after a crash.
//! The listeners of a SIGKILLed node can themselves outlive it briefly
//! (io_uring's teardown holds them for about a second), hence the patience
//! of the first check.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

/// TCP state number of a listening socket in `/proc/net/tcp`.
const TCP_LISTEN: &str = "0A";

/// Fail if a socket that is not ours listens on `address`'s port at an
/// address that overlaps it (the same, or a wildcard on either side), and
/// still does after `patience`. `setting` names the configuration key in
/// the error (`listen`, `admin`, …).
pub fn ensure_sole_listener(setting: &str, address: &str, patience: Duration) -> Result<(), String> {
    let started = Instant::now();
    let mut waiting = false;
    loop {
        let own = own_socket_inodes().map_err(|error| format!("cannot list this process's sockets: {error}"))?;
        match check_listeners(setting, address, &own) {
            Err(_) if started.elapsed() < patience => {
                if !std::mem::replace(&mut waiting, true) {
                    tracing::info!(target: "ringlog::node", address, setting,
                        "another socket listens on this address; waiting for it to close");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            outcome => return outcome,
        }
    }
}

fn check_listeners(setting: &str, address: &str, own: &HashSet<u64>) -> Result<(), String> {
    let ours = resolve(address).map_err(|error| format!("cannot resolve {address} ({setting}): {error}"))?;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        // A kernel without IPv6 has no tcp6 table: nothing can listen there.
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for (listening, inode) in listeners(&text) {
            if listening.port() == ours.port() && overlaps(listening.ip(), ours.ip()) && !own.contains(&inode) {
                return Err(in_use(setting, address));
            }
        }
    }
    Ok(())
}

fn in_use(setting: &str, address: &str) -> String {
    format!("cannot listen on {address} ({setting}): the address is already in use by another process")
}

fn resolve(address: &str) -> std::io::Result<SocketAddr> {
    address.to_socket_addrs()?.next().ok_or_else(|| std::io::Error::other("no address"))
}

fn overlaps(a: IpAddr, b: IpAddr) -> bool {
    a == b || a.is_unspecified() || b.is_unspecified()
}

/// Inodes of every socket this process holds open.
fn own_socket_inodes() -> std::io::Result<HashSet<u64>> {
    let mut inodes = HashSet::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Ok(target) = std::fs::read_link(entry?.path()) else { continue };
        let target = target.to_string_lossy();
        if let Some(inode) = target.strip_prefix("socket:[").and_then(|rest| rest.strip_suffix(']')) {
            inodes.extend(inode.parse::<u64>().ok());
        }
    }
    Ok(inodes)
}

/// (local address, inode) of every listening socket in a `/proc/net/tcp*` table.
fn listeners(table: &str) -> Vec<(SocketAddr, u64)> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(3) != Some(&TCP_LISTEN) {
                return None;
            }
            Some((parse_address(fields.get(1)?)?, fields.get(9)?.parse().ok()?))
        })
        .collect()
}

/// `0100007F:1F9E` → 127.0.0.1:8094. The kernel prints each 32-bit word
/// of the network-order address as a host-order integer, so the words read
/// back with native byte order; the port is a plain number.
fn parse_address(text: &str) -> Option<SocketAddr> {
    let (host, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for word in (0..host.len()).step_by(8) {
        bytes.extend(u32::from_str_radix(host.get(word..word + 8)?, 16).ok()?.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_addresses_parse_in_host_word_order() {
        let loopback = u32::from_ne_bytes([127, 0, 0, 1]);
        assert_eq!(parse_address(&format!("{loopback:08X}:1F9E")), Some("127.0.0.1:8094".parse().unwrap()));
        let v6_loopback = format!("{:08X}{:08X}{:08X}{:08X}:0050", 0, 0, 0, u32::from_ne_bytes([0, 0, 0, 1]));
        assert_eq!(parse_address(&v6_loopback), Some("[::1]:80".parse().unwrap()));
        assert_eq!(parse_address("zz:1"), None);
    }

    #[test]
    fn only_listening_rows_count() {
        let table =
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
            \x20  0: 00000000:1B9E 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1\n\
            \x20  1: 0100007F:1B9E 0100007F:D1A0 01 00000000:00000000 00:00000000 00000000     0        0 4343 1\n";
        assert_eq!(listeners(table), vec![("0.0.0.0:7070".parse().unwrap(), 4242)]);
    }

    #[test]
    fn wildcards_overlap_every_address_of_the_port() {
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(overlaps(any, loopback) && overlaps(loopback, any) && overlaps(loopback, loopback));
        assert!(!overlaps(loopback, "127.0.0.2".parse().unwrap()));
    }

    #[test]
    fn a_port_another_socket_listens_on_is_refused_and_our_own_is_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        // This process's own listener is accepted…
        ensure_sole_listener("listen", &address, Duration::ZERO).unwrap();
        // …and refused when it is not among the sockets we hold.
        let foreign = check_listeners("listen", &address, &HashSet::new()).unwrap_err();
        assert!(foreign.contains(&address) && foreign.contains("(listen)") && foreign.contains("in use"), "{foreign}");
        let wildcard = format!("0.0.0.0:{}", listener.local_addr().unwrap().port());
        assert!(check_listeners("listen", &wildcard, &HashSet::new()).is_err(), "a wildcard overlaps 127.0.0.1");
        drop(listener);
        check_listeners("listen", &address, &HashSet::new()).unwrap();
    }
}
