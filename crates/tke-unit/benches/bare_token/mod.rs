//! The bare token rewrap, shared by `tke-unit`'s rewrap benchmark and `tke-kms`'s
//! rotation benchmark: the floor a PKCS#11 unit's `rewrap` is measured against.
#![allow(dead_code)]

use std::{hint::black_box, path::Path};

use tke_pkcs11::{
    cryptoki::{
        mechanism::Mechanism,
        object::{Attribute, KeyType, ObjectClass, ObjectHandle},
        session::Session,
    },
    Module, Pin, TokenQuery,
};
use tke_test_support::{softhsm, Tokens};

/// The bare token rewrap: `C_UnwrapKey` + `C_WrapKey` (+ `C_DestroyObject`) per key,
/// under two AES keys that are session objects, or token objects as a unit's master keys
/// are (SoftHSM2 checks a token object's file at each use, which costs).
pub struct BareToken {
    session: Session,
    mechanism: Mechanism<'static>,
    old: ObjectHandle,
    new: ObjectHandle,
    template: Vec<Attribute>,
    keys: Vec<Vec<u8>>,
}

impl BareToken {
    pub fn new(
        tokens: &Tokens,
        label: &str,
        mechanism: Mechanism<'static>,
        token_keks: bool,
        n: usize,
    ) -> Self {
        let module = Module::load(Path::new(softhsm::module_text())).unwrap();
        let token = module.find_token(&TokenQuery::label(label)).unwrap();
        let pin = Pin::from_file(&tokens.pin_path(label)).unwrap();
        let session = token.open_user_session(&pin).unwrap();
        let aes = |extractable: bool| {
            vec![
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(false),
                Attribute::Sensitive(true),
                Attribute::Extractable(extractable),
                Attribute::Wrap(true),
                Attribute::Unwrap(true),
            ]
        };
        let kek = || {
            let mut t = aes(false);
            t.retain(|a| !matches!(a, Attribute::Token(_)));
            t.extend([
                Attribute::Token(token_keks),
                Attribute::Private(true),
                Attribute::ValueLen(32.into()),
            ]);
            session.generate_key(&Mechanism::AesKeyGen, &t).unwrap()
        };
        let (old, new) = (kek(), kek());
        let mut root_template = aes(true);
        root_template.push(Attribute::ValueLen(32.into()));
        let keys = (0..n)
            .map(|_| {
                let root = session
                    .generate_key(&Mechanism::AesKeyGen, &root_template)
                    .unwrap();
                let wrapped = session.wrap_key(&mechanism, old, root).unwrap();
                session.destroy_object(root).unwrap();
                wrapped
            })
            .collect();
        Self {
            session,
            mechanism,
            old,
            new,
            template: aes(true),
            keys,
        }
    }

    pub fn rewrap(&self) -> usize {
        for k in &self.keys {
            let root = self
                .session
                .unwrap_key(&self.mechanism, self.old, k, &self.template)
                .unwrap();
            black_box(
                self.session
                    .wrap_key(&self.mechanism, self.new, root)
                    .unwrap(),
            );
            self.session.destroy_object(root).unwrap();
        }
        self.keys.len()
    }
}
