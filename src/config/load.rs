//! Turning a configuration file (and the environment) into a [`Config`].
//!
//! Owns: reading the file; environment overrides
//! (`STARLING_<SECTION>__<KEY>=value`, for containers: [`env_overrides`]);
//! resolving relative paths against the file's directory, not the working
//! directory ([`Config::resolve_paths`]), so a service started anywhere
//! (systemd's `WorkingDirectory`, a container's) finds its `topics/`,
//! password file and certificates next to its config; and noting which
//! paths the file set itself (a `classes.dir` it names must exist).
//! Must never: bind, open or create anything (that is `server.rs`'s).

use super::{Config, ConfigError};
use std::path::{Path, PathBuf};

/// Environment variables that override the file start with this.
pub const ENV_PREFIX: &str = "STARLING_";

impl Config {
    /// Reads and validates a configuration file. Relative paths in it are
    /// taken from the file's directory.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        Config::from_file_with_env(path, std::iter::empty())
    }

    /// [`Config::from_file`] with environment overrides (`vars`: every
    /// environment variable; only `STARLING_<SECTION>__<KEY>` ones count).
    pub fn from_file_with_env(
        path: &Path,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: file.clone(), source })?;
        let (mut config, classes_dir_set) = Config::parse_with_env(&text, &file, vars)?;
        // A directory the file names must exist; the built-in default's may not.
        config.classes.required = classes_dir_set;
        config.resolve_paths(path.parent().unwrap_or(Path::new("")));
        config.validate(&file)?;
        Ok(config)
    }

    /// Parses and validates configuration text; `file` names it in errors.
    /// Relative paths stay relative to the working directory, and a missing
    /// `classes.dir` means no classes (the built-in configuration).
    pub fn from_toml(text: &str, file: &str) -> Result<Config, ConfigError> {
        Config::from_toml_with_env(text, file, std::iter::empty())
    }

    /// [`Config::from_toml`] with environment overrides.
    pub fn from_toml_with_env(
        text: &str,
        file: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (config, _) = Config::parse_with_env(text, file, vars)?;
        config.validate(file)?;
        Ok(config)
    }

    fn parse_with_env(
        text: &str,
        file: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Config, bool), ConfigError> {
        let parse_error = |message: String| ConfigError::Parse { file: file.to_string(), message };
        let mut table: toml::Table = toml::from_str(text).map_err(|e| parse_error(e.to_string()))?;
        let applied = env_overrides(&mut table, vars).map_err(parse_error)?;
        let classes_dir_set = table.get("classes").and_then(|c| c.get("dir")).is_some();
        let config: Config = toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| {
            let from_env = if applied.is_empty() {
                String::new()
            } else {
                format!(" (with the environment's {})", applied.join(", "))
            };
            parse_error(format!("{e}{from_env}"))
        })?;
        Ok((config, classes_dir_set))
    }

    /// Makes every relative path of the file relative to `base` (the
    /// file's directory). Empty paths stay empty (`classes.dir = ""`: no
    /// classes).
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |path: &mut PathBuf| {
            if !path.as_os_str().is_empty() && path.is_relative() {
                *path = base.join(&*path);
            }
        };
        let fix_some = |path: &mut Option<PathBuf>| {
            if let Some(path) = path {
                fix(path);
            }
        };
        fix(&mut self.classes.dir);
        fix(&mut self.storage.data_dir);
        fix_some(&mut self.files.dir);
        fix_some(&mut self.auth.password_file);
        fix_some(&mut self.auth.mosquitto_acl_file);
        if let Some(jwt) = &mut self.auth.jwt {
            fix_some(&mut jwt.public_key_file);
        }
        if let Some(tls) = &mut self.tls {
            fix(&mut tls.cert_file);
            fix(&mut tls.key_file);
            fix_some(&mut tls.client_ca_file);
        }
        if let Some(cluster) = &mut self.cluster {
            fix_some(&mut cluster.credentials_file);
            fix_some(&mut cluster.tls_ca_file);
        }
        for bridge in &mut self.bridge {
            fix_some(&mut bridge.tls_ca_file);
            fix_some(&mut bridge.tls_cert_file);
            fix_some(&mut bridge.tls_key_file);
        }
    }
}

/// Applies `STARLING_<SECTION>__<KEY>=value` variables to the parsed file:
/// `STARLING_MQTT__BIND=0.0.0.0:1883` sets `[mqtt] bind`,
/// `STARLING_AUTH__JWT__SECRET=...` sets `[auth.jwt] secret` (sections are
/// created as needed). The value is read as TOML when it is one (`true`,
/// `1000`, `["a", "b"]`, `"quoted"`), else taken as a string. Variables
/// without `__` after the prefix are not overrides and are ignored. Returns
/// the variables applied, for error messages.
pub fn env_overrides(
    table: &mut toml::Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<String>, String> {
    let mut applied: Vec<(String, String)> =
        vars.into_iter().filter(|(name, _)| name.strip_prefix(ENV_PREFIX).is_some_and(|r| r.contains("__"))).collect();
    // Same result whatever order the environment lists them in.
    applied.sort();
    for (name, raw) in &applied {
        let path: Vec<String> = name[ENV_PREFIX.len()..].split("__").map(str::to_lowercase).collect();
        if path.iter().any(|key| key.is_empty()) {
            return Err(format!("{name}: an empty key (use STARLING_SECTION__KEY)"));
        }
        let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        let (key, sections) = path.split_last().expect("split gives one part at least");
        let mut at = &mut *table;
        for section in sections {
            let entry = at.entry(section.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            at = entry.as_table_mut().ok_or_else(|| format!("{name}: {section} is not a section"))?;
        }
        at.insert(key.clone(), value);
    }
    Ok(applied.into_iter().map(|(name, _)| name).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn environment_variables_override_the_file_and_are_validated_the_same_way() {
        let file = "[mqtt]\nbind = \"127.0.0.1:1883\"\n";
        let config = Config::from_toml_with_env(
            file,
            "f.toml",
            vars(&[
                ("STARLING_MQTT__BIND", "127.0.0.1:2883"),
                ("STARLING_MQTT__MAX_CONNECTIONS", "7"),
                ("STARLING_AUTH__ALLOW_ANONYMOUS", "true"),
                ("STARLING_AUTH__JWT__SECRET", "0123456789abcdef0123456789abcdef"),
                ("STARLING_AUTH__CHAIN", "[\"jwt\"]"),
                ("STARLING_NATS_SERVER", "/not/an/override"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(config.mqtt.bind.port(), 2883);
        assert_eq!(config.mqtt.max_connections, 7);
        assert_eq!(config.auth.allow_anonymous, Some(true));
        assert_eq!(config.auth.jwt.unwrap().secret.as_deref(), Some("0123456789abcdef0123456789abcdef"));
        // Wrong types and bad values are named, with the variable.
        let err = Config::from_toml_with_env(file, "f.toml", vars(&[("STARLING_MQTT__MAX_CONNECTIONS", "many")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_connections") && err.contains("STARLING_MQTT__MAX_CONNECTIONS"), "{err}");
        let err = Config::from_toml_with_env(file, "f.toml", vars(&[("STARLING_MQTT__MAX_CONNECTIONS", "0")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("mqtt.max_connections = 0"), "{err}");
        let err = Config::from_toml_with_env(file, "f.toml", vars(&[("STARLING_MQTT__BIND__X", "1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("STARLING_MQTT__BIND__X"), "{err}");
    }

    #[test]
    fn relative_paths_are_the_config_files_and_a_named_classes_dir_is_required() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("starling.toml");
        let text = "[classes]\ndir = \"topics\"\n[storage]\ndata_dir = \"state\"\n[auth]\npassword_file = \
                    \"/etc/abs/passwd\"\nchain = [\"password_file\"]\n[tls]\ncert_file = \"certs/c.pem\"\nkey_file = \"k.pem\"\n";
        std::fs::write(&path, text).unwrap();
        let config = Config::from_file(&path).unwrap();
        assert_eq!(config.classes.dir, dir.path().join("topics"));
        assert!(config.classes.required);
        assert_eq!(config.storage.data_dir, dir.path().join("state"));
        assert_eq!(config.auth.password_file.unwrap(), Path::new("/etc/abs/passwd"), "absolute stays");
        assert_eq!(config.tls.unwrap().cert_file, dir.path().join("certs/c.pem"));
        // Not named in the file: the default, not required.
        std::fs::write(&path, "[classes]\n").unwrap();
        assert!(!Config::from_file(&path).unwrap().classes.required);
        // Turned off: stays empty.
        std::fs::write(&path, "[classes]\ndir = \"\"\n").unwrap();
        assert_eq!(Config::from_file(&path).unwrap().classes.dir, PathBuf::new());
    }
}
