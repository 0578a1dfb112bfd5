//! The rules themselves: parsing `--allow` text and deciding, for a path
//! in the mount and a caller's facts, whether a rule covers the path and
//! whether one lets the caller in. No I/O beyond resolving user and group
//! names when a rule is parsed; the caller's facts come from outside
//! ([`Facts`]), so this is tested without processes.
//!
//! Syntax: `PATTERN:CONDITION[:CONDITION...]`, e.g.
//! `db/PASSWORD:exe=/usr/bin/myapp`, `app/**:uid=1000`,
//! `db/*:exe=/usr/bin/x@sha256=HEX`, `app/**:user=app:exe=/usr/bin/app`.
//! A rule lets in a caller that meets every one of its conditions; a
//! file covered by at least one rule opens only for a caller some rule
//! covering it lets in.

use std::fmt;
use std::path::{Path, PathBuf};

/// A SHA-256 digest.
pub type Sha256 = [u8; 32];

/// What is known of the process making a request; the costly facts
/// (executable, its digest, supplementary groups) are looked up only
/// when a rule asks.
pub trait Facts {
    /// The caller's (file system) user id.
    fn uid(&self) -> u32;
    /// The caller's (file system) group id.
    fn gid(&self) -> u32;
    /// The caller's supplementary groups.
    fn groups(&mut self) -> &[u32];
    /// Whether the caller runs the file found at `path` now: the same
    /// file (device and inode) that `/proc/PID/exe` opens and that `path`
    /// leads to as the daemon sees it (symbolic links followed) — never
    /// decided on the name `/proc/PID/exe` shows, which a bind mount in a
    /// mount namespace of the caller's own can make anything.
    fn runs(&mut self, path: &Path) -> bool;
    /// The SHA-256 of the caller's executable (the file it runs, even if
    /// replaced on disk since).
    fn exe_sha256(&mut self) -> Option<Sha256>;
}

/// One condition of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Condition {
    Uid(u32),
    Gid(u32),
    Exe {
        path: PathBuf,
        sha256: Option<Sha256>,
    },
}

impl Condition {
    fn holds(&self, facts: &mut dyn Facts) -> bool {
        match self {
            Condition::Uid(uid) => facts.uid() == *uid,
            Condition::Gid(gid) => facts.gid() == *gid || facts.groups().contains(gid),
            Condition::Exe { path, sha256 } => {
                facts.runs(path) && sha256.is_none_or(|want| facts.exe_sha256() == Some(want))
            }
        }
    }

    fn needs_sha256(&self) -> bool {
        matches!(
            self,
            Condition::Exe {
                sha256: Some(_),
                ..
            }
        )
    }
}

/// One `--allow` rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The rule as given, for logs.
    text: String,
    pattern: Vec<Segment>,
    conditions: Vec<Condition>,
}

/// One `/`-separated part of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// `**`: any number of path segments, none included.
    Any,
    /// A name with `*` (any characters) and `?` (one character) in it.
    Name(String),
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Rule {
    /// Parses one rule (see the module's documentation).
    pub fn parse(text: &str) -> Result<Rule, String> {
        let text = text.trim();
        let bad = |why: &str| format!("--allow {text:?}: {why}");
        let (pattern, conditions) = text
            .split_once(':')
            .ok_or_else(|| bad("expected PATTERN:CONDITION, e.g. db/PASSWORD:exe=/usr/bin/app"))?;
        let pattern = pattern.trim_matches('/');
        if pattern.is_empty() {
            return Err(bad("the pattern is empty (use ** for every file)"));
        }
        let pattern: Vec<Segment> = pattern
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| {
                if s == "**" {
                    Ok(Segment::Any)
                } else if s.contains("**") {
                    Err(bad("** must be a whole path segment (a/**/b)"))
                } else if s == "." || s == ".." {
                    Err(bad("the pattern is relative to the mount: no . or .."))
                } else {
                    Ok(Segment::Name(s.to_string()))
                }
            })
            .collect::<Result<_, _>>()?;
        let conditions = conditions
            .split(':')
            .map(|c| Self::condition(c.trim()).map_err(|why| bad(&why)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Rule {
            text: text.to_string(),
            pattern,
            conditions,
        })
    }

    fn condition(text: &str) -> Result<Condition, String> {
        let (key, value) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?} is no condition (uid=, gid=, user=, group=, exe=)"))?;
        let number = |what: &str| {
            value
                .parse::<u32>()
                .map_err(|_| format!("{what}={value:?} is not a number"))
        };
        match key {
            "uid" => number("uid").map(Condition::Uid),
            "gid" => number("gid").map(Condition::Gid),
            "user" => user_id(value).map(Condition::Uid),
            "group" => group_id(value).map(Condition::Gid),
            "exe" => {
                let (path, sha256) = match value.split_once("@sha256=") {
                    Some((path, hex)) => (path, Some(parse_sha256(hex)?)),
                    None => (value, None),
                };
                if !path.starts_with('/') {
                    return Err(format!("exe={path:?} must be an absolute path"));
                }
                Ok(Condition::Exe {
                    path: PathBuf::from(path),
                    sha256,
                })
            }
            other => Err(format!(
                "unknown condition {other:?} (uid=, gid=, user=, group=, exe=)"
            )),
        }
    }

    /// Whether the pattern names `path` (a path in the mount, `a/b/KEY`)
    /// or a directory above it: a pattern naming a directory covers every
    /// file below it.
    fn covers(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        (1..=parts.len()).any(|n| matches(&self.pattern, &parts[..n]))
    }

    fn lets_in(&self, facts: &mut dyn Facts) -> bool {
        // Cheap conditions first: a digest is computed only when the rest hold.
        let (costly, cheap): (Vec<&Condition>, Vec<&Condition>) =
            self.conditions.iter().partition(|c| c.needs_sha256());
        cheap.iter().chain(costly.iter()).all(|c| c.holds(facts))
    }
}

/// Whether `pattern` matches all of `parts`.
fn matches(pattern: &[Segment], parts: &[&str]) -> bool {
    match pattern.split_first() {
        None => parts.is_empty(),
        Some((Segment::Any, rest)) => (0..=parts.len()).any(|skip| matches(rest, &parts[skip..])),
        Some((Segment::Name(glob), rest)) => match parts.split_first() {
            Some((first, others)) => {
                name_matches(glob.as_bytes(), first.as_bytes()) && matches(rest, others)
            }
            None => false,
        },
    }
}

/// `*` and `?` within one name.
fn name_matches(glob: &[u8], name: &[u8]) -> bool {
    match glob.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|skip| name_matches(rest, &name[skip..])),
        Some((b'?', rest)) => !name.is_empty() && name_matches(rest, &name[1..]),
        Some((c, rest)) => name.first() == Some(c) && name_matches(rest, &name[1..]),
    }
}

fn parse_sha256(hex: &str) -> Result<Sha256, String> {
    let bad = || format!("sha256={hex:?} is not 64 hexadecimal digits");
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// A digest as lowercase hexadecimal, as `sha256sum` prints it.
pub fn hex(digest: &Sha256) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn user_id(name: &str) -> Result<u32, String> {
    let c = std::ffi::CString::new(name).map_err(|_| format!("user={name:?}"))?;
    // SAFETY: getpwnam with a NUL-terminated name; the result is read at
    // once, before any other call could reuse its buffer (rules are
    // parsed once, at start-up, on one thread).
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    if pw.is_null() {
        return Err(format!("no user named {name:?}"));
    }
    // SAFETY: non-null, as checked.
    Ok(unsafe { (*pw).pw_uid })
}

fn group_id(name: &str) -> Result<u32, String> {
    let c = std::ffi::CString::new(name).map_err(|_| format!("group={name:?}"))?;
    // SAFETY: as in `user_id`.
    let gr = unsafe { libc::getgrnam(c.as_ptr()) };
    if gr.is_null() {
        return Err(format!("no group named {name:?}"));
    }
    // SAFETY: non-null, as checked.
    Ok(unsafe { (*gr).gr_gid })
}

/// What the rules say of an open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No rule covers the file: the kernel's modes alone decide.
    Uncovered,
    /// A rule covering each covered path lets the caller in.
    Allowed,
    /// The file is covered and no rule covering `path` lets the caller in.
    Denied {
        /// The covered path refused.
        path: String,
    },
}

/// Every `--allow` rule of a mount.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<Rule>,
}

impl Rules {
    /// Parses rules given on the command line and the lines of rules
    /// files (blank lines and `#` comments skipped).
    pub fn parse<'a>(texts: impl IntoIterator<Item = &'a str>) -> Result<Rules, String> {
        let rules = texts
            .into_iter()
            .map(str::trim)
            .filter(|t| !t.is_empty() && !t.starts_with('#'))
            .map(Rule::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Rules { rules })
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether a rule covers any of `paths`.
    pub fn covers<S: AsRef<str>>(&self, paths: &[S]) -> bool {
        paths
            .iter()
            .any(|p| self.rules.iter().any(|r| r.covers(p.as_ref())))
    }

    /// Whether a rule covering any of `paths` asks for an executable's
    /// digest (which may take a while to compute the first time).
    pub fn needs_digest<S: AsRef<str>>(&self, paths: &[S]) -> bool {
        paths.iter().any(|p| {
            self.rules
                .iter()
                .any(|r| r.covers(p.as_ref()) && r.conditions.iter().any(Condition::needs_sha256))
        })
    }

    /// Whether the caller of `facts` may open a file that shows `paths`
    /// (its own path, and the paths of the keys it shows when it shows
    /// more than one): every covered path needs a rule covering it that
    /// lets the caller in.
    pub fn decide<S: AsRef<str>>(&self, paths: &[S], facts: &mut dyn Facts) -> Decision {
        let mut covered = false;
        for path in paths.iter().map(AsRef::as_ref) {
            let mut covering = self.rules.iter().filter(|r| r.covers(path)).peekable();
            if covering.peek().is_none() {
                continue;
            }
            covered = true;
            if !covering.any(|r| r.lets_in(facts)) {
                return Decision::Denied {
                    path: path.to_string(),
                };
            }
        }
        if covered {
            Decision::Allowed
        } else {
            Decision::Uncovered
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Facts of a made-up caller, counting the costly lookups.
    #[derive(Default)]
    struct Known {
        uid: u32,
        gid: u32,
        groups: Vec<u32>,
        exe: Option<PathBuf>,
        sha256: Option<Sha256>,
        hashed: usize,
    }

    impl Facts for Known {
        fn uid(&self) -> u32 {
            self.uid
        }
        fn gid(&self) -> u32 {
            self.gid
        }
        fn groups(&mut self) -> &[u32] {
            &self.groups
        }
        fn runs(&mut self, path: &Path) -> bool {
            self.exe.as_deref() == Some(path)
        }
        fn exe_sha256(&mut self) -> Option<Sha256> {
            self.hashed += 1;
            self.sha256
        }
    }

    fn rules(texts: &[&str]) -> Rules {
        Rules::parse(texts.iter().copied()).unwrap()
    }

    fn app(uid: u32) -> Known {
        Known {
            uid,
            gid: 100,
            exe: Some(PathBuf::from("/usr/bin/myapp")),
            ..Known::default()
        }
    }

    #[test]
    fn patterns_match_names_segments_and_directories_above() {
        let r = |p: &str| Rule::parse(&format!("{p}:uid=0")).unwrap();
        assert!(r("db/PASSWORD").covers("db/PASSWORD"));
        assert!(!r("db/PASSWORD").covers("db/PASSWORD2"));
        assert!(!r("db/PASSWORD").covers("db"));
        assert!(
            r("db").covers("db/PASSWORD"),
            "a directory covers its files"
        );
        assert!(r("db/*").covers("db/USER"));
        assert!(!r("db/*").covers("other/USER"));
        assert!(r("*/PASS*").covers("db/PASSWORD"));
        assert!(r("db/?EY").covers("db/KEY"));
        assert!(!r("db/?EY").covers("db/EY"));
        assert!(r("app/**").covers("app/x/y/z"));
        assert!(r("**/PASSWORD").covers("PASSWORD"));
        assert!(r("**/PASSWORD").covers("a/b/PASSWORD"));
        assert!(!r("**/PASSWORD").covers("a/b/USER"));
        assert!(r("a/**/K").covers("a/K") && r("a/**/K").covers("a/b/c/K"));
        assert!(r("**").covers("anything/at/all"));
        assert!(
            r("/db/PASSWORD/").covers("db/PASSWORD"),
            "slashes at the ends"
        );
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        for (text, says) in [
            ("db/PASSWORD", "PATTERN:CONDITION"),
            (":uid=1", "empty"),
            ("db/x:uid=me", "not a number"),
            ("db/x:exe=bin/app", "absolute"),
            ("db/x:exe=/bin/app@sha256=abc", "64 hexadecimal"),
            ("db/x:color=red", "unknown condition"),
            ("db/a**:uid=1", "whole path segment"),
            ("../x:uid=1", "relative"),
            ("db/x:user=no-such-user-here", "no user"),
        ] {
            let err = Rule::parse(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn only_what_a_covering_rule_lets_in_opens_a_covered_file() {
        let r = rules(&[
            "db/PASSWORD:exe=/usr/bin/myapp",
            "app/**:uid=1000",
            "shared/**:gid=50",
        ]);
        let other_exe = Known {
            exe: Some(PathBuf::from("/usr/bin/cat")),
            ..app(1000)
        };
        assert_eq!(r.decide(&["db/PASSWORD"], &mut app(0)), Decision::Allowed);
        assert_eq!(
            r.decide(&["db/PASSWORD"], &mut Known { ..other_exe }),
            Decision::Denied {
                path: "db/PASSWORD".into()
            }
        );
        assert_eq!(r.decide(&["db/USER"], &mut app(7)), Decision::Uncovered);
        assert_eq!(r.decide(&["app/x/K"], &mut app(1000)), Decision::Allowed);
        assert!(matches!(
            r.decide(&["app/x/K"], &mut app(1001)),
            Decision::Denied { .. }
        ));
        // A group rule holds for the primary group or a supplementary one.
        let mut member = Known {
            groups: vec![50],
            ..app(5)
        };
        assert_eq!(r.decide(&["shared/K"], &mut member), Decision::Allowed);
        assert!(matches!(
            r.decide(&["shared/K"], &mut app(5)),
            Decision::Denied { .. }
        ));
    }

    #[test]
    fn every_condition_of_a_rule_must_hold_and_any_rule_may_let_in() {
        let r = rules(&[
            "db/*:uid=1000:exe=/usr/bin/myapp",
            "# a comment, and a blank line",
            "",
            "db/*:uid=0",
        ]);
        assert_eq!(r.len(), 2);
        assert_eq!(r.decide(&["db/K"], &mut app(1000)), Decision::Allowed);
        assert_eq!(r.decide(&["db/K"], &mut app(0)), Decision::Allowed);
        let mut no_exe = Known {
            exe: None,
            ..app(1000)
        };
        assert!(matches!(
            r.decide(&["db/K"], &mut no_exe),
            Decision::Denied { .. }
        ));
    }

    #[test]
    fn a_digest_must_match_and_is_computed_only_when_the_rest_holds() {
        let digest = [7u8; 32];
        let rule = format!("db/*:exe=/usr/bin/myapp@sha256={}:uid=1000", hex(&digest));
        let r = rules(&[&rule]);
        let mut right = Known {
            sha256: Some(digest),
            ..app(1000)
        };
        assert_eq!(r.decide(&["db/K"], &mut right), Decision::Allowed);
        let mut changed = Known {
            sha256: Some([8u8; 32]),
            ..app(1000)
        };
        assert!(matches!(
            r.decide(&["db/K"], &mut changed),
            Decision::Denied { .. }
        ));
        let mut wrong_uid = Known {
            sha256: Some(digest),
            ..app(1)
        };
        assert!(matches!(
            r.decide(&["db/K"], &mut wrong_uid),
            Decision::Denied { .. }
        ));
        assert_eq!(
            wrong_uid.hashed, 0,
            "hashed although the uid already failed"
        );
    }

    #[test]
    fn a_file_showing_several_keys_needs_every_covered_one() {
        let r = rules(&["db/PASSWORD:uid=1000", "db/TOKEN:uid=2000"]);
        let whole = ["db.json", "db/PASSWORD", "db/TOKEN", "db/USER"];
        assert!(matches!(
            r.decide(&whole, &mut app(1000)),
            Decision::Denied { .. }
        ));
        assert_eq!(
            r.decide(&["db.json", "db/USER"], &mut app(1)),
            Decision::Uncovered
        );
        assert!(r.covers(&whole) && !r.covers(&["db/USER"]));
    }
}
