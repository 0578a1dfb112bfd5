//! Core tests of the `templates:DIR` layout over the in-memory store.

use super::*;
use crate::fs::readdir::{DirEntry, DirReplier};
use crate::fs::OpContext;

const TTL: Duration = Duration::from_secs(30);

/// A templates mount over `store` with the templates `files` (name, text),
/// whose clock moves only when the test says.
fn templated(
    store: Arc<MemoryStore>,
    root: &str,
    files: &[(&str, &str)],
) -> (Arc<SecretFs>, Arc<ManualClock>, tempfile::TempDir) {
    templated_notifying(store, root, files, None)
}

/// [`templated`], sending its invalidations to `invalidations` if given.
fn templated_notifying(
    store: Arc<MemoryStore>,
    root: &str,
    files: &[(&str, &str)],
    invalidations: Option<std::sync::mpsc::Sender<Invalidation>>,
) -> (Arc<SecretFs>, Arc<ManualClock>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let clock = ManualClock::new();
    let fs = SecretFs::builder(
        Arc::new(HideDeleted::new(store)),
        SecretPath::parse(root),
        config(TTL),
        clock.clone(),
    )
    .templates(dir.path().to_path_buf());
    let fs = match invalidations {
        Some(tx) => fs.send_invalidations_to(tx),
        None => fs,
    }
    .build()
    .0;
    (fs, clock, dir)
}

fn text(fs: &SecretFs, name: &str) -> String {
    String::from_utf8(read_all(fs, name).unwrap()).unwrap()
}

struct Names(Vec<String>);

impl DirReplier for Names {
    fn add(&mut self, e: DirEntry<'_>) -> bool {
        self.0.push(e.name.to_string());
        true
    }
    fn skipped(&mut self, _: Ino, _: &str, _: &Error) {}
}

fn root_names(fs: &SecretFs) -> Vec<String> {
    let fh = fs.opendir(&OpContext::background(), ROOT_INO).unwrap();
    let mut out = Names(Vec::new());
    fs.readdir(&OpContext::background(), fh, 0, false, &mut out)
        .unwrap();
    out.0
}

const PG: &str =
    "postgresql://{{ secret(\"myapp/db\").USER }}:{{ secret(\"myapp/db\").PASSWORD }}@db:{{ secret(\"myapp/db\").PORT }}/app\n";

#[test]
fn a_template_renders_from_the_secrets_it_names_and_only_templates_show() {
    let store = seeded();
    let (fs, _, _dir) = templated(
        store,
        "",
        &[
            ("pg.tmpl", PG),
            ("notes.txt", "not a template"),
            (
                "all.tmpl",
                "{% for s in secrets(\"myapp/api\") %}{{ s }}={{ secret(\"myapp/api/\" ~ s).value | b64encode }}\n{% endfor %}\
                 {{ secret(\"myapp/db\") | tojson }}\n{{ secret(\"other\").missing | default(\"none\") }}\n\
                 {{ \"aGk=\" | b64decode }}\n",
            ),
        ],
    );
    assert_eq!(root_names(&fs), [".", "..", "all", "pg"]);
    assert_eq!(text(&fs, "pg"), "postgresql://app:hunter2@db:5432/app\n");
    assert_eq!(
        text(&fs, "all"),
        "token=dDBr\n{\"PASSWORD\":\"hunter2\",\"PORT\":5432,\"USER\":\"app\"}\nnone\nhi\n"
    );
    let attr = fs.lookup(&OpContext::background(), ROOT_INO, "pg").unwrap();
    assert_eq!(
        attr.size,
        "postgresql://app:hunter2@db:5432/app\n".len() as u64
    );
    // Nothing else shows or can be found.
    assert_eq!(
        fs.lookup(&OpContext::background(), ROOT_INO, "myapp")
            .unwrap_err()
            .errno(),
        libc::ENOENT
    );
    assert_eq!(
        fs.lookup(&OpContext::background(), ROOT_INO, "notes.txt")
            .unwrap_err()
            .errno(),
        libc::ENOENT
    );
}

#[test]
fn paths_are_relative_to_the_mounts_source_folder() {
    let (fs, _, _dir) = templated(
        seeded(),
        "myapp",
        &[("u.tmpl", "{{ secret(\"db\").USER }}")],
    );
    assert_eq!(text(&fs, "u"), "app");
}

#[test]
fn a_template_that_fails_to_render_gives_eio_alone() {
    let (fs, _, _dir) = templated(
        seeded(),
        "",
        &[
            ("missing.tmpl", "{{ secret(\"nope\").X }}"),
            ("syntax.tmpl", "{% if %}"),
            ("unknown.tmpl", "{{ vault_read(\"x\") }}"),
            ("good.tmpl", "{{ secret(\"myapp/db\").USER }}"),
        ],
    );
    assert_eq!(
        root_names(&fs),
        [".", "..", "good", "missing", "syntax", "unknown"]
    );
    for bad in ["missing", "syntax", "unknown"] {
        // It is listed, but looking it up (stat, open) is EIO.
        let err = fs
            .lookup(&OpContext::background(), ROOT_INO, bad)
            .unwrap_err();
        assert_eq!(err.errno(), libc::EIO, "{bad}");
        // The others keep working.
        assert_eq!(text(&fs, "good"), "app");
    }
    // A template that rendered when it was looked up and fails now.
    let ino = fs
        .lookup(&OpContext::background(), ROOT_INO, "good")
        .unwrap()
        .ino;
    std::fs::write(_dir.path().join("good.tmpl"), "{{ secret(\"nope\").X }}").unwrap();
    assert_eq!(
        fs.getattr(&OpContext::background(), ino)
            .unwrap_err()
            .errno(),
        libc::EIO
    );
    assert_eq!(
        fs.open(&OpContext::background(), ino, false, false)
            .unwrap_err()
            .errno(),
        libc::EIO
    );
    assert_eq!(
        fs.read_ino(&OpContext::background(), ino, 0, 100, |b| b.to_vec())
            .unwrap_err()
            .errno(),
        libc::EIO
    );
}

#[test]
fn every_change_is_erofs() {
    let (fs, _, _dir) = templated(seeded(), "", &[("pg.tmpl", PG)]);
    let ino = fs
        .lookup(&OpContext::background(), ROOT_INO, "pg")
        .unwrap()
        .ino;
    assert_eq!(
        fs.open(&OpContext::background(), ino, true, true)
            .unwrap_err()
            .errno(),
        libc::EROFS
    );
    let erofs = |r: Result<()>| assert_eq!(r.unwrap_err().errno(), libc::EROFS);
    erofs(
        fs.setattr(&OpContext::background(), ino, None, Some(0), None, None)
            .map(|_| ()),
    );
    erofs(
        fs.create(&OpContext::background(), ROOT_INO, "new")
            .map(|_| ()),
    );
    erofs(
        fs.mkdir(&OpContext::background(), ROOT_INO, "d")
            .map(|_| ()),
    );
    erofs(fs.unlink(&OpContext::background(), ROOT_INO, "pg"));
    erofs(fs.rename(
        &OpContext::background(),
        ROOT_INO,
        "pg",
        ROOT_INO,
        "pg2",
        false,
    ));
    assert_eq!(text(&fs, "pg"), "postgresql://app:hunter2@db:5432/app\n");
}

#[test]
fn a_changed_secret_shows_after_the_ttl_with_a_newer_mtime_and_invalidates_the_file() {
    let store = seeded();
    let (tx, rx) = std::sync::mpsc::channel();
    let (fs, clock, _dir) = templated_notifying(store.clone(), "", &[("pg.tmpl", PG)], Some(tx));
    let first = fs.lookup(&OpContext::background(), ROOT_INO, "pg").unwrap();
    assert_eq!(text(&fs, "pg"), "postgresql://app:hunter2@db:5432/app\n");
    store.put(
        "myapp/db",
        json!({"PASSWORD": "s3cret-longer", "USER": "app", "PORT": 5432}),
    );
    // Within the TTL the cached value (and the rendering shown) serve.
    assert_eq!(text(&fs, "pg"), "postgresql://app:hunter2@db:5432/app\n");
    clock.advance(TTL * 2);
    let now = fs.getattr(&OpContext::background(), first.ino).unwrap();
    assert_eq!(
        text(&fs, "pg"),
        "postgresql://app:s3cret-longer@db:5432/app\n"
    );
    assert_eq!(
        now.size,
        "postgresql://app:s3cret-longer@db:5432/app\n".len() as u64
    );
    assert!(
        now.mtime > first.mtime,
        "mtime follows the newest secret used"
    );
    let got: Vec<Invalidation> = rx.try_iter().collect();
    assert!(got.contains(&Invalidation::Inode(first.ino)), "{got:?}");
}

#[test]
fn renders_within_the_ttl_fetch_each_secret_once() {
    let store = seeded();
    let (fs, _, _dir) = templated(
        store.clone(),
        "",
        &[
            ("pg.tmpl", PG),
            (
                "two.tmpl",
                "{{ secret(\"myapp/db\").USER }} {{ secret(\"myapp/api/token\").value }}",
            ),
        ],
    );
    let before = store.read_calls();
    for _ in 0..64 {
        assert_eq!(text(&fs, "two"), "app t0k");
        assert!(text(&fs, "pg").starts_with("postgresql://"));
        fs.getattr(
            &OpContext::background(),
            fs.lookup(&OpContext::background(), ROOT_INO, "pg")
                .unwrap()
                .ino,
        )
        .unwrap();
    }
    assert_eq!(store.read_calls() - before, 2, "one GET per secret");
}

#[test]
fn reads_serve_the_rendering_whose_size_the_kernel_was_told() {
    let store = seeded();
    let (fs, clock, _dir) = templated(store.clone(), "", &[("pg.tmpl", PG)]);
    let ino = fs
        .lookup(&OpContext::background(), ROOT_INO, "pg")
        .unwrap()
        .ino;
    store.put(
        "myapp/db",
        json!({"PASSWORD": "x", "USER": "app", "PORT": 5432}),
    );
    clock.advance(TTL * 2);
    // No getattr since: reads still serve the rendering shown.
    let bytes = fs
        .read_ino(&OpContext::background(), ino, 0, 1000, |b| b.to_vec())
        .unwrap();
    assert_eq!(bytes, b"postgresql://app:hunter2@db:5432/app\n");
}

#[test]
fn a_store_outage_serves_the_last_values_within_stale_if_error() {
    let store = seeded();
    let (fs, clock, _dir) = templated(store.clone(), "", &[("pg.tmpl", PG)]);
    let ino = fs
        .lookup(&OpContext::background(), ROOT_INO, "pg")
        .unwrap()
        .ino;
    clock.advance(TTL * 2);
    store.set_fault(Some(Error::Unavailable("down".into())));
    fs.getattr(&OpContext::background(), ino).unwrap();
    assert_eq!(text(&fs, "pg"), "postgresql://app:hunter2@db:5432/app\n");
}

#[test]
fn sixty_four_readers_of_a_cold_template_make_one_get_per_secret() {
    let store = seeded();
    store.set_delay(Duration::from_millis(50));
    let (fs, _, _dir) = templated(
        store.clone(),
        "",
        &[(
            "two.tmpl",
            "{{ secret(\"myapp/db\").USER }} {{ secret(\"myapp/api/token\").value }}",
        )],
    );
    let fs = Arc::new(fs);
    let before = store.read_calls();
    let readers: Vec<_> = (0..64)
        .map(|_| {
            let fs = fs.clone();
            std::thread::spawn(move || text(&fs, "two"))
        })
        .collect();
    for r in readers {
        assert_eq!(r.join().unwrap(), "app t0k");
    }
    assert_eq!(store.read_calls() - before, 2, "one GET per secret");
}

#[test]
fn the_readme_examples_render() {
    let store = Arc::new(MemoryStore::new());
    store.put(
        "web/tls",
        json!({"cert": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----", "key": "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----"}),
    );
    store.put(
        "app/db",
        json!({"USER": "app", "PASSWORD": "p@ss/word", "PORT": 6543}),
    );
    store.put("app/mail", json!({"host": "smtp.example.com", "port": 587}));
    let (fs, _, _dir) = templated(
        store,
        "",
        &[
            (
                "tls.pem.tmpl",
                "{% set tls = secret(\"web/tls\") -%}\n{{ tls.cert }}\n{{ tls.key }}\n",
            ),
            (
                "db.url.tmpl",
                "{% set db = secret(\"app/db\") -%}\npostgresql://{{ db.USER | urlencode }}:{{ db.PASSWORD | urlencode | replace(\"/\", \"%2F\") }}@{{ db.HOST | default(\"localhost\") }}:{{ db.PORT | default(5432) }}/app\n",
            ),
            (
                "app.properties.tmpl",
                "{% for name in secrets(\"app/\") -%}\n{% for key, value in secret(\"app/\" ~ name) | items -%}\n{{ name }}.{{ key }}={{ value }}\n{% endfor -%}\n{% endfor -%}\n",
            ),
        ],
    );
    assert_eq!(
        text(&fs, "tls.pem"),
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"
    );
    assert_eq!(
        text(&fs, "db.url"),
        "postgresql://app:p%40ss%2Fword@localhost:6543/app\n"
    );
    assert_eq!(
        text(&fs, "app.properties"),
        "db.PASSWORD=p@ss/word\ndb.PORT=6543\ndb.USER=app\nmail.host=smtp.example.com\nmail.port=587\n"
    );
}

#[test]
fn a_sweep_lets_a_rendering_go_with_the_values_it_was_made_of() {
    let store = seeded();
    let (fs, clock, _dir) = templated(store.clone(), "", &[("pg.tmpl", PG)]);
    let ino = fs
        .lookup(&OpContext::background(), ROOT_INO, "pg")
        .unwrap()
        .ino;
    assert!(fs.templates.as_ref().unwrap().last("pg").is_some());
    fs.sweep();
    assert!(
        fs.templates.as_ref().unwrap().last("pg").is_some(),
        "kept within the TTL"
    );
    // Past the TTL and --stale-if-error (300 s in these tests).
    clock.advance(Duration::from_secs(400));
    fs.sweep();
    assert!(fs.templates.as_ref().unwrap().last("pg").is_none());
    // The next read renders again.
    store.put(
        "myapp/db",
        json!({"PASSWORD": "new", "USER": "app", "PORT": 5432}),
    );
    let bytes = fs
        .read_ino(&OpContext::background(), ino, 0, 1000, |b| b.to_vec())
        .unwrap();
    assert_eq!(bytes, b"postgresql://app:new@db:5432/app\n");
}

/// Issue 21 §1: a template that uses one secret twice (a certificate, then
/// its key) renders both from one version, even when the store changes
/// between the two uses (here: nothing cached, TTL 0, so each use would
/// ask the store, and the secret changes while the second use asks).
#[test]
fn a_secret_used_twice_renders_from_one_version() {
    let store = seeded();
    store.put("tls", json!({"cert": "cert-1", "key": "key-1"}));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pair.tmpl"),
        "{{ secret(\"tls\").cert }} {{ secret(\"tls\").key }}",
    )
    .unwrap();
    let fs = SecretFs::builder(
        store.clone(),
        SecretPath::root(),
        config(Duration::ZERO),
        ManualClock::new(),
    )
    .templates(dir.path().to_path_buf())
    .build()
    .0;
    let ino = fs
        .lookup(&OpContext::background(), ROOT_INO, "pair")
        .unwrap()
        .ino;
    store.set_delay(Duration::from_millis(200));
    let before = store.read_calls();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let changer = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            // A second read of the secret has started (each sleeps first,
            // then reads): change it under that read.
            while store.read_calls() < before + 2 {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            store.put("tls", json!({"cert": "cert-2", "key": "key-2"}));
        })
    };
    // Renders now (getattr tells the kernel the rendering's size).
    fs.getattr(&OpContext::background(), ino).unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    changer.join().unwrap();
    store.set_delay(Duration::ZERO);
    let rendered = fs.read_ino(&OpContext::background(), ino, 0, 4096, |b| b.to_vec());
    let text = String::from_utf8(rendered.unwrap()).unwrap();
    assert!(
        text == "cert-1 key-1" || text == "cert-2 key-2",
        "rendered from two versions: {text:?}"
    );
}
