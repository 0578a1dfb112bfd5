//! The deployment files checked against the tools that read them and against
//! the secretfs binary itself:
//!
//! - every unit in `systemd/` passes `systemd-analyze verify` (with its
//!   `/usr/local/bin/secretfs` pointed at the binary under test), and no unit
//!   uses a setting that would hide its mount in a private mount namespace;
//! - the `Dockerfile` is a two-stage build ending in `secretfs mount`;
//! - the Kubernetes manifests parse, reference only declared volumes, and
//!   follow the mount propagation rules (`Bidirectional` only in privileged
//!   containers, the FUSE mount below the shared volume, never its root);
//! - every option that `systemd/`, `deploy/`, the `Dockerfile` and
//!   `docs/DEPLOY.md` pass to secretfs is one that `secretfs mount --help`
//!   lists, and the example config is accepted by the binary.
//!
//! These tests need `systemd-analyze` (Debian's `systemd` package; systemd
//! need not be running) and nothing else: no FUSE, no Vault.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use yaml_rust2::{Yaml, YamlLoader};

const BIN: &str = env!("CARGO_BIN_EXE_secretfs");
/// Where the units, docs and images expect the binary.
const INSTALLED_BIN: &str = "/usr/local/bin/secretfs";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

// ---- systemd ------------------------------------------------------------

const UNIT_SUFFIXES: &[&str] = &[
    "service",
    "mount",
    "automount",
    "socket",
    "timer",
    "path",
    "target",
    "swap",
    "slice",
];

/// The unit files of `systemd/`, by file name.
fn unit_files() -> Vec<(String, String)> {
    let dir = repo().join("systemd");
    let mut units: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("readable systemd/ entry").path())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| UNIT_SUFFIXES.contains(&e))
        })
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, text)
        })
        .collect();
    units.sort();
    units
}

/// `(section, key, value)` of each setting of a unit file.
fn unit_settings(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not a key=value line: {line:?}"));
        out.push((
            section.clone(),
            key.trim().to_string(),
            value.trim().to_string(),
        ));
    }
    out
}

fn setting<'a>(settings: &'a [(String, String, String)], section: &str, key: &str) -> Vec<&'a str> {
    settings
        .iter()
        .filter(|(s, k, _)| s == section && k == key)
        .map(|(_, _, v)| v.as_str())
        .collect()
}

/// Runs `systemd-analyze verify` on one unit file. Panics, with what to
/// install, when the tool is missing.
fn systemd_analyze_verify(unit: &Path) -> Output {
    Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(unit)
        // Without a terminal on stderr (as under `cargo test`) systemd logs to
        // the journal or the kernel log, and every warning would vanish.
        .env("SYSTEMD_LOG_TARGET", "console")
        .env("SYSTEMD_LOG_LEVEL", "info")
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .unwrap_or_else(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                panic!(
                    "systemd-analyze not found: install systemd (scripts/install-deps), \
                     which provides it without systemd running"
                );
            }
            panic!("cannot run systemd-analyze: {e}");
        })
}

/// The problems `systemd-analyze verify` reports about `unit`: a failing exit
/// status, and every line naming the unit or its file (parse warnings such as
/// "Unknown key" leave the exit status at 0). Lines about other units (the
/// targets it refers to) are not its problems.
fn verify_problems(unit: &Path) -> Vec<String> {
    let out = systemd_analyze_verify(unit);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let name = unit.file_name().unwrap().to_string_lossy().into_owned();
    let path = unit.to_string_lossy().into_owned();
    let mut problems: Vec<String> = stderr
        .lines()
        .chain(stdout.lines())
        .filter(|l| l.contains(&path) || l.contains(&format!("{name}:")))
        .map(str::to_string)
        .collect();
    if !out.status.success() {
        problems.push(format!(
            "systemd-analyze verify exited with {}; stderr:\n{stderr}",
            out.status
        ));
    }
    for line in stderr.lines().filter(|l| !problems.iter().any(|p| p == l)) {
        eprintln!("systemd-analyze verify {name} (about another unit): {line}");
    }
    problems
}

#[test]
fn systemd_analyze_reports_broken_units_to_this_test() {
    // The harness itself: a unit with an unknown key, and a mount unit whose
    // name does not match Where=, must both be caught. If systemd-analyze's
    // messages went elsewhere, every unit would pass unchecked.
    let dir = tempfile::tempdir().unwrap();
    let bad_key = dir.path().join("bad-key.service");
    std::fs::write(
        &bad_key,
        format!("[Service]\nType=notify\nExecStart={BIN} mount a b\nNoSuchKey=1\n"),
    )
    .unwrap();
    let problems = verify_problems(&bad_key);
    assert!(
        problems.iter().any(|p| p.contains("NoSuchKey")),
        "an unknown key went unnoticed: {problems:?}"
    );

    let bad_where = dir.path().join("run-secrets.mount");
    std::fs::write(
        &bad_where,
        "[Mount]\nWhat=secret/myapp\nWhere=/run/elsewhere\nType=fuse.secretfs\n",
    )
    .unwrap();
    assert!(
        !verify_problems(&bad_where).is_empty(),
        "a mount unit named after another path went unnoticed"
    );
}

#[test]
fn every_systemd_unit_passes_systemd_analyze_verify() {
    let units = unit_files();
    let names: Vec<&str> = units.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.contains(&"run-secrets.mount") && names.iter().any(|n| n.ends_with(".service")),
        "systemd/ should hold run-secrets.mount and a .service, has {names:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (name, text) in &units {
        // verify checks that ExecStart= binaries exist: use the one under test.
        let copy = dir.path().join(name);
        std::fs::write(&copy, text.replace(INSTALLED_BIN, BIN)).unwrap();
        for problem in verify_problems(&copy) {
            failures.push(format!("{name}: {problem}"));
        }
    }
    assert!(
        failures.is_empty(),
        "systemd-analyze verify:\n{}",
        failures.join("\n")
    );
}

/// Settings that run a unit in a mount namespace of its own, where a mount
/// never propagates back to the host (systemd.exec(5), PrivateMounts= and
/// MountFlags=); ProtectHostname= and PrivateNetwork= do so in newer systemd.
const NAMESPACING: &[&str] = &[
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "PrivateDevices",
    "PrivateMounts",
    "PrivateNetwork",
    "PrivateIPC",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectProc",
    "ProcSubset",
    "ProtectHostname",
    "ReadWritePaths",
    "ReadOnlyPaths",
    "InaccessiblePaths",
    "ExecPaths",
    "NoExecPaths",
    "BindPaths",
    "BindReadOnlyPaths",
    "TemporaryFileSystem",
    "DynamicUser",
    "MountFlags",
    "RootDirectory",
    "RootImage",
    "MountImages",
    "ExtensionImages",
    "ExtensionDirectories",
    "NetworkNamespacePath",
    "LogNamespace",
];

#[test]
fn no_unit_hides_its_mount_in_a_private_mount_namespace() {
    for (name, text) in unit_files() {
        for (_, key, value) in unit_settings(&text) {
            assert!(
                !NAMESPACING.contains(&key.as_str()),
                "{name}: {key}={value} would run secretfs in a private mount namespace, \
                 and /run/secrets would be visible to no other process (see the comment \
                 at the top of secretfs-myapp.service)"
            );
        }
    }
}

#[test]
fn the_service_is_notify_restarting_and_confined() {
    let (name, text) = unit_files()
        .into_iter()
        .find(|(n, _)| n.ends_with(".service"))
        .expect("a .service in systemd/");
    let s = unit_settings(&text);
    let one = |key: &str| -> String {
        let values = setting(&s, "Service", key);
        assert_eq!(
            values.len(),
            1,
            "{name}: one {key}= expected, got {values:?}"
        );
        values[0].to_string()
    };
    assert_eq!(one("Type"), "notify");
    assert_eq!(one("Restart"), "on-failure");
    assert!(
        one("ExecStart").starts_with(&format!("{INSTALLED_BIN} mount ")),
        "{name}: ExecStart= should run {INSTALLED_BIN} mount in the foreground"
    );
    assert_eq!(one("CapabilityBoundingSet"), "CAP_SYS_ADMIN");
    assert_eq!(one("NoNewPrivileges"), "yes");
    assert_eq!(one("DevicePolicy"), "closed");
    assert_eq!(one("DeviceAllow"), "/dev/fuse rw");
    assert_eq!(one("LimitCORE"), "0");
    assert_eq!(one("UMask"), "0077");
    // The token reaches secretfs as a credential file, never as an argument.
    let credential = one("LoadCredential");
    let id = credential.split(':').next().unwrap();
    assert!(
        one("ExecStart").contains(&format!("--token-file %d/{id}")),
        "{name}: ExecStart= should read the token from the credential {id}"
    );
    for (_, key, value) in &s {
        assert!(
            !value.contains("VAULT_TOKEN=") && !value.contains("token="),
            "{name}: {key}= passes a token"
        );
    }
    // A mount left dead by a crash is cleared before a restart mounts again.
    let mountpoint = one("ExecStart").rsplit(' ').next().unwrap().to_string();
    for key in ["ExecStartPre", "ExecStopPost"] {
        assert!(
            setting(&s, "Service", key)
                .iter()
                .any(|v| v.starts_with('-')
                    && v.contains("fusermount3 -uz")
                    && v.ends_with(&mountpoint)),
            "{name}: {key}= should detach a dead mount on {mountpoint}"
        );
    }
}

/// `What`, `Where`, `Type`, `Options` of run-secrets.mount.
fn mount_unit_fields() -> [String; 4] {
    let s = unit_settings(&read("systemd/run-secrets.mount"));
    ["What", "Where", "Type", "Options"].map(|k| {
        let v = setting(&s, "Mount", k);
        assert_eq!(v.len(), 1, "run-secrets.mount: one {k}= expected");
        v[0].to_string()
    })
}

/// Lines of `text` that are fstab entries of type fuse.secretfs, as fields.
fn fstab_lines(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|l| {
            l.trim_start_matches('#')
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|f| f.len() == 6 && f[2] == "fuse.secretfs")
        .collect()
}

#[test]
fn mount_unit_fstab_lines_and_service_mount_the_same() {
    let [what, where_, kind, options] = mount_unit_fields();
    assert_eq!(kind, "fuse.secretfs");
    let want = vec![
        what.clone(),
        where_.clone(),
        kind,
        options,
        "0".into(),
        "0".into(),
    ];
    for file in ["systemd/run-secrets.mount", "docs/DEPLOY.md"] {
        let lines = fstab_lines(&read(file));
        assert!(
            !lines.is_empty(),
            "{file}: no fstab line of type fuse.secretfs"
        );
        for fields in lines {
            assert_eq!(
                fields, want,
                "{file}: fstab line differs from run-secrets.mount"
            );
        }
    }
    for (name, text) in unit_files().iter().filter(|(n, _)| n.ends_with(".service")) {
        let s = unit_settings(text);
        let exec = setting(&s, "Service", "ExecStart")[0];
        let args: Vec<&str> = exec.split_whitespace().collect();
        assert_eq!(
            args[args.len() - 2..],
            [what.as_str(), where_.as_str()],
            "{name}: ExecStart= should mount what run-secrets.mount mounts"
        );
    }
}

// ---- Dockerfile ---------------------------------------------------------

const DOCKERFILE_INSTRUCTIONS: &[&str] = &[
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
];

/// The Dockerfile's instructions as `(KEYWORD, rest)`, continuation lines
/// joined, comments dropped.
fn dockerfile_instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (keyword, rest) = current
            .split_once(char::is_whitespace)
            .unwrap_or((&current, ""));
        out.push((keyword.to_string(), rest.trim().to_string()));
        current.clear();
    }
    assert!(current.is_empty(), "Dockerfile ends in a continuation line");
    out
}

#[test]
fn dockerfile_builds_in_rust_and_runs_secretfs_mount_on_debian_slim() {
    let instructions = dockerfile_instructions(&read("Dockerfile"));
    for (keyword, rest) in &instructions {
        assert!(
            DOCKERFILE_INSTRUCTIONS.contains(&keyword.as_str()),
            "Dockerfile: unknown instruction {keyword} {rest}"
        );
    }
    let froms: Vec<&str> = instructions
        .iter()
        .filter(|(k, _)| k == "FROM")
        .map(|(_, r)| r.as_str())
        .collect();
    assert_eq!(
        froms.len(),
        2,
        "a build stage and a runtime stage: {froms:?}"
    );
    let build = froms[0].split_whitespace().collect::<Vec<_>>();
    assert!(
        build.len() == 3 && build[0] == "rust:1-bookworm" && build[1].eq_ignore_ascii_case("AS"),
        "build stage: FROM rust:1-bookworm AS <name>, got {:?}",
        froms[0]
    );
    let stage = build[2];
    assert_eq!(froms[1], "debian:bookworm-slim", "runtime stage");

    let runtime_at = instructions.iter().rposition(|(k, _)| k == "FROM").unwrap();
    let (build_part, runtime_part) = instructions.split_at(runtime_at);
    assert!(
        build_part
            .iter()
            .any(|(k, r)| k == "RUN" && r.contains("cargo build --release --locked")),
        "the build stage runs cargo build --release --locked"
    );
    let apt = runtime_part
        .iter()
        .find(|(k, r)| k == "RUN" && r.contains("apt-get install"))
        .map(|(_, r)| r.as_str())
        .expect("the runtime stage installs packages");
    for package in ["fuse3", "ca-certificates", "--no-install-recommends"] {
        assert!(
            apt.contains(package),
            "runtime apt-get install lacks {package}: {apt}"
        );
    }
    assert!(
        runtime_part.iter().any(|(k, r)| k == "COPY"
            && r.starts_with(&format!("--from={stage} "))
            && r.ends_with(INSTALLED_BIN)),
        "the runtime stage copies the binary from stage {stage} to {INSTALLED_BIN}"
    );
    let entrypoint = runtime_part
        .iter()
        .rfind(|(k, _)| k == "ENTRYPOINT")
        .map(|(_, r)| r.as_str())
        .expect("an ENTRYPOINT");
    let entrypoint: Vec<String> = serde_json::from_str(entrypoint)
        .unwrap_or_else(|e| panic!("ENTRYPOINT is not a JSON array (exec form): {e}"));
    assert_eq!(entrypoint, ["secretfs", "mount"]);
    assert!(
        !runtime_part.iter().any(|(k, _)| k == "USER"),
        "mounting needs root in the container (see the Dockerfile's comment)"
    );

    let ignore = read(".dockerignore");
    let patterns: BTreeSet<&str> = ignore
        .lines()
        .map(|l| l.trim().trim_start_matches('/').trim_end_matches('/'))
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for wanted in ["target", ".git"] {
        assert!(patterns.contains(wanted), ".dockerignore lacks {wanted}");
    }
    for needed in ["Cargo.toml", "Cargo.lock", "src", "*", "**"] {
        assert!(
            !patterns.contains(needed),
            ".dockerignore excludes {needed}, which the build needs"
        );
    }
}

// ---- Kubernetes ---------------------------------------------------------

fn manifests() -> Vec<(String, Yaml)> {
    let dir = repo().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in deploy/kubernetes");
    let mut docs = Vec::new();
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains('\t'), "{name}: tabs in YAML");
        let parsed =
            YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{name}: not YAML: {e}"));
        for doc in parsed {
            for key in ["apiVersion", "kind"] {
                assert!(
                    doc[key].as_str().is_some(),
                    "{name}: a document without {key}"
                );
            }
            assert!(
                doc["metadata"]["name"].as_str().is_some(),
                "{name}: a {} without metadata.name",
                doc["kind"].as_str().unwrap()
            );
            docs.push((name.clone(), doc));
        }
    }
    docs
}

fn items(y: &Yaml) -> &[Yaml] {
    y.as_vec().map_or(&[], Vec::as_slice)
}

fn strings(y: &Yaml) -> Vec<String> {
    items(y)
        .iter()
        .map(|s| s.as_str().expect("a list of strings").to_string())
        .collect()
}

/// The pod spec of a Pod, or of a workload's pod template.
fn pod_spec(doc: &Yaml) -> Option<&Yaml> {
    match doc["kind"].as_str()? {
        "Pod" => Some(&doc["spec"]),
        "DaemonSet" | "Deployment" | "StatefulSet" | "ReplicaSet" | "Job" => {
            Some(&doc["spec"]["template"]["spec"])
        }
        _ => None,
    }
}

/// The command line of a container (command + args), as one shell-ish
/// string with continuation lines joined.
fn command_line(container: &Yaml) -> String {
    let mut words = strings(&container["command"]);
    words.extend(strings(&container["args"]));
    words.join(" ").replace("\\\n", " ")
}

/// The last argument of the `secretfs mount` in `line`: its mount point.
fn secretfs_mountpoint(line: &str) -> Option<String> {
    let at = line.find("secretfs mount ")?;
    let rest = &line[at..];
    let end = rest.find(['\n', ';', '&', '|']).unwrap_or(rest.len());
    rest[..end]
        .split_whitespace()
        .rfind(|w| *w != "\\")
        .map(str::to_string)
}

fn is_below(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir.trim_end_matches('/'))
        .is_some_and(|rest| rest.starts_with('/') && rest.len() > 1)
}

#[test]
fn kubernetes_manifests_parse_and_follow_the_mount_propagation_rules() {
    let docs = manifests();
    let mut propagations = BTreeSet::new();
    let mut secretfs_mounts = 0;
    for (file, doc) in &docs {
        let Some(spec) = pod_spec(doc) else { continue };
        let volumes: BTreeSet<&str> = items(&spec["volumes"])
            .iter()
            .map(|v| v["name"].as_str().expect("volume name"))
            .collect();
        let containers = items(&spec["initContainers"])
            .iter()
            .chain(items(&spec["containers"]));
        for c in containers {
            let name = c["name"].as_str().expect("container name");
            let at = format!("{file}: container {name}");
            assert!(
                c["image"].as_str().is_some_and(|i| !i.is_empty()),
                "{at}: no image"
            );
            let privileged = c["securityContext"]["privileged"].as_bool() == Some(true);
            let line = command_line(c);
            let mut shared_at = None;
            for m in items(&c["volumeMounts"]) {
                let volume = m["name"].as_str().expect("volumeMount name");
                assert!(
                    volumes.contains(volume),
                    "{at}: mounts undeclared volume {volume}"
                );
                let path = m["mountPath"].as_str().expect("mountPath");
                if let Some(p) = m["mountPropagation"].as_str() {
                    assert!(
                        ["None", "HostToContainer", "Bidirectional"].contains(&p),
                        "{at}: mountPropagation {p}"
                    );
                    propagations.insert(p.to_string());
                    if p == "Bidirectional" {
                        assert!(privileged, "{at}: Bidirectional needs privileged: true");
                        shared_at = Some(path.to_string());
                    }
                }
            }
            for env in items(&c["env"]) {
                assert!(
                    env["name"].as_str() != Some("VAULT_TOKEN") || env["value"].is_badvalue(),
                    "{at}: a literal VAULT_TOKEN"
                );
            }
            for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
                let cmd = strings(&c[probe]["exec"]["command"]);
                if cmd.first().map(String::as_str) == Some("secretfs") {
                    assert_eq!(
                        cmd.get(1).map(String::as_str),
                        Some("status"),
                        "{at}: {probe}"
                    );
                }
            }
            if let Some(mountpoint) = secretfs_mountpoint(&line) {
                secretfs_mounts += 1;
                assert!(
                    line.contains("--token-file ") || line.contains("--auth kubernetes"),
                    "{at}: the token should come from a file or a Kubernetes login"
                );
                let shared = shared_at.unwrap_or_else(|| {
                    panic!("{at}: mounts without a Bidirectional volume; nobody would see it")
                });
                // Below the shared volume, not its root: a restarted secretfs
                // can then clear a dead mount, and consumers see new mounts.
                assert!(
                    is_below(&mountpoint, &shared),
                    "{at}: mount point {mountpoint} should be a subdirectory of the \
                     Bidirectional volume at {shared}"
                );
                assert!(
                    line.contains(&format!("fusermount3 -uzq {mountpoint}")),
                    "{at}: should clear a dead mount on {mountpoint} before mounting"
                );
            }
        }
    }
    assert!(
        secretfs_mounts >= 2,
        "expected a DaemonSet and a sidecar running secretfs mount"
    );
    for p in ["Bidirectional", "HostToContainer"] {
        assert!(propagations.contains(p), "no manifest uses {p}");
    }
}

// ---- options against the binary -----------------------------------------

/// Long options of `secretfs mount --help`, without the dashes.
fn cli_long_options() -> BTreeSet<String> {
    let out = Command::new(BIN)
        .args(["mount", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success(), "secretfs mount --help failed");
    let help = String::from_utf8(out.stdout).unwrap();
    let mut names = BTreeSet::new();
    for line in help.lines() {
        let mut t = line.trim_start();
        // "-f, --foreground", "-v, --verbose..."
        if t.len() > 4 && t.starts_with('-') && !t.starts_with("--") && t[2..].starts_with(", ") {
            t = &t[4..];
        }
        if let Some(rest) = t.strip_prefix("--") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            names.insert(name);
        }
    }
    assert!(
        names.contains("ttl") && names.contains("addr"),
        "unexpected --help: {help}"
    );
    names
}

/// Options mount(8), fstab and systemd pass along that secretfs accepts and
/// ignores (the CLI contract).
fn ignored_mount_option(key: &str) -> bool {
    [
        "_netdev", "nofail", "noauto", "auto", "defaults", "rw", "user", "users", "nouser", "dev",
        "nodev", "suid", "nosuid", "exec", "noexec",
    ]
    .contains(&key)
        || key.starts_with("x-systemd.")
}

/// Whether `word` looks like an option name (not a placeholder such as
/// `OPTIONS` or `...`).
fn is_option_name(word: &str) -> bool {
    word.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && word
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.".contains(c))
}

fn option_list_keys(list: &str) -> Vec<String> {
    list.split(',')
        .map(|o| o.split('=').next().unwrap().trim().to_string())
        .filter(|k| is_option_name(k) && !ignored_mount_option(k))
        .collect()
}

/// Options given to secretfs in `text` (shell lines, fstab lines, unit
/// files, Markdown): long flags after a `secretfs`/`fuse.secretfs` word,
/// `-o` lists, fstab option fields, and `key = value` code spans.
fn options_used(text: &str) -> Vec<String> {
    let mut keys = Vec::new();
    // Inline code spans like `ttl = "30s"` name config keys.
    for span in text.split('`').skip(1).step_by(2) {
        if let Some((key, _)) = span.split_once(" = ") {
            if !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                keys.push(key.to_string());
            }
        }
    }
    // Join continuation lines, drop comment markers, split inline code.
    let mut joined = String::new();
    for line in text.lines() {
        let line = line.trim_start().trim_start_matches('#');
        match line.trim_end().strip_suffix('\\') {
            Some(head) => {
                joined.push_str(head);
                joined.push(' ');
            }
            None => {
                joined.push_str(line);
                joined.push('\n');
            }
        }
    }
    let joined = joined.replace('`', " ; ");
    for line in joined.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() == 6 && words[2] == "fuse.secretfs" {
            keys.extend(option_list_keys(words[3])); // an fstab line
            continue;
        }
        let mut i = 0;
        while i < words.len() {
            let word = words[i].trim_matches(|c| c == '"' || c == '\'');
            i += 1;
            if !word.ends_with("secretfs") {
                continue;
            }
            while i < words.len() && ![";", "&&", "||", "|"].contains(&words[i]) {
                let arg = words[i].trim_matches(|c| c == '"' || c == '\'' || c == ',');
                i += 1;
                if arg == "-o" && i < words.len() {
                    keys.extend(option_list_keys(words[i]));
                    i += 1;
                } else if let Some(list) = arg.strip_prefix("-o").filter(|l| !l.is_empty()) {
                    keys.extend(option_list_keys(list));
                } else if let Some(flag) = arg.strip_prefix("--") {
                    keys.push(flag.split('=').next().unwrap().to_string());
                }
            }
        }
    }
    keys
}

/// Keys of the example config, commented-out suggestions included.
fn example_config_keys(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.trim_start_matches('#').trim())
        .filter_map(|l| l.split_once(" = ").map(|(k, _)| k.trim()))
        .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_option_the_deploy_files_use_is_a_secretfs_option() {
    let known = cli_long_options();
    let mut sources: Vec<(String, Vec<String>)> = Vec::new();
    for (name, text) in unit_files() {
        let mut keys = options_used(&text);
        let s = unit_settings(&text);
        for options in setting(&s, "Mount", "Options") {
            keys.extend(option_list_keys(options));
        }
        sources.push((format!("systemd/{name}"), keys));
    }
    let example = read("systemd/myapp.toml.example");
    sources.push((
        "systemd/myapp.toml.example".into(),
        example_config_keys(&example),
    ));
    for file in ["Dockerfile", "docs/DEPLOY.md"] {
        sources.push((file.into(), options_used(&read(file))));
    }
    for (file, doc) in manifests() {
        if let Some(spec) = pod_spec(&doc) {
            for c in items(&spec["initContainers"])
                .iter()
                .chain(items(&spec["containers"]))
            {
                sources.push((
                    format!("deploy/kubernetes/{file}"),
                    options_used(&command_line(c)),
                ));
            }
        }
    }
    let mut unknown = Vec::new();
    let mut used = BTreeSet::new();
    for (file, keys) in &sources {
        for key in keys {
            let flag = key.replace('_', "-");
            if !known.contains(&flag) {
                unknown.push(format!("{file}: {key}"));
            }
            used.insert(flag);
        }
    }
    assert!(
        unknown.is_empty(),
        "options not in `secretfs mount --help` ({known:?}):\n{}",
        unknown.join("\n")
    );
    for flag in [
        "config",
        "token-file",
        "allow-other",
        "uid",
        "ttl",
        "log-file",
    ] {
        assert!(
            used.contains(flag),
            "the scan found no use of --{flag}: {used:?}"
        );
    }
}

#[test]
fn example_config_is_accepted_by_secretfs() {
    let example = read("systemd/myapp.toml.example");
    let table: toml::Table = toml::from_str(&example).expect("myapp.toml.example is TOML");
    assert!(
        !table.contains_key("token"),
        "a token in the example config"
    );
    assert!(table.contains_key("token_file"));

    // Every suggestion uncommented, as a user would; the log goes to a
    // scratch file, and mlock (which may need a privilege) stays off.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("secretfs.log");
    let mut all = String::new();
    for line in example.lines() {
        let uncommented = line.strip_prefix("# ").unwrap_or(line);
        let key = uncommented.split(" = ").next().unwrap_or("");
        let is_setting = uncommented.contains(" = ")
            && !key.is_empty()
            && key.chars().all(|c| c.is_ascii_lowercase() || c == '_');
        match (is_setting, key) {
            (true, "mlock") => {}
            (true, "log_file") => all.push_str(&format!("log_file = {:?}\n", log)),
            (true, _) => {
                all.push_str(uncommented);
                all.push('\n');
            }
            (false, _) => {}
        }
    }
    let config = dir.path().join("myapp.toml");
    std::fs::write(&config, &all).unwrap();
    let missing = dir.path().join("no-such-mountpoint");
    let out = Command::new(BIN)
        .arg("mount")
        .arg("--config")
        .arg(&config)
        .arg("secret/myapp")
        .arg(&missing)
        .env_remove("VAULT_TOKEN")
        .env_remove("VAULT_ADDR")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Past option parsing (a usage error exits 2), secretfs stops at the
    // missing mount point, before any token or network.
    assert_eq!(
        out.status.code(),
        Some(1),
        "config:\n{all}\nstderr:\n{stderr}"
    );
    assert!(
        stderr.contains("mountpoint") && stderr.contains("no-such-mountpoint"),
        "config:\n{all}\nstderr:\n{stderr}"
    );
}

#[test]
fn the_shipped_mounts_for_applications_stay_read_only() {
    // Read-only is the default: no unit, image or manifest turns writes on,
    // and the example config only suggests it in a comment.
    let mut sources: Vec<(String, Vec<String>)> = Vec::new();
    for (name, text) in unit_files() {
        let mut keys = options_used(&text);
        let s = unit_settings(&text);
        for options in setting(&s, "Mount", "Options") {
            keys.extend(option_list_keys(options));
        }
        sources.push((format!("systemd/{name}"), keys));
    }
    sources.push(("Dockerfile".into(), options_used(&read("Dockerfile"))));
    for (file, doc) in manifests() {
        if let Some(spec) = pod_spec(&doc) {
            for c in items(&spec["initContainers"])
                .iter()
                .chain(items(&spec["containers"]))
            {
                sources.push((
                    format!("deploy/kubernetes/{file}"),
                    options_used(&command_line(c)),
                ));
            }
        }
    }
    let example: toml::Table =
        toml::from_str(&read("systemd/myapp.toml.example")).expect("myapp.toml.example is TOML");
    sources.push((
        "systemd/myapp.toml.example".into(),
        example.keys().cloned().collect(),
    ));
    for (file, keys) in &sources {
        assert!(
            !keys.iter().any(|k| k == "writable"),
            "{file} mounts --writable: {keys:?}"
        );
    }
}
