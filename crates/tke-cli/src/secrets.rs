//! `--secrets FILE`: passwords and PINs for scripted runs, never on the command line.
//!
//! A TOML file of `NAME = "secret"` lines, one per signature key (by administrator name):
//! the password of a key file, or the user PIN of the token that holds a PKCS#11 key.

use std::{collections::BTreeMap, fs, os::unix::fs::PermissionsExt, path::Path};

use anyhow::{bail, Context, Result};
use tke_workstation::Password;

/// Passwords read from a secrets file.
pub struct Secrets {
    by_name: BTreeMap<String, Password>,
}

impl Secrets {
    /// Reads a secrets file. Refuses one that others can read.
    pub fn load(path: &Path) -> Result<Self> {
        let meta = fs::metadata(path)
            .with_context(|| format!("cannot read the secrets file {}", path.display()))?;
        if meta.permissions().mode() & 0o077 != 0 {
            bail!(
                "the secrets file {} can be read by other users; restrict it with `chmod 600 {}`",
                path.display(),
                path.display()
            );
        }
        let text = zeroize::Zeroizing::new(
            fs::read_to_string(path)
                .with_context(|| format!("cannot read the secrets file {}", path.display()))?,
        );
        let table: toml::Table = toml::from_str(&text).map_err(|e| {
            // The TOML error quotes the offending line, which may hold a password: keep
            // only its position.
            let at = e
                .span()
                .map(|s| format!(" near byte {}", s.start))
                .unwrap_or_default();
            anyhow::anyhow!(
                "the secrets file {} is not valid TOML{at}; write one `NAME = \"password\"` line per signature key",
                path.display()
            )
        })?;
        let mut by_name = BTreeMap::new();
        for (k, v) in table {
            match v {
                toml::Value::String(s) => {
                    by_name.insert(k, Password::new(s));
                }
                _ => bail!(
                    "in the secrets file {}, the value for {k:?} is not a string; write `{k} = \"password\"`",
                    path.display()
                ),
            }
        }
        Ok(Self { by_name })
    }

    /// The password (or token PIN) for a signature key, by administrator name.
    pub fn get(&self, name: &str) -> Option<&Password> {
        self.by_name.get(name)
    }
}
