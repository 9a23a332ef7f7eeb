//! The transport trait: how bytes reach a unit. The embedded fleet implements it
//! in-process; a network transport implements it over HTTPS.

use crate::{ClientError, Provisioning};
use tke_proto::{UnitId, UnitType};

/// A service instance's id (a UUID string).
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct InstanceId(pub String);

/// Shown with control and format characters escaped ([`crate::untrusted::sanitize`]): an
/// id comes from a server or a fleet file.
impl core::fmt::Display for InstanceId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&crate::untrusted::sanitize(&self.0))
    }
}

/// A unit as a transport lists it. Nothing here is trusted until the client has checked
/// the device certificate against the fleet CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitDescriptor {
    /// The service instance the unit belongs to.
    pub instance: InstanceId,
    /// The unit's id.
    pub unit_id: UnitId,
    /// Its type.
    pub unit_type: UnitType,
    /// The vendor-style location, `[region].[zone].[module].[domain]`, as the server or
    /// fleet file gave it with control and format characters escaped
    /// ([`crate::untrusted::sanitize`]).
    pub location: String,
    /// DER of its device certificate.
    pub device_certificate: Vec<u8>,
}

/// Carries requests to units and their answers back. Implementations only move bytes;
/// all checks happen in [`crate::Client`].
pub trait Transport: Send + Sync {
    /// A short description for messages and context headers (e.g. the fleet's path).
    fn describe(&self) -> String;

    /// Lists the units reachable through this transport.
    ///
    /// # Errors
    /// [`ClientError`] when the listing fails.
    fn list_units(&self) -> Result<Vec<UnitDescriptor>, ClientError>;

    /// Sends the DER of a `tke_proto::Request` to a unit and returns the DER of its
    /// `SignedResponse`.
    ///
    /// # Errors
    /// [`ClientError`] when the unit cannot be reached.
    fn exchange(&self, unit: &UnitId, request_der: &[u8]) -> Result<Vec<u8>, ClientError>;

    /// How units are added to this transport's service instances, if they can be: the
    /// embedded fleet adds them itself; the default, as for a `tke-unitd` server (whose
    /// units are made on the server), is `None`.
    fn provisioning(&self) -> Option<&dyn Provisioning> {
        None
    }

    /// The key-management service of one of this transport's service instances (its key
    /// storage and the operations on it), if the transport offers one. The default is
    /// `None`: the instance has no key storage reachable here.
    ///
    /// # Errors
    /// [`ClientError`] when the service exists but cannot be opened (e.g. its key storage
    /// file is unreadable).
    fn key_service(
        &self,
        instance: &InstanceId,
    ) -> Result<Option<std::sync::Arc<dyn tke_kms::KeyService>>, ClientError> {
        let _ = instance;
        Ok(None)
    }
}
