//! The key service of a `tke-unitd` server's instance, over HTTPS: [`RemoteKms`] calls
//! the server's JSON endpoints (`docs/protocol.md`), and turns their error codes back
//! into the same [`KmsError`]s the in-process service reports.

use serde::{de::DeserializeOwned, Serialize};
use tke_keystore::{KeyId, KeyName};
use tke_kms::{
    wire::{
        error_from_code, BytesJson, CreateJson, KeyJson, KeysJson, ProgressJson, ReencryptJson,
        RotationJson, SummaryJson,
    },
    KeyInfo, KeyService, KmsError, Progress, Rotation, Summary,
};
use zeroize::Zeroizing;

use super::{Body, HttpsError, HttpsTransport};
use crate::InstanceId;

/// The key service of one instance of a `tke-unitd` server.
#[derive(Debug)]
pub struct RemoteKms {
    transport: HttpsTransport,
    instance: InstanceId,
}

impl RemoteKms {
    /// The service of `instance` through `transport`.
    pub fn new(transport: HttpsTransport, instance: InstanceId) -> Self {
        Self {
            transport,
            instance,
        }
    }

    fn path(&self, rest: &str) -> String {
        format!("/v1/tke/{}/{rest}", self.instance.0)
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        rest: &str,
        body: Option<&impl Serialize>,
        idempotent: bool,
        key: Option<&KeyId>,
    ) -> Result<T, KmsError> {
        // The id goes into a URL path: only a UUID is sent.
        if tke_proto::InstanceId::from_uuid(&self.instance.0).is_err() {
            return Err(KmsError::Transport(format!(
                "service instance {} has no key service: its id is not a UUID",
                self.instance
            )));
        }
        let json = body
            .map(|b| serde_json::to_vec(b).map(Zeroizing::new))
            .transpose()
            .map_err(|e| KmsError::Transport(e.to_string()))?;
        let answer = self
            .transport
            .request(
                method,
                &self.path(rest),
                json.as_deref().map(|j| Body::Json(j)),
                idempotent,
            )
            .map_err(|e| match e {
                HttpsError::Status { code, message, .. } => {
                    error_from_code(&code, &message, key, &self.instance.to_string())
                }
                e => KmsError::Transport(format!(
                    "target {} ({}): {}",
                    self.transport.name,
                    self.transport.url,
                    tke_proto::ErrorChain(&e)
                )),
            })?;
        let body = Zeroizing::new(answer.body);
        serde_json::from_slice(&body).map_err(|_| {
            KmsError::Transport(format!(
                "target {}: the key service's answer does not have the documented shape",
                self.transport.name
            ))
        })
    }
}

fn keys(k: &KeysJson) -> Result<Vec<KeyInfo>, KmsError> {
    k.keys.iter().map(KeyJson::parse).collect()
}

fn hex_bytes(b: &BytesJson) -> Result<Zeroizing<Vec<u8>>, KmsError> {
    hex::decode(&b.hex)
        .map(Zeroizing::new)
        .map_err(|_| KmsError::Transport("the key service answered bytes that are not hex".into()))
}

/// No request body.
const NONE: Option<&()> = None;

impl KeyService for RemoteKms {
    fn create(&self, name: &KeyName, count: u32) -> Result<Vec<KeyInfo>, KmsError> {
        let body = CreateJson {
            name: name.to_string(),
            count,
        };
        keys(&self.call("POST", "keys/create", Some(&body), false, None)?)
    }

    fn list(&self) -> Result<Vec<KeyInfo>, KmsError> {
        keys(&self.call("GET", "keys", NONE, true, None)?)
    }

    fn show(&self, id: &KeyId) -> Result<KeyInfo, KmsError> {
        let k: KeyJson = self.call("GET", &format!("keys/{id}"), NONE, true, Some(id))?;
        k.parse()
    }

    fn delete(&self, id: &KeyId) -> Result<(), KmsError> {
        let _: serde_json::Value =
            self.call("POST", &format!("keys/{id}/delete"), NONE, false, Some(id))?;
        Ok(())
    }

    fn wrap(&self, id: &KeyId, data_key: &[u8]) -> Result<Vec<u8>, KmsError> {
        let body = BytesJson {
            hex: hex::encode(data_key),
        };
        let out: BytesJson = self.call(
            "POST",
            &format!("keys/{id}/wrap"),
            Some(&body),
            true,
            Some(id),
        )?;
        Ok(hex_bytes(&out)?.to_vec())
    }

    fn unwrap(&self, id: &KeyId, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        let body = BytesJson {
            hex: hex::encode(wrapped),
        };
        let out: BytesJson = self.call(
            "POST",
            &format!("keys/{id}/unwrap"),
            Some(&body),
            true,
            Some(id),
        )?;
        hex_bytes(&out)
    }

    fn summary(&self) -> Result<Summary, KmsError> {
        let s: SummaryJson = self.call("GET", "keystore", NONE, true, None)?;
        s.parse()
    }

    fn begin_rotation(&self, rotation: Rotation) -> Result<(), KmsError> {
        let _: serde_json::Value = self.call(
            "POST",
            "keystore/rotation/begin",
            Some(&RotationJson::from(rotation)),
            false,
            None,
        )?;
        Ok(())
    }

    fn reencrypt(&self, max_records: u64) -> Result<Progress, KmsError> {
        let p: ProgressJson = self.call(
            "POST",
            "keystore/rotation/reencrypt",
            Some(&ReencryptJson { max_records }),
            false,
            None,
        )?;
        Ok(Progress {
            done: p.done,
            total: p.total,
        })
    }

    fn finish_rotation(&self) -> Result<(), KmsError> {
        let _: serde_json::Value =
            self.call("POST", "keystore/rotation/finish", NONE, false, None)?;
        Ok(())
    }
}
