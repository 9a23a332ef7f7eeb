//! The card's persistent state as JSON, so that a test can stop a card and start it again
//! (`tke-piv-vcard --state FILE`). A test card's file holds its PIN, PUK, management key
//! and private keys in hex: never use it for anything real.

use std::{collections::BTreeMap, fs, io, path::Path};

use p256::SecretKey;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{
    card::{Card, CardConfig, Origin, PinPolicy, Reference, SlotKey, TouchMode, TouchPolicy},
    mgm::{MgmAlgorithm, MgmKey},
};

/// Errors reading a state file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file cannot be read or written.
    #[error("cannot {action} the card state file {path}")]
    Io {
        /// `read` or `write`.
        action: &'static str,
        /// The file.
        path: String,
        /// The I/O error.
        source: io::Error,
    },
    /// The file is not a card state.
    #[error("the card state file {path} is not valid: {problem}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        problem: String,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RefFile {
    value: String,
    max: u8,
    left: u8,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    secret: String,
    pin_policy: u8,
    touch_policy: u8,
    imported: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    format: u32,
    serial: u32,
    version: [u8; 3],
    pin: RefFile,
    puk: RefFile,
    mgm_algorithm: MgmAlgorithm,
    mgm_key: String,
    mgm_touch: bool,
    keys: BTreeMap<String, KeyFile>,
    objects: BTreeMap<String, String>,
}

fn ref_file(r: &Reference) -> RefFile {
    RefFile {
        value: hex::encode(r.value.as_slice()),
        max: r.max,
        left: r.left,
    }
}

impl Card {
    /// The persistent state as JSON (secrets included, in hex: a test card only).
    pub fn to_json(&self) -> String {
        let state = StateFile {
            format: 1,
            serial: self.serial,
            version: self.version,
            pin: ref_file(&self.pin),
            puk: ref_file(&self.puk),
            mgm_algorithm: self.mgm.algorithm(),
            mgm_key: hex::encode(self.mgm.expose()),
            mgm_touch: self.mgm_touch,
            keys: self
                .keys
                .iter()
                .map(|(slot, k)| {
                    (
                        format!("{slot:02x}"),
                        KeyFile {
                            secret: hex::encode(k.secret.to_bytes()),
                            pin_policy: match k.pin {
                                PinPolicy::Never => 1,
                                PinPolicy::Once => 2,
                                PinPolicy::Always => 3,
                            },
                            touch_policy: match k.touch {
                                TouchPolicy::Never => 1,
                                TouchPolicy::Always => 2,
                                TouchPolicy::Cached => 3,
                            },
                            imported: k.origin == Origin::Imported,
                        },
                    )
                })
                .collect(),
            objects: self
                .objects
                .iter()
                .map(|(tag, v)| (format!("{tag:06x}"), hex::encode(v)))
                .collect(),
        };
        serde_json::to_string_pretty(&state).unwrap_or_default()
    }

    /// A card from [`Card::to_json`] output; `touch` is how its holder behaves.
    ///
    /// # Errors
    /// A description of the first problem found.
    pub fn from_json(json: &str, touch: TouchMode) -> Result<Self, String> {
        let s: StateFile = serde_json::from_str(json).map_err(|e| e.to_string())?;
        if s.format != 1 {
            return Err(format!("format {} is not 1", s.format));
        }
        let unhex = |what: &str, h: &str| {
            hex::decode(h)
                .map(Zeroizing::new)
                .map_err(|_| format!("{what} is not hex"))
        };
        let reference = |what: &str, r: &RefFile| -> Result<Reference, String> {
            Ok(Reference {
                value: unhex(what, &r.value)?,
                max: r.max,
                left: r.left.min(r.max),
            })
        };
        let mut card = Card::new(CardConfig {
            serial: s.serial,
            version: s.version,
            touch,
        });
        card.pin = reference("pin", &s.pin)?;
        card.puk = reference("puk", &s.puk)?;
        card.mgm = MgmKey::new(s.mgm_algorithm, &unhex("mgm_key", &s.mgm_key)?)
            .ok_or("mgm_key has the wrong length for its algorithm")?;
        card.mgm_touch = s.mgm_touch;
        for (slot, k) in &s.keys {
            let slot = u8::from_str_radix(slot, 16).map_err(|_| format!("bad slot {slot}"))?;
            let secret = SecretKey::from_slice(&unhex("secret", &k.secret)?)
                .map_err(|_| format!("the key of slot {slot:02x} is not a P-256 key"))?;
            let pin = match k.pin_policy {
                1 => PinPolicy::Never,
                2 => PinPolicy::Once,
                3 => PinPolicy::Always,
                p => return Err(format!("bad PIN policy {p}")),
            };
            let touch = match k.touch_policy {
                1 => TouchPolicy::Never,
                2 => TouchPolicy::Always,
                3 => TouchPolicy::Cached,
                p => return Err(format!("bad touch policy {p}")),
            };
            let origin = if k.imported {
                Origin::Imported
            } else {
                Origin::Generated
            };
            card.keys.insert(
                slot,
                SlotKey {
                    secret,
                    pin,
                    touch,
                    origin,
                },
            );
        }
        for (tag, v) in &s.objects {
            let tag = u32::from_str_radix(tag, 16).map_err(|_| format!("bad object {tag}"))?;
            card.objects.insert(tag, unhex("object", v)?.to_vec());
        }
        Ok(card)
    }

    /// Reads a card from a state file.
    ///
    /// # Errors
    /// [`StateError`] when the file cannot be read or is not a card state.
    pub fn load(path: &Path, touch: TouchMode) -> Result<Self, StateError> {
        let text = fs::read_to_string(path).map_err(|source| StateError::Io {
            action: "read",
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json(&text, touch).map_err(|problem| StateError::Invalid {
            path: path.display().to_string(),
            problem,
        })
    }

    /// Writes the card's state file atomically (temporary file, then rename), mode 0600.
    ///
    /// # Errors
    /// [`StateError::Io`] when it cannot be written.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        use std::{io::Write, os::unix::fs::OpenOptionsExt};
        let err = |source| StateError::Io {
            action: "write",
            path: path.display().to_string(),
            source,
        };
        let tmp = path.with_extension("tmp");
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err)?;
        f.write_all(self.to_json().as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
        fs::rename(&tmp, path).map_err(err)
    }
}
