//! An open, logged-in session on the token a URI names, and what it does with keys.

use std::path::Path;

use p256::{ecdsa::Signature, PublicKey};
use sha2::{Digest as _, Sha256};
use tke_pkcs11::{
    cryptoki::{
        error::Error as CkError,
        mechanism::{Mechanism, MechanismType},
        object::{Attribute, AttributeType, CertificateType, KeyType, ObjectClass, ObjectHandle},
        session::Session,
    },
    ec::{parse_ec_point, parse_signature, P256_PARAMS},
    Module, Token,
};
use tke_proto::{der::Encode as _, AdminCertificate, AdminName, BoxError};
use x509_cert::der::Decode as _;

use crate::{Pin, Pkcs11Error, Pkcs11Signer, Pkcs11Uri, TokenName};

/// A key pair found on (or generated on) the token.
pub(crate) struct KeyPair {
    pub(crate) private: ObjectHandle,
    pub(crate) id: Vec<u8>,
    pub(crate) label: String,
    pub(crate) public_key: PublicKey,
}

/// A read/write session on the token that a [`Pkcs11Uri`] names, logged in as the user.
///
/// It is the first step of every PKCS#11 signer: [`TokenSession::open`] finds the token by
/// label and/or serial (never by slot number) and logs in with the PIN, then
/// [`TokenSession::generate`], [`TokenSession::register`] or [`TokenSession::open_signer`]
/// turns it into a [`Pkcs11Signer`] that keeps using this one session.
/// [`TokenSession::has_key_pair`] lets a caller choose between generating and
/// registering (and say which it does) before it commits to one.
///
/// PKCS#11 login state belongs to the process and token, not to one session: when a
/// session of this process is already logged in to the token, the token answers
/// `CKR_USER_ALREADY_LOGGED_IN`, and this session is logged in with it.
pub struct TokenSession {
    uri: Pkcs11Uri,
    token: Token,
    session: Session,
}

impl core::fmt::Debug for TokenSession {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TokenSession")
            .field("module", &self.uri.module_path())
            .field("token", self.token.name())
            .finish_non_exhaustive()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl TokenSession {
    /// Loads the URI's module (once per process), finds its token, opens a read/write
    /// session and logs in as the user with `pin`.
    ///
    /// # Errors
    /// [`Pkcs11Error::Pkcs11`] with: [`tke_pkcs11::Error::ModuleLoad`];
    /// [`tke_pkcs11::Error::TokenNotFound`] (listing the tokens present) or
    /// [`tke_pkcs11::Error::AmbiguousToken`]; [`tke_pkcs11::Error::EmptyPin`];
    /// [`tke_pkcs11::Error::WrongPin`] (with what the token says about tries left);
    /// [`tke_pkcs11::Error::PinLocked`]; [`tke_pkcs11::Error::Module`] or
    /// [`tke_pkcs11::Error::Token`] for any other failure, with its CKR name.
    pub fn open(uri: &Pkcs11Uri, pin: &Pin) -> Result<Self, Pkcs11Error> {
        let token = Module::load(uri.module_path())?.find_token(&uri.token_query())?;
        let session = token.open_user_session(pin)?;
        Ok(Self {
            uri: uri.clone(),
            token,
            session,
        })
    }

    /// The token found.
    pub fn token(&self) -> &TokenName {
        self.token.name()
    }

    /// The module file.
    pub fn module_path(&self) -> &Path {
        self.uri.module_path()
    }

    /// The URI this session was opened with.
    pub fn uri(&self) -> &Pkcs11Uri {
        &self.uri
    }

    fn err(&self, operation: &'static str) -> impl FnOnce(CkError) -> Pkcs11Error + '_ {
        move |e| Pkcs11Error::from(self.token.error(operation)(e))
    }

    fn token_name(&self) -> TokenName {
        self.token.name().clone()
    }

    fn require(
        &self,
        mechanism: MechanismType,
        name: &'static str,
        purpose: &'static str,
    ) -> Result<(), Pkcs11Error> {
        Ok(self.token.require(&[(name, mechanism)], purpose)?)
    }

    fn find(&self, template: &[Attribute]) -> Result<Vec<ObjectHandle>, Pkcs11Error> {
        self.session
            .find_objects(template)
            .map_err(self.err("C_FindObjects"))
    }

    /// The URI's key attributes (label and/or id) as a search template.
    fn key_filter(&self, operation: &'static str) -> Result<Vec<Attribute>, Pkcs11Error> {
        let mut t = Vec::new();
        if let Some(label) = self.uri.object() {
            t.push(Attribute::Label(label.as_bytes().to_vec()));
        }
        if let Some(id) = self.uri.id() {
            t.push(Attribute::Id(id.to_vec()));
        }
        if t.is_empty() {
            return Err(Pkcs11Error::NoKeyInUri { operation });
        }
        Ok(t)
    }

    fn find_one(
        &self,
        class: ObjectClass,
        filter: &[Attribute],
        what: &'static str,
        key: impl Fn() -> String,
    ) -> Result<ObjectHandle, Pkcs11Error> {
        let mut template = vec![Attribute::Class(class)];
        template.extend_from_slice(filter);
        match self.find(&template)?.as_slice() {
            [one] => Ok(*one),
            [] => Err(Pkcs11Error::KeyNotFound {
                module: self.module_path().to_path_buf(),
                token: self.token_name(),
                key: key(),
                what,
            }),
            many => Err(Pkcs11Error::AmbiguousKey {
                module: self.module_path().to_path_buf(),
                token: self.token_name(),
                key: key(),
                what,
                count: many.len(),
            }),
        }
    }

    /// Whether a private key matching the URI's `object` / `id` is on the token.
    ///
    /// # Errors
    /// [`Pkcs11Error::NoKeyInUri`] when the URI names no key; [`tke_pkcs11::Error::Token`]
    /// when the search fails.
    pub fn has_key_pair(&self) -> Result<bool, Pkcs11Error> {
        let mut template = vec![Attribute::Class(ObjectClass::PRIVATE_KEY)];
        template.extend(self.key_filter("find")?);
        Ok(!self.find(&template)?.is_empty())
    }

    fn not_p256(&self, key: String, problem: &'static str) -> Pkcs11Error {
        Pkcs11Error::NotP256 {
            module: self.module_path().to_path_buf(),
            token: self.token_name(),
            key,
            problem,
        }
    }

    /// Finds the URI's private key and its public key, and reads the public point.
    fn find_key_pair(&self, operation: &'static str) -> Result<KeyPair, Pkcs11Error> {
        let filter = self.key_filter(operation)?;
        let described = || self.uri.key_description();
        let private = self.find_one(ObjectClass::PRIVATE_KEY, &filter, "private key", described)?;
        let attrs = self
            .session
            .get_attributes(
                private,
                &[
                    AttributeType::KeyType,
                    AttributeType::Id,
                    AttributeType::Label,
                ],
            )
            .map_err(self.err("C_GetAttributeValue"))?;
        let (mut key_type, mut id, mut label) = (None, Vec::new(), String::new());
        for a in attrs {
            match a {
                Attribute::KeyType(k) => key_type = Some(k),
                Attribute::Id(v) => id = v,
                Attribute::Label(v) => label = String::from_utf8_lossy(&v).into_owned(),
                _ => {}
            }
        }
        if key_type != Some(KeyType::EC) {
            return Err(self.not_p256(described(), "it is not an EC key"));
        }
        // The public half: by CKA_ID when the key has one (the PKCS#11 convention that
        // pairs objects), else by label (OpenSC's pkcs11-tool sets no id unless asked).
        let pair_filter = if id.is_empty() {
            vec![Attribute::Label(label.as_bytes().to_vec())]
        } else {
            vec![Attribute::Id(id.clone())]
        };
        let public = self.find_one(
            ObjectClass::PUBLIC_KEY,
            &pair_filter,
            "public key",
            described,
        )?;
        let attrs = self
            .session
            .get_attributes(public, &[AttributeType::EcParams, AttributeType::EcPoint])
            .map_err(self.err("C_GetAttributeValue"))?;
        let (mut params, mut point) = (None, None);
        for a in attrs {
            match a {
                Attribute::EcParams(v) => params = Some(v),
                Attribute::EcPoint(v) => point = Some(v),
                _ => {}
            }
        }
        if params.as_deref() != Some(&P256_PARAMS[..]) {
            return Err(self.not_p256(
                described(),
                "its curve is not P-256 (CKA_EC_PARAMS is not the prime256v1 OID)",
            ));
        }
        let point = point
            .ok_or_else(|| self.not_p256(described(), "its public key has no CKA_EC_POINT"))?;
        let public_key = parse_ec_point(&point)
            .map_err(|_| self.not_p256(described(), "its CKA_EC_POINT is not a P-256 point"))?;
        Ok(KeyPair {
            private,
            id,
            label,
            public_key,
        })
    }

    /// Signs SHA-256(`message`) with `CKM_ECDSA` and returns the signature.
    pub(crate) fn sign_with(
        &self,
        key: ObjectHandle,
        message: &[u8],
    ) -> Result<Signature, Pkcs11Error> {
        let digest = Sha256::digest(message);
        let raw = self
            .session
            .sign(&Mechanism::Ecdsa, key, &digest)
            .map_err(self.err("C_Sign"))?;
        parse_signature(&raw).map_err(|_| Pkcs11Error::BadSignature {
            module: self.module_path().to_path_buf(),
            token: self.token_name(),
            key: self.uri.key_description(),
            len: raw.len(),
        })
    }

    /// The administrator certificate of `pair`, signed by the token.
    fn certify(&self, pair: &KeyPair, name: &AdminName) -> Result<AdminCertificate, Pkcs11Error> {
        let sign =
            |tbs: &[u8]| -> Result<_, BoxError> { Ok(self.sign_with(pair.private, tbs)?.to_der()) };
        AdminCertificate::build(name, &pair.public_key, Box::new(sign)).map_err(|source| {
            Pkcs11Error::Certificate {
                module: self.module_path().to_path_buf(),
                token: self.token_name(),
                key: self.uri.key_description(),
                name: name.clone(),
                source: Box::new(source),
            }
        })
    }

    /// Stores the certificate on the token beside its key (`CKO_CERTIFICATE`, same
    /// `CKA_ID` and label), unless a certificate with that id (or label) is there already.
    fn store_certificate(
        &self,
        pair: &KeyPair,
        cert: &AdminCertificate,
    ) -> Result<(), Pkcs11Error> {
        let link = if pair.id.is_empty() {
            Attribute::Label(pair.label.as_bytes().to_vec())
        } else {
            Attribute::Id(pair.id.clone())
        };
        if !self
            .find(&[Attribute::Class(ObjectClass::CERTIFICATE), link])?
            .is_empty()
        {
            return Ok(());
        }
        // CKA_SUBJECT is required for X.509 certificate objects.
        let subject = x509_cert::Certificate::from_der(cert.der())
            .and_then(|c| c.tbs_certificate.subject.to_der())
            .map_err(|e| Pkcs11Error::Certificate {
                module: self.module_path().to_path_buf(),
                token: self.token_name(),
                key: self.uri.key_description(),
                name: cert.name().clone(),
                source: Box::new(e.into()),
            })?;
        let mut template = vec![
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::CertificateType(CertificateType::X_509),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Label(pair.label.as_bytes().to_vec()),
            Attribute::Subject(subject),
            Attribute::Value(cert.der().to_vec()),
        ];
        if !pair.id.is_empty() {
            template.push(Attribute::Id(pair.id.clone()));
        }
        self.session
            .create_object(&template)
            .map_err(self.err("C_CreateObject"))?;
        Ok(())
    }

    fn into_signer(self, pair: KeyPair, certificate: AdminCertificate) -> Pkcs11Signer {
        let mut uri = self.uri.clone().with_id(&pair.id);
        if !pair.label.is_empty() {
            uri = uri.with_object(&pair.label);
        }
        Pkcs11Signer::new(certificate, uri, pair.private, self)
    }

    /// Generates a new P-256 key pair on the token (`CKM_EC_KEY_PAIR_GEN`; the private key
    /// `CKA_TOKEN`, `CKA_PRIVATE`, `CKA_SENSITIVE`, not `CKA_EXTRACTABLE`, sign only;
    /// label = the URI's `object`, `CKA_ID` = the URI's `id` or 16 random bytes), makes
    /// the administrator certificate of `name` signed by the token, stores it on the token
    /// too, and returns the signer. If anything fails after the key pair was made, the
    /// pair is destroyed again.
    ///
    /// # Errors
    /// [`Pkcs11Error::NoKeyInUri`] without `object=`; [`Pkcs11Error::KeyExists`] when an
    /// object with that label (or id) is on the token; [`tke_pkcs11::Error::MechanismMissing`];
    /// [`Pkcs11Error::Certificate`]; [`tke_pkcs11::Error::Token`] for PKCS#11 failures.
    pub fn generate(self, name: &AdminName) -> Result<Pkcs11Signer, Pkcs11Error> {
        let label = self
            .uri
            .object()
            .ok_or(Pkcs11Error::NoKeyInUri {
                operation: "generate",
            })?
            .to_owned();
        self.require(
            MechanismType::ECC_KEY_PAIR_GEN,
            "CKM_EC_KEY_PAIR_GEN",
            "generate a P-256 key pair",
        )?;
        self.require(
            MechanismType::ECDSA,
            "CKM_ECDSA",
            "sign with an administrator key",
        )?;
        let exists = |what: String| Pkcs11Error::KeyExists {
            module: self.module_path().to_path_buf(),
            token: self.token_name(),
            what,
        };
        if !self
            .find(&[Attribute::Label(label.as_bytes().to_vec())])?
            .is_empty()
        {
            return Err(exists(format!("label {label:?}")));
        }
        let id = match self.uri.id() {
            Some(id) => {
                if !self.find(&[Attribute::Id(id.to_vec())])?.is_empty() {
                    return Err(exists(format!("id {}", hex(id))));
                }
                id.to_vec()
            }
            None => {
                let mut id = vec![0u8; 16];
                rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
                id
            }
        };
        let label_attr = Attribute::Label(label.as_bytes().to_vec());
        let public_template = [
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::Encrypt(false),
            Attribute::Wrap(false),
            Attribute::Derive(false),
            Attribute::EcParams(P256_PARAMS.to_vec()),
            label_attr.clone(),
            Attribute::Id(id.clone()),
        ];
        let private_template = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
            label_attr,
            Attribute::Id(id.clone()),
        ];
        let (public, private) = self
            .session
            .generate_key_pair(
                &Mechanism::EccKeyPairGen,
                &public_template,
                &private_template,
            )
            .map_err(self.err("C_GenerateKeyPair"))?;
        let made = (|| {
            let pair = self.find_key_pair("generate")?;
            if pair.private != private {
                return Err(self.not_p256(
                    self.uri.key_description(),
                    "the token shows another key under the new key's label",
                ));
            }
            let cert = self.certify(&pair, name)?;
            self.store_certificate(&pair, &cert)?;
            Ok((pair, cert))
        })();
        match made {
            Ok((pair, cert)) => Ok(self.into_signer(pair, cert)),
            Err(e) => {
                // Leave no half-made administrator key behind (best effort: the first
                // error is the one to report).
                let _ = self.session.destroy_object(private);
                let _ = self.session.destroy_object(public);
                Err(e)
            }
        }
    }

    /// Registers a key pair that is already on the token (made by another tool, e.g.
    /// `pkcs11-tool --keypairgen --key-type EC:prime256v1`): finds the private key the URI
    /// names and its public key (by `CKA_ID`, else by label), makes the administrator
    /// certificate of `name` signed by the token, stores it on the token unless one is
    /// there, and returns the signer.
    ///
    /// # Errors
    /// [`Pkcs11Error::NoKeyInUri`]; [`Pkcs11Error::KeyNotFound`] /
    /// [`Pkcs11Error::AmbiguousKey`]; [`Pkcs11Error::NotP256`];
    /// [`tke_pkcs11::Error::MechanismMissing`]; [`Pkcs11Error::Certificate`];
    /// [`tke_pkcs11::Error::Token`].
    pub fn register(self, name: &AdminName) -> Result<Pkcs11Signer, Pkcs11Error> {
        self.require(
            MechanismType::ECDSA,
            "CKM_ECDSA",
            "sign with an administrator key",
        )?;
        let pair = self.find_key_pair("register")?;
        let cert = self.certify(&pair, name)?;
        self.store_certificate(&pair, &cert)?;
        Ok(self.into_signer(pair, cert))
    }

    /// Opens the signer of a registered key: finds the key pair the URI names and checks
    /// that its public key is the certificate's.
    ///
    /// # Errors
    /// [`Pkcs11Error::CertificateMismatch`] when the token's key is not the
    /// certificate's; the errors of [`TokenSession::register`] but `Certificate`.
    pub fn open_signer(self, certificate: &AdminCertificate) -> Result<Pkcs11Signer, Pkcs11Error> {
        self.require(
            MechanismType::ECDSA,
            "CKM_ECDSA",
            "sign with an administrator key",
        )?;
        let pair = self.find_key_pair("open")?;
        if pair.public_key != *certificate.public_key() {
            return Err(Pkcs11Error::CertificateMismatch {
                module: self.module_path().to_path_buf(),
                token: self.token_name(),
                key: self.uri.key_description(),
                name: certificate.name().clone(),
            });
        }
        Ok(self.into_signer(pair, certificate.clone()))
    }
}
