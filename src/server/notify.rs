//! systemd's readiness protocol (`sd_notify`), written directly: one datagram per
//! state change to the socket named by `NOTIFY_SOCKET`, when that is set.
//!
//! `Type=notify` units learn from it when start-up is done (`READY=1`, sent once the
//! workers accept), when a reload starts and ends (`RELOADING=1` with
//! `MONOTONIC_USEC`, then `READY=1`), when a drain starts (`STOPPING=1`), and which
//! process is the service's main one after a binary upgrade (`MAINPID=`). Outside
//! systemd every call is a no-op. A failed send is logged at debug and ignored: the
//! balancer never stops serving over its supervisor's socket.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (newline-separated `KEY=VALUE` lines) to `$NOTIFY_SOCKET`.
pub fn send(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send_to(&path, state) {
        tracing::debug!("sd_notify {state:?} failed: {e}");
    }
}

fn send_to(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_bytes();
    match bytes.strip_prefix(b"@") {
        // An abstract socket (`@name`): Linux only, as systemd is.
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        }
        None => {
            sock.send_to(state.as_bytes(), path)?;
        }
    }
    Ok(())
}

/// Start-up is done: the workers accept.
pub fn ready() {
    send("READY=1\nSTATUS=serving");
}

/// A reload starts; [`ready`] ends it.
pub fn reloading() {
    let usec = crate::health::shared::monotonic_ns() / 1000;
    send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
}

/// A drain starts.
pub fn stopping() {
    send("STOPPING=1\nSTATUS=draining");
}

/// After a binary upgrade: the new master is the service's main process.
pub fn main_pid(pid: u32) {
    send(&format!("MAINPID={pid}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_reach_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("sy-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        send_to(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
