//! The `TEAMGATE_*` environment provider: the same rules as
//! `figment::providers::Env::prefixed(..).split("__")`, but fed from any list of pairs, so
//! tests never touch the process environment. It also names the variable behind a key,
//! for error messages.

use figment::value::{Dict, Map, Value};
use figment::{Metadata, Profile, Provider};

/// Prefix of environment overrides; `__` separates nesting levels.
pub const ENV_PREFIX: &str = "TEAMGATE_";
/// `TEAMGATE_CONFIG` names the config file (clap `env`), it is not a config key.
const ENV_IGNORED: &[&str] = &["config"];
/// Name of our environment provider's metadata; how errors recognise env values.
pub(super) const ENV_SOURCE_NAME: &str = "`TEAMGATE_` environment variable(s)";

#[derive(Debug, Clone)]
struct EnvVar {
    /// The variable's name as given (`TEAMGATE_SMTP__MAX_MESSAGE_SIZE`).
    name: String,
    /// Lower-cased key path (`["smtp", "max_message_size"]`).
    key: Vec<String>,
    value: String,
}

#[derive(Debug, Clone, Default)]
pub(super) struct EnvProvider {
    vars: Vec<EnvVar>,
}

impl EnvProvider {
    pub(super) fn new<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut vars: Vec<EnvVar> = pairs
            .into_iter()
            .filter_map(|(k, v)| {
                let name = k.as_ref().trim();
                let prefix = name.get(..ENV_PREFIX.len())?;
                if !prefix.eq_ignore_ascii_case(ENV_PREFIX) {
                    return None;
                }
                let rest = name[ENV_PREFIX.len()..].to_ascii_lowercase();
                if ENV_IGNORED.contains(&rest.as_str()) {
                    return None;
                }
                let key: Vec<String> = rest.split("__").map(str::to_owned).collect();
                if key.iter().any(String::is_empty) {
                    return None;
                }
                Some(EnvVar {
                    name: name.to_owned(),
                    key,
                    value: v.as_ref().to_owned(),
                })
            })
            .collect();
        // The process environment has no order; make merging deterministic.
        vars.sort_by(|a, b| a.name.cmp(&b.name));
        Self { vars }
    }

    pub(super) fn from_process() -> Self {
        Self::new(std::env::vars_os().map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        }))
    }

    /// The variable that supplied `path` (or a parent or child of it).
    pub(super) fn var_for(&self, path: &[String]) -> String {
        let is_prefix = |a: &[String], b: &[String]| {
            a.len() <= b.len() && a.iter().zip(b).all(|(x, y)| x.eq_ignore_ascii_case(y))
        };
        self.vars
            .iter()
            .filter(|v| is_prefix(&v.key, path))
            .max_by_key(|v| v.key.len())
            .or_else(|| self.vars.iter().find(|v| is_prefix(path, &v.key)))
            .map_or_else(|| format!("{ENV_PREFIX}*"), |v| v.name.clone())
    }
}

fn insert_nested(dict: &mut Dict, key: &[String], value: Value) {
    match key {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry(first.clone())
                .or_insert_with(|| Value::from(Dict::new()));
            if !matches!(entry, Value::Dict(..)) {
                *entry = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = entry {
                insert_nested(inner, rest, value);
            }
        }
    }
}

impl Provider for EnvProvider {
    fn metadata(&self) -> Metadata {
        Metadata::named(ENV_SOURCE_NAME)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut root = Dict::new();
        for var in &self.vars {
            // Typed like TOML, exactly as figment's `Env` does.
            let Ok(value) = var.value.parse::<Value>();
            insert_nested(&mut root, &var.key, value);
        }
        Ok(Profile::Default.collect(root))
    }
}
