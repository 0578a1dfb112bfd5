//! Which store names can be file names, and which look like editors' and
//! tools' scratch files.

use crate::error::{Error, Result};

/// Whether a key or folder name from the store can be shown as a file name:
/// not empty, not `.` or `..`, no `/` and no NUL, at most 255 bytes.
pub fn is_showable(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\0'])
        && name.len() <= NAME_MAX
}

/// The longest name a directory entry may have (`NAME_MAX`).
pub const NAME_MAX: usize = 255;

/// Whether a program may give a new file or directory the name `name`:
/// `ENAMETOOLONG` past 255 bytes, `EINVAL` for what can be no file name.
pub fn acceptable(name: &str, what: &str) -> Result<()> {
    if name.len() > NAME_MAX {
        return Err(Error::NameTooLong);
    }
    if !is_showable(name) {
        return Err(Error::Invalid(format!("{name:?} cannot be a {what} name")));
    }
    Ok(())
}

/// The secret and version a name of a version view stands for: `db@3` →
/// (`db`, 3). The number is decimal, from 1, without leading zeros, so
/// that each version has one name.
pub fn split_version(name: &str) -> Option<(&str, u64)> {
    let (base, number) = name.rsplit_once('@')?;
    let canonical = !base.is_empty()
        && !number.is_empty()
        && !number.starts_with('0')
        && number.bytes().all(|b| b.is_ascii_digit());
    canonical.then(|| number.parse().ok().map(|n| (base, n)))?
}

/// Whether `name` looks like a scratch file of an editor or tool (swap,
/// backup, lock and temporary files). A name alone decides nothing: only
/// a file *created exclusively* (`O_CREAT|O_EXCL`, as `mkstemp`, vim,
/// rsync and `sed -i` create them) under such a name lives in memory
/// first (see [`is_editor_private`] and docs/SEMANTICS.md); `echo > NAME`
/// makes a key whatever the name.
///
/// vim: `.NAME.swp` (`.swo`, `.swn`, … `.swx`, `.swpx`), `NAME~`, `4913`;
/// emacs: `#NAME#`, `.#NAME`; nano: `.NAME.swp`; sed -i: `sedXXXXXX`;
/// perl -i: `XXxxxxxx`; rsync: `.NAME.XXXXXX`; python's `mkstemp`:
/// `tmpXXXXXXXX`; Ansible: `.ansible_tmp…`; git: `NAME.lock`; generic:
/// `.NAME.tmp`.
/// (`NAME.bak` is a deliberate copy, not scratch.)
pub fn is_scratch(name: &str) -> bool {
    let random = |s: &str, len: usize| {
        s.len() == len && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let mkstemp = |prefix: &str, len: usize| {
        name.strip_prefix(prefix)
            .is_some_and(|rest| random(rest, len) && rest.chars().all(|c| c != '_'))
    };
    // sed -i: `sedXXXXXX`; perl -i: `XXxxxxxx`.
    let tool_temp = mkstemp("sed", 6) || mkstemp("XX", 6);
    // python: `tmp` and 8 of `[a-z0-9_]`.
    let python = name.strip_prefix("tmp").is_some_and(|rest| random(rest, 8));
    // rsync: `.NAME.` and 6 random letters and digits. One time in ninety
    // they are all of one case (`.K.abcdef`), so a chosen name such as
    // `.env.secret` matches too; that costs little, since only a file
    // created with `O_EXCL` under it waits, and only until its creator
    // exits (`cp f .env.secret` stores it as `cp` exits).
    let rsync = name.starts_with('.')
        && name[1..]
            .rsplit_once('.')
            .is_some_and(|(stem, rest)| !stem.is_empty() && random(rest, 6) && !rest.contains('_'));
    is_editor_private(name)
        || tool_temp
        || python
        || rsync
        || name.starts_with(".ansible_tmp")
        // git's lock files (`config.lock` renamed onto `config`).
        || (name.len() > 5 && name.ends_with(".lock"))
        || (name.ends_with('~') && name.len() > 1)
        || (name.starts_with('#') && name.ends_with('#') && name.len() > 1)
        || (name.starts_with('.') && name.ends_with(".tmp") && name.len() > 5)
}

/// Whether `name` is an editor's private file, which never becomes a key
/// even when it outlives its editor: vim's and nano's swap files
/// (`.NAME.swp` … `.swx`, `.NAME.swpx`), vim's `4913` probe, emacs's lock
/// `.#NAME`. Created exclusively, they live in memory until removed.
pub fn is_editor_private(name: &str) -> bool {
    // vim probes with `.NAME.swpx` before it settles on `.NAME.swp`.
    let vim_swap = name.starts_with('.')
        && name.len() > 5
        && name.rsplit_once('.').is_some_and(|(_, ext)| {
            let ext = ext
                .strip_suffix('x')
                .filter(|e| e.len() == 3)
                .unwrap_or(ext);
            ext.len() == 3 && ext.starts_with("sw")
        });
    vim_swap || name == "4913" || (name.starts_with(".#") && name.len() > 2)
}

/// Whether `name` is a backup name (`NAME~`): renaming a key to it (vim,
/// emacs, `cp --backup`, `install -b`) keeps the old value in memory and
/// hides the key until a new one is written.
pub fn is_backup(name: &str) -> bool {
    name.len() > 1 && name.ends_with('~')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn editor_and_tool_temporary_names_are_scratch() {
        for n in [
            ".PASSWORD.swp",
            ".PASSWORD.swx",
            ".PASSWORD.swpx",
            ".K.swo",
            "PASSWORD~",
            "4913",
            "sedAb12Cd",
            "#K#",
            ".#K",
            ".K.tmp",
            ".PASSWORD.abBT6Y",
            ".PASSWORD.qzvxle",
            ".PASSWORD.KWTRPZ",
            "tmp7e8opawn",
            "tmpa_b1c2d3",
            "XXhdG9S7",
            ".ansible_tmpk3j4h5PASSWORD",
            "config.lock",
        ] {
            assert!(is_scratch(n), "{n}");
        }
        for n in [".K.swp", ".K.swpx", "4913", ".#K"] {
            assert!(is_editor_private(n), "{n}");
        }
        for n in ["K~", "sedAb12Cd", ".K.abBT6Y", "#K#", "K"] {
            assert!(!is_editor_private(n), "{n}");
        }
        for n in [
            "PASSWORD",
            ".env",
            "swap",
            "sed",
            "sedimentary",
            "K.bak",
            "4914",
            ".swp",
            "tmp",
            "tmpfile",
            ".env.local",
            ".lock",
            "~",
        ] {
            assert!(!is_scratch(n), "{n}");
        }
    }

    #[test]
    fn a_version_is_named_by_its_number_after_the_last_at_sign() {
        assert_eq!(split_version("db@3"), Some(("db", 3)));
        assert_eq!(split_version("a@b@12"), Some(("a@b", 12)));
        for n in ["db", "db@", "@3", "db@03", "db@0", "db@x", "db@-1", "db@+1"] {
            assert_eq!(split_version(n), None, "{n}");
        }
    }

    #[test]
    fn names_that_cannot_be_file_names_are_hidden() {
        assert!(is_showable("PASSWORD"));
        assert!(is_showable(".env"));
        assert!(!is_showable(""));
        assert!(!is_showable("."));
        assert!(!is_showable(".."));
        assert!(!is_showable("a/b"));
        assert!(!is_showable("nul\0"));
        assert!(!is_showable(&"x".repeat(256)));
    }
}
