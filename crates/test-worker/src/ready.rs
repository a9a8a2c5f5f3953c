//! `TW_READY`: telling the manager we serve, in one of three independent ways, so that
//! tests prove the master understands each kind of sd_notify client.

use std::env;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::process::Command;

use sd_notify::NotifyState;

use crate::knobs::Ready;

/// Sends READY=1 the chosen way and says on stderr whether it worked.
pub fn send(mode: Ready, pid: u32) {
    let how = mode.as_str();
    let result = match mode {
        Ready::None => return,
        Ready::Notify => notify_crate(),
        Ready::SystemdNotify => systemd_notify(),
        Ready::Raw => raw(),
    };
    match result {
        Ok(()) => say!("test-worker[{pid}]: ready sent ({how})"),
        Err(e) => say!("test-worker[{pid}]: ready failed ({how}): {e}"),
    }
}

/// The `sd-notify` crate (it sends `READY=1\n`).
fn notify_crate() -> io::Result<()> {
    // The crate silently does nothing without NOTIFY_SOCKET; a test wants to know.
    notify_socket()?;
    sd_notify::notify(&[NotifyState::Ready])
}

/// `systemd-notify --ready`, as a child process we wait for.
fn systemd_notify() -> io::Result<()> {
    let status = Command::new("systemd-notify").arg("--ready").status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "systemd-notify --ready: {status}"
        )))
    }
}

/// Our own datagram (`READY=1`, no trailing newline, then the lines of `TW_NOTIFY_EXTRA`
/// separated by `;`, e.g. `MASTER_PROCESS_VERSION=9.9.9`) to a path or an `@abstract` name.
fn raw() -> io::Result<()> {
    let target = notify_socket()?;
    let bytes = target.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None if bytes.starts_with(b"/") => SocketAddr::from_pathname(&target)?,
        None => {
            return Err(io::Error::other(format!(
                "unsupported NOTIFY_SOCKET {}",
                target.to_string_lossy()
            )));
        }
    };
    let mut message = String::from("READY=1");
    for line in env::var("TW_NOTIFY_EXTRA")
        .unwrap_or_default()
        .split(';')
        .filter(|l| !l.is_empty())
    {
        message.push('\n');
        message.push_str(line);
    }
    let socket = UnixDatagram::unbound()?;
    socket.send_to_addr(message.as_bytes(), &addr)?;
    Ok(())
}

fn notify_socket() -> io::Result<std::ffi::OsString> {
    env::var_os("NOTIFY_SOCKET")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| io::Error::other("NOTIFY_SOCKET is not set"))
}
