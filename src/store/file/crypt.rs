//! age encryption of the store file. Identities: age identity files as
//! the age tool writes them (`age-keygen -o key.txt`), such a file
//! encrypted with a passphrase (`age -p`), and OpenSSH private keys
//! (ed25519 and RSA, as `ssh-keygen` writes them, passphrase-protected or
//! not). Recipients: X25519 (`age1...`) and SSH public keys
//! (`ssh-ed25519 AAAA...`, `ssh-rsa AAAA...`), as `age -r`/`age -R` take.

use std::io::{Read, Write};
use std::path::Path;

use age::secrecy::SecretString;
use age::x25519;
use secrecy::zeroize::Zeroizing;

use crate::error::{Error, Result};

/// The largest scrypt work factor (log2 N) a passphrase-protected
/// identity file may ask for: `age -p` uses 18 (about a second), a
/// slower machine's age more. Past 22 a file asks for minutes and GiBs.
const MAX_SCRYPT_WORK_FACTOR: u8 = 22;

/// The largest identity or passphrase file read (age's own limit for
/// identity files is 16 MiB; a key is a few KiB).
const MAX_KEY_FILE: u64 = 1 << 20;

/// One identity that opens store files, with its public key as a
/// recipient string (`age1...`, `ssh-ed25519 AAAA...`).
pub struct Key {
    identity: Box<dyn age::Identity + Send + Sync>,
    public: String,
}

impl Key {
    pub(super) fn x25519(id: x25519::Identity) -> Key {
        Key {
            public: id.to_public().to_string(),
            identity: Box::new(id),
        }
    }

    /// Its public key as a recipient (`age1...`, `ssh-ed25519 AAAA...`).
    pub fn public(&self) -> &str {
        &self.public
    }

    /// The recipient writes encrypt to for it.
    pub fn recipient(&self) -> std::result::Result<Recipient, String> {
        parse_recipient(&self.public)
    }
}

/// Shows the public key only.
impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("public", &self.public).finish()
    }
}

/// A recipient a store file is encrypted to.
pub struct Recipient {
    inner: Box<dyn age::Recipient + Send + Sync>,
    /// Its canonical spelling (an SSH key without its comment).
    canonical: String,
}

impl Recipient {
    /// The recipient as age spells it: what tells two spellings of one
    /// key apart from two keys (an SSH key's comment is no part of it).
    pub fn canonical(&self) -> &str {
        &self.canonical
    }
}

/// Reads a file that names a key or a passphrase, bounded in size;
/// zeroized when dropped. The reason of an `Err` never holds its content.
fn read_secret_file(what: &str, path: &Path) -> std::result::Result<Zeroizing<Vec<u8>>, String> {
    let failed = |e: std::io::Error| format!("{what} {}: {e}", path.display());
    let f = std::fs::File::open(path).map_err(failed)?;
    let mut out = Zeroizing::new(Vec::new());
    f.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut out)
        .map_err(failed)?;
    if out.len() as u64 > MAX_KEY_FILE {
        return Err(format!(
            "{what} {}: larger than {} KiB: not a key file",
            path.display(),
            MAX_KEY_FILE >> 10
        ));
    }
    Ok(out)
}

/// The passphrase in `path`: its content less one trailing newline
/// (`\n` or `\r\n`), as `echo pass > FILE` leaves it.
pub fn read_passphrase(path: &Path) -> std::result::Result<SecretString, String> {
    let bytes = read_secret_file("passphrase file", path)?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| format!("passphrase file {}: not UTF-8 text", path.display()))?;
    let text = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(text);
    if text.is_empty() {
        return Err(format!("passphrase file {}: is empty", path.display()));
    }
    Ok(SecretString::from(text.to_string()))
}

/// How an identity file's passphrase is found when it has one.
pub struct Passphrase<'a> {
    /// The file holding it (`--identity-passphrase-file`).
    pub file: Option<&'a Path>,
}

impl Passphrase<'_> {
    /// The passphrase for the identity file `identity`, or why there is none.
    fn get(&self, identity: &Path, kind: &str) -> std::result::Result<SecretString, String> {
        match self.file {
            Some(file) => read_passphrase(file),
            None => Err(format!(
                "identity file {} is {kind} protected by a passphrase: give --identity-passphrase-file FILE (or SECRETFS_AGE_PASSPHRASE_FILE)",
                identity.display()
            )),
        }
    }
}

/// Reads the identities of `path`: an age identity file
/// (`AGE-SECRET-KEY-1...` lines, `#` comments, blank lines), such a file
/// encrypted with a passphrase (`age -p`, binary or armored), or an
/// OpenSSH private key (ed25519, RSA; encrypted or not). A passphrase
/// comes from `passphrase`. The reason of an `Err` never holds a key or
/// the passphrase.
pub fn read_identities(
    path: &Path,
    passphrase: &Passphrase<'_>,
) -> std::result::Result<Vec<Key>, String> {
    let bytes = read_secret_file("identity file", path)?;
    if bytes.starts_with(b"age-encryption.org/")
        || bytes.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----")
    {
        return read_encrypted_identities(path, &bytes, passphrase);
    }
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| format!("identity file {}: not an age identity file, an age-encrypted one, or an OpenSSH private key", path.display()))?;
    if text.trim_start().starts_with("-----BEGIN ") {
        return read_ssh_identity(path, text, passphrase).map(|k| vec![k]);
    }
    read_age_identities(path, text)
}

/// An age identity file's X25519 identities.
fn read_age_identities(path: &Path, text: &str) -> std::result::Result<Vec<Key>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.parse::<x25519::Identity>() {
            Ok(id) => out.push(Key::x25519(id)),
            Err(_) => {
                let what = if line.starts_with("AGE-PLUGIN-") {
                    "an age plugin identity (plugins are not supported)"
                } else {
                    "not an age X25519 identity (AGE-SECRET-KEY-1...)"
                };
                return Err(format!(
                    "identity file {}: line {} is {what}",
                    path.display(),
                    i + 1
                ));
            }
        }
    }
    if out.is_empty() {
        return Err(format!(
            "identity file {}: holds no identity (make one with age-keygen -o FILE)",
            path.display()
        ));
    }
    Ok(out)
}

/// An identity file encrypted with a passphrase (`age -p`): decrypted
/// with the passphrase, then read as an age identity file.
fn read_encrypted_identities(
    path: &Path,
    file: &[u8],
    passphrase: &Passphrase<'_>,
) -> std::result::Result<Vec<Key>, String> {
    let broken = |e: &dyn std::fmt::Display| {
        format!(
            "identity file {}: not a whole age-encrypted file: {e}",
            path.display()
        )
    };
    let reader = age::armor::ArmoredReader::new(file);
    let decryptor = age::Decryptor::new_buffered(reader).map_err(|e| broken(&e))?;
    if !decryptor.is_scrypt() {
        return Err(format!(
            "identity file {}: is age-encrypted to recipients, not with a passphrase (age -p): decrypt it first",
            path.display()
        ));
    }
    let mut scrypt = age::scrypt::Identity::new(passphrase.get(path, "an age file")?);
    scrypt.set_max_work_factor(MAX_SCRYPT_WORK_FACTOR);
    let mut reader = decryptor
        .decrypt(std::iter::once(&scrypt as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::DecryptionFailed | age::DecryptError::NoMatchingKeys => format!(
                "identity file {}: the passphrase does not open it (wrong passphrase?)",
                path.display()
            ),
            age::DecryptError::ExcessiveWork { required, .. } => format!(
                "identity file {}: its passphrase encryption asks for scrypt work factor {required}, more than {MAX_SCRYPT_WORK_FACTOR}",
                path.display()
            ),
            other => broken(&other),
        })?;
    let mut plain = Zeroizing::new(Vec::new());
    reader.read_to_end(&mut plain).map_err(|e| broken(&e))?;
    let text = std::str::from_utf8(&plain).map_err(|_| {
        format!(
            "identity file {}: decrypts to something that is not an age identity file",
            path.display()
        )
    })?;
    if text.trim_start().starts_with("-----BEGIN ") {
        return Err(format!(
            "identity file {}: decrypts to an SSH key: give the SSH key itself",
            path.display()
        ));
    }
    read_age_identities(path, text)
}

/// An OpenSSH private key (ed25519 or RSA), decrypted with the
/// passphrase when it has one.
fn read_ssh_identity(
    path: &Path,
    text: &str,
    passphrase: &Passphrase<'_>,
) -> std::result::Result<Key, String> {
    use age::ssh::{Identity, UnsupportedKey};
    let name = path.display();
    let identity = Identity::from_buffer(text.as_bytes(), None).map_err(|_| {
        format!("identity file {name}: not an OpenSSH private key age can read (ed25519 or RSA)")
    })?;
    let key = match identity {
        Identity::Unencrypted(key) => key,
        Identity::Encrypted(key) => key
            .decrypt(passphrase.get(path, "an SSH key")?)
            .map_err(|_| {
                format!("identity file {name}: the passphrase does not open the SSH key (wrong passphrase?)")
            })?,
        Identity::Unsupported(UnsupportedKey::Type(t) | UnsupportedKey::Hardware(t)) => {
            return Err(format!(
                "identity file {name}: unsupported SSH key type {t} (age takes ssh-ed25519 and ssh-rsa)"
            ))
        }
        Identity::Unsupported(UnsupportedKey::EncryptedPem) => {
            return Err(format!(
                "identity file {name}: an encrypted PEM key, which age does not read: convert it with ssh-keygen -p -o -f FILE"
            ))
        }
        Identity::Unsupported(UnsupportedKey::EncryptedSsh(cipher)) => {
            return Err(format!(
                "identity file {name}: the SSH key is encrypted with {cipher}, which age does not read"
            ))
        }
    };
    let identity = Identity::Unencrypted(key);
    let public = age::ssh::Recipient::try_from(identity.clone())
        .map_err(|e| format!("identity file {name}: {}", ssh_recipient_error(&e)))?
        .to_string();
    Ok(Key {
        identity: Box::new(identity),
        public,
    })
}

fn ssh_recipient_error(e: &age::ssh::ParseRecipientKeyError) -> String {
    use age::ssh::ParseRecipientKeyError as E;
    match e {
        E::Ignore | E::Invalid(_) => "not an SSH public key age can use".into(),
        E::RsaModulusTooLarge => "an RSA key larger than age takes (16384 bits)".into(),
        E::RsaModulusTooSmall => "an RSA key smaller than 2048 bits, which age refuses".into(),
        E::Unsupported(t) => {
            format!("unsupported SSH key type {t} (age takes ssh-ed25519 and ssh-rsa)")
        }
        _ => "an SSH public key age cannot use".into(),
    }
}

/// Writes a new identity to `path` (which must not exist; mode 0600) as
/// age-keygen does: two comment lines, then the key.
pub fn new_identity_file(path: &Path) -> std::result::Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let id = x25519::Identity::generate();
    let text = Zeroizing::new(format!(
        "# created: {}\n# public key: {}\n{}\n",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
        id.to_public(),
        age::secrecy::ExposeSecret::expose_secret(&id.to_string()),
    ));
    let failed = |e: std::io::Error| format!("identity file {}: {e}", path.display());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(failed)?;
    f.write_all(text.as_bytes()).map_err(failed)?;
    f.sync_all().map_err(failed)
}

/// Parses a recipient: X25519 (`age1...`) or an SSH public key
/// (`ssh-ed25519 AAAA...`, `ssh-rsa AAAA...`, a comment after it allowed).
pub fn parse_recipient(s: &str) -> std::result::Result<Recipient, String> {
    let s = s.trim();
    if let Ok(r) = s.parse::<x25519::Recipient>() {
        return Ok(Recipient {
            canonical: r.to_string(),
            inner: Box::new(r),
        });
    }
    if s.starts_with("ssh-") || s.starts_with("ecdsa-") || s.starts_with("sk-") {
        return match s.parse::<age::ssh::Recipient>() {
            Ok(r) => Ok(Recipient {
                canonical: r.to_string(),
                inner: Box::new(r),
            }),
            Err(e) => Err(format!("recipient {s:?}: {}", ssh_recipient_error(&e))),
        };
    }
    Err(format!(
        "{s:?} is not an age recipient (age1...) or an SSH public key (ssh-ed25519 AAAA..., ssh-rsa AAAA...)"
    ))
}

/// Decrypts an age file with any of `identities`. A file none of them
/// opens is refused ([`Error::PermissionDenied`]); one that is not a
/// whole age file (being rewritten in place, truncated) cannot be read
/// now ([`Error::Unavailable`]).
pub fn decrypt(identities: &[Key], file: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let unreadable = |e: &dyn std::fmt::Display| {
        Error::Unavailable(format!("the store file is not a whole age file: {e}"))
    };
    let decryptor = age::Decryptor::new_buffered(file).map_err(|e| unreadable(&e))?;
    let mut reader = decryptor
        .decrypt(
            identities
                .iter()
                .map(|k| &*k.identity as &dyn age::Identity),
        )
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => Error::PermissionDenied(
                "no identity given opens the store file (it is encrypted to other recipients)"
                    .into(),
            ),
            other => unreadable(&other),
        })?;
    let mut plain = Zeroizing::new(Vec::with_capacity(file.len()));
    reader.read_to_end(&mut plain).map_err(|e| unreadable(&e))?;
    Ok(plain)
}

/// Encrypts `plain` to `recipients` as an age file (binary, as `age -r`
/// writes it).
pub fn encrypt(recipients: &[Recipient], plain: &[u8]) -> Result<Vec<u8>> {
    let failed = |e: &dyn std::fmt::Display| Error::Invalid(format!("cannot encrypt: {e}"));
    let encryptor = age::Encryptor::with_recipients(
        recipients.iter().map(|r| &*r.inner as &dyn age::Recipient),
    )
    .map_err(|e| failed(&e))?;
    let mut out = Vec::with_capacity(plain.len() + 512);
    let mut writer = encryptor.wrap_output(&mut out).map_err(|e| failed(&e))?;
    writer.write_all(plain).map_err(|e| failed(&e))?;
    writer.finish().map_err(|e| failed(&e))?;
    Ok(out)
}

/// No passphrase file (for the store's tests).
#[cfg(test)]
pub(super) const NO_PASSPHRASE: Passphrase<'static> = Passphrase { file: None };

/// `id`'s public key as a recipient (for the store's tests).
#[cfg(test)]
pub(super) fn recipient_of(id: &x25519::Identity) -> Recipient {
    match parse_recipient(&id.to_public().to_string()) {
        Ok(r) => r,
        Err(e) => panic!("a new identity's public key does not parse: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    #[test]
    fn what_one_identity_encrypts_it_decrypts_and_another_cannot() {
        let me = x25519::Identity::generate();
        let other = x25519::Identity::generate();
        let file = encrypt(&[recipient_of(&me)], b"{\"secrets\":{}}").unwrap();
        assert_eq!(
            &*decrypt(&[Key::x25519(me)], &file).unwrap(),
            b"{\"secrets\":{}}"
        );
        assert!(matches!(
            decrypt(&[Key::x25519(other)], &file),
            Err(Error::PermissionDenied(_))
        ));
        let me_again = Key::x25519(x25519::Identity::generate());
        assert!(matches!(
            decrypt(&[me_again], &file[..file.len() / 2]),
            Err(Error::Unavailable(_) | Error::PermissionDenied(_))
        ));
    }

    #[test]
    fn identity_files_read_as_age_keygen_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        let id = x25519::Identity::generate();
        let path = dir.path().join("key.txt");
        std::fs::write(
            &path,
            format!(
                "# created: 2026-12-07T00:00:00Z\n# public key: {}\n{}\n",
                id.to_public(),
                id.to_string().expose_secret()
            ),
        )
        .unwrap();
        let Ok(ids) = read_identities(&path, &NO_PASSPHRASE) else {
            panic!("an identity file of age-keygen's was refused");
        };
        assert_eq!(ids[0].public(), id.to_public().to_string());
        std::fs::write(&path, "# nothing\n").unwrap();
        assert!(read_identities(&path, &NO_PASSPHRASE).is_err());
        std::fs::write(&path, "AGE-SECRET-KEY-1NOTAKEY\n").unwrap();
        let Err(err) = read_identities(&path, &NO_PASSPHRASE) else {
            panic!("a line that is no key was taken");
        };
        assert!(err.contains("line 1") && !err.contains("NOTAKEY"), "{err}");
        assert!(parse_recipient(&id.to_public().to_string()).is_ok());
        assert!(parse_recipient("age1nope").is_err());
    }

    /// `id`'s identity file encrypted with `passphrase` as `age -p` does
    /// (work factor 10 here: the real tool's 18 is tested in
    /// tests/file_store.rs).
    fn passphrase_protected(id: &x25519::Identity, passphrase: &str) -> Vec<u8> {
        let mut recipient = age::scrypt::Recipient::new(SecretString::from(passphrase.to_string()));
        recipient.set_work_factor(10);
        let encryptor =
            age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
                .unwrap();
        let mut out = Vec::new();
        let mut w = encryptor.wrap_output(&mut out).unwrap();
        writeln!(w, "# a comment\n{}", id.to_string().expose_secret()).unwrap();
        w.finish().unwrap();
        out
    }

    #[test]
    fn a_passphrase_protected_identity_file_opens_with_its_passphrase_only() {
        let dir = tempfile::tempdir().unwrap();
        let id = x25519::Identity::generate();
        let key = dir.path().join("key.age");
        std::fs::write(&key, passphrase_protected(&id, "correct horse")).unwrap();
        let pass = dir.path().join("pass");
        // A trailing newline (echo pass > FILE) is no part of it.
        std::fs::write(&pass, "correct horse\n").unwrap();
        let with = Passphrase { file: Some(&pass) };
        let ids = match read_identities(&key, &with) {
            Ok(ids) => ids,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(ids[0].public(), id.to_public().to_string());
        // Missing: says which flag gives it.
        let Err(err) = read_identities(&key, &NO_PASSPHRASE) else {
            panic!("opened without a passphrase");
        };
        assert!(err.contains("--identity-passphrase-file"), "{err}");
        // Wrong: says so, without quoting it.
        std::fs::write(&pass, "hunter2\n").unwrap();
        let Err(err) = read_identities(&key, &with) else {
            panic!("opened with a wrong passphrase");
        };
        assert!(
            err.contains("wrong passphrase") && !err.contains("hunter2"),
            "{err}"
        );
        // Empty, or missing: said.
        std::fs::write(&pass, "\n").unwrap();
        assert!(read_identities(&key, &with).unwrap_err().contains("empty"));
        std::fs::remove_file(&pass).unwrap();
        let err = read_identities(&key, &with).unwrap_err();
        assert!(err.contains("passphrase file"), "{err}");
    }

    #[test]
    fn ssh_recipients_parse_and_compare_without_their_comment() {
        const ED: &str =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN";
        let Ok(a) = parse_recipient(&format!("{ED} alice@laptop")) else {
            panic!("an ssh-ed25519 key with a comment was refused");
        };
        let Ok(b) = parse_recipient(ED) else {
            panic!("an ssh-ed25519 key was refused");
        };
        assert_eq!(a.canonical(), b.canonical());
        assert_eq!(a.canonical(), ED);
        let Err(err) = parse_recipient("ssh-dss AAAAB3NzaC1kc3MAAACBAP") else {
            panic!("a DSA key was taken");
        };
        assert!(
            err.contains("ssh-dss") || err.contains("not an SSH public key"),
            "{err}"
        );
    }
}
