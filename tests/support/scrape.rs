//! Reading a mount's `--metrics` endpoint: what the daemon received and
//! did, for tests that wait on it rather than on time.

use std::net::TcpListener;

/// A loopback address nothing listens on (bound and released).
pub fn free_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

/// The scrape's samples: `name{labels}` → value.
pub fn scrape(addr: &str) -> Vec<(String, f64)> {
    let mut resp = ureq::get(&format!("http://{addr}/metrics"))
        .call()
        .expect("scrape");
    let kind = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    let body = resp.body_mut().read_to_string().expect("body");
    assert!(body.ends_with("# EOF\n"), "{body}");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The value of the sample `name` (with its labels), 0 when absent.
pub fn value(samples: &[(String, f64)], name: &str) -> f64 {
    samples
        .iter()
        .find(|(n, _)| n == name)
        .map_or(0.0, |(_, v)| *v)
}

/// How many FUSE requests of `op` the daemon serving `addr` received.
pub fn fuse_ops(addr: &str, op: &str) -> f64 {
    value(
        &scrape(addr),
        &format!("secretfs_fuse_operations_total{{op=\"{op}\"}}"),
    )
}
