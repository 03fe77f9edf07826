//! Reading a config file: YAML text → [`RotaConfig`] → [`ValidConfig`], with the field path in
//! every error.
//!
//! YAML is parsed into a `serde_json::Value` first and then deserialized through
//! `serde_path_to_error`, so a wrong key or type names its path (`tenants[1].wieght`). An empty
//! document means "all defaults". This module reads one file and nothing else; it never exits
//! the process or logs.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{ConfigErrors, ConfigProblem, RotaConfig, ValidConfig};

/// Everything that can go wrong loading a config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", file.display())]
    Io {
        /// The file we tried to read.
        file: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not YAML (or breaks a parser limit). The reason carries the position.
    #[error("YAML syntax error: {reason}")]
    Syntax {
        /// 1-based line, when the parser reports it.
        line: Option<u64>,
        /// 1-based column, when the parser reports it.
        column: Option<u64>,
        /// What the parser said, with the position.
        reason: String,
    },
    /// The YAML does not fit the schema: unknown key, wrong type, missing required key.
    #[error("{}", if path.is_empty() { reason.clone() } else { format!("{path}: {reason}") })]
    Parse {
        /// Path of the offending field (`usage.halfLifeSeconds`); empty for the document.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The config parsed but breaks validation rules; every problem is listed.
    #[error("invalid config ({count} problem(s)):\n{0}", count = .0.len())]
    Invalid(#[from] ConfigErrors),
}

impl ConfigError {
    /// Short stable name for metric labels and exit messages.
    pub fn code(&self) -> &'static str {
        match self {
            ConfigError::Io { .. } => "io",
            ConfigError::Syntax { .. } => "syntax",
            ConfigError::Parse { .. } => "parse",
            ConfigError::Invalid(_) => "invalid",
        }
    }
}

/// Reads, parses and validates the config file at `path`.
pub fn load(path: &Path) -> Result<ValidConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        file: path.to_path_buf(),
        source,
    })?;
    parse(&text)
}

/// Parses and validates config text.
///
/// An empty document (or `{}`) is the default config. `apiVersion` and `kind` may be left out
/// (the defaults are filled in), but when present they must be exactly `rota.io/v1alpha1` and
/// `RotaConfig`. Every problem is reported at once: a field of the wrong type or an unknown
/// key is set aside (as if absent) and parsing goes on, then the rest is validated. A single
/// schema problem stays a [`ConfigError::Parse`]; more become [`ConfigError::Invalid`].
pub fn parse(text: &str) -> Result<ValidConfig, ConfigError> {
    let mut value = document(text)?;
    let mut problems = Vec::new();
    let config = loop {
        match deserialize(value.clone()) {
            Ok(config) => break Some(config),
            Err(ConfigError::Parse { path, reason }) => {
                let removed = !path.is_empty() && remove_path(&mut value, &path);
                problems.push(ConfigProblem { path, reason });
                if !removed || problems.len() >= MAX_PARSE_PROBLEMS {
                    break None;
                }
            }
            Err(other) => return Err(other),
        }
    };
    let parse_problems = problems.len();
    if let Some(config) = config {
        match config.validate() {
            Ok(valid) if problems.is_empty() => return Ok(valid),
            Ok(_) => {}
            Err(errors) => problems.extend(errors.0),
        }
    }
    if problems.len() == 1 && parse_problems == 1 {
        let ConfigProblem { path, reason } = problems.remove(0);
        return Err(ConfigError::Parse { path, reason });
    }
    Err(ConfigError::Invalid(ConfigErrors(problems)))
}

/// A file with more schema problems than this is reported with its first ones only.
const MAX_PARSE_PROBLEMS: usize = 50;

/// Parses config text into the schema without the semantic checks of
/// [`RotaConfig::validate`]. For tools that want to inspect or fix a config.
pub fn parse_unvalidated(text: &str) -> Result<RotaConfig, ConfigError> {
    deserialize(document(text)?)
}

/// The YAML document as a mapping.
fn document(text: &str) -> Result<Value, ConfigError> {
    let value: Value = serde_saphyr::from_str(text).map_err(syntax_error)?;
    // A document with no content (empty, or only comments) parses as null.
    match value {
        Value::Null => Ok(Value::Object(serde_json::Map::new())),
        Value::Object(map) => Ok(Value::Object(map)),
        // serde would read a list as the struct's fields in order; refuse that surprise.
        other => Err(ConfigError::Parse {
            path: String::new(),
            reason: format!("the document must be a mapping, found {}", kind_of(&other)),
        }),
    }
}

fn deserialize(value: Value) -> Result<RotaConfig, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        ConfigError::Parse {
            // serde_path_to_error writes the root as ".".
            path: if path == "." { String::new() } else { path },
            reason: crate::messages::plain_serde_message(&err.into_inner().to_string()),
        }
    })
}

/// Removes the field at `path` (`tenants[1].weight`) from `value`; false when it is not there.
fn remove_path(value: &mut Value, path: &str) -> bool {
    let mut segments: Vec<&str> = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        while let Some(open) = rest.find('[') {
            if open > 0 {
                segments.push(&rest[..open]);
            }
            let close = rest[open..].find(']').map_or(rest.len(), |c| open + c);
            segments.push(&rest[open..(close + 1).min(rest.len())]);
            rest = &rest[(close + 1).min(rest.len())..];
        }
        if !rest.is_empty() {
            segments.push(rest);
        }
    }
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut node = value;
    for segment in parents {
        let next = match index_of(segment) {
            Some(i) => node.get_mut(i),
            None => node.get_mut(*segment),
        };
        match next {
            Some(next) => node = next,
            None => return false,
        }
    }
    // A whole list entry (say, one missing a required field) is not removed: later entries
    // would change index, and their problems would name the wrong path.
    match (index_of(last), node) {
        (None, Value::Object(map)) => map.remove(*last).is_some(),
        _ => false,
    }
}

fn index_of(segment: &str) -> Option<usize> {
    segment.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn syntax_error(err: serde_saphyr::Error) -> ConfigError {
    let location = err.location();
    let mut reason = err.without_snippet().to_string();
    if let Some(loc) = location.filter(|_| !reason.contains("line ")) {
        reason = format!("{reason} at line {}, column {}", loc.line(), loc.column());
    }
    ConfigError::Syntax {
        line: location.map(|l| l.line()),
        column: location.map(|l| l.column()),
        reason,
    }
}

impl ValidConfig {
    /// The effective config (defaults filled in) as YAML, which [`parse`] reads back to an
    /// equal config.
    pub fn to_yaml(&self) -> String {
        match serde_saphyr::to_string(&**self) {
            Ok(text) => text,
            // Plain structs of strings and numbers always serialize; keep the CLI alive anyway.
            Err(err) => format!("# cannot render the effective config: {err}\n"),
        }
    }
}

/// The exact text `rota config check FILE` prints on success: `config OK: FILE`, one
/// `warning: ...` line per warning, then the effective config as YAML.
pub fn check_report(path: &Path) -> Result<String, ConfigError> {
    let config = load(path)?;
    let mut out = format!("config OK: {}\n", path.display());
    for warning in config.warnings() {
        out.push_str("warning: ");
        out.push_str(&warning);
        out.push('\n');
    }
    out.push_str("# effective configuration (defaults filled in):\n");
    out.push_str(&config.to_yaml());
    Ok(out)
}
