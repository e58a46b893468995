//! Errors of the daemon and its CLI. Each names the thing that was wrong
//! and the value seen.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("vhost-user daemon: {0}")]
    Daemon(String),
    #[error("admin socket {path}: {source}")]
    Admin {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("admin request failed: {0}")]
    AdminRequest(String),
    #[error("--socket-group: {what} of {path}: {source}")]
    SocketGroup {
        path: PathBuf,
        what: String,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;
