//! Removals as durable as writes (issue 20 §3): a removal `rm` reported
//! done is in the store, even when the daemon is SIGKILLed (the OOM
//! killer, `kill -9`) the moment `rm` exits; a temporary file its creator
//! closed and left alone reaches the store while its creator keeps
//! running. Real `rm`, a real shell, a real SIGKILL, a real OpenBao; the
//! store is checked over its HTTP API.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{eventually, q, Bao, Mount};

fn data(bao: &Bao, path: &str) -> serde_json::Value {
    bao.kv2_get("secret", path).expect("secret exists").0
}

#[test]
fn a_removal_rm_reported_survives_a_sigkill_of_the_daemon_the_moment_rm_exits() {
    let bao = Bao::start();
    let keys: serde_json::Map<String, serde_json::Value> = (0..10)
        .map(|i| (format!("K{i}"), json!(format!("v{i}"))))
        .chain([("KEEP".to_string(), json!("kept"))])
        .collect();
    bao.kv2_put("secret", "app/db", serde_json::Value::Object(keys));
    for i in 0..10 {
        let mut m = Mount::new(&bao, "secret/", &["--writable", "--ttl", "5m"]);
        let key = m.at(&format!("app/db/K{i}"));
        // Looked up first, as a shell's completion would.
        assert!(key.is_file(), "K{i} shows before rm");
        let rm = std::process::Command::new("rm")
            .arg(&key)
            .status()
            .expect("rm runs");
        assert!(rm.success(), "rm K{i}: {rm}");
        // As soon as rm has exited: no time for anything to follow.
        let killed = m.stop_with(libc::SIGKILL);
        assert_eq!(killed.code(), None, "the daemon was killed, not exited");
        let now = data(&bao, "app/db");
        assert!(
            now.get(format!("K{i}")).is_none(),
            "round {i}: rm said K{i} was removed, the store still holds it: {now}"
        );
        assert_eq!(now["KEEP"], json!("kept"));
    }
}

#[test]
fn a_temporary_file_left_alone_reaches_the_store_while_its_creator_keeps_running() {
    let bao = Bao::start();
    bao.kv2_put("secret", "app/db", json!({"USER": "app"}));
    let mut m = Mount::new(&bao, "secret/", &["--writable", "--ttl", "5m"]);
    // bash's noclobber creates with O_EXCL, as mkstemp does: `sedCONFIG`
    // looks like sed's temporary file. The shell that created it (and
    // closed it) keeps running, and never renames it.
    let path = m.at("app/db/sedCONFIG");
    let mut creator = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("set -C; printf kept > {}; exec sleep 60", q(&path)))
        .spawn()
        .expect("bash runs");
    eventually(
        "the temporary file in the mount",
        Duration::from_secs(10),
        || std::fs::read(&path).ok().filter(|b| b == b"kept"),
    );
    eventually(
        "the temporary file stored while its creator runs",
        Duration::from_secs(10),
        || data(&bao, "app/db").get("sedCONFIG").cloned(),
    );
    assert!(
        creator.try_wait().expect("the creator's status").is_none(),
        "the creator kept running"
    );
    m.stop_with(libc::SIGKILL);
    assert_eq!(data(&bao, "app/db")["sedCONFIG"], json!("kept"));
    let _ = creator.kill();
    let _ = creator.wait();
}
