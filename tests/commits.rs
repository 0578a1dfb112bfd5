//! What a close commits, against a real OpenBao through a real mount:
//! each writer's own value whole (several processes writing one key), no
//! new version for bytes the store already holds, and what a close that
//! timed out tells.

mod support;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use support::{q, sh_ok, Bao, Mount};

fn seeded() -> Bao {
    let bao = Bao::start();
    bao.kv2_put(
        "secret",
        "app/db",
        json!({"PASSWORD": "old", "USER": "app", "PORT": 5432}),
    );
    bao
}

/// Every version of a KV v2 secret still kept, oldest first: (version, data).
fn all_versions(bao: &Bao, path: &str) -> Vec<(u64, Value)> {
    let (status, meta) = bao.api("GET", &format!("secret/metadata/{path}"), None);
    assert_eq!(status, 200, "metadata of {path}: {meta}");
    let current = meta["data"]["current_version"]
        .as_u64()
        .expect("current_version");
    let oldest = meta["data"]["oldest_version"].as_u64().unwrap_or(1).max(1);
    (oldest..=current)
        .map(|v| {
            let (status, resp) = bao.api("GET", &format!("secret/data/{path}?version={v}"), None);
            assert_eq!(status, 200, "version {v} of {path}: {resp}");
            (v, resp["data"]["data"].clone())
        })
        .collect()
}

/// The value writer `w` writes in round `r`: recognisable whole, of a length
/// that differs from writer to writer, so that any mix of two shows.
fn value_of(w: usize, r: usize) -> String {
    format!("w{w}r{r}-").repeat(2 + w * 3)
}

/// Rounds each writer makes: a few seconds in CI, more with
/// SECRETFS_WRITERS_ROUNDS for a soak.
fn rounds() -> usize {
    std::env::var("SECRETFS_WRITERS_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
}

#[test]
fn concurrent_writers_of_one_key_each_store_their_whole_value() {
    let bao = seeded();
    let rounds = rounds();
    // bash, dash and python writers; each value goes out in three write()
    // calls (three printf builtins into one redirection; three os.write).
    let shells = ["bash", "dash", "python3", "bash", "dash"];
    // Keep every version the test makes.
    let (status, resp) = bao.api(
        "POST",
        "secret/metadata/app/db",
        Some(json!({"max_versions": shells.len() * rounds + 10})),
    );
    assert!(status < 300, "{status} {resp}");
    let m = Mount::new(&bao, "secret/", &["--writable"]);
    let key = m.at("app/db/PASSWORD");
    let children: Vec<_> = shells
        .iter()
        .enumerate()
        .map(|(w, shell)| {
            let mut script = String::new();
            if *shell == "python3" {
                script.push_str(&format!(
                    "import os\nkey = {:?}\n",
                    key.display().to_string()
                ));
            }
            for r in 0..rounds {
                let v = value_of(w, r);
                let third = v.len() / 3;
                let (a, rest) = v.split_at(third);
                let (b, c) = rest.split_at(third);
                script.push_str(&if *shell == "python3" {
                    format!(
                        "fd = os.open(key, os.O_WRONLY | os.O_TRUNC)\n\
                         for part in ({a:?}, {b:?}, {c:?}): os.write(fd, part.encode())\n\
                         os.close(fd)\n"
                    )
                } else {
                    format!(
                        "{{ printf %s {a}; printf %s {b}; printf %s {c}; }} > {}\n",
                        q(&key)
                    )
                });
            }
            Command::new(shell)
                .arg("-c")
                .arg(script)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("{shell}: {e}"))
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "a writer failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let written: BTreeSet<String> = (0..shells.len())
        .flat_map(|w| (0..rounds).map(move |r| value_of(w, r)))
        .chain(["old".to_string()])
        .collect();
    let versions = all_versions(&bao, "app/db");
    let bad: Vec<_> = versions
        .iter()
        .filter(|(_, d)| !d["PASSWORD"].as_str().is_some_and(|v| written.contains(v)))
        .map(|(v, d)| format!("v{v}: {:?}", d["PASSWORD"]))
        .collect();
    eprintln!(
        "{} writers x {rounds} rounds: {} versions, {} not written whole",
        shells.len(),
        versions.len(),
        bad.len()
    );
    assert!(
        bad.is_empty(),
        "{} of {} versions hold a value no writer wrote whole, e.g. {:?}",
        bad.len(),
        versions.len(),
        &bad[..bad.len().min(8)]
    );
    // The other keys stay whatever the writers did.
    for (v, d) in &versions {
        assert_eq!(
            (&d["USER"], &d["PORT"]),
            (&json!("app"), &json!(5432)),
            "v{v}"
        );
    }
    // The last close wins: the mount and the store agree on one value.
    let now = String::from_utf8(std::fs::read(&key).unwrap()).unwrap();
    assert!(written.contains(&now), "the mount shows {now:?}");
    assert_eq!(
        bao.kv2_get("secret", "app/db").unwrap().0["PASSWORD"],
        json!(now)
    );
}

#[test]
fn writing_the_value_a_key_already_holds_makes_no_version() {
    let bao = seeded();
    let m = Mount::new(&bao, "secret/", &["--writable"]);
    let local = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(local.path(), "same").unwrap();
    let key = m.at("app/db/PASSWORD");
    sh_ok(&format!("cp {} {}", q(local.path()), q(&key)));
    let v = bao.kv2_version("secret", "app/db");
    // cp again, a shell rewriting it, a copy onto a key of its own bytes.
    sh_ok(&format!("cp {} {}", q(local.path()), q(&key)));
    sh_ok(&format!("printf same > {}", q(&key)));
    sh_ok(&format!("echo -n app > {}", q(&m.at("app/db/USER"))));
    assert_eq!(bao.kv2_version("secret", "app/db"), v, "no new version");
    // A different value still makes one.
    sh_ok(&format!("printf other > {}", q(&key)));
    assert_eq!(bao.kv2_version("secret", "app/db"), v + 1);
    assert_eq!(std::fs::read(&key).unwrap(), b"other");
}

/// An HTTP proxy in front of OpenBao that can lose the answers to writes:
/// the server applies a write and the mount never hears back, the way a
/// request that times out may still have been applied. Deterministic where
/// pausing the server is not (a pause must land between a commit's read
/// and its write).
mod lossy {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// Pass every answer.
    pub const PASS: u8 = 0;
    /// Lose the answer to every KV write; pass the rest.
    pub const LOSE_WRITE_ANSWERS: u8 = 1;
    /// From the first KV write on, lose every answer (the server hangs
    /// right after applying it) until [`Proxy::release`].
    pub const HANG_AFTER_WRITE: u8 = 2;

    #[derive(Default)]
    struct State {
        mode: AtomicU8,
        hung: AtomicBool,
    }

    pub struct Proxy {
        addr: String,
        state: Arc<State>,
    }

    impl Proxy {
        pub fn start(upstream: &str) -> Proxy {
            let upstream = upstream
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string();
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = format!("http://{}", listener.local_addr().unwrap());
            let state = Arc::new(State::default());
            let s = state.clone();
            std::thread::spawn(move || {
                for client in listener.incoming().flatten() {
                    let Ok(server) = TcpStream::connect(&upstream) else {
                        continue;
                    };
                    connect(client, server, s.clone());
                }
            });
            Proxy { addr, state }
        }

        pub fn addr(&self) -> &str {
            &self.addr
        }

        pub fn set(&self, mode: u8) {
            self.state.mode.store(mode, Ordering::SeqCst);
        }

        /// Passes answers again (those lost stay lost).
        pub fn release(&self) {
            self.set(PASS);
            self.state.hung.store(false, Ordering::SeqCst);
        }
    }

    fn connect(client: TcpStream, server: TcpStream, state: Arc<State>) {
        let writing = Arc::new(AtomicBool::new(false));
        let lost = Arc::new(AtomicBool::new(false));
        let (c_in, s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        let (w, st) = (writing.clone(), state.clone());
        // Requests: one at a time per connection, so a write's answer is
        // the next thing the server sends on it.
        std::thread::spawn(move || {
            pump(c_in, s_out, |chunk| {
                let write = chunk.starts_with(b"POST /v1/secret/data/")
                    || chunk.starts_with(b"PUT /v1/secret/data/");
                w.store(write, Ordering::SeqCst);
                if write && st.mode.load(Ordering::SeqCst) == HANG_AFTER_WRITE {
                    st.hung.store(true, Ordering::SeqCst);
                }
                true
            })
        });
        let _ = server.set_read_timeout(Some(Duration::from_millis(100)));
        std::thread::spawn(move || {
            let (mut from, mut to) = (server, client);
            let mut buf = [0u8; 16384];
            loop {
                match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let lose = state.hung.load(Ordering::SeqCst)
                            || (writing.load(Ordering::SeqCst)
                                && state.mode.load(Ordering::SeqCst) == LOSE_WRITE_ANSWERS);
                        if lose {
                            lost.store(true, Ordering::SeqCst);
                        } else if lost.load(Ordering::SeqCst) || to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut =>
                    {
                        // A connection that lost an answer is out of step:
                        // end it once answers pass again.
                        if lost.load(Ordering::SeqCst)
                            && !state.hung.load(Ordering::SeqCst)
                            && state.mode.load(Ordering::SeqCst) == PASS
                        {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
        });
    }

    fn pump(mut from: TcpStream, mut to: TcpStream, mut look: impl FnMut(&[u8]) -> bool) {
        let mut buf = [0u8; 16384];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || !look(&buf[..n]) || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    }
}

/// Closes `f`, returning close(2)'s error (which dropping a `File` ignores).
fn close(f: std::fs::File) -> std::io::Result<()> {
    use std::os::fd::IntoRawFd;
    let fd = f.into_raw_fd();
    // SAFETY: we own fd and close it once.
    if unsafe { libc::close(fd) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Opens `path` with O_TRUNC and writes `bytes`, leaving it open.
fn open_and_write(path: &std::path::Path, bytes: &[u8]) -> std::fs::File {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    std::io::Write::write_all(&mut f, bytes).unwrap();
    f
}

#[test]
fn a_write_applied_whose_answer_was_lost_is_a_successful_close() {
    let bao = seeded();
    let proxy = lossy::Proxy::start(bao.addr());
    let m = Mount::builder(&bao, "secret/")
        .addr(proxy.addr())
        .args(&["--writable", "--ttl", "5m", "--timeout", "4s"])
        .start();
    let key = m.at("app/db/PASSWORD");
    assert_eq!(std::fs::read(&key).unwrap(), b"old");
    let v = bao.kv2_version("secret", "app/db");
    let f = open_and_write(&key, b"new");
    // (4 s: the read that finds the write out gets the last second.)
    proxy.set(lossy::LOSE_WRITE_ANSWERS);
    let closed = close(f);
    proxy.release();
    closed.expect("the write is in the store: close succeeds");
    assert_eq!(bao.kv2_version("secret", "app/db"), v + 1, "one version");
    assert_eq!(std::fs::read(&key).unwrap(), b"new");
    let (_, status) = support::status(m.path());
    assert_eq!(status["unknown_outcomes"], json!(0), "{status}");
}

#[test]
fn a_close_whose_outcome_cannot_be_known_fails_and_the_mount_reads_the_store_again() {
    let bao = seeded();
    let proxy = lossy::Proxy::start(bao.addr());
    let m = Mount::builder(&bao, "secret/")
        .addr(proxy.addr())
        .args(&["--writable", "--ttl", "5m", "--timeout", "2s"])
        .start();
    let key = m.at("app/db/PASSWORD");
    assert_eq!(std::fs::read(&key).unwrap(), b"old"); // cached for 5 minutes
    let f = open_and_write(&key, b"new");
    // The server applies the write, then hangs.
    proxy.set(lossy::HANG_AFTER_WRITE);
    let closed = close(f);
    proxy.release();
    let err = closed.unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let log = m.log();
    assert!(log.contains("outcome unknown"), "{log}");
    assert!(!log.contains("\"new\""), "a value reached the log: {log}");
    let (_, status) = support::status(m.path());
    assert_eq!(status["unknown_outcomes"], json!(1), "{status}");
    // The store holds the new value; the mount shows it, not the copy it
    // cached before the write (5 minutes of TTL left).
    assert_eq!(
        bao.kv2_get("secret", "app/db").unwrap().0["PASSWORD"],
        json!("new")
    );
    assert_eq!(std::fs::read(&key).unwrap(), b"new");
}

#[test]
fn rsync_inplace_again_with_unchanged_sources_makes_no_version() {
    let bao = seeded();
    let m = Mount::new(&bao, "secret/", &["--writable"]);
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("CERT"), "cert-bytes").unwrap();
    std::fs::write(src.path().join("KEY"), "key-bytes").unwrap();
    // Sources older than anything in the mount: rsync's quick check
    // (size and mtime) never matches, as with any real tree.
    sh_ok(&format!("touch -d 2001-01-01 {}/*", q(src.path())));
    let rsync = |opts: &str| {
        sh_ok(&format!(
            "rsync {opts} {}/ {}/",
            q(src.path()),
            q(&m.at("app/db"))
        ))
    };
    rsync("-r --inplace");
    let v = bao.kv2_version("secret", "app/db");
    let d = bao.kv2_get("secret", "app/db").unwrap().0;
    assert_eq!(
        (&d["CERT"], &d["KEY"]),
        (&json!("cert-bytes"), &json!("key-bytes"))
    );
    // rsync cannot set times on the mount, so it sends every file again:
    // unchanged bytes make no version.
    rsync("-r --inplace");
    rsync("-a --inplace");
    rsync("-rc");
    assert_eq!(bao.kv2_version("secret", "app/db"), v, "no new version");
    // A changed source makes one.
    std::fs::write(src.path().join("KEY"), "new-key").unwrap();
    rsync("-r --inplace");
    assert_eq!(bao.kv2_version("secret", "app/db"), v + 1);
    assert_eq!(std::fs::read(m.at("app/db/KEY")).unwrap(), b"new-key");
}

#[test]
fn with_the_server_paused_a_failed_close_stored_nothing() {
    let bao = seeded();
    let m = Mount::new(
        &bao,
        "secret/",
        &["--writable", "--ttl", "5m", "--timeout", "2s"],
    );
    let key = m.at("app/db/PASSWORD");
    assert_eq!(std::fs::read(&key).unwrap(), b"old");
    let v = bao.kv2_version("secret", "app/db");
    let f = open_and_write(&key, b"new");
    // Hung before the commit's read is answered: the write never goes out.
    bao.pause();
    let closed = close(f);
    bao.resume();
    let err = closed.unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    // The read the hung server got late changes nothing; nothing else
    // reaches it (the writer was told: its change is discarded), checked
    // once the descriptor is released.
    m.wait_settled();
    assert_eq!(bao.kv2_version("secret", "app/db"), v);
    let (_, status) = support::status(m.path());
    assert_eq!(status["unknown_outcomes"], json!(0), "{status}");
    assert_eq!(std::fs::read(&key).unwrap(), b"old");
}
