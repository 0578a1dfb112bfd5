//! The `env` view: a secret `P` is one file `P.env` beside it, one
//! `KEY=value` line per key, sorted, for `source`, systemd's
//! `EnvironmentFile=`, python-dotenv and `docker --env-file`. Writing the
//! file replaces the secret's data with the pairs written.
//!
//! Quoting, chosen per value so that every reader that can read the value
//! back exactly does (docs/SEMANTICS.md has the table):
//!
//! 1. only `A-Z a-z 0-9 _ @ % + = : , . / -` (or empty): unquoted, which
//!    every reader, `docker --env-file` included, reads as it is;
//! 2. no `'`, no `\\` and no final `\`: single quotes, literal to bash,
//!    systemd and python-dotenv (newlines, `$`, `"`, `#` included);
//! 3. no `$` and no backquote: double quotes, with `\` and `"` escaped by a
//!    backslash, read alike by all three;
//! 4. anything else: double quotes with `\`, `"`, `$` and backquote
//!    escaped, as systemd writes them: exact for bash and systemd.
//!
//! Keys that cannot be environment variable names, and values holding a
//! NUL byte, are left out with a warning, logged once per key name (of
//! the last [`WARNED_NAMES`] warned of).

use std::num::NonZeroUsize;
use std::sync::{Mutex, OnceLock};

use lru::LruCache;

use secrecy::SecretSlice;

use super::whole::Format;
use crate::error::{Error, Result};
use crate::store::{KeyName, Secret, SecretData, SecretValue};

/// One `P.env` file per secret (the view is [`Whole<Env>`](super::whole::Whole)).
pub struct Env;

/// Whether `name` can be an environment variable name that every reader
/// takes: a letter or `_`, then letters, digits and `_`.
pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether a key of this name and value shows in the file.
fn shows(name: &str, value: &SecretValue) -> bool {
    is_env_name(name) && !value.expose().contains(&0)
}

/// How many key names the warnings remember: a store with more bad
/// names than that gets some warned of again, rather than a set that
/// grows with every name ever seen.
const WARNED_NAMES: NonZeroUsize = NonZeroUsize::new(256).expect("not zero");

/// Whether `name` is not among the names warned of last (and now is).
fn first_warning(warned: &mut LruCache<String, ()>, name: &str) -> bool {
    if warned.get(name).is_some() {
        return false;
    }
    warned.put(name.to_string(), ());
    true
}

/// Logs, once per key name, that a key is left out of `.env` files.
fn warn_left_out(name: &str, why: &'static str) {
    static WARNED: OnceLock<Mutex<LruCache<String, ()>>> = OnceLock::new();
    let mut warned = WARNED
        .get_or_init(|| Mutex::new(LruCache::new(WARNED_NAMES)))
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if first_warning(&mut warned, name) {
        tracing::warn!(key = name, reason = why, "key left out of .env files");
    }
}

fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"_@%+=:,./-".contains(&b)
}

/// Appends `value` quoted (see the module's doc) to `out`.
pub fn push_quoted(out: &mut Vec<u8>, value: &[u8]) {
    if value.iter().all(|&b| is_plain(b)) {
        out.extend_from_slice(value);
        return;
    }
    let has = |b: u8| value.contains(&b);
    let double_backslash = value.windows(2).any(|w| w == b"\\\\");
    if !has(b'\'') && !double_backslash && value.last() != Some(&b'\\') {
        out.push(b'\'');
        out.extend_from_slice(value);
        out.push(b'\'');
        return;
    }
    let escape_expansions = has(b'$') || has(b'`');
    out.push(b'"');
    for &b in value {
        let escaped = b == b'\\' || b == b'"' || (escape_expansions && (b == b'$' || b == b'`'));
        if escaped {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// The file's bytes for `secret`.
fn render(secret: &Secret) -> SecretSlice<u8> {
    // Reserved at once (each byte at most doubled, plus quotes, `=` and
    // newline), so that no copy of a value is left in a buffer that grew.
    let room: usize = secret
        .keys
        .iter()
        .map(|(k, v)| k.len() + 2 * v.expose().len() + 4)
        .sum();
    let mut out = Vec::with_capacity(room);
    for (key, value) in &secret.keys {
        if !is_env_name(key) {
            warn_left_out(key, "not an environment variable name");
            continue;
        }
        if !shows(key, value) {
            warn_left_out(key, "the value holds a NUL byte");
            continue;
        }
        out.extend_from_slice(key.as_bytes());
        out.push(b'=');
        push_quoted(&mut out, value.expose());
        out.push(b'\n');
    }
    SecretSlice::from(out)
}

/// Reads an env file: `[export ]KEY=VALUE` lines, blank lines and `#`
/// comments. A value is unquoted (up to the end of the line or a ` #`
/// comment; no spaces, quotes, backslashes, `$` or backquotes), single
/// quoted (literal, newlines included) or double quoted (`\\`, `\"`, `\$`,
/// `` \` `` escape; a backslash before a newline joins the lines; any
/// other backslash is kept), as bash and systemd read them. A repeated key
/// takes its last value.
pub fn parse(text: &str) -> Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut rest = text;
    let mut line_no = 1usize;
    let bad =
        |line: usize, why: &str| Error::Invalid(format!("line {line} of the .env file: {why}"));
    loop {
        rest = rest.trim_start_matches([' ', '\t']);
        let Some(first) = rest.chars().next() else {
            break;
        };
        if first == '\n' || first == '\r' || first == '#' {
            let end = rest.find('\n').map_or(rest.len(), |i| i + 1);
            rest = &rest[end..];
            line_no += 1;
            continue;
        }
        if let Some(after) = rest.strip_prefix("export") {
            if after.starts_with([' ', '\t']) {
                rest = after.trim_start_matches([' ', '\t']);
            }
        }
        let Some(eq) = rest.find('=') else {
            return Err(bad(line_no, "not KEY=value"));
        };
        let key = &rest[..eq];
        if !is_env_name(key) {
            return Err(bad(line_no, "the key is not an environment variable name"));
        }
        rest = &rest[eq + 1..];
        let start_line = line_no;
        let mut value = String::new();
        match rest.chars().next() {
            Some('\'') => {
                let body = &rest[1..];
                let end = body
                    .find('\'')
                    .ok_or_else(|| bad(start_line, "a single quote is not closed"))?;
                value.push_str(&body[..end]);
                line_no += body[..end].matches('\n').count();
                rest = &body[end + 1..];
            }
            Some('"') => {
                let mut chars = rest[1..].char_indices();
                let mut closed = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '"' => {
                            closed = Some(i + 2);
                            break;
                        }
                        '\\' => match chars.next() {
                            Some((_, n @ ('\\' | '"' | '$' | '`'))) => value.push(n),
                            Some((_, '\n')) => line_no += 1,
                            Some((_, n)) => {
                                value.push('\\');
                                value.push(n);
                                line_no += usize::from(n == '\n');
                            }
                            None => {}
                        },
                        '\n' => {
                            value.push('\n');
                            line_no += 1;
                        }
                        c => value.push(c),
                    }
                }
                let end = closed.ok_or_else(|| bad(start_line, "a double quote is not closed"))?;
                rest = &rest[end..];
            }
            _ => {
                let end = rest.find(['\n', '\r']).unwrap_or(rest.len());
                let mut raw = &rest[..end];
                if let Some(i) = raw.find(" #").or_else(|| raw.find("\t#")) {
                    raw = &raw[..i];
                }
                let raw = raw.trim_end_matches([' ', '\t']);
                if raw.contains([' ', '\t', '\'', '"', '\\', '$', '`']) {
                    return Err(bad(
                        start_line,
                        "an unquoted value with spaces, quotes, backslashes, $ or ` (quote it)",
                    ));
                }
                value.push_str(raw);
                rest = &rest[end..];
            }
        }
        // After the value: spaces, a comment, the end of the line.
        let tail = rest.trim_start_matches([' ', '\t', '\r']);
        if let Some(c) = tail.chars().next() {
            if c != '\n' && c != '#' {
                return Err(bad(line_no, "text after the value"));
            }
        }
        let end = tail.find('\n').map_or(tail.len(), |i| i + 1);
        rest = &tail[end..];
        line_no += 1;
        pairs.push((key.to_string(), value));
    }
    Ok(pairs)
}

impl Format for Env {
    const NAME: &'static str = "env";
    const EXT: &'static str = ".env";
    const NOT_REMOVED: &'static str = "a secret is not deleted through its .env file";

    fn render(secret: &Secret) -> SecretSlice<u8> {
        render(secret)
    }

    /// The pairs written replace the data: one store write. A key that
    /// held non-string JSON keeps its type when its new text parses as
    /// such. Keys the file cannot show (names that are not environment
    /// variable names) were not in what the writer saw: they are kept.
    fn write(data: &mut SecretData, bytes: Vec<u8>) -> Result<()> {
        let bytes = secrecy::zeroize::Zeroizing::new(bytes);
        let text = std::str::from_utf8(&bytes).map_err(|_| Error::NotUtf8)?;
        let pairs = parse(text)?;
        let mut new = SecretData::new();
        for (k, v) in data.iter().filter(|(k, v)| !shows(k, v)) {
            new.insert(k.clone(), v.clone());
        }
        for (key, value) in pairs {
            let was = data.get(key.as_str()).map(SecretValue::kind);
            new.insert(
                KeyName::from(key),
                SecretValue::written(value.into_bytes(), was)?,
            );
        }
        *data = new;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;
    use serde_json::json;

    use super::*;

    #[test]
    fn the_names_warned_of_are_remembered_up_to_a_bound() {
        let mut warned = LruCache::new(WARNED_NAMES);
        assert!(first_warning(&mut warned, "1BAD"));
        assert!(!first_warning(&mut warned, "1BAD"), "warned twice");
        for i in 0..10_000 {
            assert!(first_warning(&mut warned, &format!("bad-{i}")));
            // Warned of again and again: stays remembered.
            assert!(!first_warning(&mut warned, "bad-0"));
        }
        assert_eq!(warned.len(), WARNED_NAMES.get());
        // The name warned of longest ago is forgotten, and told again.
        assert!(first_warning(&mut warned, "1BAD"));
    }

    /// Values no one quoting suits: quotes, `$`, backslashes, newlines,
    /// `#`, spaces, `=`, unicode, and their mixtures.
    pub(crate) const HOSTILE: &[&str] = &[
        "plain-value_1.2:3/4@x%y+z,=",
        "",
        "two words",
        "it's",
        "say \"hi\"",
        "$HOME and ${HOME} and $(id) and `id`",
        "back\\slash",
        "double\\\\backslash",
        "ends with \\",
        "line one\nline two\n",
        "# not a comment",
        "value # with hash",
        "  leading and trailing  ",
        "ünïcødé ✓ 🔑",
        "a=b=c",
        "it's $5 and `x` \\ \"q\"",
        "~/home",
        "tab\there",
        "\\n is not a newline",
    ];

    #[test]
    fn every_hostile_value_reads_back_through_the_parser() {
        for v in HOSTILE {
            let mut line = b"K=".to_vec();
            push_quoted(&mut line, v.as_bytes());
            line.push(b'\n');
            let text = String::from_utf8(line).unwrap();
            let parsed = parse(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(parsed, [("K".to_string(), v.to_string())], "{text:?}");
        }
    }

    #[test]
    fn quoting_is_chosen_per_value() {
        let q = |v: &str| {
            let mut out = Vec::new();
            push_quoted(&mut out, v.as_bytes());
            String::from_utf8(out).unwrap()
        };
        assert_eq!(q("abc-1.2"), "abc-1.2");
        assert_eq!(q(""), "");
        assert_eq!(q("a b$c"), "'a b$c'");
        assert_eq!(q("it's"), "\"it's\"");
        assert_eq!(q("a\\\\b"), "\"a\\\\\\\\b\"");
        assert_eq!(q("it's $5"), "\"it's \\$5\"");
    }

    #[test]
    fn keys_that_are_not_variable_names_are_left_out_and_kept_on_write() {
        let data = json!({"GOOD": "1", "bad-name": "x", "2X": "y", "PORT": 5432});
        let serde_json::Value::Object(map) = data else {
            unreachable!()
        };
        let secret = Secret::from_json_map(&map, None, None);
        let text = render(&secret);
        assert_eq!(text.expose_secret(), b"GOOD=1\nPORT=5432\n");
        let mut keys = secret.keys.clone();
        Env::write(&mut keys, b"GOOD=2\nPORT=6543\n".to_vec()).unwrap();
        assert_eq!(keys.len(), 4);
        assert_eq!(keys.get("GOOD").unwrap().expose(), b"2");
        let port = keys.get("PORT").unwrap();
        assert_eq!(port.kind(), crate::store::ValueKind::Json);
        assert_eq!(keys.get("bad-name").unwrap().expose(), b"x");
    }

    #[test]
    fn lines_that_do_not_parse_are_refused() {
        for bad in [
            "NOEQUALS\n",
            "1KEY=x\n",
            "K='open\n",
            "K=\"open\n",
            "K=two words\n",
            "K='a' trailing\n",
            "K=$VAR\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let ok = parse("# c\n\nexport A=1 # note\nB='x'\r\nA=2\n").unwrap();
        assert_eq!(
            ok,
            [
                ("A".to_string(), "1".to_string()),
                ("B".to_string(), "x".to_string()),
                ("A".to_string(), "2".to_string())
            ]
        );
    }
}
