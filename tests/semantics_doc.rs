//! docs/SEMANTICS.md checked against the code, so that the doc cannot drift:
//!
//! - the "## Errors" table (cause | errno) names exactly the errnos that
//!   `secretfs::error::Error::errno()` produces: every errno in the table
//!   comes from some variant, and every variant's errno is in the table;
//! - the scratch names listed in "### Editors and tools" are the ones
//!   `secretfs::fs::names::is_scratch` recognises, on concrete examples of
//!   each pattern, and a few names next to them are not scratch; the
//!   editors' private files listed there are the ones
//!   `secretfs::fs::names::is_editor_private` recognises;
//! - a plain create (`echo > NAME`) stores the key whatever its name: the
//!   doc's rule, checked on the core over `MemoryStore` for an example of
//!   every documented pattern.
//!
//! No FUSE and no OpenBao needed.

use std::collections::BTreeSet;
use std::time::Duration;

use secretfs::error::Error;
use secretfs::fs::names::{is_editor_private, is_scratch};

fn semantics() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/SEMANTICS.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The lines of the section that starts with the heading `heading` (up to
/// the next heading of the same or a higher level).
fn section(doc: &str, heading: &str) -> Vec<String> {
    let level = heading.chars().take_while(|c| *c == '#').count();
    let mut lines = doc.lines().skip_while(|l| l.trim_end() != heading);
    assert!(
        lines.next().is_some(),
        "docs/SEMANTICS.md has no `{heading}` section"
    );
    lines
        .take_while(|l| {
            let hashes = l.chars().take_while(|c| *c == '#').count();
            !(hashes > 0 && hashes <= level && l[hashes..].starts_with(' '))
        })
        .map(str::to_string)
        .collect()
}

/// The `backticked` words of `text`.
fn backticked(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The errno a name in the doc stands for.
fn errno_named(name: &str) -> i32 {
    match name {
        "EACCES" => libc::EACCES,
        "EAGAIN" => libc::EAGAIN,
        "EEXIST" => libc::EEXIST,
        "EFBIG" => libc::EFBIG,
        "EILSEQ" => libc::EILSEQ,
        "EINVAL" => libc::EINVAL,
        "EIO" => libc::EIO,
        "ENAMETOOLONG" => libc::ENAMETOOLONG,
        "EOPNOTSUPP" => libc::EOPNOTSUPP,
        "EISDIR" => libc::EISDIR,
        "ENODATA" => libc::ENODATA,
        "ENOENT" => libc::ENOENT,
        "ENOSYS" => libc::ENOSYS,
        "ENOTSUP" => libc::ENOTSUP,
        "ENOTDIR" => libc::ENOTDIR,
        "ENOTEMPTY" => libc::ENOTEMPTY,
        "EPERM" => libc::EPERM,
        "EROFS" => libc::EROFS,
        "ESTALE" => libc::ESTALE,
        "EXDEV" => libc::EXDEV,
        other => panic!("the Errors table names `{other}`, which this test does not know"),
    }
}

/// The errno names of the "## Errors" table's errno column.
fn errors_table() -> BTreeSet<String> {
    let lines = section(&semantics(), "## Errors");
    let rows: Vec<Vec<String>> = lines
        .iter()
        .filter(|l| l.trim_start().starts_with('|'))
        .map(|l| {
            l.trim()
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect();
    assert!(
        rows.len() > 2,
        "the Errors section holds no table:\n{}",
        lines.join("\n")
    );
    assert_eq!(
        rows[0],
        ["cause", "errno"],
        "the Errors table's header changed"
    );
    let mut names = BTreeSet::new();
    for row in &rows[2..] {
        assert_eq!(row.len(), 2, "not a `cause | errno` row: {row:?}");
        let in_row: Vec<String> = backticked(&row[1])
            .into_iter()
            .filter(|w| w.starts_with('E'))
            .collect();
        assert!(!in_row.is_empty(), "a row without an errno: {row:?}");
        names.extend(in_row);
    }
    names
}

/// Every variant of `Error`, one of each.
fn all_errors() -> Vec<Error> {
    let all = vec![
        Error::NotFound,
        Error::PermissionDenied("denied".into()),
        Error::NotAllowed("no rule lets it in".into()),
        Error::Unavailable("down".into()),
        Error::Timeout(Duration::from_secs(5)),
        Error::Protocol("odd answer".into()),
        Error::Template("unknown filter".into()),
        Error::LayerUnreadable {
            layer: "secret/prod".into(),
            cause: Box::new(Error::PermissionDenied("denied".into())),
        },
        Error::ReadOnly,
        Error::Invalid("bad name".into()),
        Error::Stale,
        Error::CasConflict,
        Error::TooBig(1024),
        Error::NotUtf8,
        Error::CrossSecret,
        Error::Exists,
        Error::NotEmpty,
        Error::NotPermitted("chown"),
        Error::IsDir,
        Error::NotDir,
        Error::NoAttribute,
        Error::NotSupported("kv1"),
        Error::WouldBlock,
        Error::OutOfTime(Duration::from_secs(1)),
        Error::OutcomeUnknown(Box::new(Error::Timeout(Duration::from_secs(5)))),
        Error::Unanswered("connection reset".into()),
        Error::NameTooLong,
        Error::NotSupported("fallocate"),
        Error::AuditFailed("no space left on device".into()),
        Error::Throttled("ThrottlingException".into()),
        Error::Locked("app.age.lock still held after 5s".into()),
    ];
    // No wildcard: a new variant fails to compile here until it is listed
    // above (and its errno is in the doc).
    for e in &all {
        match e {
            Error::NotFound
            | Error::PermissionDenied(_)
            | Error::NotAllowed(_)
            | Error::Unavailable(_)
            | Error::Timeout(_)
            | Error::Protocol(_)
            | Error::Template(_)
            | Error::LayerUnreadable { .. }
            | Error::ReadOnly
            | Error::Invalid(_)
            | Error::Stale
            | Error::CasConflict
            | Error::TooBig(_)
            | Error::NotUtf8
            | Error::CrossSecret
            | Error::Exists
            | Error::NotEmpty
            | Error::NotPermitted(_)
            | Error::IsDir
            | Error::NotDir
            | Error::NoAttribute
            | Error::WouldBlock
            | Error::OutOfTime(_)
            | Error::OutcomeUnknown(_)
            | Error::Unanswered(_)
            | Error::NameTooLong
            | Error::NotSupported(_)
            | Error::AuditFailed(_)
            | Error::Throttled(_)
            | Error::Locked(_) => {}
        }
    }
    all
}

#[test]
fn every_errno_in_the_errors_table_is_one_an_error_produces() {
    let produced: BTreeSet<i32> = all_errors().iter().map(Error::errno).collect();
    for name in errors_table() {
        assert!(
            produced.contains(&errno_named(&name)),
            "docs/SEMANTICS.md's Errors table names `{name}`, which no secretfs::error::Error gives"
        );
    }
}

#[test]
fn every_errno_an_error_produces_is_in_the_errors_table() {
    let documented: BTreeSet<i32> = errors_table().iter().map(|n| errno_named(n)).collect();
    for e in all_errors() {
        assert!(
            documented.contains(&e.errno()),
            "Error::{e:?} gives errno {} ({}), missing from docs/SEMANTICS.md's Errors table",
            e.errno(),
            std::io::Error::from_raw_os_error(e.errno())
        );
    }
}

/// The backticked patterns of the paragraph of "### Editors and tools"
/// that starts with `intro`.
fn documented_patterns(intro: &str) -> Vec<String> {
    let lines = section(&semantics(), "### Editors and tools");
    let paragraph: Vec<&str> = lines
        .iter()
        .map(String::as_str)
        .skip_while(|l| !l.starts_with(intro))
        .take_while(|l| !l.trim().is_empty())
        .collect();
    assert!(
        !paragraph.is_empty(),
        "\"### Editors and tools\" no longer holds a paragraph starting with {intro:?}"
    );
    backticked(&paragraph.join(" "))
        .into_iter()
        .filter(|w| !w.contains(' '))
        .collect()
}

/// The scratch-name patterns listed in "### Editors and tools".
fn documented_scratch_patterns() -> Vec<String> {
    documented_patterns("Scratch names:")
}

/// Concrete names for a documented pattern (`NAME` is any key name).
fn examples(pattern: &str) -> &'static [&'static str] {
    match pattern {
        ".NAME.swp" => &[".K.swp", ".PASSWORD.swp"],
        // `.NAME.swp`/`.swo`/…/`.swx`: vim's later swap files.
        ".swo" => &[".K.swo", ".K.swn"],
        ".swx" => &[".K.swx"],
        ".NAME.swpx" => &[".K.swpx"],
        "NAME~" => &["K~", "PASSWORD~"],
        "4913" => &["4913"],
        "#NAME#" => &["#K#", "#PASSWORD#"],
        ".#NAME" => &[".#K"],
        "sedXXXXXX" => &["sedAb12Cd", "sed0a1B2c"],
        "XXxxxxxx" => &["XXab12cd", "XX0aB1c2"],
        ".NAME.tmp" => &[".K.tmp"],
        // Six random letters may all be of one case (one time in ninety).
        ".NAME.XXXXXX" => &[".K.abBT6Y", ".PASSWORD.lZm1zU", ".K.abcdef", ".K.QWERTY"],
        "tmpXXXXXXXX" => &["tmp7e8opawn", "tmpa_b1c2d3"],
        ".ansible_tmpXXXXXXXX" => &[".ansible_tmpk3j4h5PASSWORD"],
        "NAME.lock" => &["config.lock", "K.lock"],
        other => panic!(
            "docs/SEMANTICS.md lists the scratch pattern `{other}`: give this test examples of it"
        ),
    }
}

#[test]
fn the_documented_scratch_names_are_the_ones_the_code_recognises() {
    let patterns = documented_scratch_patterns();
    assert!(patterns.len() >= 8, "too few patterns found: {patterns:?}");
    for pattern in &patterns {
        for name in examples(pattern) {
            assert!(
                is_scratch(name),
                "`{name}` (documented pattern `{pattern}`) is not a scratch name to the code"
            );
        }
    }
    // Names next to the patterns that are ordinary keys and must reach the
    // store.
    for name in [
        "K",
        "PASSWORD",
        ".env",
        "swap",
        ".swp",
        "K.swp",
        "K.tmp",
        "K.bak",
        "4914",
        "49130",
        "sed",
        "sedimentary",
        "sedAb12",
        "XXab12",
        "XXab12cd34",
        "#K",
        "K#",
        ".env.local",
        "tmp",
        ".lock",
    ] {
        assert!(!is_scratch(name), "`{name}` is no scratch name");
    }
}

#[test]
fn the_documented_private_files_are_the_ones_the_code_never_stores() {
    let patterns = documented_patterns("Editors' private files");
    assert!(patterns.len() >= 4, "too few patterns found: {patterns:?}");
    for pattern in &patterns {
        for name in examples(pattern) {
            assert!(
                is_editor_private(name),
                "`{name}` (documented pattern `{pattern}`) may become a key to the code"
            );
        }
    }
    for name in ["K~", "sedAb12Cd", ".K.abBT6Y", "#K#", "K", "config.lock"] {
        assert!(!is_editor_private(name), "`{name}` is no private file");
    }
}

#[test]
fn a_plain_create_stores_every_documented_scratch_name() {
    use std::sync::Arc;

    use secretfs::fs::clock::ManualClock;
    use secretfs::fs::inode::ROOT_INO;
    use secretfs::fs::{FsConfig, OpContext, Presentation, SecretFs};
    use secretfs::store::memory::MemoryStore;
    use secretfs::store::SecretPath;

    let store = Arc::new(MemoryStore::kv2());
    store.put("s", serde_json::json!({"K": "v"}));
    let config = FsConfig {
        presentation: Presentation {
            uid: 0,
            gid: 0,
            file_mode: 0o400,
            dir_mode: 0o500,
        },
        cache: secretfs::fs::cache::CachePolicy {
            ttl: Duration::from_secs(30),
            negative_ttl: Duration::from_secs(5),
            stale_if_error: Duration::from_secs(60),
            capacity: std::num::NonZeroUsize::MIN.saturating_add(99),
        },
        read_only: false,
        max_value_size: 1024,
        background_refresh: false,
    };
    let fs = SecretFs::builder(
        store.clone(),
        SecretPath::root(),
        config,
        ManualClock::new(),
    )
    .build()
    .0;
    let dir = fs
        .lookup(&OpContext::background(), ROOT_INO, "s")
        .expect("the secret shows")
        .ino;
    for pattern in documented_scratch_patterns() {
        for name in examples(&pattern) {
            let (_, fh) = fs
                .create(&OpContext::background(), dir, name)
                .expect("create");
            fs.write_handle(fh, 0, b"x").expect("write");
            fs.flush(&OpContext::background(), fh).expect("close");
            fs.release(&OpContext::background(), fh);
            let stored = store.get("s").expect("the secret");
            assert_eq!(
                stored.get(*name),
                Some(&serde_json::json!("x")),
                "`echo -n x > {name}` (pattern `{pattern}`) did not reach the store"
            );
        }
    }
}
