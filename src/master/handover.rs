//! The master's side of an upgrade in place (see [`crate::upgrade`] for the protocol):
//! handing its state over to its next image, and resuming from it.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use tracing::{info, warn};

use super::{Master, real_os};
use crate::config::Config;
use crate::control::{self, ClientId, Record, Wait};
use crate::error::{Error, Result};
use crate::notify::NotifySocket;
use crate::signals::SignalPipe;
use crate::socket::{ListenerSet, Origin, somaxconn};
use crate::supervisor::Supervisor;
use crate::upgrade::{self, HandedControl, HandedListener, HandedNotifier, HandedNotify, Handover};

impl Master {
    /// Upgrades the master in place; returns only if it could not, after telling the client
    /// why. The client (if any) gets its answer from the next image.
    pub(super) fn upgrade(&mut self, client: Option<(ClientId, bool)>, now: Instant) {
        if let Err(why) = self.try_upgrade(client, now) {
            warn!("upgrade failed: {why}; this master carries on");
            if let (Some((id, _)), Some(server)) = (client, self.control.as_mut()) {
                server.fail(id, &format!("upgrade failed: {why}"));
            }
        }
    }

    fn try_upgrade(
        &mut self,
        client: Option<(ClientId, bool)>,
        now: Instant,
    ) -> std::result::Result<(), String> {
        let snapshot = self.sup.snapshot(now).map_err(str::to_string)?;
        let activated = self
            .os
            .listeners()
            .iter()
            .any(|l| *l.origin() == Origin::Activated);
        let answer = upgrade::preflight(&self.exe.path, &self.exe.argv, activated)?;
        info!(exe = %self.exe.path.display(), "upgrading the master in place ({answer})");
        let listeners = self
            .os
            .listeners()
            .iter()
            .enumerate()
            .map(|(i, l)| HandedListener {
                fd: l.fd().as_raw_fd(),
                name: l.name().map(str::to_string),
                origin: l.origin().clone(),
                file: l.file().cloned(),
                nonblock: self.os.adoption().and_then(|a| a.nonblock(i)),
            })
            .collect();
        let notifiers = self
            .os
            .adoption()
            .map(|a| {
                a.handover()
                    .into_iter()
                    .map(|(worker, fd)| HandedNotifier { worker, fd })
                    .collect()
            })
            .unwrap_or_default();
        let control = self.control.as_ref().and_then(|c| {
            let (fd, file) = c.handover();
            file.map(|file| HandedControl {
                fd: fd.as_raw_fd(),
                file: file.clone(),
            })
        });
        // The client waiting for the outcome goes along; one not waiting is answered now.
        let mut stream = None;
        if let (Some((id, wait)), Some(server)) = (client, self.control.as_mut()) {
            if wait {
                stream = server.take_client(id);
            } else {
                server.respond(
                    id,
                    &[Record::new("reload")
                        .with("generation", self.sup.generation() + 1)
                        .with("state", "upgrading")],
                );
            }
        }
        let old_exe = upgrade::open_self();
        let handover = Handover {
            listeners,
            control,
            notify: HandedNotify {
                fd: self.notify.fd().as_raw_fd(),
                dir: self.notify.dir().to_path_buf(),
                path: self.notify.path().to_path_buf(),
            },
            notifiers,
            client: stream.as_ref().map(AsRawFd::as_raw_fd),
            old_exe: old_exe.as_ref().map(AsRawFd::as_raw_fd),
            snapshot,
        };
        let fds = handover.fds();
        upgrade::set_cloexec(&fds, false)
            .map_err(|e| format!("cannot keep the descriptors open: {e}"))?;
        upgrade::block_signals(true);
        let err = upgrade::exec(&self.exe.path, &self.exe.argv, &handover);
        // Still here: the exec failed. Undo, and carry on.
        upgrade::block_signals(false);
        let _ = upgrade::set_cloexec(&fds, true);
        let why = format!("cannot exec {}: {err}", self.exe.path.display());
        if let Some(stream) = stream {
            control::fail_stream(stream, &format!("upgrade failed: {why}"));
        }
        Err(why)
    }
}

/// Resumes a master from the state its previous image handed over. If that state cannot be
/// used, goes back to the previous executable (see [`upgrade::abandon_if_resuming`]) while
/// every handed-over descriptor is still open.
pub(super) fn resume(config: Config, signals: SignalPipe) -> Result<i32> {
    let resumed = prepare(&config).and_then(|(os, notify, control, client, snapshot)| {
        let now = Instant::now();
        let mut os = os;
        let adopted = snapshot.workers.len();
        let sup = Supervisor::restore(&mut os, config.supervisor.clone(), snapshot, now);
        let master = Master::new(&config, sup, os, signals, notify, control, now)
            .map_err(|e| e.to_string())?;
        Ok((master, client, adopted, now))
    });
    let (mut master, client, adopted, now) = match resumed {
        Ok(m) => m,
        Err(why) => {
            upgrade::abandon_if_resuming(&why);
            return Err(Error::io(
                format!("cannot resume after the upgrade: {why}"),
                std::io::Error::other(why),
            ));
        }
    };
    // Signals that arrived during the exec were held: now they reach our handlers.
    upgrade::block_signals(false);
    master.reap();
    match upgrade::rolled_back() {
        Some(why) => {
            tracing::error!(
                workers = adopted,
                "upgrade failed: the new master could not resume ({why}); this master carries on with the same workers"
            );
            if let Some(stream) = client {
                control::fail_stream(
                    stream,
                    &format!(
                        "upgrade failed: the new master could not resume ({why}); the previous \
                         master carries on, same pid, same sockets, same workers"
                    ),
                );
            }
        }
        None => {
            info!(
                pid = std::process::id(),
                workers = adopted,
                version = env!("CARGO_PKG_VERSION"),
                "master upgraded in place: workers adopted"
            );
            match master.sup.request_reload(&mut master.os, now) {
                Ok(generation) => {
                    if let (Some(stream), Some(server)) = (client, master.control.as_mut()) {
                        server.adopt_client(stream, Wait::Reload(generation));
                    }
                }
                Err(why) => warn!("no reload after the upgrade: {why}"),
            }
        }
    }
    master.finish()
}

/// What a resuming image rebuilds from the handover.
type Prepared = (
    super::RealOs,
    NotifySocket,
    Option<control::Server>,
    Option<UnixStream>,
    crate::supervisor::Snapshot,
);

/// Reads the handover and takes over its descriptors.
fn prepare(config: &Config) -> std::result::Result<Prepared, String> {
    let text = std::env::var(crate::env::UPGRADE_STATE).map_err(|e| e.to_string())?;
    let handover = Handover::decode(&text)?;
    let adopted = handover.take_fds()?;
    if config.subreaper || std::process::id() == 1 {
        super::become_subreaper().map_err(|e| e.to_string())?;
    }
    let listeners = ListenerSet::new(
        adopted.listeners,
        config.backlog.unwrap_or_else(somaxconn),
        config.socket_mode,
    );
    let control = adopted
        .control
        .map(|(fd, file)| control::Server::adopt(fd, file));
    let (fd, HandedNotify { dir, path, .. }) = adopted.notify;
    let notify = NotifySocket::adopt(fd, dir, path);
    let mut os = real_os(config, listeners, &notify).map_err(|e| e.to_string())?;
    match os.adoption_mut() {
        Some(adoption) => adoption.restore(adopted.notifiers, &adopted.nonblock),
        None if !adopted.notifiers.is_empty() => {
            warn!("adoption is off in this image: the workers' filters are not watched any more")
        }
        None => {}
    }
    Ok((
        os,
        notify,
        control,
        adopted.client.map(UnixStream::from),
        adopted.snapshot,
    ))
}
