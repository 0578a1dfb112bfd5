//! Layouts through a real mount over a real OpenBao, read by the programs
//! that read such files: `--layout json` read by `jq` and Python's `json`,
//! `--layout env` read by bash `source`, systemd's own env-file parser and
//! python-dotenv, with hostile values; writes on `--writable` mounts
//! checked in the store itself. What the store holds runs per store
//! (`per_store!`, tests/support/backend.rs): versions and metadata on the
//! stores that have them, and where a store has none, the errno it gives.
//!
//! systemd: PID 1 here is no systemd, so `systemd-run` cannot start a
//! unit. systemd reads `EnvironmentFile=` with the parser it reads
//! os-release with (`parse_env_file_internal` in `env-file.c`), and
//! `SYSTEMD_OS_RELEASE=FILE systemd-analyze condition
//! 'ConditionOSRelease="KEY=VALUE"'` asks that parser whether KEY reads as
//! VALUE: that is what these tests run. `docker --env-file` needs a docker
//! daemon, which these machines do not run: not tested (its parser takes
//! each line's value literally, so only unquoted values read back there).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use support::{
    names, per_store, run, run_ok, s, set, status, write_and_close, Backend, Bao, Mount, Store,
};

/// Values no one quoting suits, each under its own key.
const HOSTILE: &[(&str, &str)] = &[
    ("PLAIN", "plain-value_1.2:3/4@x%y+z,="),
    ("EMPTY", ""),
    ("SPACES", "two words"),
    ("APOS", "it's"),
    ("DQUOTE", "say \"hi\""),
    ("DOLLAR", "costs $5: $HOME and ${HOME} and $(id) and `id`"),
    ("BACKSLASH", "back\\slash"),
    ("DOUBLE_BACKSLASH", "double\\\\backslash"),
    ("TRAILING_BACKSLASH", "ends with \\"),
    ("NEWLINES", "line one\nline two\n"),
    ("HASH", "# not a comment"),
    ("HASH_INSIDE", "value # with hash"),
    ("PADDED", "  leading and trailing  "),
    ("TRAILING_SPACES", "trailing  "),
    ("UNICODE", "ünïcødé ✓ 🔑"),
    ("EQUALS", "a=b=c"),
    ("MIXED", "it's $5 and `x` \\ \"q\""),
    ("TILDE", "~/home"),
    ("TAB", "tab\there"),
    ("BACKSLASH_N", "\\n is not a newline"),
];

/// The values python-dotenv cannot read back exactly, by design (see
/// docs/LAYOUTS.md): a quote or backslash together with `$` or a backquote.
const NOT_FOR_DOTENV: &[&str] = &["MIXED"];

fn hostile_secret() -> Value {
    let map: serde_json::Map<String, Value> = HOSTILE
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    Value::Object(map)
}

fn python(script: &str, args: &[&str]) -> String {
    run_ok("python3", &[&["-c", script][..], args].concat())
}

/// What bash `source` makes of each key of the env file at `file`.
fn bash_source(file: &Path, keys: &[&str]) -> BTreeMap<String, String> {
    let script = r#"f=$1; shift; source "$f" || exit 3; for k; do printf '%s\0' "${!k}"; done"#;
    let out = run(
        "bash",
        &[&["-c", script, "bash", s(file)][..], keys].concat(),
    );
    assert!(
        out.status.success(),
        "bash source: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let values: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .split_terminator('\0')
        .map(str::to_string)
        .collect();
    keys.iter().map(|k| k.to_string()).zip(values).collect()
}

/// Whether systemd's env-file parser reads `key` in `file` as `value`.
fn systemd_reads(file: &Path, key: &str, value: &str) -> bool {
    // `%` starts a unit specifier in a condition.
    let quoted = value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('%', "%%");
    let condition = format!("ConditionOSRelease=\"{key}={quoted}\"");
    let out = Command::new("timeout")
        .args(["15", "systemd-analyze", "condition", &condition])
        .env("SYSTEMD_OS_RELEASE", file)
        .output()
        .expect("systemd-analyze (Debian's systemd package)");
    out.status.success()
}

/// What python-dotenv reads from `file` (`interpolate`: expand `${VAR}`,
/// its default).
fn dotenv(file: &Path, interpolate: bool) -> BTreeMap<String, String> {
    let script = "import sys, json\nfrom dotenv import dotenv_values\n\
        print(json.dumps(dotenv_values(sys.argv[1], interpolate=sys.argv[2] == '1')))";
    let out = python(script, &[s(file), if interpolate { "1" } else { "0" }]);
    serde_json::from_str(&out).expect("dotenv's JSON")
}

per_store!(json_layout_shows_each_secret_as_a_json_file_jq_and_python_read);
fn json_layout_shows_each_secret_as_a_json_file_jq_and_python_read(backend: Backend) {
    let store = Store::seeded(backend);
    // The mount(8) form of the option.
    let m = store.mount("", &["-o", "layout=json"]);
    assert_eq!(names(m.path()), set(&["clash", "clash.json", "myapp"]));
    // db is a secret and a folder; token and typed are only secrets.
    assert_eq!(
        names(&m.at("myapp")),
        set(&["api", "db", "db.json", "typed.json"])
    );
    assert_eq!(names(&m.at("myapp/api")), set(&["token.json"]));
    assert!(!m.at("myapp/api/token").exists());
    for secret in ["myapp/db", "myapp/typed", "clash", "myapp/api/token"] {
        let file = m.at(&format!("{secret}.json"));
        let data = store.data(secret);
        // Python's json module, and jq.
        let from_python = python(
            "import json, sys; print(json.dumps(json.load(open(sys.argv[1]))))",
            &[s(&file)],
        );
        let from_python: Value = serde_json::from_str(&from_python).unwrap();
        assert_eq!(from_python, data, "{secret}");
        let from_jq: Value = serde_json::from_str(&run_ok("jq", &["-c", ".", s(&file)])).unwrap();
        assert_eq!(from_jq, data, "{secret}");
    }
    // Types kept, compact, keys sorted, one final newline.
    assert_eq!(
        std::fs::read_to_string(m.at("myapp/typed.json")).unwrap(),
        "{\"a\":[1,2],\"b\":true,\"f\":1.5,\"n\":42,\"o\":{\"a\":[1,\"x\"]},\"z\":null}\n"
    );
    assert_eq!(
        run_ok("jq", &["-r", ".PASSWORD", s(&m.at("myapp/db.json"))]),
        "hunter2\n"
    );
    assert_eq!(
        run_ok("jq", &[".n + 1", s(&m.at("myapp/typed.json"))]),
        "43\n"
    );
    // Read-only by default.
    let e = write_and_close(&m.at("clash.json"), b"{}").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
}

per_store!(writing_a_json_file_is_one_new_version_and_a_bad_one_changes_nothing);
fn writing_a_json_file_is_one_new_version_and_a_bad_one_changes_nothing(backend: Backend) {
    let store = Store::seeded(backend);
    let m = store.mount("", &["--layout", "json", "--writable"]);
    let file = m.at("myapp/db.json");
    let before = store.version("myapp/db");
    // jq edits, cp writes back: one new version, types kept.
    let edited = run_ok(
        "jq",
        &[
            "-c",
            ".USER = \"admin\" | .PORT = 6543 | del(.MULTI)",
            s(&file),
        ],
    );
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), &edited).unwrap();
    run_ok("cp", &[s(tmp.path()), s(&file)]);
    let (data, version) = (store.data("myapp/db"), store.version("myapp/db"));
    assert_eq!(version, before.map(|v| v + 1));
    assert_eq!(
        data,
        json!({"PASSWORD": "hunter2", "USER": "admin", "PORT": 6543, "UNICODE": "pässwörd ✓"})
    );
    // Not a JSON object: EINVAL from close, the store unchanged.
    for bad in [&b"[1, 2]"[..], b"{\"USER\": ", b"USER=admin"] {
        let e = write_and_close(&file, bad).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{bad:?}");
    }
    assert_eq!(
        (store.data("myapp/db"), store.version("myapp/db")),
        (data, version)
    );
    // Creating N.json creates the secret N.
    let tmp2 = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp2.path(), "{\"HOST\": \"redis\", \"PORT\": 6379}").unwrap();
    run_ok("cp", &[s(tmp2.path()), s(&m.at("myapp/cache.json"))]);
    assert_eq!(
        store.data("myapp/cache"),
        json!({"HOST": "redis", "PORT": 6379})
    );
    assert!(names(&m.at("myapp")).contains("cache.json"));
}

per_store!(env_layout_values_read_back_exactly_by_bash_systemd_and_python_dotenv);
fn env_layout_values_read_back_exactly_by_bash_systemd_and_python_dotenv(backend: Backend) {
    let store = Store::seeded_with(
        backend,
        &[
            ("app/hostile", hostile_secret()),
            (
                "app/typed",
                json!({"PORT": 5432, "ON": true, "bad-name": "left out", "OBJ": {"a": "b c"}}),
            ),
        ],
    );
    let m = store.mount("", &["--layout", "env"]);
    assert_eq!(names(&m.at("app")), set(&["hostile.env", "typed.env"]));
    let file = m.at("app/hostile.env");
    let keys: Vec<&str> = HOSTILE.iter().map(|(k, _)| *k).collect();

    let from_bash = bash_source(&file, &keys);
    for (k, v) in HOSTILE {
        assert_eq!(from_bash[*k], *v, "bash source, {k}");
    }

    for (k, v) in HOSTILE {
        // The condition cannot say "empty", drops the spaces a value
        // starts with, and takes a value starting with an operator as one.
        if v.is_empty() || v.starts_with(['=', '<', '>', '!', '$', ' ']) {
            continue;
        }
        assert!(systemd_reads(&file, k, v), "systemd reads {k} as {v:?}");
        assert!(
            !systemd_reads(&file, k, &format!("{v}x")),
            "systemd's check tells values apart ({k})"
        );
    }

    let plain = dotenv(&file, false);
    let interpolated = dotenv(&file, true);
    for (k, v) in HOSTILE {
        if NOT_FOR_DOTENV.contains(k) {
            continue;
        }
        assert_eq!(plain[*k], *v, "python-dotenv (interpolate=False), {k}");
        // With its default interpolation, dotenv expands ${VAR}.
        if !v.contains("${") {
            assert_eq!(interpolated[*k], *v, "python-dotenv, {k}");
        }
    }

    // Typed values as their JSON text; a key no variable can be named
    // after is left out.
    let typed = m.at("app/typed.env");
    assert_eq!(
        std::fs::read_to_string(&typed).unwrap(),
        "OBJ='{\"a\":\"b c\"}'\nON=true\nPORT=5432\n"
    );
    let from_bash = bash_source(&typed, &["OBJ", "ON", "PORT"]);
    assert_eq!(from_bash["OBJ"], "{\"a\":\"b c\"}");
    assert_eq!(from_bash["PORT"], "5432");
}

per_store!(writing_an_env_file_replaces_the_data_in_one_write);
fn writing_an_env_file_replaces_the_data_in_one_write(backend: Backend) {
    let store = Store::seeded_with(
        backend,
        &[
            ("app/hostile", hostile_secret()),
            ("app/typed", json!({"PORT": 5432, "bad-name": "kept"})),
        ],
    );
    let m = store.mount("", &["--layout", "env", "--writable"]);

    // What was read, written back unchanged, parses to the same data:
    // no new version (unchanged data makes none).
    let file = m.at("app/hostile.env");
    let before = store.version("app/hostile");
    let text = std::fs::read(&file).unwrap();
    write_and_close(&file, &text).unwrap();
    assert_eq!(store.version("app/hostile"), before);
    assert_eq!(store.data("app/hostile"), hostile_secret());

    // A hand-written file, as a person would write it.
    let typed = m.at("app/typed.env");
    let hand = "# the database\nexport PORT=6543\nUSER='app user'\nPASS=\"it's \\\"x\\\" \\$1\"\n";
    write_and_close(&typed, hand.as_bytes()).unwrap();
    assert_eq!(
        store.data("app/typed"),
        json!({"PORT": 6543, "USER": "app user", "PASS": "it's \"x\" $1", "bad-name": "kept"})
    );
    // A line that does not parse: EINVAL, nothing written.
    let before = store.data("app/typed");
    let version = store.version("app/typed");
    let e = write_and_close(&typed, b"PORT=1\nthis is not a pair\n").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    assert_eq!(store.version("app/typed"), version);
    assert_eq!(store.data("app/typed"), before);
    // Creating N.env creates N.
    write_and_close(&m.at("app/new.env"), b"K=v\n").unwrap();
    assert_eq!(store.data("app/new"), json!({"K": "v"}));
}

#[test]
fn an_unknown_layout_is_refused_at_start() {
    let bao = Bao::start();
    let (status, stderr) = Mount::builder(&bao, "secret/")
        .args(&["-o", "layout=yaml"])
        .fail();
    assert!(!status.success());
    assert!(
        stderr.contains("keys (default), json, env or templates:DIR"),
        "{stderr}"
    );
}

// ---- versions ---------------------------------------------------------------

/// `app/db` written three times (PASSWORD one, two, three).
fn three_versions(backend: Backend) -> Store {
    let store = Store::start(backend);
    for pw in ["one", "two", "three"] {
        store.put("app/db", json!({"PASSWORD": pw, "USER": "app"}));
    }
    store
}

per_store!(a_version_reads_through_its_name_and_a_rollback_is_cp: vault_kv2, file);
fn a_version_reads_through_its_name_and_a_rollback_is_cp(backend: Backend) {
    let store = three_versions(backend);
    let m = store.mount("", &["--writable"]);
    assert_eq!(run_ok("cat", &[s(&m.at("app/db@1/PASSWORD"))]), "one");
    assert_eq!(run_ok("cat", &[s(&m.at("app/db@2/PASSWORD"))]), "two");
    assert_eq!(names(&m.at("app")), set(&["db"]));
    assert_eq!(names(&m.at("app/db@1")), set(&["PASSWORD", "USER"]));
    // Read-only even here.
    let e = write_and_close(&m.at("app/db@1/PASSWORD"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    // The rollback.
    run_ok(
        "cp",
        &[s(&m.at("app/db@1/PASSWORD")), s(&m.at("app/db/PASSWORD"))],
    );
    assert_eq!(
        store.data("app/db"),
        json!({"PASSWORD": "one", "USER": "app"})
    );
    assert_eq!(store.version("app/db"), Some(4));
    // Deleted and destroyed versions are gone; a version not yet written
    // never was.
    store.delete_version("app/db", 2);
    store.destroy_version("app/db", 3);
    // (A mount that read a version keeps it for the TTL, like any answer.)
    let m2 = store.mount("", &[]);
    for gone in ["app/db@2", "app/db@3", "app/db@9"] {
        let e = std::fs::metadata(m2.at(gone)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{gone}");
    }
    assert_eq!(run_ok("cat", &[s(&m2.at("app/db@1/USER"))]), "app");
    // A real secret of that name wins.
    store.put("app/db@1", json!({"REAL": "yes"}));
    let m3 = store.mount("", &[]);
    assert_eq!(names(&m3.at("app/db@1")), set(&["REAL"]));
}

// A version that never was is ENOENT on every store, however large its
// number: OpenBao refuses a version past its int64 (HTTP 400), which
// made `app/db@18446744073709551615` EINVAL (and a warning) on KV v2
// where the store file said ENOENT.
per_store!(a_version_that_never_was_is_enoent_whatever_its_number);
fn a_version_that_never_was_is_enoent_whatever_its_number(backend: Backend) {
    let store = three_versions(backend);
    let m = store.mount("", &[]);
    for name in [
        "app/db@0",
        "app/db@9",
        "app/db@9223372036854775807",
        "app/db@9223372036854775808",
        "app/db@18446744073709551615",
        "app/db@99999999999999999999",
    ] {
        let e = std::fs::metadata(m.at(name)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{name}: {e}");
    }
    assert!(
        !m.log().contains(" WARN "),
        "a missing version is no failure: {}",
        m.log()
    );
}

per_store!(in_the_json_layout_a_version_is_a_json_file_jq_reads: vault_kv2, file);
fn in_the_json_layout_a_version_is_a_json_file_jq_reads(backend: Backend) {
    let store = three_versions(backend);
    let m = store.mount("", &["--layout", "json"]);
    assert_eq!(
        run_ok("jq", &["-r", ".PASSWORD", s(&m.at("app/db@1.json"))]),
        "one\n"
    );
    assert_eq!(names(&m.at("app")), set(&["db.json"]));
}

#[test]
fn kv1_has_no_versions_to_show() {
    let bao = Bao::start();
    bao.enable_kv("kv1", 1);
    bao.kv1_put("kv1", "app/db", json!({"K": "v"}));
    let m = Mount::new(&bao, "kv1/", &[]);
    assert_eq!(run_ok("cat", &[s(&m.at("app/db/K"))]), "v");
    let e = std::fs::metadata(m.at("app/db@1")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    // And status says so.
    let (_, report) = status(m.path());
    assert_eq!(
        report["store_capabilities"],
        Backend::VaultKv1.caps().as_status(),
        "{report}"
    );
}

// ---- metadata as extended attributes ---------------------------------------

/// What `getfattr -d` shows of `path`: name → value.
fn getfattr(path: &Path) -> BTreeMap<String, String> {
    run_ok("getfattr", &["-d", "--absolute-names", s(path)])
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

per_store!(metadata_shows_as_extended_attributes_and_setfattr_writes_custom_metadata: vault_kv2, file);
fn metadata_shows_as_extended_attributes_and_setfattr_writes_custom_metadata(backend: Backend) {
    let store = three_versions(backend);
    store.put_custom_metadata("app/db", "owner", "team-a");
    if backend == Backend::VaultKv2 {
        let (status, resp) = store.bao().api(
            "POST",
            "secret/metadata/app/db",
            Some(json!({"custom_metadata": {"owner": "team-a"}, "max_versions": 5})),
        );
        assert!(status < 300, "{resp}");
    }
    let m = store.mount("", &["--writable"]);
    for path in ["app/db", "app/db/PASSWORD"] {
        let attrs = getfattr(&m.at(path));
        assert_eq!(attrs["user.secretfs.version"], "3", "{path}");
        assert_eq!(attrs["user.secretfs.meta.owner"], "team-a", "{path}");
        humantime::parse_rfc3339(&attrs["user.secretfs.created_time"]).unwrap();
    }
    assert_eq!(getfattr(&m.at("app/db@1"))["user.secretfs.version"], "1");

    run_ok(
        "setfattr",
        &[
            "-n",
            "user.secretfs.meta.description",
            "-v",
            "the app's database",
            s(&m.at("app/db")),
        ],
    );
    assert_eq!(
        store.custom_metadata("app/db"),
        Some(json!({"owner": "team-a", "description": "the app's database"}))
    );
    if backend == Backend::VaultKv2 {
        let (_, resp) = store.bao().api("GET", "secret/metadata/app/db", None);
        assert_eq!(
            resp["data"]["max_versions"],
            json!(5),
            "other metadata untouched"
        );
    }
    assert_eq!(store.version("app/db"), Some(3), "no new version");
    assert_eq!(
        getfattr(&m.at("app/db/USER"))["user.secretfs.meta.description"],
        "the app's database"
    );
    run_ok(
        "setfattr",
        &[
            "-x",
            "user.secretfs.meta.owner",
            s(&m.at("app/db/PASSWORD")),
        ],
    );
    assert_eq!(
        store.custom_metadata("app/db"),
        Some(json!({"description": "the app's database"}))
    );
    // The store's own attributes are not ours to set.
    let out = run(
        "setfattr",
        &["-n", "user.secretfs.version", "-v", "9", s(&m.at("app/db"))],
    );
    assert!(!out.status.success());

    // In the json layout, on the file; a read-only mount refuses changes.
    let j = store.mount("", &["--layout", "json"]);
    let attrs = getfattr(&j.at("app/db.json"));
    assert_eq!(
        attrs["user.secretfs.meta.description"],
        "the app's database"
    );
    let out = run(
        "setfattr",
        &[
            "-n",
            "user.secretfs.meta.x",
            "-v",
            "1",
            s(&j.at("app/db.json")),
        ],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("Read-only file system"));
}

#[test]
fn kv1_secrets_have_no_metadata_attributes() {
    let bao = Bao::start();
    bao.enable_kv("kv1", 1);
    bao.kv1_put("kv1", "app/db", json!({"K": "v"}));
    let m = Mount::new(&bao, "kv1/", &["--writable"]);
    assert!(getfattr(&m.at("app/db")).is_empty());
    let out = run(
        "getfattr",
        &["-n", "user.secretfs.version", s(&m.at("app/db/K"))],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such attribute"));
    let out = run(
        "setfattr",
        &["-n", "user.secretfs.meta.x", "-v", "1", s(&m.at("app/db"))],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Operation not supported"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And status says so.
    let (_, report) = status(m.path());
    assert_eq!(
        report["store_capabilities"]["metadata"],
        json!(false),
        "{report}"
    );
}
