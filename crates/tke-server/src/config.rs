//! `unitd.toml`: what a server hosts and how it listens.
//!
//! ```toml
//! version = 1
//! listen = "127.0.0.1:8443"
//! ca = "ca.pem"                         # the fleet CA (pinned by clients)
//! tls_certificate = "tls/server.pem"    # issued by the fleet CA
//! tls_key = "tls/server.key.pem"        # PKCS#8, mode 0600
//! units_dir = "units"                   # one directory per unit (see tke-unit)
//! latency_ms = 20                       # optional, test tooling: simulated HSM round trip
//! state_store = "journal"               # optional: journal (default) | file
//!
//! [limits]                              # every field optional; these are the defaults
//! max_body_bytes = 65536
//! max_header_bytes = 8192
//! handshake_timeout_secs = 5            # to complete the TLS handshake
//! read_timeout_secs = 10                # to read a whole request (the first: with the TLS handshake)
//! write_timeout_secs = 10
//! keep_alive_secs = 5
//! workers = 32                          # threads executing unit work
//! max_connections = 8192                # open connections, all peers together
//! max_connections_per_peer = 2048       # open connections from one IP address
//! shutdown_grace_secs = 30
//!
//! [[instances]]
//! id = "0b6f0c8e-5d6a-4b8e-9a51-0c2f8e7d6b1a"
//! [[instances.units]]
//! id = "5d0c1f1e-...-..."
//! type = "operational"                  # operational | recovery | failover
//! location = "[zone-a].[unitd-8443].[01].[01]"
//! backend = "soft"
//!
//! [[api_keys]]
//! instance = "0b6f0c8e-5d6a-4b8e-9a51-0c2f8e7d6b1a"
//! sha256 = "…64 hex digits: SHA-256 of the key…"
//! label = "created by tke-unitd init"
//! ```
//!
//! Relative paths are relative to the directory of the configuration file.

use std::{
    collections::HashSet,
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use tke_proto::{UnitId, UnitType};
use tke_unit::Latency;

use crate::{apikey::KeyHash, error::io_err, ServerError};

/// The configuration file's name, as `init` writes it.
pub const CONFIG_FILE: &str = "unitd.toml";

/// `unitd.toml`, as written on disk.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Format version: 1.
    pub version: u32,
    /// `ADDR:PORT` to listen on.
    pub listen: String,
    /// The fleet CA certificate (PEM).
    pub ca: PathBuf,
    /// The TLS server certificate (PEM), issued by the fleet CA.
    pub tls_certificate: PathBuf,
    /// Its private key (PKCS#8 PEM).
    pub tls_key: PathBuf,
    /// Where the units' directories are.
    pub units_dir: PathBuf,
    /// Test and benchmark tooling: every unit waits this many milliseconds (0 to 10000)
    /// before answering each request, standing in for a real HSM's round trip. Absent:
    /// none. `serve --latency-ms` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// How the units' states are made durable ([`StateStoreKind`]). Absent: the journal.
    /// `serve --state-store` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_store: Option<StateStoreKind>,
    /// Limits and timeouts.
    #[serde(default)]
    pub limits: Limits,
    /// The service instances hosted here, with their units.
    pub instances: Vec<InstanceConfig>,
    /// The API keys (hashes only) and the instance each one opens.
    pub api_keys: Vec<ApiKeyConfig>,
}

/// Limits and timeouts of the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request body accepted (413 above).
    pub max_body_bytes: usize,
    /// Largest request head (request line and headers; 431 above).
    pub max_header_bytes: usize,
    /// Time allowed to complete the TLS handshake (also bounded by `read_timeout_secs`);
    /// the connection is closed after it.
    pub handshake_timeout_secs: u64,
    /// Time allowed to receive one whole request, counted from the connection for the
    /// first request (TLS handshake included), from its first byte for later ones (408
    /// after).
    pub read_timeout_secs: u64,
    /// Time allowed to send one response.
    pub write_timeout_secs: u64,
    /// How long an idle keep-alive connection is kept.
    pub keep_alive_secs: u64,
    /// Threads executing unit work (each unit still executes one request at a time).
    /// Connections do not hold a thread: reading and writing them is asynchronous.
    pub workers: usize,
    /// Open connections, all peers together; beyond, new ones are closed at once.
    pub max_connections: usize,
    /// Open connections from one IP address; beyond, its new ones are closed at once.
    pub max_connections_per_peer: usize,
    /// No longer used (connections no longer wait for a worker thread; see
    /// `max_connections`): still accepted so that configurations written by earlier
    /// versions load.
    #[serde(skip_serializing)]
    pub max_pending_connections: usize,
    /// On SIGTERM/SIGINT, how long requests in progress may take to finish.
    pub shutdown_grace_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            max_header_bytes: 8 * 1024,
            handshake_timeout_secs: 5,
            read_timeout_secs: 10,
            write_timeout_secs: 10,
            keep_alive_secs: 5,
            workers: 32,
            max_connections: 8192,
            max_connections_per_peer: 2048,
            max_pending_connections: 1024,
            shutdown_grace_secs: 30,
        }
    }
}

/// One service instance hosted (in part) by this server.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    /// The instance id (a UUID, shared by every server that hosts units of the instance).
    pub id: String,
    /// Its units on this server.
    pub units: Vec<UnitConfig>,
}

/// One hosted unit.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitConfig {
    /// The unit id (UUID); its directory is `<units_dir>/<id>`.
    pub id: String,
    /// `operational`, `recovery` or `failover`.
    #[serde(rename = "type")]
    pub unit_type: String,
    /// The vendor-style location `[zone].[host].[module].[domain]`.
    pub location: String,
    /// Where its secrets live: `soft` (the unit directory).
    pub backend: String,
}

/// One API key: the SHA-256 of the key and the instance it opens.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The instance the key opens.
    pub instance: String,
    /// SHA-256 of the key, 64 hex digits.
    pub sha256: String,
    /// A note for the operator (who holds the key).
    #[serde(default)]
    pub label: String,
}

/// A unit of a checked configuration.
#[derive(Clone, Debug)]
pub struct HostedUnitConfig {
    /// Its instance.
    pub instance: String,
    /// Its id.
    pub id: UnitId,
    /// Its type.
    pub unit_type: UnitType,
    /// Its location.
    pub location: String,
    /// Its directory.
    pub dir: PathBuf,
}

/// How `tke-unitd` makes each unit's state durable before the unit answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateStoreKind {
    /// One journal for all the units of `units_dir` ([`tke_unit::Journal`]): a record
    /// appended per command, the commands of every unit made durable together by one
    /// `fdatasync` (group commit), compacted into each unit's `unit.json`.
    #[default]
    Journal,
    /// Each unit's `unit.json`, rewritten atomically per command (temporary file, fsync,
    /// rename, directory fsync), as the embedded fleet keeps units.
    File,
}

impl StateStoreKind {
    /// The name in the configuration and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Journal => "journal",
            Self::File => "file",
        }
    }
}

/// An API key of a checked configuration.
#[derive(Clone, Debug)]
pub struct KeyConfig {
    /// The instance it opens.
    pub instance: String,
    /// SHA-256 of the key.
    pub hash: KeyHash,
}

/// A configuration checked and with absolute paths.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// The listen address.
    pub listen: SocketAddr,
    /// The fleet CA file.
    pub ca: PathBuf,
    /// The TLS certificate file.
    pub tls_certificate: PathBuf,
    /// The TLS key file.
    pub tls_key: PathBuf,
    /// The units' directory.
    pub units_dir: PathBuf,
    /// The units' simulated round trip ([`tke_unit::Unit::set_latency`]; test tooling).
    pub latency: Latency,
    /// How the units' states are made durable.
    pub state_store: StateStoreKind,
    /// Limits and timeouts.
    pub limits: Limits,
    /// Instance ids, in file order.
    pub instances: Vec<String>,
    /// Every hosted unit, in file order.
    pub units: Vec<HostedUnitConfig>,
    /// Every API key.
    pub keys: Vec<KeyConfig>,
}

/// The type's name in the configuration and the API.
pub fn type_name(t: UnitType) -> &'static str {
    t.json_name()
}

/// Parses a type name.
pub fn parse_type(s: &str) -> Option<UnitType> {
    match s {
        "operational" => Some(UnitType::Operational),
        "recovery" => Some(UnitType::Recovery),
        "failover" => Some(UnitType::Failover),
        _ => None,
    }
}

/// Checks that `s` is a lower-case UUID (`8-4-4-4-12` hex digits).
pub fn is_uuid(s: &str) -> bool {
    UnitId::from_uuid(s).is_ok_and(|u| u.uuid() == s)
}

impl Config {
    /// Reads and checks a configuration file.
    ///
    /// # Errors
    /// [`ServerError::Io`], [`ServerError::ConfigSyntax`], [`ServerError::Config`].
    pub fn load(path: &Path) -> Result<Self, ServerError> {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let text = fs::read_to_string(&path).map_err(io_err("read", &path))?;
        let file: ConfigFile =
            toml::from_str(&text).map_err(|source| ServerError::ConfigSyntax {
                path: path.clone(),
                source,
            })?;
        Self::check(file, &path)
    }

    fn check(file: ConfigFile, path: &Path) -> Result<Self, ServerError> {
        let bad = |what: &'static str, value: String| ServerError::Config {
            path: path.to_path_buf(),
            what,
            value,
        };
        if file.version != 1 {
            return Err(bad("unsupported version", file.version.to_string()));
        }
        let base = path.parent().unwrap_or(Path::new("/"));
        let abs = |p: &Path| base.join(p);
        let listen: SocketAddr = file
            .listen
            .parse()
            .map_err(|_| bad("listen is not ADDR:PORT", file.listen.clone()))?;
        let latency = Latency::from_millis(file.latency_ms.unwrap_or(0)).map_err(|_| {
            bad(
                "latency_ms must be 0 to 10000 (milliseconds)",
                file.latency_ms.unwrap_or(0).to_string(),
            )
        })?;
        let l = file.limits;
        if l.workers == 0 || l.workers > 1024 {
            return Err(bad(
                "limits.workers must be 1 to 1024",
                l.workers.to_string(),
            ));
        }
        if l.max_body_bytes == 0 || l.max_body_bytes > 16 << 20 {
            return Err(bad(
                "limits.max_body_bytes must be 1 to 16 MiB",
                l.max_body_bytes.to_string(),
            ));
        }
        if l.max_header_bytes < 1024 || l.max_header_bytes > 1 << 20 {
            return Err(bad(
                "limits.max_header_bytes must be 1 KiB to 1 MiB",
                l.max_header_bytes.to_string(),
            ));
        }
        if l.read_timeout_secs == 0
            || l.write_timeout_secs == 0
            || l.keep_alive_secs == 0
            || l.handshake_timeout_secs == 0
        {
            return Err(bad("timeouts must be at least 1 second", String::new()));
        }
        if l.max_connections == 0 || l.max_connections_per_peer == 0 {
            return Err(bad(
                "limits.max_connections and max_connections_per_peer must be at least 1",
                String::new(),
            ));
        }
        let units_dir = abs(&file.units_dir);
        let mut instances = Vec::new();
        let mut units = Vec::new();
        let mut seen = HashSet::new();
        for inst in &file.instances {
            if !is_uuid(&inst.id) {
                return Err(bad(
                    "an instance id is not a lower-case UUID",
                    inst.id.clone(),
                ));
            }
            if instances.contains(&inst.id) {
                return Err(bad("an instance is listed twice", inst.id.clone()));
            }
            instances.push(inst.id.clone());
            for u in &inst.units {
                let id = UnitId::from_uuid(&u.id)
                    .ok()
                    .filter(|_| is_uuid(&u.id))
                    .ok_or_else(|| bad("a unit id is not a lower-case UUID", u.id.clone()))?;
                if !seen.insert(id) {
                    return Err(bad("a unit is listed twice", u.id.clone()));
                }
                let unit_type = parse_type(&u.unit_type)
                    .ok_or_else(|| bad("unknown unit type", u.unit_type.clone()))?;
                if u.backend != "soft" {
                    return Err(bad(
                        "unknown backend (this build has: soft)",
                        u.backend.clone(),
                    ));
                }
                if u.location.is_empty() || u.location.len() > 128 {
                    return Err(bad("a location must be 1 to 128 bytes", u.id.clone()));
                }
                units.push(HostedUnitConfig {
                    instance: inst.id.clone(),
                    id,
                    unit_type,
                    location: u.location.clone(),
                    dir: units_dir.join(&u.id),
                });
            }
        }
        if units.is_empty() {
            return Err(bad("no crypto unit is configured", String::new()));
        }
        let mut keys = Vec::new();
        for k in &file.api_keys {
            if !instances.contains(&k.instance) {
                return Err(bad(
                    "an API key opens an instance that is not hosted here",
                    k.instance.clone(),
                ));
            }
            let hash = KeyHash::from_hex(&k.sha256)
                .ok_or_else(|| bad("an API key hash is not 64 hex digits", k.label.clone()))?;
            keys.push(KeyConfig {
                instance: k.instance.clone(),
                hash,
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            listen,
            ca: abs(&file.ca),
            tls_certificate: abs(&file.tls_certificate),
            tls_key: abs(&file.tls_key),
            units_dir,
            latency,
            state_store: file.state_store.unwrap_or_default(),
            limits: l,
            instances,
            units,
            keys,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const GOOD: &str = r#"
version = 1
listen = "127.0.0.1:8443"
ca = "ca.pem"
tls_certificate = "tls/server.pem"
tls_key = "tls/server.key.pem"
units_dir = "units"
[limits]
workers = 4
[[instances]]
id = "0b6f0c8e-5d6a-4b8e-9a51-0c2f8e7d6b1a"
[[instances.units]]
id = "5d0c1f1e-0000-4000-8000-000000000001"
type = "recovery"
location = "[dr].[unitd-8443].[01].[01]"
backend = "soft"
[[api_keys]]
instance = "0b6f0c8e-5d6a-4b8e-9a51-0c2f8e7d6b1a"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
"#;

    fn load(text: &str) -> Result<Config, ServerError> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(CONFIG_FILE);
        fs::write(&p, text).unwrap();
        Config::load(&p)
    }

    #[test]
    fn a_good_file_resolves_paths_and_defaults() {
        let c = load(GOOD).unwrap();
        assert!(c.ca.is_absolute() && c.ca.ends_with("ca.pem"));
        assert_eq!(c.limits.workers, 4);
        assert_eq!(c.limits.max_body_bytes, Limits::default().max_body_bytes);
        assert_eq!(c.units.len(), 1);
        assert_eq!(c.units[0].unit_type, UnitType::Recovery);
        assert_eq!(c.latency, Latency::NONE, "no latency unless asked");
        assert_eq!(
            c.state_store,
            StateStoreKind::Journal,
            "the journal by default"
        );
        let c = load(&GOOD.replace(
            "units_dir = \"units\"",
            "units_dir = \"units\"\nstate_store = \"file\"",
        ))
        .unwrap();
        assert_eq!(c.state_store, StateStoreKind::File);
        let c = load(&GOOD.replace(
            "units_dir = \"units\"",
            "units_dir = \"units\"\nlatency_ms = 20",
        ))
        .unwrap();
        assert_eq!(c.latency, Latency::from_millis(20).unwrap());
        assert!(c.units[0]
            .dir
            .ends_with("units/5d0c1f1e-0000-4000-8000-000000000001"));
    }

    #[test]
    fn bad_values_are_named() {
        for (from, to, what) in [
            ("type = \"recovery\"", "type = \"hsm\"", "unknown unit type"),
            ("backend = \"soft\"", "backend = \"tpm\"", "unknown backend"),
            ("workers = 4", "workers = 0", "limits.workers"),
            (
                "units_dir = \"units\"",
                "units_dir = \"units\"\nlatency_ms = 10001",
                "latency_ms must be 0 to 10000",
            ),
            ("127.0.0.1:8443", "localhost", "listen"),
            (
                "instance = \"0b6f0c8e-5d6a-4b8e-9a51-0c2f8e7d6b1a\"",
                "instance = \"0b6f0c8e-5d6a-4b8e-9a51-0c2f8e7d6b1b\"",
                "not hosted here",
            ),
        ] {
            let err = load(&GOOD.replace(from, to)).unwrap_err();
            assert!(err.to_string().contains(what), "{from} -> {to}: {err}");
        }
        let err = load(&GOOD.replace(
            "units_dir = \"units\"",
            "units_dir = \"units\"\nstate_store = \"sqlite\"",
        ))
        .unwrap_err();
        let text = tke_proto::ErrorChain(&err).to_string();
        assert!(text.contains("expected `journal` or `file`"), "{text}");
        let err = load(&GOOD.replace("workers = 4", "wrokers = 4")).unwrap_err();
        assert!(matches!(err, ServerError::ConfigSyntax { .. }), "{err}");
    }
}
