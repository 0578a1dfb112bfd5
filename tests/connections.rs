//! Connections the other end closed: a restarted OpenBao, or a proxy in
//! front of it that closes idle connections (as nginx, HAProxy and cloud
//! load balancers do) or all of them at once (as a reload does). A request
//! that finds its pooled connection closed is sent again on a new one, and
//! idle connections are dropped before a proxy's 1 s timeout: no read
//! fails, no write is lost, and the store is never taken for down.
//!
//! The proxy is the test's own (std::net threads): it closes a client
//! connection 1 s after its last byte, or when told to. OpenBao is real,
//! killed and started again on its port and its data (a one-node Raft
//! server).

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{eventually, write_and_close, Bao, Cluster, Mount};

/// Secrets read in each burst (each burst reads new ones: cold reads).
const READS: usize = 12;
/// Secrets written in each burst.
const WRITES: usize = 4;

/// One proxied connection: both sockets, and when the last byte passed.
struct Conn {
    client: TcpStream,
    upstream: TcpStream,
    last: Mutex<Instant>,
    done: AtomicBool,
}

impl Conn {
    fn close(&self) {
        self.done.store(true, Ordering::SeqCst);
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.upstream.shutdown(Shutdown::Both);
    }
}

/// A TCP proxy to `upstream` that closes each client connection `idle`
/// after its last byte (either way), and every one on [`Proxy::drop_all`].
struct Proxy {
    url: String,
    conns: Arc<Mutex<Vec<Arc<Conn>>>>,
    /// Connections closed for being idle.
    idled: Arc<AtomicUsize>,
}

impl Proxy {
    fn start(upstream: &str, idle: Duration) -> Proxy {
        let upstream = upstream
            .strip_prefix("http://")
            .expect("an http:// server")
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let conns: Arc<Mutex<Vec<Arc<Conn>>>> = Arc::default();
        let idled = Arc::new(AtomicUsize::new(0));
        let (all, closed) = (conns.clone(), idled.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(up) = TcpStream::connect(&upstream) else {
                    continue; // the server is down: the client sees a close
                };
                let conn = Arc::new(Conn {
                    client,
                    upstream: up,
                    last: Mutex::new(Instant::now()),
                    done: AtomicBool::new(false),
                });
                all.lock().unwrap().push(conn.clone());
                let pump = |from: &TcpStream, to: &TcpStream, conn: Arc<Conn>| {
                    let (mut from, mut to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        while let Ok(n @ 1..) = from.read(&mut buf) {
                            *conn.last.lock().unwrap() = Instant::now();
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        conn.close();
                    });
                };
                pump(&conn.client, &conn.upstream, conn.clone());
                pump(&conn.upstream, &conn.client, conn.clone());
                let (conn, closed) = (conn.clone(), closed.clone());
                std::thread::spawn(move || {
                    while !conn.done.load(Ordering::SeqCst) {
                        let quiet = conn.last.lock().unwrap().elapsed();
                        if quiet >= idle {
                            closed.fetch_add(1, Ordering::SeqCst);
                            conn.close();
                            break;
                        }
                        std::thread::sleep((idle - quiet).min(Duration::from_millis(20)));
                    }
                });
            }
        });
        Proxy { url, conns, idled }
    }

    /// Client connections still open.
    fn open(&self) -> usize {
        let mut conns = self.conns.lock().unwrap();
        conns.retain(|c| !c.done.load(Ordering::SeqCst));
        conns.len()
    }

    /// Closes every connection at once, as a reloaded proxy does.
    fn drop_all(&self) -> usize {
        let conns = std::mem::take(&mut *self.conns.lock().unwrap());
        let open: Vec<_> = conns
            .iter()
            .filter(|c| !c.done.load(Ordering::SeqCst))
            .collect();
        open.iter().for_each(|c| c.close());
        open.len()
    }
}

/// Writes the secrets the bursts of round `round` read and write.
fn seed(bao: &Bao, round: usize) {
    for i in 0..READS {
        bao.kv2_put(
            "secret",
            &format!("conn/r{round}/s{i}"),
            json!({"v": format!("value {round}.{i}")}),
        );
    }
    for j in 0..WRITES {
        bao.kv2_put(
            "secret",
            &format!("conn/r{round}/w{j}"),
            json!({"k": "before"}),
        );
    }
    bao.kv2_put("secret", "conn/load", json!({"k": "before"}));
}

/// Reads the secrets of round `round` (never read before: each read asks
/// the store) and writes one key of each written secret, all at once from
/// as many threads; every read must give its value and every write land.
fn burst(bao: &Bao, m: &Mount, round: usize) {
    let failures: Vec<String> = std::thread::scope(|s| {
        let reads: Vec<_> = (0..READS)
            .map(|i| {
                let file = m.at(&format!("conn/r{round}/s{i}/v"));
                s.spawn(move || {
                    let want = format!("value {round}.{i}");
                    match std::fs::read(&file) {
                        Ok(got) if got == want.as_bytes() => None,
                        Ok(got) => Some(format!(
                            "{}: read {:?}, not {want:?}",
                            file.display(),
                            String::from_utf8_lossy(&got)
                        )),
                        Err(e) => Some(format!("{}: {e}", file.display())),
                    }
                })
            })
            .collect();
        let writes: Vec<_> = (0..WRITES)
            .map(|j| {
                let file = m.at(&format!("conn/r{round}/w{j}/k"));
                s.spawn(move || {
                    write_and_close(&file, format!("round {round}").as_bytes())
                        .err()
                        .map(|e| format!("write {}: {e}", file.display()))
                })
            })
            .collect();
        reads
            .into_iter()
            .chain(writes)
            .filter_map(|t| t.join().expect("a reader panicked"))
            .collect()
    });
    assert!(
        failures.is_empty(),
        "round {round}: {} of {} operations failed:\n{}\n--- secretfs log:\n{}",
        failures.len(),
        READS + WRITES,
        failures.join("\n"),
        tail(&m.log())
    );
    // Landed (asked of the node the mount uses: a standby may show it a
    // moment later than the active node).
    for j in 0..WRITES {
        let path = format!("conn/r{round}/w{j}");
        let want = json!({"k": format!("round {round}")});
        eventually(
            format!("round {round}: the write of {path} lands"),
            Duration::from_secs(5),
            || {
                let (data, _) = bao.kv2_get("secret", &path).expect("the written secret");
                (data == want).then_some(())
            },
        );
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn mount(bao: &Bao, addr: &str) -> Mount {
    Mount::builder(bao, "secret/")
        .addr(addr)
        // Eight FUSE threads: eight pooled connections to go stale. No
        // stale answers: a read the store fails is an error.
        .args(&["--writable", "--threads", "8", "--stale-if-error", "0s"])
        .start()
}

/// How many times the daemon sent a request again on a new connection.
fn resent(m: &Mount) -> usize {
    m.log()
        .matches("a pooled connection was closed: sending again")
        .count()
}

#[test]
fn a_proxy_that_closes_idle_connections_fails_no_read_or_write() {
    let bao = Bao::start();
    let rounds = 6;
    (0..=rounds).for_each(|r| seed(&bao, r));
    // Shorter than the daemon keeps idle connections (800 ms, after which
    // it closes them itself: no proxy with a longer timeout gets to).
    let proxy = Proxy::start(bao.addr(), Duration::from_millis(500));
    let m = mount(&bao, &proxy.url);
    assert!(Path::new(&m.at("conn")).is_dir());
    burst(&bao, &m, 0);
    // Reloads that found pooled connections to close: a machine stalled
    // for longer than the pool keeps them idle may find none in a round.
    let mut reloads = 0;
    for round in 1..=rounds {
        if round % 2 == 1 {
            // Idle past the proxy's timeout: it closed every connection.
            eventually(
                "the proxy closes the idle connections",
                Duration::from_secs(10),
                || (proxy.open() == 0).then_some(()),
            );
        } else {
            // At once after a burst: the pooled connections are fresh,
            // and the proxy closes them all (a reload, a failover).
            if proxy.drop_all() > 0 {
                reloads += 1;
            }
        }
        burst(&bao, &m, round);
    }
    assert!(
        proxy.idled.load(Ordering::SeqCst) > 0,
        "the proxy never closed an idle connection"
    );
    // The rounds after a reload went through closed pooled connections.
    assert!(reloads > 0, "no connection open after any burst");
    assert!(resent(&m) > 0, "no request met a closed connection");
    let log = m.log();
    assert!(
        !log.contains("store unreachable"),
        "a closed connection was taken for an outage:\n{}",
        tail(&log)
    );
}

#[test]
fn after_openbao_restarts_under_load_no_read_or_write_fails() {
    // One Raft node: its data survives a restart, on the same port.
    let mut server = Cluster::start_n(1);
    let rounds = 2;
    (0..=rounds).for_each(|r| seed(server.node(0), r));
    let addr = server.node(0).addr().to_string();
    let m = mount(server.node(0), &addr);
    assert!(Path::new(&m.at("conn")).is_dir());
    burst(server.node(0), &m, 0);
    for round in 1..=rounds {
        // A writer keeps going while the server is killed and started
        // again (its writes may fail meanwhile: the store is down).
        let stop = AtomicBool::new(false);
        let ok = std::thread::scope(|s| {
            let load = s.spawn(|| {
                let mut ok = HashMap::<bool, usize>::new();
                let file = m.at("conn/load/k");
                while !stop.load(Ordering::SeqCst) {
                    *ok.entry(write_and_close(&file, b"load").is_ok())
                        .or_default() += 1;
                }
                ok
            });
            server.kill(0);
            server.restart(0);
            stop.store(true, Ordering::SeqCst);
            load.join().expect("the load panicked")
        });
        assert!(ok.values().sum::<usize>() > 0, "no load ran");
        // The writes that failed while the server was down marked the
        // store down; its probe finds it back.
        eventually(
            "the mount finds the store back",
            Duration::from_secs(30),
            || {
                let (_, report) = support::status(m.path());
                (report["store_reachable"] == json!(true)).then_some(())
            },
        );
        burst(server.node(0), &m, round);
    }
}

#[test]
fn a_mount_on_one_raft_node_that_was_killed_and_came_back_writes_again() {
    let mut cluster = Cluster::start();
    (0..=1).for_each(|r| seed(cluster.node(0), r));
    let addr = cluster.node(0).addr().to_string();
    // One --addr: the node the mount talks to, now the active one.
    let m = mount(cluster.node(0), &addr);
    burst(cluster.node(0), &m, 0);
    cluster.kill(0);
    cluster.restart(0);
    // Back as a standby once another node leads: it forwards the writes.
    cluster.wait_active(Duration::from_secs(60));
    burst(cluster.node(0), &m, 1);
}
