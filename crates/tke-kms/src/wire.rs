//! The key service over HTTP (JSON), as `tke-unitd` serves it and the HTTPS transport
//! calls it: bodies, and the stable error codes that carry [`KmsError`]'s kind across.
//! `docs/protocol.md` lists the endpoints.

use serde::{Deserialize, Serialize};
use tke_keystore::{Created, KeyId, KeyName};
use tke_proto::Vp;

use crate::{KeyInfo, KmsError, Progress, Rotation, Summary};

/// A key as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyJson {
    /// The id, as a UUID.
    pub id: String,
    /// The name.
    pub name: String,
    /// Milliseconds since the Unix epoch.
    pub created: i64,
    /// The VP of the master key that wraps it, hex.
    pub vp: String,
}

impl From<&KeyInfo> for KeyJson {
    fn from(k: &KeyInfo) -> Self {
        Self {
            id: k.id.to_string(),
            name: k.name.to_string(),
            created: k.created.unix_millis(),
            vp: k.vp.to_hex(),
        }
    }
}

impl KeyJson {
    /// The key, its fields checked.
    ///
    /// # Errors
    /// [`KmsError::Transport`] naming the field that is malformed.
    pub fn parse(&self) -> Result<KeyInfo, KmsError> {
        Ok(KeyInfo {
            id: KeyId::parse(&self.id).map_err(|_| bad("a key id"))?,
            name: KeyName::new(&self.name).map_err(|_| bad("a key name"))?,
            created: Created::from_unix_millis(self.created),
            vp: vp(&self.vp)?,
        })
    }
}

fn bad(what: &str) -> KmsError {
    KmsError::Transport(format!(
        "the key service's answer holds {what} that is malformed"
    ))
}

fn vp(hex: &str) -> Result<Vp, KmsError> {
    Vp::from_hex(hex).map_err(|_| bad("a verification pattern"))
}

/// `POST .../keys/create`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateJson {
    /// The name.
    pub name: String,
    /// How many keys.
    pub count: u32,
}

/// A list of keys (`GET .../keys`, `POST .../keys/create`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeysJson {
    /// The keys.
    pub keys: Vec<KeyJson>,
}

/// Bytes as hex: a data key in, a wrapped data key out, and back (`.../wrap`,
/// `.../unwrap`).
#[derive(Serialize, Deserialize)]
pub struct BytesJson {
    /// Hex.
    pub hex: String,
}

impl core::fmt::Debug for BytesJson {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "BytesJson({} hex digits)", self.hex.len())
    }
}

impl Drop for BytesJson {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.hex);
    }
}

/// A rotation (`.../keystore/rotation/begin`, and in the summary).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RotationJson {
    /// VP moved from, hex.
    pub from: String,
    /// VP moved to, hex.
    pub to: String,
}

impl From<Rotation> for RotationJson {
    fn from(r: Rotation) -> Self {
        Self {
            from: r.from.to_hex(),
            to: r.to.to_hex(),
        }
    }
}

impl RotationJson {
    /// The rotation, its VPs checked.
    ///
    /// # Errors
    /// [`KmsError::Transport`].
    pub fn parse(&self) -> Result<Rotation, KmsError> {
        Ok(Rotation {
            from: vp(&self.from)?,
            to: vp(&self.to)?,
        })
    }
}

/// `POST .../keystore/rotation/reencrypt` in.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReencryptJson {
    /// At most this many records.
    pub max_records: u64,
}

/// `POST .../keystore/rotation/reencrypt` out.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProgressJson {
    /// Records under the new key.
    pub done: u64,
    /// Records in all.
    pub total: u64,
}

impl From<Progress> for ProgressJson {
    fn from(p: Progress) -> Self {
        Self {
            done: p.done,
            total: p.total,
        }
    }
}

/// One VP and its count, in the summary.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VpCountJson {
    /// The VP, hex.
    pub vp: String,
    /// Records it wraps.
    pub count: u64,
}

/// `GET .../keystore`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SummaryJson {
    /// Records.
    pub total: u64,
    /// Records by VP.
    pub by_vp: Vec<VpCountJson>,
    /// The rotation in progress.
    pub rotation: Option<RotationJson>,
    /// Where the store lives.
    pub location: String,
}

impl From<&Summary> for SummaryJson {
    fn from(s: &Summary) -> Self {
        Self {
            total: s.total,
            by_vp: s
                .by_vp
                .iter()
                .map(|(v, c)| VpCountJson {
                    vp: v.to_hex(),
                    count: *c,
                })
                .collect(),
            rotation: s.rotation.map(RotationJson::from),
            location: s.location.clone(),
        }
    }
}

impl SummaryJson {
    /// The summary, its VPs checked.
    ///
    /// # Errors
    /// [`KmsError::Transport`].
    pub fn parse(&self) -> Result<Summary, KmsError> {
        Ok(Summary {
            total: self.total,
            by_vp: self
                .by_vp
                .iter()
                .map(|c| Ok((vp(&c.vp)?, c.count)))
                .collect::<Result<_, KmsError>>()?,
            rotation: self
                .rotation
                .as_ref()
                .map(RotationJson::parse)
                .transpose()?,
            location: self.location.clone(),
        })
    }
}

/// The HTTP status and stable code that carry `e` (the message is `e`'s text).
pub fn error_code(e: &KmsError) -> (u16, &'static str) {
    match e {
        KmsError::RotationInProgress => (409, "rotation_in_progress"),
        KmsError::NoSuchKey(_) => (404, "key_not_found"),
        KmsError::NoMasterKey { .. } => (409, "no_master_key"),
        KmsError::Rotation(_) => (409, "rotation_state"),
        KmsError::NoUnit(_) | KmsError::Unit { .. } => (503, "no_unit"),
        KmsError::Input(_) => (400, "invalid_input"),
        KmsError::Store(_) | KmsError::Transport(_) => (500, "key_storage"),
    }
}

/// The error a client reports for an error answer with `code` and `message` (the
/// server's text, already escaped). `key` is the key the request was about, if any;
/// `instance` names the instance.
pub fn error_from_code(code: &str, message: &str, key: Option<&KeyId>, instance: &str) -> KmsError {
    match (code, key) {
        ("rotation_in_progress", _) => KmsError::RotationInProgress,
        ("key_not_found", Some(id)) => KmsError::NoSuchKey(*id),
        ("no_master_key", _) => KmsError::NoMasterKey {
            instance: instance.to_owned(),
        },
        ("rotation_state", _) => KmsError::Rotation(message.to_owned()),
        ("no_unit", _) => KmsError::NoUnit(message.to_owned()),
        ("invalid_input", _) => KmsError::Input(message.to_owned()),
        _ => KmsError::Transport(message.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_kind_crosses_the_wire() {
        let id = KeyId::random();
        let cases = [
            KmsError::RotationInProgress,
            KmsError::NoSuchKey(id),
            KmsError::NoMasterKey {
                instance: "i".into(),
            },
            KmsError::Rotation("r".into()),
            KmsError::NoUnit("n".into()),
            KmsError::Input("x".into()),
        ];
        for e in cases {
            let (_, code) = error_code(&e);
            let back = error_from_code(code, &e.to_string(), Some(&id), "i");
            assert_eq!(back.to_string(), e.to_string(), "{code}");
        }
    }

    #[test]
    fn keys_and_summaries_round_trip() {
        let k = KeyInfo {
            id: KeyId::random(),
            name: KeyName::new("a").unwrap(),
            created: Created::from_unix_millis(5),
            vp: Vp([7; 32]),
        };
        assert_eq!(KeyJson::from(&k).parse().unwrap(), k);
        let s = Summary {
            total: 3,
            by_vp: vec![(Vp([1; 32]), 3)],
            rotation: Some(Rotation {
                from: Vp([1; 32]),
                to: Vp([2; 32]),
            }),
            location: "x".into(),
        };
        assert_eq!(SummaryJson::from(&s).parse().unwrap(), s);
    }
}
