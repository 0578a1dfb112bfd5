//! What reading through the mount costs the store, counted in OpenBao's own
//! audit log: one GET per secret per TTL whatever the number of readers,
//! one LIST per folder, nothing for secrets nobody reads.

mod support;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{q, sh_ok, Bao, Mount};

#[test]
fn sixty_four_threads_opening_one_cold_secret_make_one_get() {
    let bao = Bao::start_audited();
    bao.kv2_put("secret", "app/db", json!({"PASSWORD": "hunter2"}));
    let m = Mount::new(&bao, "secret/", &["--ttl", "5m"]);
    // Warm the folders, not the secret.
    assert!(m.at("app/db").is_dir());
    let before = bao.requests("read", "secret/data/app/db");
    let barrier = Arc::new(Barrier::new(64));
    let readers: Vec<_> = (0..64)
        .map(|_| {
            let (barrier, path) = (barrier.clone(), m.at("app/db/PASSWORD"));
            std::thread::spawn(move || {
                barrier.wait();
                std::fs::read(path).unwrap()
            })
        })
        .collect();
    for r in readers {
        assert_eq!(r.join().unwrap(), b"hunter2");
    }
    // The lookup of "db" may have fetched it already: at most one GET in all.
    let gets = bao.requests("read", "secret/data/app/db");
    assert_eq!(gets, 1, "{before} before the readers");
}

#[test]
fn readers_cost_one_get_per_ttl_whatever_their_number() {
    let bao = Bao::start_audited();
    bao.kv2_put("secret", "app/db", json!({"PASSWORD": "hunter2"}));
    let m = Mount::new(&bao, "secret/", &["--ttl", "1s"]);
    let window = Duration::from_secs(4);
    let start = Instant::now();
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let path = m.at("app/db/PASSWORD");
            std::thread::spawn(move || {
                let mut n = 0u64;
                while start.elapsed() < window {
                    assert_eq!(std::fs::read(&path).unwrap(), b"hunter2");
                    n += 1;
                }
                n
            })
        })
        .collect();
    let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    let gets = bao.requests("read", "secret/data/app/db");
    // One per TTL, plus the first and one refresh in flight at the end.
    assert!(gets <= 6, "{gets} GETs for {reads} reads in {window:?}");
    assert!(reads > 100, "only {reads} reads");
}

#[test]
fn a_folder_of_a_thousand_secrets_lists_in_one_request_and_unread_secrets_cost_nothing() {
    let bao = Bao::start_audited();
    for i in 0..1000 {
        bao.kv2_put("secret", &format!("many/s{i:04}"), json!({"K": i}));
    }
    let m = Mount::new(&bao, "secret/", &["--ttl", "5m"]);
    let listed = sh_ok(&format!("ls {}", q(&m.at("many"))));
    assert_eq!(listed.lines().count(), 1000);
    sh_ok(&format!("ls -l {} > /dev/null", q(&m.at("many"))));
    assert_eq!(bao.requests("list", "secret/metadata/many/"), 1);
    assert_eq!(
        bao.requests_under("read", "secret/data/many/"),
        0,
        "unread secrets were fetched"
    );
    assert_eq!(std::fs::read(m.at("many/s0042/K")).unwrap(), b"42");
    assert_eq!(bao.requests_under("read", "secret/data/many/"), 1);
}
