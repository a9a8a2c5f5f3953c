//! `master-process status --watch`: the status, redrawn every second in the terminal (as
//! `top` or `pm2 monit` do), until `q`, Ctrl-C or SIGTERM; the terminal is left as it was.
//!
//! The view runs on the alternate screen with the cursor hidden and the keyboard in
//! character mode (no echo, no line buffering); all three are undone on the way out, also
//! when the master goes away or a signal ends the view. It is a line that says when it was
//! drawn, the status table, and the last reloads with their outcomes below it.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::termios::{self, LocalFlags, SetArg, Termios};

use super::client::{get, request, status_table};
use super::{Record, Request};

/// How often the view is redrawn.
const REFRESH: Duration = Duration::from_secs(1);

/// Runs the view against the master at `path`; returns the exit code.
pub fn watch(path: &Path) -> u8 {
    let stdin = io::stdin();
    let stdout = io::stdout();
    if !nix::unistd::isatty(stdout.as_fd()).unwrap_or(false)
        || !nix::unistd::isatty(stdin.as_fd()).unwrap_or(false)
    {
        eprintln!(
            "master-process: error: status --watch needs a terminal; use status --json in \
             scripts"
        );
        return 2;
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        let _ = signal_hook::flag::register(signal, Arc::clone(&stop));
    }
    let resized = Arc::new(AtomicBool::new(false));
    let _ = signal_hook::flag::register(libc::SIGWINCH, Arc::clone(&resized));
    let terminal = match Screen::enter() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("master-process: error: cannot use the terminal: {e}");
            return 1;
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let body = match request(path, Request::Status, Some(Duration::from_secs(2))) {
            Ok(records) => view(&records),
            Err(e) => format!("{e}\n\n(trying again every second)\n"),
        };
        terminal.draw(&body);
        if wait_for_quit(REFRESH, &stop, &resized) {
            break;
        }
    }
    drop(terminal);
    0
}

/// The view's text: a title line, the status table, the last reloads.
pub fn view(records: &[Record]) -> String {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    let mut out = format!("master-process status --watch   {now}   q: quit\n\n");
    let recent: Vec<&Record> = records
        .iter()
        .filter(|r| r.kind == "recent_reload")
        .take(5)
        .collect();
    out.push_str(&status_table(records));
    if !recent.is_empty() {
        out.push_str("\nrecent reloads:\n");
        for r in recent {
            let _ = write!(
                out,
                "  {:>4}  {:<6}  {:>6} ms",
                get(r, "generation"),
                get(r, "outcome"),
                get(r, "took_ms")
            );
            if let Some(reason) = r.get("reason") {
                let _ = write!(out, "  {reason}");
            }
            out.push('\n');
        }
    }
    out
}

/// Waits up to `timeout` for `q` (or Ctrl-D) on stdin or a stop signal (Ctrl-C stays a
/// SIGINT: the terminal keeps `ISIG`); returns whether to quit. A resize returns at once, to redraw.
fn wait_for_quit(timeout: Duration, stop: &AtomicBool, resized: &AtomicBool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        if resized.swap(false, Ordering::Relaxed) {
            return false;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        let stdin = io::stdin();
        let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
        let ms = left.as_millis().min(u128::from(u16::MAX)) as u16;
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => return false,
            Ok(_) => {
                let mut key = [0u8; 16];
                match nix::unistd::read(&stdin, &mut key) {
                    Ok(0) => return true,
                    Ok(n) => {
                        if key[..n].iter().any(|b| matches!(b, b'q' | b'Q' | 4)) {
                            return true;
                        }
                    }
                    Err(_) => return true,
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return true,
        }
    }
}

/// The terminal in the view's mode; put back as it was when dropped.
struct Screen {
    saved: Termios,
}

impl Screen {
    fn enter() -> io::Result<Screen> {
        let stdin = io::stdin();
        let saved = termios::tcgetattr(&stdin)?;
        let mut raw = saved.clone();
        raw.local_flags
            .remove(LocalFlags::ICANON | LocalFlags::ECHO);
        termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw)?;
        // The alternate screen, cursor hidden.
        let mut out = io::stdout().lock();
        out.write_all(b"\x1b[?1049h\x1b[?25l")?;
        out.flush()?;
        Ok(Screen { saved })
    }

    /// Draws `text` from the top left, each line cut to the terminal's width, as many as fit.
    fn draw(&self, text: &str) {
        let (rows, cols) = size();
        let mut frame = String::from("\x1b[H\x1b[2J");
        for line in text.lines().take(rows) {
            let cut: String = line.chars().take(cols).collect();
            frame.push_str(&cut);
            frame.push_str("\r\n");
        }
        let mut out = io::stdout().lock();
        let _ = out.write_all(frame.as_bytes());
        let _ = out.flush();
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let mut out = io::stdout().lock();
        let _ = out.write_all(b"\x1b[?25h\x1b[?1049l");
        let _ = out.flush();
        let _ = termios::tcsetattr(io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}

/// The terminal's rows and columns (24 x 80 if it cannot tell).
fn size() -> (usize, usize) {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `struct winsize` into the pointer, which is valid for it.
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    if rc == 0 && ws.ws_row > 0 && ws.ws_col > 0 {
        (usize::from(ws.ws_row), usize::from(ws.ws_col))
    } else {
        (24, 80)
    }
}
