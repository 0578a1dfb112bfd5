//! Which store names can be file names.

/// Whether a key or folder name from the store can be shown as a file name:
/// not empty, not `.` or `..`, no `/` and no NUL, at most 255 bytes.
pub fn is_showable(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\0'])
        && name.len() <= 255
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

/// Whether `name` is a scratch file of an editor or tool (swap, backup,
/// lock and temporary files): such files live only in memory and never
/// reach the store.
///
/// vim: `.NAME.swp` (`.swo`, `.swn`, … `.swx`), `NAME~`, `4913`;
/// emacs: `#NAME#`, `.#NAME`; sed -i: `sedXXXXXX`; perl -i: `XXxxxxxx`;
/// nano: `.NAME.swp`;
/// generic: `.NAME.tmp`. (`NAME.bak` is a deliberate copy, not scratch.)
pub fn is_scratch(name: &str) -> bool {
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
    let mkstemp = |prefix: &str| {
        name.len() == prefix.len() + 6
            && name.starts_with(prefix)
            && name[prefix.len()..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric())
    };
    // sed -i: `sedXXXXXX`; perl -i: `XXxxxxxx`.
    let tool_temp = mkstemp("sed") || mkstemp("XX");
    vim_swap
        || tool_temp
        || name.ends_with('~')
        || name == "4913"
        || (name.starts_with('#') && name.ends_with('#') && name.len() > 1)
        || name.starts_with(".#")
        || (name.starts_with('.') && name.ends_with(".tmp"))
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
        ] {
            assert!(is_scratch(n), "{n}");
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
