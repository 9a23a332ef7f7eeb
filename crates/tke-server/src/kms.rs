//! The key service of each hosted instance: its key store in `<data dir>/keys/`, its
//! units reached in-process, and the JSON endpoints under `/v1/tke/{instance}/keys` and
//! `/v1/tke/{instance}/keystore` (`docs/protocol.md` §17).

use std::{
    path::Path,
    sync::{Arc, Mutex},
};

use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tke_client::{
    embedded::SharedUnits, Client, ClientError, InstanceId, Transport, UnitDescriptor,
};
use tke_keystore::{KeyId, KeyName};
use tke_kms::{
    wire::{
        error_code, BytesJson, CreateJson, KeyJson, KeysJson, ProgressJson, ReencryptJson,
        RotationJson, SummaryJson,
    },
    KeyService, KmsError,
};
use tke_proto::CaCertificate;
use tke_unit::Unit;
use zeroize::Zeroizing;

use crate::api::ApiError;

/// The key id in a resource's path: `None` when it is not a UUID (answered 400).
pub type PathKey = Option<KeyId>;

/// A key-service resource, under `/v1/tke/{instance}/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KmsRoute {
    /// `GET keys`.
    List,
    /// `POST keys/create`.
    Create,
    /// `GET keys/{id}`.
    Show(PathKey),
    /// `POST keys/{id}/delete`.
    Delete(PathKey),
    /// `POST keys/{id}/wrap`.
    Wrap(PathKey),
    /// `POST keys/{id}/unwrap`.
    Unwrap(PathKey),
    /// `GET keystore`.
    Summary,
    /// `POST keystore/rotation/begin`.
    Begin,
    /// `POST keystore/rotation/reencrypt`.
    Reencrypt,
    /// `POST keystore/rotation/finish`.
    Finish,
}

impl KmsRoute {
    /// Parses the segments after `tke/{instance}/`.
    pub fn parse(seg: &[&str]) -> Option<Self> {
        let id = |t: &str| KeyId::parse(t).ok();
        Some(match seg {
            ["keys"] => Self::List,
            ["keys", "create"] => Self::Create,
            ["keys", k] => Self::Show(id(k)),
            ["keys", k, "delete"] => Self::Delete(id(k)),
            ["keys", k, "wrap"] => Self::Wrap(id(k)),
            ["keys", k, "unwrap"] => Self::Unwrap(id(k)),
            ["keystore"] => Self::Summary,
            ["keystore", "rotation", "begin"] => Self::Begin,
            ["keystore", "rotation", "reencrypt"] => Self::Reencrypt,
            ["keystore", "rotation", "finish"] => Self::Finish,
            _ => return None,
        })
    }

    /// The one method it allows.
    pub fn method(&self) -> &'static str {
        match self {
            Self::List | Self::Show(_) | Self::Summary => "GET",
            _ => "POST",
        }
    }

    /// Whether it takes a JSON body.
    pub fn has_body(&self) -> bool {
        matches!(
            self,
            Self::Create | Self::Wrap(_) | Self::Unwrap(_) | Self::Begin | Self::Reencrypt
        )
    }

    /// A short name for the log.
    pub fn name(&self) -> &'static str {
        match self {
            Self::List => "kms-list",
            Self::Create => "kms-create",
            Self::Show(_) => "kms-show",
            Self::Delete(_) => "kms-delete",
            Self::Wrap(_) => "kms-wrap",
            Self::Unwrap(_) => "kms-unwrap",
            Self::Summary => "kms-summary",
            Self::Begin => "kms-begin-rotation",
            Self::Reencrypt => "kms-reencrypt",
            Self::Finish => "kms-finish-rotation",
        }
    }
}

/// A hosted unit as the key service reaches it.
pub struct HostedRef {
    /// What the unit listing says of it.
    pub descriptor: UnitDescriptor,
    /// The unit, shared with the server.
    pub unit: Arc<Mutex<Unit>>,
}

/// Opens the key service of `instance` over `units`, its store in `dir`.
///
/// # Errors
/// The client's error (a unit's certificate, the store).
pub fn open(
    dir: &Path,
    ca: &CaCertificate,
    instance: &str,
    units: Vec<HostedRef>,
) -> Result<Arc<dyn KeyService>, ClientError> {
    let hosted = SharedUnits::new(
        "tke-unitd (in-process)".to_owned(),
        units.iter().map(|u| u.descriptor.clone()).collect(),
        units
            .into_iter()
            .map(|u| (u.descriptor.unit_id, u.unit))
            .collect(),
    );
    let workers = hosted.rewrap_workers();
    let client = Client::connect(vec![(Arc::new(hosted) as Arc<dyn Transport>, ca.clone())])?;
    let kms = tke_client::kms::open_local(dir, client, &InstanceId(instance.to_owned()), workers)?;
    Ok(kms)
}

/// The API error for a key-service error.
fn api_err(e: &KmsError) -> ApiError {
    let (status, code) = error_code(e);
    ApiError::new(status, code, tke_proto::ErrorChain(e).to_string())
}

fn body_of<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            400,
            "malformed_json",
            format!("The request body is not the JSON this endpoint takes: {e}."),
        )
    })
}

fn key_id(k: PathKey) -> Result<KeyId, ApiError> {
    k.ok_or_else(|| {
        ApiError::new(
            400,
            "invalid_input",
            "The key id in the path is not a UUID (8-4-4-4-12 hex digits).",
        )
    })
}

fn hex_body(body: &[u8]) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    let b: BytesJson = body_of(body)?;
    hex::decode(&b.hex)
        .map(Zeroizing::new)
        .map_err(|_| ApiError::new(400, "invalid_input", "The field hex is not hexadecimal."))
}

fn to_value<T: serde::Serialize>(v: &T) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(|e| ApiError::new(500, "internal", e.to_string()))
}

/// Runs one key-service request (blocking: units and the store). `body` is the request's
/// JSON, empty for those that take none.
///
/// # Errors
/// The API error to answer.
pub fn handle(kms: &dyn KeyService, route: KmsRoute, body: &[u8]) -> Result<Value, ApiError> {
    let e = |e: KmsError| api_err(&e);
    match route {
        KmsRoute::List => {
            let keys = kms.list().map_err(e)?;
            to_value(&KeysJson {
                keys: keys.iter().map(KeyJson::from).collect(),
            })
        }
        KmsRoute::Create => {
            let c: CreateJson = body_of(body)?;
            let name = KeyName::new(&c.name)
                .map_err(|err| ApiError::new(400, "invalid_input", err.to_string()))?;
            let keys = kms.create(&name, c.count).map_err(e)?;
            to_value(&KeysJson {
                keys: keys.iter().map(KeyJson::from).collect(),
            })
        }
        KmsRoute::Show(id) => to_value(&KeyJson::from(&kms.show(&key_id(id)?).map_err(e)?)),
        KmsRoute::Delete(id) => {
            kms.delete(&key_id(id)?).map_err(e)?;
            Ok(json!({}))
        }
        KmsRoute::Wrap(id) => {
            let id = key_id(id)?;
            let data = hex_body(body)?;
            let wrapped = kms.wrap(&id, &data).map_err(e)?;
            to_value(&BytesJson {
                hex: hex::encode(wrapped),
            })
        }
        KmsRoute::Unwrap(id) => {
            let id = key_id(id)?;
            let wrapped = hex_body(body)?;
            let data = kms.unwrap(&id, &wrapped).map_err(e)?;
            to_value(&BytesJson {
                hex: hex::encode(data.as_slice()),
            })
        }
        KmsRoute::Summary => to_value(&SummaryJson::from(&kms.summary().map_err(e)?)),
        KmsRoute::Begin => {
            let r: RotationJson = body_of(body)?;
            let rotation = r
                .parse()
                .map_err(|err| ApiError::new(400, "invalid_input", err.to_string()))?;
            kms.begin_rotation(rotation).map_err(e)?;
            Ok(json!({}))
        }
        KmsRoute::Reencrypt => {
            let r: ReencryptJson = body_of(body)?;
            to_value(&ProgressJson::from(
                kms.reencrypt(r.max_records).map_err(e)?,
            ))
        }
        KmsRoute::Finish => {
            kms.finish_rotation().map_err(e)?;
            Ok(json!({}))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_methods() {
        assert_eq!(KmsRoute::parse(&["keys"]), Some(KmsRoute::List));
        assert_eq!(KmsRoute::parse(&["keys", "create"]), Some(KmsRoute::Create));
        let id = KeyId::random();
        let text = id.to_string();
        assert_eq!(
            KmsRoute::parse(&["keys", &text, "wrap"]),
            Some(KmsRoute::Wrap(Some(id)))
        );
        assert_eq!(
            KmsRoute::parse(&["keys", "x", "wrap"]),
            Some(KmsRoute::Wrap(None))
        );
        assert_eq!(
            KmsRoute::parse(&["keystore", "rotation", "finish"]),
            Some(KmsRoute::Finish)
        );
        assert_eq!(KmsRoute::parse(&["keys", "x", "y"]), None);
        assert_eq!(KmsRoute::Show(None).method(), "GET");
        assert_eq!(KmsRoute::Delete(None).method(), "POST");
        assert!(KmsRoute::Wrap(None).has_body() && !KmsRoute::Delete(None).has_body());
    }
}
