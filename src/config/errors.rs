//! Reporting: [`ConfigError`] (`origin: key: why`), the [`ConfigErrors`] list, and
//! `Sources`, which finds out whether a key's value came from the config file or from a
//! `TEAMGATE_*` variable (and which one).

use std::fmt;
use std::path::PathBuf;

use figment::value::Value;
use figment::{Figment, Metadata};

use super::env::{ENV_SOURCE_NAME, EnvProvider};

/// Where a bad value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOrigin {
    /// The config file (also used for values missing from it, and built-in defaults).
    File(PathBuf),
    /// An environment variable, by name (`TEAMGATE_SMTP__MAX_MESSAGE_SIZE`).
    Env(String),
    /// A config given as a string (`load_from_str`).
    Inline,
}

impl fmt::Display for ConfigOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(p) => write!(f, "{}", p.display()),
            Self::Env(name) => write!(f, "environment variable {name}"),
            Self::Inline => f.write_str("<inline config>"),
        }
    }
}

/// One problem: the key (`inbox[1].addresses[0]`), where it came from, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path with `[n]` indices; empty for whole-file problems (syntax, missing).
    pub key: String,
    pub origin: ConfigOrigin,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.origin, self.message)
        } else {
            write!(f, "{}: {}: {}", self.origin, self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found; `Display` prints one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first problem reported for `key`, if any.
    pub fn find(&self, key: &str) -> Option<&ConfigError> {
        self.0.iter().find(|e| e.key == key)
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// `["inbox", "1", "name"]` → `inbox[1].name`.
fn display_path(path: &[String]) -> String {
    let mut out = String::new();
    for seg in path {
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push('[');
            out.push_str(seg);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

/// `inbox[1].name` → `["inbox", "1", "name"]`.
fn split_key(key: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in key.split('.') {
        let mut pieces = part.split('[');
        if let Some(name) = pieces.next().filter(|n| !n.is_empty()) {
            out.push(name.to_owned());
        }
        out.extend(pieces.map(|p| p.trim_end_matches(']').to_owned()));
    }
    out
}

/// Knows where each value came from, to name the file or the variable in an error.
pub(super) struct Sources<'a> {
    pub(super) figment: &'a Figment,
    pub(super) env: &'a EnvProvider,
    pub(super) default_origin: ConfigOrigin,
}

impl Sources<'_> {
    fn is_env(metadata: Option<&Metadata>) -> bool {
        metadata.is_some_and(|m| m.name == ENV_SOURCE_NAME)
    }

    pub(super) fn origin_of(&self, key: &str) -> ConfigOrigin {
        let path = split_key(key);
        let figment = self.figment;
        let Some((first, rest)) = path.split_first() else {
            return self.default_origin.clone();
        };
        let Ok(root) = figment.find_value(first) else {
            return self.default_origin.clone();
        };
        let mut cur = &root;
        for seg in rest {
            let next = match cur {
                Value::Dict(_, d) => d.get(seg),
                Value::Array(_, a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
                _ => None,
            };
            match next {
                Some(v) => cur = v,
                None => break,
            }
        }
        if Self::is_env(figment.get_metadata(cur.tag())) {
            ConfigOrigin::Env(self.env.var_for(&path))
        } else {
            self.default_origin.clone()
        }
    }

    pub(super) fn figment_errors(&self, err: figment::Error) -> ConfigErrors {
        let mut out = Vec::new();
        for e in err {
            let mut path = e.path.clone();
            if let figment::error::Kind::MissingField(field) = &e.kind
                && path.last().map(String::as_str) != Some(field.as_ref())
            {
                path.push(field.to_string());
            }
            let origin = if Self::is_env(e.metadata.as_ref()) {
                ConfigOrigin::Env(self.env.var_for(&path))
            } else {
                self.default_origin.clone()
            };
            out.push(ConfigError {
                key: display_path(&path),
                origin,
                message: e.kind.to_string(),
            });
        }
        ConfigErrors(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_round_trip() {
        let path = split_key("inbox[1].addresses[0]");
        assert_eq!(path, vec!["inbox", "1", "addresses", "0"]);
        assert_eq!(display_path(&path), "inbox[1].addresses[0]");
    }
}
