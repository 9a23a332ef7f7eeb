//! The PKCS#11 backend: a unit's secrets are objects of its own token (SoftHSM2 in CI, an
//! HSM in production), and every operation on them runs inside the token. It computes the
//! same values as [`crate::SoftBackend`] — same verification patterns, same envelopes —
//! so that one fleet may mix backends.
//!
//! # The unit's token
//!
//! Each unit has a token of its own, found by its **label** (never by slot number, which
//! changes when tokens are added). Loading the module (once per process), finding the
//! token, reading the PIN file and logging in are [`tke_pkcs11`]'s, shared with the
//! PKCS#11 administrator keys. [`Pkcs11Config`] — module path, token label, PIN file —
//! is recorded in the unit directory ([`PKCS11_FILE`], not secret), so that
//! [`crate::Unit::open`] reopens the unit. The PIN is read from the PIN file at each open,
//! never taken from the command line, and zeroized after login. Each backend keeps one
//! read-write session, logged in once, for its lifetime.
//!
//! # Objects
//!
//! Every object is a token object (`CKA_TOKEN`, `CKA_PRIVATE`) named by its `CKA_LABEL`
//! (its kind) and `CKA_ID` (which one):
//!
//! | Object | Label | `CKA_ID` | Attributes |
//! | --- | --- | --- | --- |
//! | device key pair (P-256) | `tke-device` | the unit id (16 bytes) | private key: `CKA_SIGN`, `CKA_SENSITIVE`, not `CKA_EXTRACTABLE` |
//! | importer key pairs (P-256, single use) | `tke-importer` | the key id: SHA-256 of the point (32 bytes) | private key: `CKA_DERIVE` only, `CKA_SENSITIVE`, not `CKA_EXTRACTABLE` |
//! | master keys (`CKK_AES`, 32 bytes) | `tke-master-key` | the [`KeyHandle`] (16 bytes) | `CKA_SIGN` (for the CMAC of the VP), `CKA_WRAP` and `CKA_UNWRAP` (root keys), `CKA_SENSITIVE`, `CKA_COPYABLE` false; `CKA_EXTRACTABLE` false on operational and failover units, true on recovery units (see below) |
//!
//! The ephemeral key pair of an export, the ECDH secret *Z*, the KEK, and the root and
//! data keys of the service operations are session objects (`CKA_TOKEN` false), destroyed
//! right after use.
//!
//! # Mechanisms
//!
//! | Step | Mechanism |
//! | --- | --- |
//! | random master key | `C_GenerateKey` `CKM_AES_KEY_GEN` |
//! | VP | `C_Sign` `CKM_AES_CMAC` over each block of [`tke_proto::vp::BLOCKS`], tags concatenated |
//! | device signature | `C_Sign` `CKM_ECDSA` over SHA-256 of the message; `r ‖ s` converted to DER |
//! | key pairs | `C_GenerateKeyPair` `CKM_EC_KEY_PAIR_GEN` (prime256v1) |
//! | *Z* | `C_DeriveKey` `CKM_ECDH1_DERIVE`, `CKD_NULL`, the peer's 65-byte point → `CKK_AES` 32 bytes |
//! | KEK | `C_DeriveKey` `CKM_AES_ECB_ENCRYPT_DATA` from *Z* with the 32-byte [`kdf_context`] → `CKK_AES` 32 bytes |
//! | export | `C_WrapKey` with RFC 5649 (see [`WrapMechanism`]) under the KEK |
//! | import | `C_UnwrapKey` with RFC 5649 into a new master key object, then the VP check |
//! | root keys (service) | `C_GenerateKey` `CKM_AES_KEY_GEN` into a session object, `C_WrapKey` / `C_UnwrapKey` RFC 5649 under a master key |
//! | data keys (service) | a session generic secret, `C_WrapKey` / `C_UnwrapKey` RFC 5649 under a root key |
//!
//! **Which id computes RFC 5649.** PKCS#11 3.x names RFC 5649 `CKM_AES_KEY_WRAP_KWP`
//! (0x210B); SoftHSM2 and others compute it under `CKM_AES_KEY_WRAP_PAD` (0x210A), which
//! other tokens take for RFC 3394 over PKCS#7 padding. The backend tries KWP, then PAD, and
//! uses the first one that passes a **self-test** against the software reference: the token
//! seals a fresh session key to an importer key made in software, which
//! [`tke_proto::transport::soft_open`] must open to a value of the VP the token computed;
//! and the token opens an envelope that [`tke_proto::transport::soft_seal`] made, to a key
//! of the software's VP. Every mechanism of the transport is thus checked against the
//! software reference once per token and process, before any master key is touched.
//!
//! **Recovery master keys.** They must be able to leave the token, wrapped, so they are
//! `CKA_EXTRACTABLE`. Where the token lets the user create `CKA_TRUSTED` keys, they are also
//! `CKA_WRAP_WITH_TRUSTED`, and the KEK is derived `CKA_TRUSTED`: the key can then only be
//! wrapped by a KEK derived for a certified importer. PKCS#11 reserves `CKA_TRUSTED = TRUE`
//! to the security officer, and SoftHSM2 enforces it (`CKR_ATTRIBUTE_READ_ONLY` for the
//! user); an SO session cannot use the user's private objects, so on such tokens the
//! recovery master key is created without `CKA_WRAP_WITH_TRUSTED`, and what keeps it from
//! being wrapped to anything else is that only the unit logs in to its token and the unit
//! wraps only to importers certified by a fleet member ([`Pkcs11Backend::trusted_wrap`]
//! says which case applies).
//!
//! # Crash safety
//!
//! Token objects are persistent as soon as the call that creates them returns, so the
//! backend follows the unit's rule as it is: objects are created before the state refers to
//! them and destroyed after. When the backend opens, it lists the token's master key and
//! importer objects once, and keeps that list up to date with its own changes (only the
//! unit, which holds its directory's lock, uses its token), so commands search nothing.
//! [`Backend::retain`] destroys the objects of the list the state does not name, including
//! any half-made one (an importer whose `CKA_ID` was never set).

use core::fmt;
use std::{
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
};

use serde::{Deserialize, Serialize};
use tke_fs::atomic;
use tke_pkcs11::{
    cryptoki::{
        error::{Error as CkError, RvError},
        mechanism::{
            elliptic_curve::{EcKdf, Ecdh1DeriveParams},
            misc::KeyDerivationStringData,
            Mechanism, MechanismType,
        },
        object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle},
        session::Session,
    },
    ec::{parse_ec_point, parse_signature, uncompressed_point, P256_PARAMS},
    mechanism, Module, Pin, Token, TokenQuery,
};
use tke_proto::{
    p256::{ecdsa::DerSignature, PublicKey, SecretKey},
    parts::{self, MasterKeyPart, SealedPart},
    service::WRAPPED_ROOT_LEN,
    transport::{self, kdf_context, point_bytes, ImporterKey, MkEnvelope},
    vp, DeviceContext, Digest32, MasterKey, ProtoError, Ski, TransportError, UnitId, UnitType, Vp,
};
use zeroize::{Zeroize, Zeroizing};

use crate::backend::{Backend, BackendError, KeyHandle, LiveSecrets};

pub use tke_pkcs11::mechanism::WrapMechanism;

pub use crate::state::PKCS11_FILE;

const FORMAT: &str = "tke-unit-pkcs11/1";

const LABEL_DEVICE: &str = "tke-device";
const LABEL_IMPORTER: &str = "tke-importer";
const LABEL_MASTER_KEY: &str = "tke-master-key";
const LABEL_SESSION: &str = "tke-session";

/// Names a token for messages: `token "unit-1" of PKCS#11 module /usr/lib/…/libsofthsm2.so`.
/// Cheap to clone (errors carry one).
#[derive(Clone, PartialEq, Eq)]
pub struct TokenRef(std::sync::Arc<(PathBuf, String)>);

impl TokenRef {
    /// Names the token labelled `label` of `module`.
    pub fn new(module: impl Into<PathBuf>, label: impl Into<String>) -> Self {
        Self(std::sync::Arc::new((module.into(), label.into())))
    }

    /// The module's path, as configured.
    pub fn module(&self) -> &Path {
        &self.0 .0
    }

    /// The token's label.
    pub fn label(&self) -> &str {
        &self.0 .1
    }
}

impl fmt::Debug for TokenRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRef")
            .field("module", &self.module())
            .field("label", &self.label())
            .finish()
    }
}

impl fmt::Display for TokenRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "token {:?} of PKCS#11 module {}",
            self.label(),
            self.module().display()
        )
    }
}

/// Where a unit's token is: the PKCS#11 module, the token's label and the file holding its
/// user PIN. Not secret; recorded in the unit directory ([`PKCS11_FILE`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pkcs11Config {
    /// The PKCS#11 module (shared library), e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// The label of the unit's token (1 to 32 bytes).
    pub token_label: String,
    /// The file holding the token's user PIN: one line, mode 0600.
    pub pin_file: PathBuf,
}

impl Pkcs11Config {
    /// A configuration; paths are made absolute (against the current directory) when the
    /// unit records them.
    pub fn new(
        module: impl Into<PathBuf>,
        token_label: impl Into<String>,
        pin_file: impl Into<PathBuf>,
    ) -> Self {
        Self {
            module: module.into(),
            token_label: token_label.into(),
            pin_file: pin_file.into(),
        }
    }

    /// The token, for messages.
    pub fn token(&self) -> TokenRef {
        TokenRef::new(self.module.clone(), self.token_label.clone())
    }

    /// Reads the configuration recorded in a unit directory.
    ///
    /// # Errors
    /// [`BackendError::Io`], [`BackendError::Json`] or [`BackendError::Corrupt`], naming
    /// the file.
    pub fn read(dir: &Path) -> Result<Self, BackendError> {
        let path = dir.join(PKCS11_FILE);
        let bytes = std::fs::read(&path).map_err(|source| BackendError::Io {
            action: "read",
            path: path.clone(),
            source,
        })?;
        let file: ConfigFile =
            serde_json::from_slice(&bytes).map_err(|source| BackendError::Json {
                path: path.clone(),
                source,
            })?;
        if file.format != FORMAT {
            return Err(BackendError::Corrupt {
                path,
                what: "unknown format (expected tke-unit-pkcs11/1)",
            });
        }
        let config = Self {
            module: file.module,
            token_label: file.token_label,
            pin_file: file.pin_file,
        };
        config
            .check()
            .map_err(|what| BackendError::Corrupt { path, what })?;
        Ok(config)
    }

    fn check(&self) -> Result<(), &'static str> {
        if self.token_label.is_empty() || self.token_label.len() > 32 {
            return Err("the token label must be 1 to 32 bytes");
        }
        if self.token_label.trim_end() != self.token_label {
            return Err("the token label must not end with white space");
        }
        if self.module.as_os_str().is_empty() || self.pin_file.as_os_str().is_empty() {
            return Err("the module path and the PIN file path must not be empty");
        }
        Ok(())
    }

    fn write(&self, dir: &Path) -> Result<(), BackendError> {
        let path = dir.join(PKCS11_FILE);
        let file = ConfigFile {
            format: FORMAT.to_owned(),
            module: self.module.clone(),
            token_label: self.token_label.clone(),
            pin_file: self.pin_file.clone(),
        };
        let mut bytes = serde_json::to_vec_pretty(&file).map_err(|source| BackendError::Json {
            path: path.clone(),
            source,
        })?;
        bytes.push(b'\n');
        atomic::write_private(&path, &bytes).map_err(|source| BackendError::Io {
            action: "write",
            path,
            source,
        })
    }

    /// The same configuration with absolute paths.
    fn absolute(&self) -> Result<Self, BackendError> {
        let abs = |p: &Path| {
            std::path::absolute(p).map_err(|source| BackendError::Io {
                action: "resolve",
                path: p.to_owned(),
                source,
            })
        };
        Ok(Self {
            module: abs(&self.module)?,
            token_label: self.token_label.clone(),
            pin_file: abs(&self.pin_file)?,
        })
    }
}

/// `pkcs11.json`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    format: String,
    module: PathBuf,
    token_label: String,
    pin_file: PathBuf,
}

/// What a token was found to compute (probed once per token and process).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Capabilities {
    wrap: WrapMechanism,
    /// The user may create `CKA_TRUSTED` keys.
    trusted: bool,
}

/// Which wrapping a KEK is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum KekUse {
    Wrap { trusted: bool },
    Unwrap,
}

/// A session object destroyed when dropped.
struct Temp<'a> {
    session: &'a Session,
    handle: ObjectHandle,
}

impl Temp<'_> {
    /// Keeps the object: it is no longer destroyed on drop.
    fn keep(self) -> ObjectHandle {
        let handle = self.handle;
        core::mem::forget(self);
        handle
    }
}

impl Drop for Temp<'_> {
    fn drop(&mut self) {
        // A session object that cannot be destroyed now goes with the session.
        let _ = self.session.destroy_object(self.handle);
    }
}

/// A session on the unit's token and what the backend knows of the token.
struct Tok {
    /// The token as configured (module and label), for messages.
    token: TokenRef,
    /// The token as found (with its serial number).
    found: Token,
    session: Session,
    caps: Capabilities,
}

/// What each token was found to compute, by module (canonical path) and token serial:
/// probed once per token and process.
static PROBED: Mutex<Vec<(PathBuf, String, Capabilities)>> = Mutex::new(Vec::new());

/// The capabilities probed earlier for `token`, if any.
fn probed(token: &Token) -> Option<Capabilities> {
    // The list holds no invariant a panic could break: a poisoned lock is still usable.
    let all = PROBED.lock().unwrap_or_else(PoisonError::into_inner);
    all.iter()
        .find(|(m, s, _)| m == token.module().canonical_path() && *s == token.name().serial)
        .map(|(_, _, c)| *c)
}

/// Remembers the capabilities of `token`.
fn remember(token: &Token, caps: Capabilities) {
    let mut all = PROBED.lock().unwrap_or_else(PoisonError::into_inner);
    let module = token.module().canonical_path();
    all.retain(|(m, s, _)| !(m == module && *s == token.name().serial));
    all.push((module.to_path_buf(), token.name().serial.clone(), caps));
}

fn ec_private_template(label: &str, token: bool) -> Vec<Attribute> {
    vec![
        Attribute::Token(token),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        // SoftHSM2 lets EC private keys decrypt and unwrap unless told otherwise.
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::SignRecover(false),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

fn ec_public_template(label: &str, token: bool) -> Vec<Attribute> {
    vec![
        Attribute::Token(token),
        Attribute::Private(token),
        Attribute::EcParams(P256_PARAMS.to_vec()),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

impl Tok {
    fn err(&self, action: &'static str) -> impl FnOnce(CkError) -> BackendError + '_ {
        move |e| BackendError::Pkcs11 {
            token: self.token.clone(),
            source: Box::new(self.found.error(action)(e)),
        }
    }

    fn content(&self, what: &'static str) -> BackendError {
        BackendError::TokenContent {
            token: self.token.clone(),
            what,
        }
    }

    fn temp(&self, handle: ObjectHandle) -> Temp<'_> {
        Temp {
            session: &self.session,
            handle,
        }
    }

    fn find(
        &self,
        class: ObjectClass,
        label: &str,
        id: Option<&[u8]>,
    ) -> Result<Vec<ObjectHandle>, BackendError> {
        let mut template = vec![
            Attribute::Class(class),
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        if let Some(id) = id {
            template.push(Attribute::Id(id.to_vec()));
        }
        self.session
            .find_objects(&template)
            .map_err(self.err("searching the token's objects"))
    }

    /// The one object of this kind and id, if any.
    fn find_one(
        &self,
        class: ObjectClass,
        label: &str,
        id: &[u8],
    ) -> Result<Option<ObjectHandle>, BackendError> {
        match self.find(class, label, Some(id))?.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            _ => Err(self.content("holds two objects of the same kind with the same CKA_ID")),
        }
    }

    fn id_of(&self, object: ObjectHandle) -> Result<Option<Vec<u8>>, BackendError> {
        let attrs = self
            .session
            .get_attributes(object, &[AttributeType::Id])
            .map_err(self.err("reading an object's CKA_ID"))?;
        Ok(attrs.into_iter().find_map(|a| match a {
            Attribute::Id(id) => Some(id),
            _ => None,
        }))
    }

    /// Master keys made before the service operations cannot wrap: sets `CKA_WRAP` and
    /// `CKA_UNWRAP` on one. Best effort: a token that refuses leaves the key as it was, and
    /// the service operations on it then fail with the token's error.
    fn allow_root_key_wrapping(&self, key: ObjectHandle) {
        let can = self
            .session
            .get_attributes(key, &[AttributeType::Wrap, AttributeType::Unwrap])
            .map(|a| a.contains(&Attribute::Wrap(true)) && a.contains(&Attribute::Unwrap(true)));
        if matches!(can, Ok(false)) {
            let _ = self
                .session
                .update_attributes(key, &[Attribute::Wrap(true), Attribute::Unwrap(true)]);
        }
    }

    fn wraps_with_trusted(&self, object: ObjectHandle) -> Result<bool, BackendError> {
        let attrs = self
            .session
            .get_attributes(object, &[AttributeType::WrapWithTrusted])
            .map_err(self.err("reading a key's CKA_WRAP_WITH_TRUSTED"))?;
        Ok(attrs.contains(&Attribute::WrapWithTrusted(true)))
    }

    fn point(&self, public: ObjectHandle) -> Result<[u8; 65], BackendError> {
        let attrs = self
            .session
            .get_attributes(public, &[AttributeType::EcPoint])
            .map_err(self.err("reading a public key's CKA_EC_POINT"))?;
        attrs
            .into_iter()
            .find_map(|a| match a {
                Attribute::EcPoint(p) => parse_ec_point(&p).ok().map(|k| uncompressed_point(&k)),
                _ => None,
            })
            .ok_or_else(|| self.content("returned a public key that is not a P-256 point"))
    }

    fn key_pair(
        &self,
        label: &str,
        token: bool,
        private_use: Attribute,
    ) -> Result<(ObjectHandle, ObjectHandle), BackendError> {
        let mut private = ec_private_template(label, token);
        private.push(private_use);
        self.session
            .generate_key_pair(
                &Mechanism::EccKeyPairGen,
                &ec_public_template(label, token),
                &private,
            )
            .map_err(self.err("generating a P-256 key pair"))
    }

    /// The VP of an AES key object: CMAC of each block, inside the token.
    fn vp_of(&self, key: ObjectHandle) -> Result<Vp, BackendError> {
        let mut out = [0u8; 32];
        for (block, chunk) in vp::BLOCKS.iter().zip(out.chunks_exact_mut(16)) {
            let tag = self
                .session
                .sign(&Mechanism::AesCMac, key, block)
                .map_err(self.err("computing a verification pattern (CKM_AES_CMAC)"))?;
            if tag.len() != 16 {
                return Err(BackendError::MechanismMismatch {
                    token: self.token.clone(),
                    problem: "CKM_AES_CMAC returned a tag that is not 16 bytes",
                });
            }
            chunk.copy_from_slice(&tag);
        }
        Ok(Vp(out))
    }

    /// `Z = ECDH(private, peer)` then `KEK = AES-256-ECB_Z(ctx)`, both session objects;
    /// *Z* is destroyed before this returns.
    fn derive_kek(
        &self,
        private: ObjectHandle,
        peer: &[u8; 65],
        ctx: &[u8; 32],
        kek_use: KekUse,
    ) -> Result<Temp<'_>, BackendError> {
        let ecdh = Mechanism::Ecdh1Derive(Ecdh1DeriveParams::new(EcKdf::null(), peer));
        let z = self
            .session
            .derive_key(
                &ecdh,
                private,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen(32.into()),
                    Attribute::Token(false),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Derive(true),
                    Attribute::Label(LABEL_SESSION.as_bytes().to_vec()),
                ],
            )
            .map_err(self.err("deriving the ECDH secret (CKM_ECDH1_DERIVE)"))?;
        let z = self.temp(z);
        let params = KeyDerivationStringData::new(ctx);
        let mut template = vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Token(false),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Label(LABEL_SESSION.as_bytes().to_vec()),
        ];
        match kek_use {
            KekUse::Wrap { trusted } => {
                template.push(Attribute::Wrap(true));
                if trusted {
                    template.push(Attribute::Trusted(true));
                }
            }
            KekUse::Unwrap => template.push(Attribute::Unwrap(true)),
        }
        let kek = self
            .session
            .derive_key(
                &mechanism::aes_ecb_encrypt_data(&params),
                z.handle,
                &template,
            )
            .map_err(self.err("deriving the KEK (CKM_AES_ECB_ENCRYPT_DATA)"))?;
        drop(z);
        Ok(self.temp(kek))
    }

    /// The export side: wraps the AES key `key` to `importer` from `source`.
    fn seal(
        &self,
        key: ObjectHandle,
        source: UnitId,
        importer: &ImporterKey,
    ) -> Result<MkEnvelope, BackendError> {
        let importer_point = point_bytes(&importer.key().map_err(BackendError::Crypto)?);
        let trusted = self.wraps_with_trusted(key)?;
        let (eph_public, eph_private) =
            self.key_pair(LABEL_SESSION, false, Attribute::Derive(true))?;
        let eph_public = self.temp(eph_public);
        let eph_private = self.temp(eph_private);
        let eph_point = self.point(eph_public.handle)?;
        drop(eph_public);
        let ctx = kdf_context(&source, &importer.unit_id, &eph_point, &importer_point);
        let kek = self.derive_kek(
            eph_private.handle,
            &importer_point,
            &ctx,
            KekUse::Wrap { trusted },
        )?;
        drop(eph_private);
        let wrapped = self
            .session
            .wrap_key(&self.caps.wrap.mechanism(), kek.handle, key)
            .map_err(self.err("wrapping the master key"))?;
        drop(kek);
        if wrapped.len() != 40 {
            return Err(BackendError::MechanismMismatch {
                token: self.token.clone(),
                problem: "the key wrap mechanism returned a wrapped key that is not 40 bytes: it is not RFC 5649",
            });
        }
        let vp = self.vp_of(key)?;
        let der = |e: der::Error| BackendError::Crypto(ProtoError::from(e));
        Ok(MkEnvelope {
            source_unit_id: source,
            target_unit_id: importer.unit_id,
            importer_key_id: importer.key_id,
            ephemeral_public_key: der::asn1::OctetString::new(eph_point.to_vec()).map_err(der)?,
            wrapped_key: der::asn1::OctetString::new(wrapped).map_err(der)?,
            vp,
        })
    }

    /// The import side: recomputes the KEK with the importer key `private` (whose point is
    /// `importer_point`), unwraps `envelope` into an object made from `template`, checks
    /// its length and VP. A refused envelope is [`BackendError::Rejected`], and leaves no
    /// object behind.
    fn open(
        &self,
        private: ObjectHandle,
        importer_point: &[u8; 65],
        envelope: &MkEnvelope,
        template: &[Attribute],
    ) -> Result<(ObjectHandle, Vp), BackendError> {
        let rejected = |kind| BackendError::Rejected(ProtoError::Transport(kind));
        if !crate::machine::envelope_shape_ok(envelope) {
            return Err(rejected(TransportError::EnvelopeShape));
        }
        if Digest32::sha256(importer_point) != envelope.importer_key_id {
            return Err(rejected(TransportError::OtherImporter));
        }
        let eph = transport::parse_point(envelope.ephemeral_public_key.as_bytes(), "ephemeral key")
            .map_err(BackendError::Rejected)?;
        let eph_point = point_bytes(&eph);
        let ctx = kdf_context(
            &envelope.source_unit_id,
            &envelope.target_unit_id,
            &eph_point,
            importer_point,
        );
        let guard = self.unwrap(
            private,
            &eph_point,
            &ctx,
            envelope.wrapped_key.as_bytes(),
            template,
        )?;
        let key = guard.handle;
        // A 40-byte RFC 5649 envelope holds 25 to 32 bytes. Tokens that record the length
        // of an unwrapped key show it; SoftHSM2 records 0, but then no AES mechanism
        // accepts a 25- to 31-byte key, so the CMAC of the VP fails.
        let len = self
            .session
            .get_attributes(key, &[AttributeType::ValueLen])
            .map_err(self.err("reading the unwrapped key's length"))?
            .into_iter()
            .find_map(|a| match a {
                Attribute::ValueLen(l) => Some(u64::from(l)),
                _ => None,
            })
            .filter(|l| *l != 0);
        if len.is_some_and(|l| l != 32) {
            return Err(rejected(TransportError::UnwrappedKeyLength));
        }
        let vp = match self.vp_of(key) {
            Ok(vp) => vp,
            Err(BackendError::Pkcs11 { ref source, .. })
                if len.is_none() && matches!(**source, tke_pkcs11::Error::Token { .. }) =>
            {
                return Err(rejected(TransportError::UnwrappedKeyLength))
            }
            Err(e) => return Err(e),
        };
        if vp != envelope.vp {
            return Err(rejected(TransportError::VpMismatch));
        }
        Ok((guard.keep(), vp))
    }

    /// Derives the KEK of `ctx` from the importer key `private` and the peer's point, and
    /// unwraps `wrapped` (RFC 5649) under it into an object made from `template`, which
    /// the returned guard destroys unless kept. A wrapped value that fails its integrity
    /// check is [`BackendError::Rejected`].
    fn unwrap(
        &self,
        private: ObjectHandle,
        peer: &[u8; 65],
        ctx: &[u8; 32],
        wrapped: &[u8],
        template: &[Attribute],
    ) -> Result<Temp<'_>, BackendError> {
        let kek = self.derive_kek(private, peer, ctx, KekUse::Unwrap)?;
        let unwrapped =
            self.session
                .unwrap_key(&self.caps.wrap.mechanism(), kek.handle, wrapped, template);
        drop(kek);
        match unwrapped {
            Ok(key) => Ok(self.temp(key)),
            // The KEK was derived just before, so these are the input's fault.
            Err(e) if refuses_input(&e) => Err(BackendError::Rejected(ProtoError::Transport(
                TransportError::WrappedKeyIntegrity,
            ))),
            Err(e) => Err(self.err("unwrapping a master key or a part")(e)),
        }
    }

    /// Unwraps root key number `index` of a request under the master key object `mk`
    /// (named `handle` in errors) into a session object made from `template`
    /// ([`root_key_template`]), destroyed when the guard drops.
    fn unwrap_root(
        &self,
        mk: ObjectHandle,
        handle: &KeyHandle,
        index: usize,
        wrapped: &[u8],
        template: &[Attribute],
    ) -> Result<Temp<'_>, BackendError> {
        let refused = || BackendError::WrappedKey {
            handle: *handle,
            index,
        };
        if wrapped.len() != WRAPPED_ROOT_LEN {
            return Err(refused());
        }
        match self
            .session
            .unwrap_key(&self.caps.wrap.mechanism(), mk, wrapped, template)
        {
            Ok(key) => Ok(self.temp(key)),
            Err(e) if refuses_input(&e) => Err(refused()),
            Err(e) => Err(self.err("unwrapping a root key under a master key")(e)),
        }
    }

    /// Wraps `key` under `kek` (RFC 5649).
    fn wrap_under(
        &self,
        kek: ObjectHandle,
        key: ObjectHandle,
        action: &'static str,
    ) -> Result<Vec<u8>, BackendError> {
        self.session
            .wrap_key(&self.caps.wrap.mechanism(), kek, key)
            .map_err(self.err(action))
    }

    /// Opens part `index` (1 to 3) sealed for `target` with the importer key `private`:
    /// unwraps it into a session object that is neither sensitive nor token, reads its
    /// value into a zeroizing buffer, destroys the object, and checks the part's VP. No
    /// PKCS#11 mechanism combines two key objects by XOR (`CKM_XOR_BASE_AND_DATA` takes
    /// the second operand as data, and SoftHSM2 has not even that), so the unit combines
    /// the parts in its own memory (see `docs/pkcs11.md`).
    fn open_part(
        &self,
        private: ObjectHandle,
        importer_point: &[u8; 65],
        target: UnitId,
        index: usize,
        sealed: &SealedPart,
    ) -> Result<MasterKeyPart, BackendError> {
        let rejected = |kind| BackendError::Rejected(ProtoError::Transport(kind));
        if !sealed.shape_ok() {
            return Err(rejected(TransportError::EnvelopeShape));
        }
        let k = u8::try_from(index)
            .map_err(|_| BackendError::Rejected(ProtoError::PartIndex { index }))?;
        let eph = transport::parse_point(sealed.ephemeral_public_key.as_bytes(), "ephemeral key")
            .map_err(BackendError::Rejected)?;
        let eph_point = point_bytes(&eph);
        let ctx = parts::part_kdf_context(&target, k, &eph_point, importer_point);
        let object = self.unwrap(
            private,
            &eph_point,
            &ctx,
            sealed.wrapped_part.as_bytes(),
            &readable_secret_template(),
        )?;
        let mut attrs = self
            .session
            .get_attributes(object.handle, &[AttributeType::Value])
            .map_err(self.err("reading an unwrapped master key part"))?;
        drop(object);
        let value = attrs.iter_mut().find_map(|a| match a {
            Attribute::Value(v) => Some(Zeroizing::new(core::mem::take(v))),
            _ => None,
        });
        for a in &mut attrs {
            if let Attribute::Value(v) = a {
                v.zeroize();
            }
        }
        let value = value.ok_or_else(|| self.content("returned no value for an unwrapped part"))?;
        let part = MasterKeyPart::from_slice(&value)
            .map_err(|_| rejected(TransportError::UnwrappedKeyLength))?;
        if part.vp() != sealed.vp {
            return Err(rejected(TransportError::VpMismatch));
        }
        Ok(part)
    }

    /// Checks every transport step against the software reference (see the module docs).
    fn self_test(&self) -> Result<(), BackendError> {
        let mismatch = |problem| BackendError::MechanismMismatch {
            token: self.token.clone(),
            problem,
        };
        let source = UnitId::random();
        let target = UnitId::random();

        // Token → software.
        let key = self
            .session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen(32.into()),
                    Attribute::Token(false),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(true),
                    Attribute::Sign(true),
                    Attribute::Label(LABEL_SESSION.as_bytes().to_vec()),
                ],
            )
            .map_err(self.err("generating a test key (CKM_AES_KEY_GEN)"))?;
        let key = self.temp(key);
        let soft_importer = SecretKey::random(&mut rand_core::OsRng);
        let importer =
            ImporterKey::new(target, &soft_importer.public_key()).map_err(BackendError::Crypto)?;
        let envelope = self.seal(key.handle, source, &importer)?;
        drop(key);
        transport::soft_open(&envelope, &soft_importer).map_err(|_| {
            mismatch("a key the token wrapped does not unwrap, or has another VP, with the software reference of the transport")
        })?;

        // Software → token.
        let (public, private) = self.key_pair(LABEL_SESSION, false, Attribute::Derive(true))?;
        let (public, private) = (self.temp(public), self.temp(private));
        let point = self.point(public.handle)?;
        let importer_key =
            transport::parse_point(&point, "token importer key").map_err(BackendError::Crypto)?;
        let importer = ImporterKey::new(target, &importer_key).map_err(BackendError::Crypto)?;
        let value = MasterKey::random();
        let envelope =
            transport::soft_seal(&value, source, &importer).map_err(BackendError::Crypto)?;
        let (opened, vp) = self
            .open(
                private.handle,
                &point,
                &envelope,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::Token(false),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Sign(true),
                    Attribute::Label(LABEL_SESSION.as_bytes().to_vec()),
                ],
            )
            .map_err(|e| match e {
                BackendError::Rejected(_) => mismatch(
                    "an envelope sealed by the software reference of the transport does not open in the token",
                ),
                e => e,
            })?;
        drop(self.temp(opened));
        if vp != value.vp() {
            return Err(mismatch(
                "the token computes another verification pattern than the software reference",
            ));
        }
        Ok(())
    }

    /// Whether the user may create `CKA_TRUSTED` keys on this token.
    fn user_may_trust(&self) -> bool {
        self.session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen(32.into()),
                    Attribute::Token(false),
                    Attribute::Wrap(true),
                    Attribute::Trusted(true),
                    Attribute::Label(LABEL_SESSION.as_bytes().to_vec()),
                ],
            )
            .map(|k| drop(self.temp(k)))
            .is_ok()
    }
}

/// The mechanisms every token must offer (the key wrap is chosen separately).
/// Whether a failed `C_UnwrapKey` under a key that is known good refuses its input (the
/// wrapped bytes). SoftHSM2 answers `CKR_GENERAL_ERROR` to a wrapped key that fails its
/// integrity check; PKCS#11 names the others.
fn refuses_input(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::WrappedKeyInvalid
                | RvError::WrappedKeyLenRange
                | RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::DataInvalid
                | RvError::DataLenRange
                | RvError::GeneralError
                | RvError::FunctionFailed,
            _,
        )
    )
}

/// A secret-key session object of `key_type`, private to the user, extractable (so that
/// it can be wrapped), sensitive or not; destroyed by the unit right after use.
fn session_secret_template(key_type: KeyType, sensitive: bool) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(key_type),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(sensitive),
        Attribute::Extractable(true),
        Attribute::Label(LABEL_SESSION.as_bytes().to_vec()),
    ]
}

/// A root key in the token: an AES session object, sensitive, that wraps and unwraps data
/// keys and may itself be wrapped (under a master key) but never read.
fn root_key_template() -> Vec<Attribute> {
    let mut t = session_secret_template(KeyType::AES, true);
    t.extend([
        Attribute::Wrap(true),
        Attribute::Unwrap(true),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Sign(false),
    ]);
    t
}

/// A value the unit reads for the time of one call (an unwrapped master key part, a data
/// key): a generic secret session object, not sensitive.
fn readable_secret_template() -> Vec<Attribute> {
    session_secret_template(KeyType::GENERIC_SECRET, false)
}

const REQUIRED: [(&str, MechanismType); 6] = [
    ("CKM_EC_KEY_PAIR_GEN", MechanismType::ECC_KEY_PAIR_GEN),
    ("CKM_ECDSA", MechanismType::ECDSA),
    ("CKM_ECDH1_DERIVE", MechanismType::ECDH1_DERIVE),
    ("CKM_AES_KEY_GEN", MechanismType::AES_KEY_GEN),
    ("CKM_AES_CMAC", MechanismType::AES_CMAC),
    (
        "CKM_AES_ECB_ENCRYPT_DATA",
        mechanism::standard(mechanism::CKM_AES_ECB_ENCRYPT_DATA),
    ),
];

/// A unit's secrets as objects of its PKCS#11 token (see the module docs).
///
/// `Debug` shows the module, the token, the PIN file's path and the device key's SKI —
/// never the PIN, which is not kept after login.
pub struct Pkcs11Backend {
    config: Pkcs11Config,
    unit_id: UnitId,
    unit_type: UnitType,
    tok: Tok,
    device: ObjectHandle,
    device_public: PublicKey,
    /// The master key and importer objects of the token, listed when the backend opens
    /// and kept up to date by every change it makes, so that no command searches the
    /// token (only this unit, holding its directory's lock, uses its token).
    objects: Vec<Known>,
}

/// The kinds of object the unit makes and destroys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    MasterKey,
    ImporterPrivate,
    ImporterPublic,
}

impl Kind {
    const ALL: [(Kind, ObjectClass, &'static str); 3] = [
        (Kind::MasterKey, ObjectClass::SECRET_KEY, LABEL_MASTER_KEY),
        (
            Kind::ImporterPrivate,
            ObjectClass::PRIVATE_KEY,
            LABEL_IMPORTER,
        ),
        (
            Kind::ImporterPublic,
            ObjectClass::PUBLIC_KEY,
            LABEL_IMPORTER,
        ),
    ];
}

/// An object of the token: its kind, `CKA_ID` and handle.
#[derive(Clone, Debug)]
struct Known {
    kind: Kind,
    id: Vec<u8>,
    handle: ObjectHandle,
}

impl fmt::Debug for Pkcs11Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Backend")
            .field("module", &self.config.module)
            .field("token_label", &self.config.token_label)
            .field("pin_file", &self.config.pin_file)
            .field("unit_id", &self.unit_id.uuid())
            .field("unit_type", &self.unit_type)
            .field(
                "device_key",
                &format_args!(
                    "<in the token> (public key SKI {})",
                    Ski::of_public_key(&self.device_public)
                ),
            )
            .field("wrap", &self.tok.caps.wrap)
            .field("trusted_wrap", &self.tok.caps.trusted)
            .field(
                "master_keys",
                &self
                    .objects
                    .iter()
                    .filter(|o| o.kind == Kind::MasterKey)
                    .map(|o| hex::encode(&o.id))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Pkcs11Backend {
    /// Connects to the token of `config`: loads the module, finds the token by label, logs
    /// in with the PIN file, and checks (once per token and process) that it offers every
    /// mechanism and computes the transport as the software reference does.
    fn connect(config: &Pkcs11Config) -> Result<Tok, BackendError> {
        let token = config.token();
        config
            .check()
            .map_err(|problem| BackendError::TokenContent {
                token: token.clone(),
                what: problem,
            })?;
        let pkcs11 = |source| BackendError::Pkcs11 {
            token: token.clone(),
            source: Box::new(source),
        };
        let module = Module::load(&config.module).map_err(pkcs11)?;
        let found = module
            .find_token(&TokenQuery::label(config.token_label.clone()))
            .map_err(pkcs11)?;
        let pin = Pin::from_file(&config.pin_file).map_err(pkcs11)?;
        let session = found.open_user_session(&pin).map_err(pkcs11)?;
        // The PIN is not kept after login (it is zeroized on drop).
        drop(pin);
        let placeholder = Capabilities {
            wrap: WrapMechanism::Pad,
            trusted: false,
        };
        let mut tok = Tok {
            token: token.clone(),
            found,
            session,
            caps: placeholder,
        };
        if let Some(caps) = probed(&tok.found) {
            tok.caps = caps;
            return Ok(tok);
        }
        let mut missing = Vec::new();
        for (name, m) in REQUIRED {
            if !tok.found.supports(m).map_err(pkcs11)? {
                missing.push(name);
            }
        }
        let mut candidates = Vec::new();
        for w in WrapMechanism::CANDIDATES {
            if tok.found.supports(w.mechanism_type()).map_err(pkcs11)? {
                candidates.push(w);
            }
        }
        if candidates.is_empty() {
            missing.push("CKM_AES_KEY_WRAP_KWP or CKM_AES_KEY_WRAP_PAD (RFC 5649)");
        }
        if !missing.is_empty() {
            return Err(pkcs11(tok.found.mechanism_missing(
                missing,
                "keep the secrets of a TKE crypto unit",
            )));
        }
        let mut last = None;
        for wrap in candidates {
            tok.caps.wrap = wrap;
            match tok.self_test() {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        if let Some(e) = last {
            return Err(e);
        }
        tok.caps.trusted = tok.user_may_trust();
        remember(&tok.found, tok.caps);
        Ok(tok)
    }

    /// Makes the device key of a new unit `unit_id` of type `unit_type` on the token of
    /// `config`, and records `config` (with absolute paths) in `dir` ([`PKCS11_FILE`]).
    /// The token must hold no TKE object: one token per unit.
    ///
    /// # Errors
    /// [`BackendError::Pkcs11`] for the module, the token (not found, or several with its
    /// label), the PIN file, the PIN, a mechanism the token lacks, or a failed call (its
    /// source, a [`tke_pkcs11::Error`], says which);
    /// [`BackendError::MechanismMismatch`] when a mechanism computes something else than
    /// the software reference; [`BackendError::TokenContent`] for a token already in use;
    /// [`BackendError::Io`]. Nothing is left on the token then.
    pub fn create(
        dir: &Path,
        unit_id: UnitId,
        unit_type: UnitType,
        config: &Pkcs11Config,
    ) -> Result<Self, BackendError> {
        Self::make(Some(dir), unit_id, unit_type, config)
    }

    /// As [`Pkcs11Backend::create`], but records `config` nowhere: for a unit made from
    /// parts ([`crate::Unit::create_from_parts`]), whose host keeps the configuration and
    /// reopens the token with [`Pkcs11Backend::open_on_token`].
    ///
    /// # Errors
    /// As [`Pkcs11Backend::create`].
    pub fn create_on_token(
        config: &Pkcs11Config,
        unit_id: UnitId,
        unit_type: UnitType,
    ) -> Result<Self, BackendError> {
        Self::make(None, unit_id, unit_type, config)
    }

    fn make(
        dir: Option<&Path>,
        unit_id: UnitId,
        unit_type: UnitType,
        config: &Pkcs11Config,
    ) -> Result<Self, BackendError> {
        let config = config.absolute()?;
        let tok = Self::connect(&config)?;
        for (class, label) in [
            (ObjectClass::PRIVATE_KEY, LABEL_DEVICE),
            (ObjectClass::PUBLIC_KEY, LABEL_DEVICE),
            (ObjectClass::SECRET_KEY, LABEL_MASTER_KEY),
            (ObjectClass::PRIVATE_KEY, LABEL_IMPORTER),
            (ObjectClass::PUBLIC_KEY, LABEL_IMPORTER),
        ] {
            if !tok.find(class, label, None)?.is_empty() {
                return Err(tok.content(
                    "already holds the objects of a TKE crypto unit: each unit needs a token of its own",
                ));
            }
        }
        let mut private = ec_private_template(LABEL_DEVICE, true);
        private.extend([
            Attribute::Id(unit_id.0.to_vec()),
            Attribute::Sign(true),
            Attribute::Derive(false),
        ]);
        let mut public = ec_public_template(LABEL_DEVICE, true);
        public.extend([Attribute::Id(unit_id.0.to_vec()), Attribute::Verify(true)]);
        let (pub_h, priv_h) = tok
            .session
            .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
            .map_err(tok.err("generating the device key"))?;
        let made = (|| {
            let point = tok.point(pub_h)?;
            let device_public =
                transport::parse_point(&point, "device key").map_err(BackendError::Crypto)?;
            if let Some(dir) = dir {
                config.write(dir)?;
            }
            Ok(device_public)
        })();
        match made {
            Ok(device_public) => Ok(Self {
                config,
                unit_id,
                unit_type,
                tok,
                device: priv_h,
                device_public,
                objects: Vec::new(),
            }),
            Err(e) => {
                let _ = tok.session.destroy_object(priv_h);
                let _ = tok.session.destroy_object(pub_h);
                Err(e)
            }
        }
    }

    /// Opens the token recorded in `dir` for the unit `unit_id` of type `unit_type`.
    ///
    /// # Errors
    /// As [`Pkcs11Backend::create`] (the configuration file's errors name it), plus
    /// [`BackendError::TokenContent`] when the token holds no device key and
    /// [`BackendError::ForeignToken`] when it holds another unit's.
    pub fn open(dir: &Path, unit_id: UnitId, unit_type: UnitType) -> Result<Self, BackendError> {
        Self::open_config(Pkcs11Config::read(dir)?, unit_id, unit_type)
    }

    /// Opens the token of `config` for the unit `unit_id` of type `unit_type` (made with
    /// [`Pkcs11Backend::create_on_token`]).
    ///
    /// # Errors
    /// As [`Pkcs11Backend::open`].
    pub fn open_on_token(
        config: &Pkcs11Config,
        unit_id: UnitId,
        unit_type: UnitType,
    ) -> Result<Self, BackendError> {
        Self::open_config(config.absolute()?, unit_id, unit_type)
    }

    fn open_config(
        config: Pkcs11Config,
        unit_id: UnitId,
        unit_type: UnitType,
    ) -> Result<Self, BackendError> {
        let tok = Self::connect(&config)?;
        let devices = tok.find(ObjectClass::PRIVATE_KEY, LABEL_DEVICE, None)?;
        let device = match devices.as_slice() {
            [] => return Err(tok.content(
                "holds no TKE device key: it is not this unit's token, or it was re-initialized",
            )),
            [one] => *one,
            _ => return Err(tok.content("holds two TKE device keys")),
        };
        let id = tok.id_of(device)?.unwrap_or_default();
        if id != unit_id.0 {
            return Err(match UnitId::from_slice(&id) {
                Ok(found) => BackendError::ForeignToken {
                    token: tok.token.clone(),
                    expected: unit_id,
                    found,
                },
                Err(_) => tok.content("holds a device key whose CKA_ID is not a unit id"),
            });
        }
        let public = tok
            .find_one(ObjectClass::PUBLIC_KEY, LABEL_DEVICE, &unit_id.0)?
            .ok_or_else(|| tok.content("holds the device private key but not its public key"))?;
        let point = tok.point(public)?;
        let device_public =
            transport::parse_point(&point, "device key").map_err(BackendError::Crypto)?;
        let mut objects = Vec::new();
        for (kind, class, label) in Kind::ALL {
            for handle in tok.find(class, label, None)? {
                let id = tok.id_of(handle)?.unwrap_or_default();
                if kind == Kind::MasterKey {
                    tok.allow_root_key_wrapping(handle);
                }
                objects.push(Known { kind, id, handle });
            }
        }
        Ok(Self {
            config,
            unit_id,
            unit_type,
            tok,
            device,
            device_public,
            objects,
        })
    }

    /// The configuration (module, token label, PIN file).
    pub fn config(&self) -> &Pkcs11Config {
        &self.config
    }

    /// The mechanism found to compute RFC 5649 on this token.
    pub fn wrap_mechanism(&self) -> WrapMechanism {
        self.tok.caps.wrap
    }

    /// Whether recovery master keys are `CKA_WRAP_WITH_TRUSTED` with `CKA_TRUSTED` KEKs
    /// (the token lets the user create trusted keys; SoftHSM2 does not).
    pub fn trusted_wrap(&self) -> bool {
        self.tok.caps.trusted
    }

    fn known(&self, kind: Kind, id: &[u8]) -> Option<ObjectHandle> {
        self.objects
            .iter()
            .find(|o| o.kind == kind && o.id == id)
            .map(|o| o.handle)
    }

    fn master_key(&self, handle: &KeyHandle) -> Result<ObjectHandle, BackendError> {
        self.known(Kind::MasterKey, &handle.0)
            .ok_or(BackendError::UnknownMasterKey { handle: *handle })
    }

    /// A handle no master key object has.
    fn fresh_handle(&self) -> KeyHandle {
        loop {
            let h = KeyHandle::random();
            if self.known(Kind::MasterKey, &h.0).is_none() {
                return h;
            }
        }
    }

    /// The template of a master key object: the policy of the unit's type.
    fn master_key_template(&self, handle: &KeyHandle) -> Vec<Attribute> {
        let exportable = self.unit_type.may_export();
        let mut t = vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(exportable),
            Attribute::Sign(true),
            Attribute::Verify(false),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            // Root keys of key storage are wrapped under master keys (service operations).
            Attribute::Wrap(true),
            Attribute::Unwrap(true),
            Attribute::Derive(false),
            Attribute::Copyable(false),
            Attribute::Label(LABEL_MASTER_KEY.as_bytes().to_vec()),
            Attribute::Id(handle.0.to_vec()),
        ];
        if exportable && self.tok.caps.trusted {
            t.push(Attribute::WrapWithTrusted(true));
        }
        t
    }

    fn importer(&self, key_id: &Digest32) -> Result<(ObjectHandle, [u8; 65]), BackendError> {
        let private = self
            .known(Kind::ImporterPrivate, key_id.as_bytes())
            .ok_or(BackendError::UnknownImporter { key_id: *key_id })?;
        let public = self
            .known(Kind::ImporterPublic, key_id.as_bytes())
            .ok_or_else(|| {
                self.tok
                    .content("holds an importer private key but not its public key")
            })?;
        let point = self.tok.point(public)?;
        if Digest32::sha256(&point) != *key_id {
            return Err(self
                .tok
                .content("holds an importer key whose CKA_ID is not the SHA-256 of its point"));
        }
        Ok((private, point))
    }

    /// Destroys the known objects `keep` refuses; returns the first error (the objects
    /// that could not be destroyed stay known).
    fn destroy_unless(&mut self, keep: impl Fn(&Known) -> bool) -> Result<(), BackendError> {
        let mut first = None;
        let session = &self.tok.session;
        self.objects.retain(|o| {
            if keep(o) {
                return true;
            }
            match session.destroy_object(o.handle) {
                Ok(()) => false,
                Err(e) => {
                    first.get_or_insert(e);
                    true
                }
            }
        });
        first.map_or(Ok(()), |e| Err(self.tok.err("destroying an object")(e)))
    }
}

impl Backend for Pkcs11Backend {
    fn kind(&self) -> &'static str {
        "pkcs11"
    }

    fn device_public_key(&self) -> PublicKey {
        self.device_public
    }

    fn sign(&self, context: DeviceContext, message: &[u8]) -> Result<DerSignature, BackendError> {
        // CKM_ECDSA over SHA-256(label ‖ message): the same signature as CKM_ECDSA_SHA256
        // over the labelled bytes, and every token offers CKM_ECDSA.
        let digest = context.digest(message);
        let rs = self
            .tok
            .session
            .sign(&Mechanism::Ecdsa, self.device, digest.as_bytes())
            .map_err(self.tok.err("signing with the device key (CKM_ECDSA)"))?;
        let sig = parse_signature(&rs).map_err(|_| BackendError::MechanismMismatch {
            token: self.tok.token.clone(),
            problem: "CKM_ECDSA returned a signature that is neither a P-256 r ‖ s nor DER",
        })?;
        Ok(sig.to_der())
    }

    fn generate_master_key(&mut self) -> Result<(KeyHandle, Vp), BackendError> {
        let handle = self.fresh_handle();
        let mut template = self.master_key_template(&handle);
        template.push(Attribute::ValueLen(32.into()));
        let key = self
            .tok
            .session
            .generate_key(&Mechanism::AesKeyGen, &template)
            .map_err(self.tok.err("generating a master key (CKM_AES_KEY_GEN)"))?;
        match self.tok.vp_of(key) {
            Ok(vp) => {
                self.objects.push(Known {
                    kind: Kind::MasterKey,
                    id: handle.0.to_vec(),
                    handle: key,
                });
                Ok((handle, vp))
            }
            Err(e) => {
                let _ = self.tok.session.destroy_object(key);
                Err(e)
            }
        }
    }

    fn master_key_vp(&self, handle: &KeyHandle) -> Result<Vp, BackendError> {
        let key = self.master_key(handle)?;
        self.tok.vp_of(key)
    }

    fn generate_root_keys(
        &self,
        handle: &KeyHandle,
        count: usize,
    ) -> Result<Vec<Vec<u8>>, BackendError> {
        let mk = self.master_key(handle)?;
        let mut template = root_key_template();
        template.push(Attribute::ValueLen(32.into()));
        (0..count)
            .map(|_| {
                let root = self
                    .tok
                    .session
                    .generate_key(&Mechanism::AesKeyGen, &template)
                    .map_err(self.tok.err("generating a root key (CKM_AES_KEY_GEN)"))?;
                let root = self.tok.temp(root);
                self.tok
                    .wrap_under(mk, root.handle, "wrapping a root key under a master key")
            })
            .collect()
    }

    fn wrap_data(
        &self,
        handle: &KeyHandle,
        root: &[u8],
        data: &[u8],
    ) -> Result<Vec<u8>, BackendError> {
        let mk = self.master_key(handle)?;
        let root = self
            .tok
            .unwrap_root(mk, handle, 0, root, &root_key_template())?;
        // The data key enters the token as a session object for this call only; its value
        // is in the template only for the creation.
        let mut template = readable_secret_template();
        template.push(Attribute::Value(data.to_vec()));
        let created = self.tok.session.create_object(&template);
        for a in &mut template {
            if let Attribute::Value(v) = a {
                v.zeroize();
            }
        }
        let data = self
            .tok
            .temp(created.map_err(self.tok.err("creating a session object for a data key"))?);
        self.tok.wrap_under(
            root.handle,
            data.handle,
            "wrapping a data key under a root key",
        )
    }

    fn unwrap_data(
        &self,
        handle: &KeyHandle,
        root: &[u8],
        wrapped: &[u8],
    ) -> Result<tke_proto::SecretOctets, BackendError> {
        let mk = self.master_key(handle)?;
        let root = self
            .tok
            .unwrap_root(mk, handle, 0, root, &root_key_template())?;
        let data = match self.tok.session.unwrap_key(
            &self.tok.caps.wrap.mechanism(),
            root.handle,
            wrapped,
            &readable_secret_template(),
        ) {
            Ok(object) => self.tok.temp(object),
            Err(e) if refuses_input(&e) => return Err(BackendError::WrappedData),
            Err(e) => return Err(self.tok.err("unwrapping a data key under a root key")(e)),
        };
        let mut attrs = self
            .tok
            .session
            .get_attributes(data.handle, &[AttributeType::Value])
            .map_err(self.tok.err("reading an unwrapped data key"))?;
        drop(data);
        let value = attrs.iter_mut().find_map(|a| match a {
            Attribute::Value(v) => Some(tke_proto::SecretOctets::new(core::mem::take(v))),
            _ => None,
        });
        for a in &mut attrs {
            if let Attribute::Value(v) = a {
                v.zeroize();
            }
        }
        value.ok_or_else(|| {
            self.tok
                .content("returned no value for an unwrapped data key")
        })
    }

    fn rewrap_root_keys(
        &self,
        from: &KeyHandle,
        to: &KeyHandle,
        keys: &[&[u8]],
    ) -> Result<Vec<Vec<u8>>, BackendError> {
        let (old, new) = (self.master_key(from)?, self.master_key(to)?);
        let template = root_key_template();
        keys.iter()
            .enumerate()
            .map(|(i, k)| {
                let root = self.tok.unwrap_root(old, from, i, k, &template)?;
                self.tok.wrap_under(
                    new,
                    root.handle,
                    "rewrapping a root key under the new master key",
                )
            })
            .collect()
    }

    fn generate_importer(&mut self) -> Result<PublicKey, BackendError> {
        let (public, private) = self
            .tok
            .key_pair(LABEL_IMPORTER, true, Attribute::Derive(true))?;
        let made = (|| {
            let point = self.tok.point(public)?;
            let id = Digest32::sha256(&point).as_bytes().to_vec();
            for object in [private, public] {
                self.tok
                    .session
                    .update_attributes(object, &[Attribute::Id(id.clone())])
                    .map_err(self.tok.err("naming the importer key (CKA_ID)"))?;
            }
            let key =
                transport::parse_point(&point, "importer key").map_err(BackendError::Crypto)?;
            Ok((key, id))
        })();
        match made {
            Ok((key, id)) => {
                self.objects.extend([
                    Known {
                        kind: Kind::ImporterPrivate,
                        id: id.clone(),
                        handle: private,
                    },
                    Known {
                        kind: Kind::ImporterPublic,
                        id,
                        handle: public,
                    },
                ]);
                Ok(key)
            }
            Err(e) => {
                let _ = self.tok.session.destroy_object(private);
                let _ = self.tok.session.destroy_object(public);
                Err(e)
            }
        }
    }

    fn has_importer(&self, key_id: &Digest32) -> Result<bool, BackendError> {
        Ok(self
            .known(Kind::ImporterPrivate, key_id.as_bytes())
            .is_some())
    }

    fn seal(
        &self,
        handle: &KeyHandle,
        source: UnitId,
        importer: &ImporterKey,
    ) -> Result<MkEnvelope, BackendError> {
        let key = self.master_key(handle)?;
        self.tok.seal(key, source, importer)
    }

    fn import(
        &mut self,
        importer: &Digest32,
        envelope: &MkEnvelope,
    ) -> Result<(KeyHandle, Vp), BackendError> {
        let (private, point) = self.importer(importer)?;
        let handle = self.fresh_handle();
        let template = self.master_key_template(&handle);
        let (key, vp) = self.tok.open(private, &point, envelope, &template)?;
        self.objects.push(Known {
            kind: Kind::MasterKey,
            id: handle.0.to_vec(),
            handle: key,
        });
        Ok((handle, vp))
    }

    fn import_parts(
        &mut self,
        importer: &Digest32,
        target: UnitId,
        sealed: &[SealedPart],
    ) -> Result<(KeyHandle, Vp), BackendError> {
        let (private, point) = self.importer(importer)?;
        let key = crate::backend::open_and_combine(sealed, |k, part| {
            self.tok.open_part(private, &point, target, k, part)
        })?;
        let handle = self.fresh_handle();
        // The combined key enters the token as an imported one does: the same attributes,
        // sensitive, and not extractable (parts are refused on recovery units). Its value
        // is in the template only for this call.
        let mut template = self.master_key_template(&handle);
        template.push(Attribute::Value(key.expose_secret().to_vec()));
        drop(key);
        let created = self.tok.session.create_object(&template);
        for a in &mut template {
            if let Attribute::Value(v) = a {
                v.zeroize();
            }
        }
        let object = created.map_err(self.tok.err("creating the master key from its parts"))?;
        let guard = self.tok.temp(object);
        let vp = self.tok.vp_of(object)?;
        guard.keep();
        self.objects.push(Known {
            kind: Kind::MasterKey,
            id: handle.0.to_vec(),
            handle: object,
        });
        Ok((handle, vp))
    }

    fn retain(&mut self, live: &LiveSecrets) -> Result<(), BackendError> {
        self.destroy_unless(|o| match o.kind {
            Kind::MasterKey => live.master_keys.iter().any(|h| h.0 == o.id.as_slice()),
            Kind::ImporterPrivate | Kind::ImporterPublic => live
                .importer
                .is_some_and(|k| k.as_bytes() == o.id.as_slice()),
        })
    }

    fn discard(&mut self) -> Result<(), BackendError> {
        self.retain(&LiveSecrets::default())?;
        let mut first = None;
        for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
            for object in self.tok.find(class, LABEL_DEVICE, Some(&self.unit_id.0))? {
                if let Err(e) = self.tok.session.destroy_object(object) {
                    first.get_or_insert(self.tok.err("destroying the device key")(e));
                }
            }
        }
        first.map_or(Ok(()), Err)
    }
}
