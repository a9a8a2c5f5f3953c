//! The crate's one error type.
//!
//! Every variant carries the context a user needs to fix the problem: which value, which
//! path, which command. [`Error::exit_code`] maps each to the documented exit code: `2` for
//! usage errors (bad values, a port in use, a missing command), `1` for anything else.

use std::io;
use std::path::PathBuf;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in master-process.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value (flag or environment variable) is invalid.
    #[error("invalid {name} {value:?}: {reason}")]
    InvalidValue {
        /// The flag or environment variable, e.g. `WORKERS`.
        name: String,
        /// The value as given.
        value: String,
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// No worker command was given.
    #[error("no command given: usage is `master-process [OPTIONS] -- <command> [args...]`")]
    NoCommand,

    /// The worker command cannot be found or executed.
    #[error("command {program:?} {reason}")]
    CommandNotFound {
        /// The program as given.
        program: String,
        /// Why it cannot run.
        reason: String,
    },

    /// No listener: neither `--listen` nor `PORT` was given.
    #[error("nothing to listen on: give --listen SPEC (e.g. --listen 8080) or set PORT")]
    NoListener,

    /// A listener could not be bound.
    #[error("cannot listen on {spec}: {reason}")]
    Bind {
        /// The listener as given.
        spec: String,
        /// Why, in words that say how to fix it.
        reason: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// A unix socket path is taken by something that is not a socket: never deleted.
    #[error(
        "cannot listen on {path}: it exists and is not a socket; move it away or choose another path"
    )]
    NotASocket {
        /// The path.
        path: PathBuf,
    },

    /// Sockets inherited by socket activation (`LISTEN_FDS`) are unusable.
    #[error("socket activation: {reason}")]
    Activation {
        /// What is wrong.
        reason: String,
    },

    /// A folder the master would listen in can be written to by someone else.
    #[error(
        "the control folder {path} is not safe: {reason}; remove it, or give --control PATH \
         in a folder only you can write to"
    )]
    UnsafeFolder {
        /// The folder.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A control command cannot tell which master it is for.
    #[error("{reason}")]
    NoMaster {
        /// Why.
        reason: String,
    },

    /// A worker could not be started.
    #[error("cannot start worker {program:?}")]
    Spawn {
        /// The worker program.
        program: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// A system call or file operation failed.
    #[error("{context}")]
    Io {
        /// What we were doing.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// The process exit code for this error: `2` for usage errors, `1` otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::InvalidValue { .. }
            | Error::NoCommand
            | Error::CommandNotFound { .. }
            | Error::NoListener
            | Error::Bind { .. }
            | Error::NotASocket { .. }
            | Error::Activation { .. }
            | Error::UnsafeFolder { .. }
            | Error::NoMaster { .. } => 2,
            Error::Spawn { .. } | Error::Io { .. } => 1,
        }
    }

    /// Prints the error and its causes on stderr, one line each.
    pub fn report(&self) {
        eprintln!("master-process: error: {self}");
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            eprintln!("  caused by: {cause}");
            source = cause.source();
        }
    }

    /// An [`Error::InvalidValue`].
    pub(crate) fn invalid(
        name: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Error::InvalidValue {
            name: name.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }

    /// An [`Error::Io`] with what we were doing.
    pub(crate) fn io(context: impl Into<String>, source: impl Into<io::Error>) -> Self {
        Error::Io {
            context: context.into(),
            source: source.into(),
        }
    }
}

/// For apps whose `main` returns `std::io::Result`: the error (with its context) inside an
/// `io::Error` of the matching kind.
impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match &e {
            Error::Io { source, .. } | Error::Spawn { source, .. } | Error::Bind { source, .. } => {
                source.kind()
            }
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}
