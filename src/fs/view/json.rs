//! The `json` view: a secret `P` is one file `P.json` beside it, holding its
//! data as one JSON object (compact, keys sorted, one final newline), with
//! each value's JSON type kept. Writing the file replaces the secret's data
//! with the object written.

use secrecy::SecretSlice;

use super::whole::Format;
use crate::error::{Error, Result};
use crate::store::{KeyName, Secret, SecretData, SecretValue, ValueKind};

/// One `P.json` file per secret (the view is [`Whole<Json>`](super::whole::Whole)).
pub struct Json;

/// The bytes of a value as a JSON text: a string quoted and escaped, any
/// other JSON (already compact text, its objects' keys sorted) as it is.
fn push_value(out: &mut Vec<u8>, value: &SecretValue) {
    match value.kind() {
        ValueKind::Json => out.extend_from_slice(value.expose()),
        ValueKind::String => push_string(out, &String::from_utf8_lossy(value.expose())),
    }
}

/// A JSON string literal, written into `out` without an intermediate copy.
fn push_string(out: &mut Vec<u8>, s: &str) {
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// The most bytes the JSON text of `secret` can take (every byte escaped
/// as `\u00XX`): reserved at once, so that no copy of a value is left
/// behind in a buffer that grew.
fn worst_case_len(secret: &Secret) -> usize {
    secret
        .keys
        .iter()
        .map(|(k, v)| 6 * (k.len() + v.expose().len()) + 8)
        .sum::<usize>()
        + 3
}

/// The file's bytes for `secret`.
pub(super) fn render(secret: &Secret) -> SecretSlice<u8> {
    let mut out = Vec::with_capacity(worst_case_len(secret));
    out.push(b'{');
    for (i, (key, value)) in secret.keys.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_string(&mut out, key);
        out.push(b':');
        push_value(&mut out, value);
    }
    out.extend_from_slice(b"}\n");
    SecretSlice::from(out)
}

/// The data a JSON object written to the file stands for.
pub(super) fn parse(bytes: &[u8]) -> Result<SecretData> {
    let bytes = secrecy::zeroize::Zeroizing::new(bytes.to_vec());
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        // The position only: the message could quote the value.
        Error::Invalid(format!(
            "not JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let serde_json::Value::Object(map) = value else {
        return Err(Error::Invalid("not a JSON object".into()));
    };
    Ok(map
        .iter()
        .map(|(k, v)| (KeyName::from(k.as_str()), SecretValue::from_json(v)))
        .collect())
}

impl Format for Json {
    const NAME: &'static str = "json";
    const EXT: &'static str = ".json";
    const NOT_REMOVED: &'static str = "a secret is not deleted through its .json file";

    fn render(secret: &Secret) -> SecretSlice<u8> {
        render(secret)
    }

    /// The whole object replaces the data.
    fn write(data: &mut SecretData, bytes: Vec<u8>) -> Result<()> {
        *data = parse(&bytes)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;
    use serde_json::json;

    use super::*;

    fn secret(v: serde_json::Value) -> Secret {
        let serde_json::Value::Object(map) = v else {
            panic!("an object")
        };
        Secret::from_json_map(&map, None, None)
    }

    #[test]
    fn renders_compact_sorted_typed_with_a_final_newline() {
        let s = secret(json!({"B": "x", "A": 1, "C": {"z": true, "a": [1, "é\n\"q\""]}}));
        let bytes = render(&s);
        assert_eq!(
            std::str::from_utf8(bytes.expose_secret()).unwrap(),
            "{\"A\":1,\"B\":\"x\",\"C\":{\"a\":[1,\"é\\n\\\"q\\\"\"],\"z\":true}}\n"
        );
        assert_eq!(render(&Secret::default()).expose_secret(), b"{}\n");
    }

    #[test]
    fn what_renders_parses_back_to_the_same_data() {
        let s = secret(json!({"n": 1.5, "s": "a\\b\u{0}", "o": {"k": null}, "t": false}));
        let back = parse(render(&s).expose_secret()).unwrap();
        assert_eq!(back, s.keys);
    }

    #[test]
    fn only_a_json_object_is_accepted() {
        for bad in [&b"[1]"[..], b"\"s\"", b"{", b"", b"{\"a\":1} x"] {
            let e = parse(bad).unwrap_err();
            assert_eq!(
                e.errno(),
                libc::EINVAL,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
