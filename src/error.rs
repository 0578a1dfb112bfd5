//! The one error type of secretfs. Every error knows the errno it becomes at
//! the FUSE boundary and keeps a human reason for the log. No error ever
//! carries a secret value.

use std::time::Duration;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, with enough context for one log line.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The path, secret or key does not exist (404).
    #[error("not found")]
    NotFound,
    /// The store refused the token (403).
    #[error("permission denied by the store: {0}")]
    PermissionDenied(String),
    /// A `--allow` rule covers the file and none lets the caller in.
    #[error("not allowed by the --allow rules: {0}")]
    NotAllowed(String),
    /// The store could not be reached or answered 5xx.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The operation used up its deadline (--timeout for all the store
    /// requests it makes together), with the store still answering.
    #[error("the operation ran out of time after {}", humantime::format_duration(*.0))]
    OutOfTime(Duration),
    /// The store kept refusing requests for their rate (AWS throttling),
    /// after the client's own retries.
    #[error("the store is throttling requests: {0}")]
    Throttled(String),
    /// Another writer held the store's lock (the store file's
    /// `NAME.lock`) past the wait allowed: nothing was written, and trying
    /// again may succeed.
    #[error("another writer holds the store's lock: {0}")]
    Locked(String),
    /// A backend request ran past its deadline.
    #[error("store request timed out after {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// A write was sent and its connection failed before the answer came
    /// (a server killed, a connection reset): it may have been applied.
    #[error("a write was sent and got no answer: {0}")]
    Unanswered(String),
    /// A write got no answer (the error inside), and the store could not
    /// tell either whether it was applied.
    #[error("outcome unknown: the write may or may not have been applied ({0})")]
    OutcomeUnknown(Box<Error>),
    /// The store answered something we do not understand.
    #[error("unexpected answer from the store: {0}")]
    Protocol(String),
    /// A template (`--layout templates:DIR`) fails to render: the reason,
    /// never a value. Logged once by the core when it is found.
    #[error("template fails to render: {0}")]
    Template(String),
    /// What depends on a layer of a mount with `--layer` that cannot be
    /// read now (a value it may override): that layer's error inside.
    /// Logged once per layer by the store of layers, not per request.
    #[error("layer {layer} cannot be read: {cause}")]
    LayerUnreadable {
        /// The layer's SOURCE.
        layer: String,
        /// What the layer answered.
        cause: Box<Error>,
    },
    /// The mount is read-only, or the operation writes and is not supported.
    #[error("read-only file system")]
    ReadOnly,
    /// A name or an argument is not acceptable.
    #[error("invalid: {0}")]
    Invalid(String),
    /// A name longer than 255 bytes.
    #[error("name longer than 255 bytes")]
    NameTooLong,
    /// An operation secretfs does not offer (`fallocate`), or one the store
    /// cannot do (versions or metadata on KV v1), or an extended attribute
    /// outside `user.` (none is kept).
    #[error("operation not supported: {0}")]
    NotSupported(&'static str),
    /// The inode or handle is unknown (the kernel asked about something we forgot).
    #[error("stale inode or handle")]
    Stale,
    /// A check-and-set write kept losing to concurrent writers.
    #[error("the secret kept changing under us (check-and-set conflict)")]
    CasConflict,
    /// A value over the size limit.
    #[error("value larger than the limit of {0} bytes")]
    TooBig(u64),
    /// Bytes that cannot be stored as a string value.
    #[error("value is not valid UTF-8")]
    NotUtf8,
    /// A rename between two secrets, which no single store write can do.
    #[error("rename across secrets")]
    CrossSecret,
    /// The name exists already.
    #[error("already exists")]
    Exists,
    /// A directory that still holds keys or children.
    #[error("directory not empty")]
    NotEmpty,
    /// An attribute the mount fixes (owner, mode) cannot be changed.
    #[error("operation not permitted: {0}")]
    NotPermitted(&'static str),
    /// The operation does not apply to this kind of node.
    #[error("is a directory")]
    IsDir,
    /// The operation does not apply to this kind of node.
    #[error("not a directory")]
    NotDir,
    /// No extended attribute of that name.
    #[error("no such extended attribute")]
    NoAttribute,
    /// The audit log (`--audit-log`) could not record the operation, which
    /// therefore fails (fail closed): the reason, never a value.
    #[error("the audit log cannot record: {0}")]
    AuditFailed(String),
    /// The answer needs the store, and the caller asked not to wait for it
    /// (the FUSE adapter then asks again off its request threads). Never
    /// reaches a program.
    #[error("the answer needs the store")]
    WouldBlock,
}

impl Error {
    /// The errno this error becomes at the FUSE boundary.
    pub fn errno(&self) -> i32 {
        match self {
            Error::NotFound => libc::ENOENT,
            Error::LayerUnreadable { cause, .. } => cause.errno(),
            Error::PermissionDenied(_) | Error::NotAllowed(_) => libc::EACCES,
            Error::Unavailable(_)
            | Error::Unanswered(_)
            | Error::Timeout(_)
            | Error::OutOfTime(_)
            | Error::OutcomeUnknown(_)
            | Error::Protocol(_)
            | Error::Template(_)
            | Error::AuditFailed(_) => libc::EIO,
            Error::ReadOnly => libc::EROFS,
            Error::Invalid(_) => libc::EINVAL,
            Error::NameTooLong => libc::ENAMETOOLONG,
            Error::NotSupported(_) => libc::EOPNOTSUPP,
            Error::Stale => libc::ESTALE,
            Error::CasConflict | Error::Throttled(_) | Error::Locked(_) => libc::EAGAIN,
            Error::TooBig(_) => libc::EFBIG,
            Error::NotUtf8 => libc::EILSEQ,
            Error::CrossSecret => libc::EXDEV,
            Error::Exists => libc::EEXIST,
            Error::NotEmpty => libc::ENOTEMPTY,
            Error::NotPermitted(_) => libc::EPERM,
            Error::IsDir => libc::EISDIR,
            Error::NotDir => libc::ENOTDIR,
            Error::NoAttribute => libc::ENODATA,
            Error::WouldBlock => libc::EAGAIN,
        }
    }

    /// Whether a cached copy may stand in for a fresh answer (stale-if-error):
    /// only when the store could not answer, never when it said no.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Unavailable(_)
                | Error::Throttled(_)
                | Error::Unanswered(_)
                | Error::Timeout(_)
                | Error::OutOfTime(_)
                | Error::OutcomeUnknown(_)
                | Error::Protocol(_)
        )
    }

    /// Whether this is an everyday answer (a shell probing names) rather than
    /// a failure worth a warning in the log.
    pub fn is_expected(&self) -> bool {
        matches!(
            self,
            Error::NotFound
                | Error::IsDir
                | Error::NotDir
                | Error::Exists
                | Error::NotEmpty
                | Error::NameTooLong
                | Error::NotSupported(_)
                | Error::CrossSecret
                | Error::NoAttribute
                | Error::WouldBlock
                // Logged once per reason by the core.
                | Error::Template(_)
                // Logged once per layer by the store of layers.
                | Error::LayerUnreadable { .. }
                // Logged (and audited) where the rules refused it.
                | Error::NotAllowed(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_the_errno_in_the_design() {
        assert_eq!(Error::NotFound.errno(), libc::ENOENT);
        assert_eq!(Error::PermissionDenied("x".into()).errno(), libc::EACCES);
        assert_eq!(Error::Unavailable("x".into()).errno(), libc::EIO);
        assert_eq!(Error::Timeout(Duration::from_secs(1)).errno(), libc::EIO);
        assert_eq!(Error::ReadOnly.errno(), libc::EROFS);
        assert_eq!(Error::Invalid("x".into()).errno(), libc::EINVAL);
        assert_eq!(Error::CasConflict.errno(), libc::EAGAIN);
        assert_eq!(Error::Throttled("x".into()).errno(), libc::EAGAIN);
        assert_eq!(Error::Locked("x".into()).errno(), libc::EAGAIN);
        assert_eq!(Error::TooBig(1).errno(), libc::EFBIG);
        assert_eq!(Error::NotUtf8.errno(), libc::EILSEQ);
        assert_eq!(Error::CrossSecret.errno(), libc::EXDEV);
        assert_eq!(Error::NoAttribute.errno(), libc::ENODATA);
        assert_eq!(Error::NameTooLong.errno(), libc::ENAMETOOLONG);
        assert_eq!(Error::NotSupported("fallocate").errno(), libc::EOPNOTSUPP);
    }

    #[test]
    fn only_store_outages_allow_stale_answers() {
        assert!(Error::Unavailable("down".into()).is_transient());
        assert!(Error::Timeout(Duration::from_secs(1)).is_transient());
        assert!(!Error::PermissionDenied("no".into()).is_transient());
        assert!(!Error::NotFound.is_transient());
    }
}
