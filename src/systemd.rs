//! systemd's readiness protocol (`sd_notify(3)`): a datagram of
//! `KEY=VALUE` lines to the unix socket named by `$NOTIFY_SOCKET`. It is a
//! few lines, so neither libsystemd nor a crate: `Type=notify` in
//! `deploy/systemd/ringlog.service` then means "started" is "recovered and
//! listening", and dependent units start only once clients can connect.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;

/// Tell the service manager `state` (e.g. `READY=1`). Without
/// `$NOTIFY_SOCKET` (not under systemd) nothing is sent. A failure is
/// logged, never fatal: the node serves either way, and systemd's own
/// start timeout reports a node that never said READY.
pub fn notify(state: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else { return };
    if let Err(error) = send(&socket, state) {
        tracing::warn!(target: "ringlog::node", %error, socket = %socket.to_string_lossy(), state,
            "cannot notify the service manager");
    }
}

fn send(socket: &OsStr, state: &str) -> std::io::Result<()> {
    let sender = UnixDatagram::unbound()?;
    // A leading '@' names a socket in the abstract namespace.
    match socket.as_bytes().strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sender.send_to_addr(state.as_bytes(), &address)?;
        }
        None => {
            sender.send_to(state.as_bytes(), socket)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_arrives_as_one_datagram_on_a_path_or_an_abstract_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1").unwrap();
        let mut buffer = [0u8; 64];
        let length = receiver.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..length], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("ringlog-test-{}", std::process::id());
        let abstract_receiver =
            UnixDatagram::bind_addr(&std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        send(OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        let length = abstract_receiver.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..length], b"STOPPING=1");
    }
}
