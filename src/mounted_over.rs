//! What is mounted over paths inside our mount, in any mount namespace.
//!
//! The kernel detaches a mount whose mount point it is told to drop (a
//! `notify_inval_entry` runs `d_invalidate`, which detaches the mounts on
//! that dentry and below). The inode bound (`--max-inodes`) must never do
//! that to, say, a systemd service's `InaccessiblePaths=` inside the
//! mount: before it asks the kernel to drop names, it reads here which
//! paths carry mounts, from every process's `/proc/PID/mountinfo` (one per
//! mount namespace), and spares them and the directories above them.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// One line of a mountinfo file: the fields used here.
struct MountLine<'a> {
    id: &'a str,
    parent: &'a str,
    device: &'a str,
    root: String,
    point: String,
    fstype: &'a str,
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\134` for `\`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let digits = bytes.get(i + 1..i + 4).unwrap_or_default();
        if bytes[i] == b'\\'
            && digits.len() == 3
            && digits.iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let value = digits.iter().fold(0u32, |v, d| v * 8 + u32::from(d - b'0'));
            if let Ok(b) = u8::try_from(value) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse(line: &str) -> Option<MountLine<'_>> {
    let mut fields = line.split(' ');
    let id = fields.next()?;
    let parent = fields.next()?;
    let device = fields.next()?;
    let root = unescape(fields.next()?);
    let point = unescape(fields.next()?);
    // Optional fields end with a lone "-", then the filesystem type.
    let fstype = fields.skip_while(|f| *f != "-").nth(1)?;
    Some(MountLine {
        id,
        parent,
        device,
        root,
        point,
        fstype,
    })
}

/// The device (`major:minor`) of the secretfs mount at `mountpoint`, as
/// this process's mountinfo says (asking the kernel with stat would reach
/// our own filesystem).
pub fn device_of(mountpoint: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let wanted = mountpoint.to_str()?;
    // The last line is the mount on top.
    info.lines()
        .rev()
        .filter_map(parse)
        .find(|l| l.point == wanted && l.fstype.starts_with("fuse"))
        .map(|l| l.device.to_string())
}

/// Paths inside the filesystem on `device` (relative to its root, without
/// a leading `/`) that something is mounted on, in the mount table
/// `info` (one mountinfo file).
fn mounted_on(info: &str, device: &str, out: &mut HashSet<String>) {
    let lines: Vec<MountLine<'_>> = info.lines().filter_map(parse).collect();
    // Each mount of our filesystem (the mount itself and any bind mount
    // of a path inside it): its id → (the path inside it, where it is).
    let ours: Vec<(&str, &str, &str)> = lines
        .iter()
        .filter(|l| l.device == device)
        .map(|l| (l.id, l.root.as_str(), l.point.as_str()))
        .collect();
    for line in &lines {
        let Some(&(_, root, at)) = ours.iter().find(|(id, ..)| *id == line.parent) else {
            continue;
        };
        let Some(below) = line.point.strip_prefix(at) else {
            continue;
        };
        let path = format!("{}/{}", root.trim_matches('/'), below.trim_matches('/'));
        out.insert(path.trim_matches('/').to_string());
    }
}

/// Paths inside the filesystem on `device` that carry a mount in any
/// mount namespace this process can read; `None` when /proc cannot be read.
pub fn paths_mounted_over(device: &str) -> Option<HashSet<String>> {
    let mut out = HashSet::new();
    let mut namespaces = HashSet::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let dir = entry.path();
        // One read per mount namespace.
        if let Ok(ns) = std::fs::metadata(dir.join("ns/mnt")) {
            if !namespaces.insert((ns.dev(), ns.ino())) {
                continue;
            }
        }
        if let Ok(info) = std::fs::read_to_string(dir.join("mountinfo")) {
            mounted_on(&info, device, &mut out);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
22 1 0:21 / /proc rw,nosuid - proc proc rw
40 22 0:50 / /mnt/secrets rw,nosuid,nodev shared:7 - fuse.secretfs secretfs rw
41 40 0:51 / /mnt/secrets/db rw - tmpfs none rw
42 40 0:52 / /mnt/secrets/app/with\\040space rw - tmpfs none rw
43 1 0:50 /team /srv/team rw - fuse.secretfs secretfs rw
44 43 0:53 / /srv/team/K rw - tmpfs none rw
45 1 0:54 / /mnt/other rw - tmpfs none rw
";

    #[test]
    fn mounts_on_our_paths_are_found_through_the_mount_and_its_bind_mounts() {
        let mut found = HashSet::new();
        mounted_on(INFO, "0:50", &mut found);
        let mut found: Vec<String> = found.into_iter().collect();
        found.sort();
        assert_eq!(found, ["app/with space", "db", "team/K"]);
    }

    #[test]
    fn escapes_are_undone() {
        assert_eq!(unescape("a\\040b\\134c"), "a b\\c");
        assert_eq!(unescape("plain"), "plain");
        assert_eq!(unescape("end\\04"), "end\\04");
    }
}
