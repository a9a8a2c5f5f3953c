//! The graceful stop signal of a worker: SIGTERM turned into something threads can wait on
//! and, with the `tokio` feature, tasks can await.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Whether a graceful stop was asked (SIGTERM from the master; running alone, also SIGINT).
///
/// Cheap to clone; every clone sees the same signal. Obtained with
/// [`Worker::stop`](crate::Worker::stop).
#[derive(Debug, Clone)]
pub struct Stop {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    requested: AtomicBool,
    lock: Mutex<()>,
    cond: Condvar,
    /// Readable once the stop is asked, and stays so: `accept` polls it with the listener.
    wake: (UnixStream, UnixStream),
    #[cfg(feature = "tokio")]
    notify: tokio::sync::Notify,
}

impl Inner {
    fn new() -> io::Result<Inner> {
        Ok(Inner {
            requested: AtomicBool::new(false),
            lock: Mutex::new(()),
            cond: Condvar::new(),
            wake: UnixStream::pair()?,
            #[cfg(feature = "tokio")]
            notify: tokio::sync::Notify::new(),
        })
    }
}

fn set_nonblocking(fd: &impl AsFd) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_fd(), FcntlArg::F_GETFL)?);
    if !flags.contains(OFlag::O_NONBLOCK) {
        fcntl(fd.as_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    }
    Ok(())
}

/// The one stop signal of the process, installed on first use.
static INSTALLED: Mutex<Option<Stop>> = Mutex::new(None);

impl Stop {
    /// The process's stop signal; the first call routes SIGTERM (and, if `interrupt`, SIGINT)
    /// to it through a self-pipe read by a small thread.
    pub(crate) fn install(interrupt: bool) -> io::Result<Stop> {
        let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(stop) = installed.as_ref() {
            return Ok(stop.clone());
        }
        let stop = Stop {
            inner: Arc::new(Inner::new()?),
        };
        let (mut read, write) = UnixStream::pair()?;
        signal_hook::low_level::pipe::register(libc::SIGTERM, write.try_clone()?)?;
        if interrupt {
            signal_hook::low_level::pipe::register(libc::SIGINT, write)?;
        }
        let signalled = stop.clone();
        std::thread::Builder::new()
            .name("master-process-stop".into())
            .spawn(move || {
                let mut byte = [0u8; 1];
                while !matches!(read.read(&mut byte), Ok(1)) {}
                signalled.trigger();
            })?;
        *installed = Some(stop.clone());
        Ok(stop)
    }

    /// Marks the stop as asked and wakes every waiter.
    fn trigger(&self) {
        let _guard = self.inner.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.inner.requested.store(true, Ordering::SeqCst);
        self.inner.cond.notify_all();
        let _ = (&self.inner.wake.1).write(b"x");
        #[cfg(feature = "tokio")]
        self.inner.notify.notify_waiters();
    }

    /// Whether a stop was asked.
    ///
    /// ```no_run
    /// let worker = master_process::init();
    /// let stop = worker.stop()?;
    /// while !stop.requested() {
    ///     // serve one more batch...
    ///     # break;
    /// }
    /// # Ok::<(), master_process::Error>(())
    /// ```
    pub fn requested(&self) -> bool {
        self.inner.requested.load(Ordering::SeqCst)
    }

    /// Blocks the calling thread until a stop is asked.
    ///
    /// ```no_run
    /// let worker = master_process::init();
    /// let stop = worker.stop()?;
    /// stop.wait();
    /// println!("draining");
    /// # Ok::<(), master_process::Error>(())
    /// ```
    pub fn wait(&self) {
        let mut guard = self.inner.lock.lock().unwrap_or_else(|e| e.into_inner());
        while !self.requested() {
            guard = self
                .inner
                .cond
                .wait(guard)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Blocks until a stop is asked or `timeout` passes; returns whether it was asked.
    ///
    /// ```no_run
    /// let worker = master_process::init();
    /// let stop = worker.stop()?;
    /// if stop.wait_timeout(std::time::Duration::from_secs(1)) {
    ///     println!("stopping");
    /// }
    /// # Ok::<(), master_process::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut guard = self.inner.lock.lock().unwrap_or_else(|e| e.into_inner());
        while !self.requested() {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            guard = self
                .inner
                .cond
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// Waits for the next connection on `listener`, or for a stop: `None` once a stop is
    /// asked. For thread-per-connection servers: stop accepting when told to, then let the
    /// connections in hand finish.
    ///
    /// The listener is switched to non-blocking mode (shared with the other workers, as any
    /// event loop would); connections are returned in blocking mode.
    ///
    /// # Errors
    /// `poll` or `accept` fail for another reason than a lost race with another worker.
    ///
    /// ```no_run
    /// let mut worker = master_process::init();
    /// let listener = worker.tcp_listener(0)?;
    /// let stop = worker.stop()?;
    /// worker.ready()?;
    /// std::thread::scope(|s| -> std::io::Result<()> {
    ///     while let Some((stream, _peer)) = stop.accept(&listener)? {
    ///         s.spawn(move || { /* serve `stream` */ let _ = stream; });
    ///     }
    ///     Ok(())
    /// })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn accept(&self, listener: &TcpListener) -> io::Result<Option<(TcpStream, SocketAddr)>> {
        self.accept_with(listener, || {
            let (stream, peer) = listener.accept()?;
            stream.set_nonblocking(false)?;
            Ok((stream, peer))
        })
    }

    /// [`Stop::accept`] for a unix listener.
    ///
    /// # Errors
    /// As [`Stop::accept`].
    ///
    /// ```no_run
    /// let mut worker = master_process::init();
    /// let listener = worker.unix_listener(0)?;
    /// let stop = worker.stop()?;
    /// while let Some((stream, _)) = stop.accept_unix(&listener)? {
    ///     let _ = stream;
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn accept_unix(
        &self,
        listener: &UnixListener,
    ) -> io::Result<Option<(UnixStream, std::os::unix::net::SocketAddr)>> {
        self.accept_with(listener, || {
            let (stream, peer) = listener.accept()?;
            stream.set_nonblocking(false)?;
            Ok((stream, peer))
        })
    }

    fn accept_with<T>(
        &self,
        listener: &impl AsFd,
        accept: impl Fn() -> io::Result<T>,
    ) -> io::Result<Option<T>> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        set_nonblocking(listener)?;
        loop {
            if self.requested() {
                return Ok(None);
            }
            let mut fds = [
                PollFd::new(listener.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.inner.wake.0.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            if self.requested() {
                return Ok(None);
            }
            match accept() {
                Ok(conn) => return Ok(Some(conn)),
                // Another worker took it, or the client gave up: wait again.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::Interrupted
                            | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Completes when a stop is asked (feature `tokio`): hand it to a server's graceful
    /// shutdown.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), master_process::Error> {
    /// let worker = master_process::init();
    /// let stop = worker.stop()?;
    /// stop.wait_async().await;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "tokio")]
    pub async fn wait_async(&self) {
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            // Registered before the check: a trigger in between is not lost.
            notified.as_mut().enable();
            if self.requested() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_wake_when_the_stop_is_triggered() {
        let stop = Stop {
            inner: Arc::new(Inner::new().unwrap()),
        };
        assert!(!stop.requested());
        assert!(!stop.wait_timeout(Duration::from_millis(1)));
        let waiter = {
            let stop = stop.clone();
            std::thread::spawn(move || stop.wait())
        };
        stop.trigger();
        waiter.join().unwrap();
        assert!(stop.requested());
        assert!(stop.wait_timeout(Duration::ZERO));
    }
}
