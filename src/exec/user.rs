//! `secretfs exec --user USER`: COMMAND runs as another user, secretfs
//! (which holds the token and reads the token file) stays as it is. The
//! user is looked up once, before anything starts; the child gives up
//! secretfs's user in `pre_exec`, between fork and exec (supplementary
//! groups, group, then user: after `setuid` nothing can be taken back).

use std::ffi::{CStr, CString};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

/// The user COMMAND runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// The user's name (for HOME, USER, LOGNAME and the log).
    pub name: String,
    /// Its user id.
    pub uid: libc::uid_t,
    /// Its primary group.
    pub gid: libc::gid_t,
    /// Its groups (`/etc/group`, the primary one included).
    pub groups: Vec<libc::gid_t>,
    /// Its home folder.
    pub home: PathBuf,
}

/// The password database's entry of `user` (a name, or a numeric uid).
fn passwd(user: &str) -> Result<(String, libc::uid_t, libc::gid_t, PathBuf), String> {
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: all-zero is a valid `passwd` (null pointers, zero ids).
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    let rc = match user.parse::<libc::uid_t>() {
        // SAFETY: getpwuid_r fills `pw` with pointers into `buf`, both of
        // which outlive their use below.
        Ok(uid) => unsafe {
            libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut found)
        },
        Err(_) => {
            let c = CString::new(user).map_err(|_| format!("--user {user:?}: not a user name"))?;
            // SAFETY: as above, with a NUL-terminated name.
            unsafe {
                libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut found)
            }
        }
    };
    if rc != 0 {
        return Err(format!(
            "--user {user}: cannot look the user up: {}",
            std::io::Error::from_raw_os_error(rc)
        ));
    }
    if found.is_null() {
        return Err(format!(
            "--user {user}: no such user (a name from /etc/passwd, or a uid that has an entry there)"
        ));
    }
    // SAFETY: on success the strings are NUL-terminated, inside `buf`.
    let (name, home) = unsafe {
        (
            CStr::from_ptr(pw.pw_name).to_string_lossy().into_owned(),
            CStr::from_ptr(pw.pw_dir).to_string_lossy().into_owned(),
        )
    };
    Ok((name, pw.pw_uid, pw.pw_gid, PathBuf::from(home)))
}

/// The groups `name` belongs to, `gid` first.
fn groups(name: &str, gid: libc::gid_t) -> Result<Vec<libc::gid_t>, String> {
    let c = CString::new(name).map_err(|_| format!("--user {name:?}: not a user name"))?;
    let mut n: libc::c_int = 32;
    loop {
        let mut list = vec![0 as libc::gid_t; usize::try_from(n).unwrap_or(32)];
        let mut got = n;
        // SAFETY: `list` holds `got` entries; getgrouplist writes at most
        // that many and says how many there are.
        let rc = unsafe { libc::getgrouplist(c.as_ptr(), gid, list.as_mut_ptr(), &mut got) };
        if rc >= 0 {
            list.truncate(usize::try_from(got).unwrap_or(0));
            return Ok(list);
        }
        if got <= n || n >= 65536 {
            return Err(format!("--user {name}: cannot list the user's groups"));
        }
        n = got;
    }
}

impl RunAs {
    /// Looks `user` up, and checks that secretfs can become it: it must
    /// run as root (or as that user already).
    pub fn resolve(user: &str) -> Result<RunAs, String> {
        let (name, uid, gid, home) = passwd(user)?;
        let groups = groups(&name, gid)?;
        // SAFETY: geteuid cannot fail.
        let me = unsafe { libc::geteuid() };
        if me != 0 && me != uid {
            return Err(format!(
                "--user {user}: secretfs runs as uid {me} and cannot run a command as another \
                 user; start it as root (it keeps the token, COMMAND runs as {name})"
            ));
        }
        Ok(RunAs {
            name,
            uid,
            gid,
            groups,
            home,
        })
    }

    /// Makes `cmd` run as this user: HOME, USER and LOGNAME are the
    /// user's, and the child takes the user's groups, group and id before
    /// it runs the program. Call before any other `pre_exec` that must
    /// run as the user.
    pub fn apply(&self, cmd: &mut Command) {
        cmd.env("HOME", &self.home)
            .env("USER", &self.name)
            .env("LOGNAME", &self.name);
        let (uid, gid, groups) = (self.uid, self.gid, self.groups.clone());
        // SAFETY: setgroups, setgid and setuid are async-signal-safe
        // system calls; `groups` was built before the fork. Each failure
        // fails the spawn (nothing runs with the wrong user).
        unsafe {
            cmd.pre_exec(move || {
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_is_found_by_name_or_uid_and_a_missing_one_is_named() {
        let (name, uid, gid, _) = passwd("root").expect("root");
        assert_eq!((name.as_str(), uid, gid), ("root", 0, 0));
        assert_eq!(passwd("0").expect("uid 0").0, "root");
        assert!(groups("root", 0).expect("groups").contains(&0));
        let err = passwd("no-such-user-here").unwrap_err();
        assert!(
            err.contains("no-such-user-here") && err.contains("no such user"),
            "{err}"
        );
    }
}
