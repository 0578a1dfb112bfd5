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

#[cfg(test)]
mod tests {
    use super::*;

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
