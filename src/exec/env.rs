//! The command's environment: the keys of every layer merged (a later
//! layer wins), named as variables (`--prefix`, `--upcase`), laid over the
//! process environment (or under it, with `--no-override`). Pure: no
//! store, no process, no log.

use std::collections::BTreeMap;
use std::ffi::OsStr;

use crate::store::{KeyName, SecretData, SecretValue};

/// One SOURCE's keys, as read: a secret's data, or a folder's secrets'
/// data in name order (a later secret wins within the folder too).
pub struct Layer<'a> {
    /// The SOURCE as the user wrote it.
    pub source: &'a str,
    /// Its secrets' data, in the order they apply.
    pub secrets: Vec<&'a SecretData>,
}

/// How keys become variable names.
#[derive(Debug, Clone, Default)]
pub struct Naming {
    /// Put before every name (`--prefix`).
    pub prefix: String,
    /// Upper-case every name, prefix included (`--upcase`).
    pub upcase: bool,
}

impl Naming {
    /// The variable a key becomes (checked by [`is_variable_name`]).
    pub fn variable(&self, key: &str) -> String {
        let name = format!("{}{key}", self.prefix);
        if self.upcase {
            name.to_ascii_uppercase()
        } else {
            name
        }
    }
}

/// Whether `name` can be an environment variable every shell and program
/// accepts: a letter or `_`, then letters, digits and `_`.
pub fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Why a key is not in the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Why {
    /// Its variable name is not one (`db-password`, `1X`).
    NotAName,
    /// Its value holds a NUL byte, which no environment can carry.
    NulInValue,
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Why::NotAName => "not a valid environment variable name",
            Why::NulInValue => "its value holds a NUL byte",
        })
    }
}

/// A key left out of the environment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeftOut {
    /// The SOURCE it is in.
    pub source: String,
    /// The key.
    pub key: KeyName,
    /// Why.
    pub why: Why,
}

/// One variable: its value and the SOURCE it comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Var {
    /// The value (never shown by `Debug`).
    pub value: SecretValue,
    /// The SOURCE whose layer gave it.
    pub source: String,
}

/// What the secrets put in the environment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Injected {
    /// Variable name → value and source.
    pub vars: BTreeMap<String, Var>,
    /// Keys left out, each once (by source and key).
    pub left_out: Vec<LeftOut>,
}

impl Injected {
    /// The variables of `layers`, merged in order: a later layer's key
    /// replaces an earlier one's variable of the same name.
    pub fn from_layers(layers: &[Layer<'_>], naming: &Naming) -> Injected {
        let mut out = Injected::default();
        for layer in layers {
            for data in &layer.secrets {
                for (key, value) in data.iter() {
                    let name = naming.variable(key);
                    let why = if !is_variable_name(&name) {
                        Some(Why::NotAName)
                    } else if value.expose().contains(&0) {
                        Some(Why::NulInValue)
                    } else {
                        None
                    };
                    match why {
                        Some(why) => {
                            let left = LeftOut {
                                source: layer.source.to_string(),
                                key: key.clone(),
                                why,
                            };
                            if !out.left_out.contains(&left) {
                                out.left_out.push(left);
                            }
                        }
                        None => {
                            out.vars.insert(
                                name,
                                Var {
                                    value: value.clone(),
                                    source: layer.source.to_string(),
                                },
                            );
                        }
                    }
                }
            }
        }
        out
    }

    /// The variables whose value differs between `self` and `newer`
    /// (added, changed or gone), by name.
    pub fn changed_names(&self, newer: &Injected) -> Vec<String> {
        let mut names: Vec<String> = self
            .vars
            .iter()
            .filter(|(name, var)| newer.vars.get(*name).map(|v| &v.value) != Some(&var.value))
            .map(|(name, _)| name.clone())
            .collect();
        names.extend(
            newer
                .vars
                .keys()
                .filter(|name| !self.vars.contains_key(*name))
                .cloned(),
        );
        names.sort();
        names
    }

    /// The variables to set on the command, given which names the process
    /// environment already has (`present`): all of them when secrets win
    /// (`secrets_win`), else only those the process does not set.
    pub fn to_set(
        &self,
        present: impl Fn(&str) -> bool,
        secrets_win: bool,
    ) -> impl Iterator<Item = (&str, &OsStr)> {
        use std::os::unix::ffi::OsStrExt;
        self.vars
            .iter()
            .filter(move |(name, _)| secrets_win || !present(name))
            .map(|(name, var)| (name.as_str(), OsStr::from_bytes(var.value.expose())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data(pairs: &[(&str, serde_json::Value)]) -> SecretData {
        pairs
            .iter()
            .map(|(k, v)| (KeyName::from(*k), SecretValue::from_json(v)))
            .collect()
    }

    fn value_of(injected: &Injected, name: &str) -> Option<String> {
        injected
            .vars
            .get(name)
            .map(|v| String::from_utf8_lossy(v.value.expose()).into_owned())
    }

    #[test]
    fn later_layers_win_and_each_variable_names_its_source() {
        let project = data(&[("DB_HOST", json!("db")), ("LOG", json!("info"))]);
        let prod = data(&[("LOG", json!("warn")), ("REPLICAS", json!(3))]);
        let api = data(&[("LOG", json!("debug"))]);
        let layers = [
            Layer {
                source: "secret/shop",
                secrets: vec![&project],
            },
            Layer {
                source: "secret/shop/prod",
                secrets: vec![&prod],
            },
            Layer {
                source: "secret/shop/prod/api",
                secrets: vec![&api],
            },
        ];
        let env = Injected::from_layers(&layers, &Naming::default());
        assert_eq!(value_of(&env, "DB_HOST").as_deref(), Some("db"));
        assert_eq!(value_of(&env, "LOG").as_deref(), Some("debug"));
        // Non-string JSON values are their JSON text, as in a file.
        assert_eq!(value_of(&env, "REPLICAS").as_deref(), Some("3"));
        assert_eq!(env.vars["LOG"].source, "secret/shop/prod/api");
        assert_eq!(env.vars["DB_HOST"].source, "secret/shop");
        assert!(env.left_out.is_empty());
    }

    #[test]
    fn the_secrets_of_a_folder_apply_in_order() {
        let a = data(&[("K", json!("from a"))]);
        let b = data(&[("K", json!("from b"))]);
        let layers = [Layer {
            source: "secret/team/",
            secrets: vec![&a, &b],
        }];
        let env = Injected::from_layers(&layers, &Naming::default());
        assert_eq!(value_of(&env, "K").as_deref(), Some("from b"));
    }

    #[test]
    fn keys_that_are_no_variable_names_are_left_out_once_each() {
        let one = data(&[
            ("db-password", json!("x")),
            ("1ST", json!("x")),
            ("ok_name", json!("y")),
            ("", json!("x")),
            ("é", json!("x")),
            ("NUL", json!("a\u{0}b")),
        ]);
        let layers = [
            Layer {
                source: "s/a",
                secrets: vec![&one, &one],
            },
            Layer {
                source: "s/b",
                secrets: vec![&one],
            },
        ];
        let env = Injected::from_layers(&layers, &Naming::default());
        assert_eq!(env.vars.keys().collect::<Vec<_>>(), ["ok_name"]);
        let named: Vec<(&str, &str, Why)> = env
            .left_out
            .iter()
            .map(|l| (l.source.as_str(), l.key.as_str(), l.why))
            .collect();
        // Once per source and key, however many times it was seen.
        assert_eq!(named.len(), 10, "{named:?}");
        assert!(named.contains(&("s/a", "db-password", Why::NotAName)));
        assert!(named.contains(&("s/b", "NUL", Why::NulInValue)));
    }

    #[test]
    fn prefix_and_upcase_name_variables_as_envconsul_does() {
        let one = data(&[("db_url", json!("u")), ("db-x", json!("x"))]);
        let layers = [Layer {
            source: "s",
            secrets: vec![&one],
        }];
        let naming = Naming {
            prefix: "app_".into(),
            upcase: true,
        };
        let env = Injected::from_layers(&layers, &naming);
        assert_eq!(env.vars.keys().collect::<Vec<_>>(), ["APP_DB_URL"]);
        assert_eq!(env.left_out[0].key.as_str(), "db-x");
        let naming = Naming {
            prefix: "P_".into(),
            upcase: false,
        };
        let env = Injected::from_layers(&layers, &naming);
        assert_eq!(env.vars.keys().collect::<Vec<_>>(), ["P_db_url"]);
        // A prefix can make a key that starts with a digit a valid name.
        assert!(is_variable_name(
            &Naming {
                prefix: "P_".into(),
                upcase: false
            }
            .variable("1X")
        ));
    }

    #[test]
    fn secrets_win_over_the_process_environment_unless_told_not_to() {
        let one = data(&[("HOME", json!("/secret")), ("NEW", json!("n"))]);
        let layers = [Layer {
            source: "s",
            secrets: vec![&one],
        }];
        let env = Injected::from_layers(&layers, &Naming::default());
        let present = |name: &str| name == "HOME";
        let names = |win| env.to_set(present, win).map(|(n, _)| n).collect::<Vec<_>>();
        assert_eq!(names(true), ["HOME", "NEW"]);
        assert_eq!(names(false), ["NEW"]);
    }

    #[test]
    fn changed_names_are_the_added_changed_and_gone() {
        let before = data(&[("A", json!("1")), ("B", json!("2")), ("C", json!("3"))]);
        let after = data(&[("A", json!("1")), ("B", json!("20")), ("D", json!("4"))]);
        let env = |d| {
            Injected::from_layers(
                &[Layer {
                    source: "s",
                    secrets: vec![d],
                }],
                &Naming::default(),
            )
        };
        assert_eq!(env(&before).changed_names(&env(&after)), ["B", "C", "D"]);
        assert!(env(&before).changed_names(&env(&before)).is_empty());
    }

    #[test]
    fn debug_shows_no_value() {
        let one = data(&[("K", json!("hunter2"))]);
        let env = Injected::from_layers(
            &[Layer {
                source: "s",
                secrets: vec![&one],
            }],
            &Naming::default(),
        );
        assert!(!format!("{env:?}").contains("hunter2"));
    }
}
