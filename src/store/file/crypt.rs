//! age encryption of the store file: identity files as the age tool
//! writes them (`age-keygen -o key.txt`), X25519 recipients (`age1...`).

use std::io::{Read, Write};
use std::path::Path;

use age::x25519;
use secrecy::zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Reads an age identity file: `AGE-SECRET-KEY-1...` lines, `#` comments
/// and blank lines. The reason of an `Err` never holds a key.
pub fn read_identities(path: &Path) -> std::result::Result<Vec<x25519::Identity>, String> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| format!("identity file {}: {e}", path.display()))?,
    );
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.parse::<x25519::Identity>() {
            Ok(id) => out.push(id),
            Err(_) => {
                return Err(format!(
                "identity file {}: line {} is not an age X25519 identity (AGE-SECRET-KEY-1...); \
                     passphrase-protected, SSH and plugin identities are not supported",
                path.display(),
                i + 1
            ))
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

/// Parses a recipient (`age1...`).
pub fn parse_recipient(s: &str) -> std::result::Result<x25519::Recipient, String> {
    s.trim()
        .parse::<x25519::Recipient>()
        .map_err(|_| format!("{s:?} is not an age X25519 recipient (age1...)"))
}

/// Decrypts an age file with any of `identities`. A file none of them
/// opens is refused ([`Error::PermissionDenied`]); one that is not a
/// whole age file (being rewritten in place, truncated) cannot be read
/// now ([`Error::Unavailable`]).
pub fn decrypt(identities: &[x25519::Identity], file: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let unreadable = |e: &dyn std::fmt::Display| {
        Error::Unavailable(format!("the store file is not a whole age file: {e}"))
    };
    let decryptor = age::Decryptor::new_buffered(file).map_err(|e| unreadable(&e))?;
    let mut reader = decryptor
        .decrypt(identities.iter().map(|i| i as &dyn age::Identity))
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
pub fn encrypt(recipients: &[x25519::Recipient], plain: &[u8]) -> Result<Vec<u8>> {
    let failed = |e: &dyn std::fmt::Display| Error::Invalid(format!("cannot encrypt: {e}"));
    let encryptor =
        age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| failed(&e))?;
    let mut out = Vec::with_capacity(plain.len() + 512);
    let mut writer = encryptor.wrap_output(&mut out).map_err(|e| failed(&e))?;
    writer.write_all(plain).map_err(|e| failed(&e))?;
    writer.finish().map_err(|e| failed(&e))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    #[test]
    fn what_one_identity_encrypts_it_decrypts_and_another_cannot() {
        let me = x25519::Identity::generate();
        let other = x25519::Identity::generate();
        let file = encrypt(&[me.to_public()], b"{\"secrets\":{}}").unwrap();
        assert_eq!(&*decrypt(&[me], &file).unwrap(), b"{\"secrets\":{}}");
        assert!(matches!(
            decrypt(&[other], &file),
            Err(Error::PermissionDenied(_))
        ));
        let me_again = x25519::Identity::generate();
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
        let Ok(ids) = read_identities(&path) else {
            panic!("an identity file of age-keygen's was refused");
        };
        assert_eq!(ids[0].to_public().to_string(), id.to_public().to_string());
        std::fs::write(&path, "# nothing\n").unwrap();
        assert!(read_identities(&path).is_err());
        std::fs::write(&path, "AGE-SECRET-KEY-1NOTAKEY\n").unwrap();
        let Err(err) = read_identities(&path) else {
            panic!("a line that is no key was taken");
        };
        assert!(err.contains("line 1") && !err.contains("NOTAKEY"), "{err}");
        assert!(parse_recipient(&id.to_public().to_string()).is_ok());
        assert!(parse_recipient("age1nope").is_err());
    }
}
