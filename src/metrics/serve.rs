//! The scrape endpoint: `GET /metrics` over plain HTTP/1.1 on the address
//! given with `--metrics`, each connection on a thread of its own. A
//! scrape is a few KiB every few seconds; a full HTTP server crate would
//! bring more code than this file, so this answers exactly one request
//! per connection and closes it.
//!
//! A client cannot hold the endpoint: each connection has
//! [`CLIENT_TIMEOUT`] in all to send its request and take the answer (a
//! client that trickles a byte now and then is cut off at the deadline,
//! not only one that falls silent), and [`AT_ONCE`] are answered at once,
//! so a few slow or hostile clients leave room for the scrapes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Metrics;

/// The longest request head read; anything longer is refused.
const MAX_HEAD: usize = 8 * 1024;
/// How long a connection may last in all: to send the request and read
/// the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections answered at once, each on its own thread. Past this many,
/// a new connection waits its turn, which comes within
/// [`CLIENT_TIMEOUT`].
const AT_ONCE: usize = 64;

/// A bound scrape endpoint.
pub struct Server {
    listener: TcpListener,
}

/// Binds `addr` (so that a busy or bad address fails the mount before it
/// starts), ready to serve `metrics` with [`Server::start`]. Warns when
/// the address is not a loopback one.
pub fn serve(addr: &str) -> std::io::Result<Server> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    if !bound.ip().is_loopback() {
        tracing::warn!(
            "--metrics {addr}: not a loopback address: anyone who can reach {bound} can read \
             the metrics (store activity, token expiry; never a path or a value) and open \
             connections to it; bind 127.0.0.1 unless the network is trusted"
        );
    }
    Ok(Server { listener })
}

impl Server {
    /// The address bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Answers scrapes of `metrics` on a thread of its own until the
    /// process exits.
    pub fn start(self, metrics: Arc<Metrics>) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name("secretfs-metrics".into())
            .spawn(move || {
                let busy = Arc::new(AtomicUsize::new(0));
                for stream in self.listener.incoming() {
                    let s = match stream {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::debug!(error = %e, "metrics connection failed");
                            continue;
                        }
                    };
                    // Every connection ends within CLIENT_TIMEOUT: a
                    // place comes free within that.
                    while busy.load(Ordering::Acquire) >= AT_ONCE {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    busy.fetch_add(1, Ordering::AcqRel);
                    let done = busy.clone();
                    let metrics = metrics.clone();
                    let spawned = std::thread::Builder::new()
                        .name("secretfs-scrape".into())
                        .stack_size(256 * 1024)
                        .spawn(move || {
                            if let Err(e) = answer(s, &metrics) {
                                tracing::debug!(error = %e, "metrics request not answered");
                            }
                            done.fetch_sub(1, Ordering::AcqRel);
                        });
                    if let Err(e) = spawned {
                        busy.fetch_sub(1, Ordering::AcqRel);
                        tracing::debug!(error = %e, "cannot start a scrape thread");
                    }
                }
            })
            .map(|_| ())
    }
}

/// A connection whose reads and writes all end by one deadline.
struct Bounded {
    stream: TcpStream,
    deadline: Instant,
}

impl Bounded {
    /// The time left, or a `TimedOut` error once it is up.
    fn left(&self) -> std::io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the client took more than {CLIENT_TIMEOUT:?}"),
            ));
        }
        Ok(left)
    }
}

impl Read for Bounded {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.left()?;
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

impl Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let left = self.left()?;
        self.stream.set_write_timeout(Some(left))?;
        self.stream.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.stream.flush()
    }
}

/// Reads one request head and answers it, all within [`CLIENT_TIMEOUT`].
fn answer(stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut stream = Bounded {
        stream,
        deadline: Instant::now() + CLIENT_TIMEOUT,
    };
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "",
            );
        }
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or(&[]);
    let mut words = line.split(|&b| b == b' ');
    let (method, target) = (words.next().unwrap_or(&[]), words.next().unwrap_or(&[]));
    let path = target.split(|&b| b == b'?').next().unwrap_or(&[]);
    match (method, path) {
        (b"GET", b"/metrics") => respond(
            &mut stream,
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            &metrics.encode(),
        ),
        (b"GET", _) => respond(&mut stream, "404 Not Found", "text/plain", "try /metrics\n"),
        _ => respond(&mut stream, "405 Method Not Allowed", "text/plain", ""),
    }
}

fn respond(stream: &mut impl Write, status: &str, kind: &str, body: &str) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(request.as_bytes()).expect("send");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    }

    #[test]
    fn a_scrape_gets_the_families_and_other_paths_do_not() {
        let metrics = Arc::new(Metrics::new());
        let server = serve("127.0.0.1:0").expect("bind");
        let addr = server.local_addr().expect("addr");
        server.start(metrics).expect("start");
        let ok = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("# TYPE secretfs_token_expiry_timestamp_seconds gauge"),
            "{ok}"
        );
        assert!(ok.ends_with("# EOF\n"), "{ok}");
        let missing = get(addr, "GET / HTTP/1.1\r\n\r\n");
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        let post = get(addr, "POST /metrics HTTP/1.1\r\n\r\n");
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    }

    #[test]
    fn a_client_that_sends_nothing_does_not_hold_up_a_scrape() {
        let metrics = Arc::new(Metrics::new());
        let server = serve("127.0.0.1:0").expect("bind");
        let addr = server.local_addr().expect("addr");
        server.start(metrics).expect("start");
        // Connected, silent: held for up to CLIENT_TIMEOUT.
        let _silent = TcpStream::connect(addr).expect("connect");
        let started = std::time::Instant::now();
        let ok = get(addr, "GET /metrics HTTP/1.1\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            started.elapsed() < CLIENT_TIMEOUT,
            "the scrape waited for the silent client"
        );
    }

    #[test]
    fn a_busy_address_fails_at_bind() {
        let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr").to_string();
        assert!(serve(&addr).is_err());
    }
}
