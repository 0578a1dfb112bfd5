//! docs/SECURITY.md's audit log section checked against the code: its `op` table
//! names exactly the operations the audit log records
//! (`secretfs::audit::Op::ALL`), so that the list cannot drift. No FUSE
//! and no OpenBao needed.

use std::collections::BTreeSet;

use secretfs::audit::Op;

/// The lines of docs/SECURITY.md's `## Audit log` section.
fn audit_section() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/SECURITY.md");
    let doc = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut lines = doc.lines().skip_while(|l| l.trim_end() != "## Audit log");
    assert!(
        lines.next().is_some(),
        "docs/SECURITY.md has no `## Audit log`"
    );
    lines
        .take_while(|l| !l.starts_with("## ") && !l.starts_with("### "))
        .map(str::to_string)
        .collect()
}

/// The first column of the table whose header is `| \`op\` | … |`.
fn documented_ops() -> BTreeSet<String> {
    let lines = audit_section();
    let rows: Vec<&String> = lines
        .iter()
        .skip_while(|l| !l.starts_with("| `op` |"))
        .take_while(|l| l.starts_with('|'))
        .collect();
    assert!(
        rows.len() > 2,
        "the audit section has no `| \\`op\\` | … |` table"
    );
    rows[2..]
        .iter()
        .map(|row| {
            let cell = row.trim_matches('|').split('|').next().unwrap_or("").trim();
            cell.strip_prefix('`')
                .and_then(|c| c.strip_suffix('`'))
                .unwrap_or_else(|| panic!("not a `op` cell: {row}"))
                .to_string()
        })
        .collect()
}

#[test]
fn the_security_doc_lists_exactly_the_ops_the_audit_log_records() {
    let recorded: BTreeSet<String> = Op::ALL.iter().map(|op| op.name().to_string()).collect();
    let documented = documented_ops();
    assert_eq!(
        documented, recorded,
        "docs/SECURITY.md's audit `op` table (left) and secretfs::audit::Op (right) differ"
    );
}
