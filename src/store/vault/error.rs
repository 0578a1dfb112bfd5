//! Vault's answers as our errors: by HTTP status, and for check-and-set
//! conflicts by status and the error the body carries.

use vaultrs::error::ClientError;

use crate::error::Error;

/// A store error as a sentence, without anything the server echoed back
/// beyond its status and error messages.
pub fn describe(e: &ClientError) -> String {
    match e {
        ClientError::APIError { code, errors } if errors.is_empty() => format!("HTTP {code}"),
        ClientError::APIError { code, errors } => {
            let errors: Vec<String> = errors.iter().map(|e| one_line(e)).collect();
            format!("HTTP {code}: {}", errors.join("; "))
        }
        ClientError::RestClientError {
            source: rustify::errors::ClientError::ServerResponseError { code, .. },
        } => format!("HTTP {code}"),
        ClientError::RestClientError { source } => {
            // Walk to the innermost cause: "connection refused" says more than
            // "error sending request".
            let mut msg = source.to_string();
            let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(source);
            while let Some(c) = cause {
                msg = c.to_string();
                cause = c.source();
            }
            msg
        }
        other => other.to_string(),
    }
}

/// One of Vault's error messages on one line: its multi-error form
/// (`1 error occurred:\n\t* permission denied\n\n`) as its items joined
/// by `; `, any other line break as a space, so that a log record stays
/// one line.
fn one_line(msg: &str) -> String {
    let items: Vec<&str> = msg
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter(|l| !(l.ends_with(" error occurred:") || l.ends_with(" errors occurred:")))
        .map(|l| l.strip_prefix("* ").unwrap_or(l))
        .collect();
    items.join("; ")
}

/// Whether a request failed because the server did not speak TLS where
/// TLS was expected (`https://` against an `http://` server): rustls then
/// reads an HTTP answer as a TLS record and refuses its content type. The
/// rustls error is found in the error chain by type, also inside the
/// `io::Error`s that the connector wraps it in (two, nested: an
/// `io::Error`'s `source()` skips the error it wraps, so each is opened).
pub fn is_not_tls(e: &ClientError) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        let mut wrapped = c;
        loop {
            if let Some(tls) = wrapped.downcast_ref::<rustls::Error>() {
                return matches!(
                    tls,
                    rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)
                );
            }
            match wrapped
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
            {
                Some(inner) => wrapped = inner,
                None => break,
            }
        }
        cause = c.source();
    }
    false
}

/// The HTTP status of a failed request. vaultrs gives `APIError` only when
/// the body carries an `errors` list; a KV v2 read of a deleted secret is a
/// 404 whose body holds metadata instead, and surfaces as a raw response error.
pub fn status(e: &ClientError) -> Option<u16> {
    match e {
        ClientError::APIError { code, .. } => Some(*code),
        ClientError::RestClientError {
            source: rustify::errors::ClientError::ServerResponseError { code, .. },
        } => Some(*code),
        _ => None,
    }
}

/// Whether Vault refused a check-and-set write: a 400 whose body names
/// the check-and-set parameter (Vault has no status of its own for it).
pub fn is_cas_conflict(e: &ClientError) -> bool {
    match e {
        ClientError::APIError { code: 400, errors } => {
            errors.iter().any(|m| m.starts_with("check-and-set"))
        }
        _ => false,
    }
}

/// The storage's limit when a write was refused for its size: Raft storage
/// answers 500 "put failed due to value being too large; got N bytes, max
/// M bytes" (the only way to tell it from other 500s is its text).
fn too_large(e: &ClientError) -> Option<u64> {
    let ClientError::APIError { errors, .. } = e else {
        return None;
    };
    let msg = errors.iter().find(|m| m.contains("too large"))?;
    let limit = msg
        .split("max ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok());
    Some(limit.unwrap_or(1024 * 1024))
}

/// The error of a failed request.
pub fn to_error(e: &ClientError) -> Error {
    if is_cas_conflict(e) {
        return Error::CasConflict;
    }
    match status(e) {
        Some(403) => Error::PermissionDenied(describe(e)),
        Some(400) => Error::Invalid(describe(e)),
        Some(500) => match too_large(e) {
            Some(limit) => Error::TooBig(limit),
            // The server answered, and failed the request: not an outage
            // (a node that cannot answer is another node's turn, see
            // `nodes`), and asking again would fail again.
            None => Error::Protocol(format!("the server failed the request: {}", describe(e))),
        },
        Some(_) => Error::Unavailable(describe(e)),
        None if matches!(e, ClientError::RestClientError { .. }) => Error::Unavailable(describe(e)),
        None => Error::Protocol(describe(e)),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// An API error answer with `code` and `errors` (tests of the other
    /// store modules use it too).
    pub(in crate::store::vault) fn api(code: u16, errors: &[&str]) -> ClientError {
        ClientError::APIError {
            code,
            errors: errors.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_cas_mismatch_is_a_conflict_and_other_400s_are_not() {
        let cas = api(
            400,
            &["check-and-set parameter did not match the current version"],
        );
        assert!(matches!(to_error(&cas), Error::CasConflict));
        assert!(matches!(
            to_error(&api(400, &["bad path"])),
            Error::Invalid(_)
        ));
        assert!(matches!(
            to_error(&api(403, &[])),
            Error::PermissionDenied(_)
        ));
        assert!(matches!(to_error(&api(503, &[])), Error::Unavailable(_)));
    }

    #[test]
    fn vault_s_multi_line_errors_are_told_on_one_line() {
        let denied = api(403, &["1 error occurred:\n\t* permission denied\n\n"]);
        assert_eq!(describe(&denied), "HTTP 403: permission denied");
        let two = api(
            400,
            &["2 errors occurred:\n\t* first\n\t* second\n\n", "plain"],
        );
        assert_eq!(describe(&two), "HTTP 400: first; second; plain");
    }

    #[test]
    fn a_500_is_no_outage_and_an_entry_over_the_limit_is_too_big() {
        let big = api(
            500,
            &["1 error occurred:\n\t* put failed due to value being too large; got 2000000 bytes, max 1048576 bytes\n\n"],
        );
        assert!(
            matches!(to_error(&big), Error::TooBig(1048576)),
            "{:?}",
            to_error(&big)
        );
        let other = to_error(&api(500, &["internal error"]));
        assert!(matches!(other, Error::Protocol(_)), "{other:?}");
        assert!(!other.to_string().contains("unavailable"));
    }
}
