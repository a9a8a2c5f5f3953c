//! Adoption: an unchanged app that calls `bind()` and `listen()` itself gets the master's
//! listening socket instead of its own, so that it needs no `LISTEN_FDS` support.
//!
//! # Why
//!
//! Most servers bind their port themselves. Node's `listen({fd: 3})` calls `listen(3, 511)`
//! again, shrinking the shared queue; Node launchers (`npm start`) mark fd 3 close-on-exec and
//! never pass it on. `LD_PRELOAD` cannot reach static binaries (Go, musl, `gcc -static`),
//! setuid programs or launchers that scrub the environment. seccomp user notification
//! (seccomp_unotify(2)) reaches every process of the worker's tree, whatever it is made of:
//!
//! 1. Between `fork` and `exec`, [`ChildFilter::install`] puts a filter in the worker that
//!    sends `bind`, `listen` (and `unlink`/`unlinkat` when the master holds a unix socket) to
//!    the master, and every other call through untouched. The filter is inherited by every
//!    descendant and cannot be removed. The notify fd reaches the master over a socketpair
//!    ([`receive`]).
//! 2. The master polls that fd ([`Notifier`]). For each call it reads the sockaddr or path from
//!    the app's memory, inspects the app's socket through `pidfd_getfd`, and confirms with
//!    `SECCOMP_IOCTL_NOTIF_ID_VALID` that what it read belongs to the blocked call.
//! 3. [`decide()`] says what to answer (pure, unit-tested): install the held socket at the
//!    app's descriptor number (`SECCOMP_IOCTL_NOTIF_ADDFD` + `SECCOMP_ADDFD_FLAG_SETFD`, like
//!    `dup2`) and report success without running the bind; report a `listen` of a held socket
//!    as done (the master's backlog stays); keep a held unix socket's file from an `unlink`;
//!    let anything else run as the app asked (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`); or refuse
//!    (`EADDRINUSE`) a held port asked in a way the master will not serve, with one line
//!    saying why.
//!
//! # Why the races are harmless
//!
//! The app may change the sockaddr after we read it (another thread). A `Continue` runs the
//! call the kernel then reads, with the app's own rights: it grants nothing the app could not
//! do itself (a bind of a held address fails with `EADDRINUSE`). Every emulated answer
//! (adopt, keep) is computed from our own copy and never runs the app's call, so a changed
//! pointer cannot steer it. `ID_VALID` after reading guarantees that the thread id we read
//! through was still the caller.
//!
//! # What an adopted app sees
//!
//! - Exactly the address and family it asked for: a socket of another family gives CPython and
//!   C programs garbage addresses, and a wider address than asked would expose a loopback
//!   service. Those are refused with the `--listen` to use.
//! - `O_NONBLOCK` belongs to the open file description, shared by every generation: the first
//!   adopter fixes it, a later one asking the other mode is refused (a blocking generation
//!   would freeze a non-blocking one inside `accept`).
//! - Options it set before `bind` (`SO_REUSEADDR`) were on its discarded socket; options set
//!   after `listen` land on the shared socket and stay for later generations.
//!
//! # Costs and limits
//!
//! Every `bind`/`listen` of the tree goes through the master (BPF cannot read a sockaddr), a
//! few tens of microseconds each; other calls pay the filter's verdict cache only. A stopped
//! master leaves the app blocked in the call; a dead one makes every trapped call fail with
//! `ENOSYS`. Without `CAP_SYS_ADMIN` the tree gets `no_new_privs` (no setuid). A tree already
//! under another notifier (some sandboxes) cannot get a second one (`EBUSY`): it runs without
//! adoption. Calls through a foreign ABI (i386, x32) are not trapped.

mod decide;
mod filter;

#[allow(unused_imports)] // The API the master will use once wired.
pub use decide::{
    AppSocket, BindTarget, Decision, Family, FileId, Held, HeldAddr, Refusal, Request, Sockaddr,
    concerns, decide, names_held_file, parse_sockaddr,
};
#[allow(unused_imports)] // The API the master will use once wired.
pub use filter::{ChildFilter, Received, Unavailable, receive};
