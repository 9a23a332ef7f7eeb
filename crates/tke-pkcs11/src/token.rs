//! Tokens: which one a caller wants, finding it, its mechanisms, sessions and login.

use core::fmt;

use cryptoki::{
    error::{Error as CkError, RvError},
    mechanism::MechanismType,
    session::{Session, UserType},
    slot::{Slot, TokenInfo},
};

use crate::{Error, Module, Pin, PinTries, TokenName};

/// Which token a caller wants: by label and/or serial number (and, rarely needed,
/// manufacturer and model). Never by slot number, which changes when tokens are added.
/// A field left `None` matches any token.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenQuery {
    /// The token label (`CK_TOKEN_INFO.label`, without its padding).
    pub label: Option<String>,
    /// The token serial number.
    pub serial: Option<String>,
    /// The manufacturer (`CK_TOKEN_INFO.manufacturerID`).
    pub manufacturer: Option<String>,
    /// The model (`CK_TOKEN_INFO.model`).
    pub model: Option<String>,
}

impl TokenQuery {
    /// The token labelled `label`.
    pub fn label(label: impl Into<String>) -> Self {
        Self {
            label: Some(label.into()),
            ..Self::default()
        }
    }

    /// The token with serial number `serial`.
    pub fn serial(serial: impl Into<String>) -> Self {
        Self {
            serial: Some(serial.into()),
            ..Self::default()
        }
    }
}

/// `token "admins" (serial 1234)`, `token "admins"`, `the token with serial 1234`.
impl fmt::Display for TokenQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.label, &self.serial) {
            (Some(l), Some(s)) => write!(f, "token {l:?} (serial {s})"),
            (Some(l), None) => write!(f, "token {l:?}"),
            (None, Some(s)) => write!(f, "the token with serial {s}"),
            (None, None) => f.write_str("a token"),
        }
    }
}

/// An initialized token of a [`Module`], found by [`Module::find_token`].
///
/// Its errors name the module and the token (label and serial).
#[derive(Clone)]
pub struct Token {
    module: Module,
    slot: Slot,
    name: TokenName,
    manufacturer: String,
    model: String,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("module", &self.module.path())
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Token {
    pub(crate) fn new(module: Module, slot: Slot, name: TokenName, info: &TokenInfo) -> Self {
        Self {
            module,
            slot,
            name,
            manufacturer: info.manufacturer_id().to_owned(),
            model: info.model().to_owned(),
        }
    }

    pub(crate) fn matches(&self, wanted: &TokenQuery) -> bool {
        let is = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        is(&wanted.label, &self.name.label)
            && is(&wanted.serial, &self.name.serial)
            && is(&wanted.manufacturer, &self.manufacturer)
            && is(&wanted.model, &self.model)
    }

    /// Its label and serial number.
    pub fn name(&self) -> &TokenName {
        &self.name
    }

    /// Its module.
    pub fn module(&self) -> &Module {
        &self.module
    }

    /// Its slot now (for the cryptoki calls this crate does not wrap; slot numbers may
    /// change when tokens are added, so never record one).
    pub fn slot(&self) -> Slot {
        self.slot
    }

    /// The error of a failed call on this token: `operation` is the PKCS#11 function or
    /// the caller's step (`generating the device key`).
    pub fn error(&self, operation: &'static str) -> impl FnOnce(CkError) -> Error + '_ {
        move |error| Error::Token {
            module: self.module.path().to_path_buf(),
            token: self.name.clone(),
            operation,
            error,
        }
    }

    /// The token's information now (flags change: PIN counters, login state...).
    ///
    /// # Errors
    /// [`Error::Token`] (`C_GetTokenInfo`).
    pub fn info(&self) -> Result<TokenInfo, Error> {
        self.module
            .context()
            .get_token_info(self.slot)
            .map_err(self.error("C_GetTokenInfo"))
    }

    /// Whether the token offers `mechanism`. Asked one by one (`C_GetMechanismInfo`):
    /// cryptoki's mechanism list drops the ids it has no name for.
    ///
    /// # Errors
    /// [`Error::Token`] for any answer but `CKR_MECHANISM_INVALID`.
    pub fn supports(&self, mechanism: MechanismType) -> Result<bool, Error> {
        match self
            .module
            .context()
            .get_mechanism_info(self.slot, mechanism)
        {
            Ok(_) => Ok(true),
            Err(CkError::Pkcs11(RvError::MechanismInvalid, _)) => Ok(false),
            Err(e) => Err(self.error("C_GetMechanismInfo")(e)),
        }
    }

    /// Checks that the token offers every mechanism of `needed` (name, type), and says
    /// which it lacks, all at once.
    ///
    /// # Errors
    /// [`Error::MechanismMissing`] naming the missing ones and `purpose`;
    /// [`Error::Token`] when the token cannot be asked.
    pub fn require(
        &self,
        needed: &[(&'static str, MechanismType)],
        purpose: &'static str,
    ) -> Result<(), Error> {
        let mut missing = Vec::new();
        for (name, mechanism) in needed {
            if !self.supports(*mechanism)? {
                missing.push(*name);
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(self.mechanism_missing(missing, purpose))
        }
    }

    /// [`Error::MechanismMissing`] for this token, for callers that choose among
    /// mechanisms themselves.
    pub fn mechanism_missing(&self, missing: Vec<&'static str>, purpose: &'static str) -> Error {
        Error::MechanismMissing {
            module: self.module.path().to_path_buf(),
            token: self.name.clone(),
            missing,
            purpose,
        }
    }

    /// Opens a read/write session on the token.
    ///
    /// # Errors
    /// [`Error::Token`] (`C_OpenSession`).
    pub fn open_rw_session(&self) -> Result<Session, Error> {
        self.module
            .context()
            .open_rw_session(self.slot)
            .map_err(self.error("C_OpenSession"))
    }

    /// Opens a read/write session and logs the user in with `pin` (see [`Token::login`]).
    ///
    /// # Errors
    /// The errors of [`Token::open_rw_session`] and [`Token::login`].
    pub fn open_user_session(&self, pin: &Pin) -> Result<Session, Error> {
        if pin.is_empty() {
            return Err(self.empty_pin());
        }
        let session = self.open_rw_session()?;
        self.login(&session, pin)?;
        Ok(session)
    }

    fn empty_pin(&self) -> Error {
        Error::EmptyPin {
            module: self.module.path().to_path_buf(),
            token: self.name.clone(),
        }
    }

    fn pin_locked(&self) -> Error {
        Error::PinLocked {
            module: self.module.path().to_path_buf(),
            token: self.name.clone(),
        }
    }

    /// Logs the user in on `session` with `pin`.
    ///
    /// Login state belongs to the process and token, not to one session: when a session
    /// of this process is already logged in to the token, the token answers
    /// `CKR_USER_ALREADY_LOGGED_IN` without checking the PIN, and `session` shares that
    /// login. Nothing logs out: closing the token's last session of the process ends it.
    ///
    /// # Errors
    /// [`Error::EmptyPin`]; [`Error::WrongPin`] with what the token says about the tries
    /// left (and the PIN file, if the PIN came from one); [`Error::PinLocked`];
    /// [`Error::PinNotInitialized`]; [`Error::Token`] for any other failure.
    pub fn login(&self, session: &Session, pin: &Pin) -> Result<(), Error> {
        if pin.is_empty() {
            return Err(self.empty_pin());
        }
        // Said before a try that could only fail (and, on some tokens, count).
        if self.info()?.user_pin_locked() {
            return Err(self.pin_locked());
        }
        match session.login(UserType::User, Some(&pin.to_auth_pin())) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
            Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinLenRange, _)) => {
                let info = self.info()?;
                if info.user_pin_locked() {
                    return Err(self.pin_locked());
                }
                let tries = if info.user_pin_final_try() {
                    PinTries::FinalTry
                } else if info.user_pin_count_low() {
                    PinTries::Low
                } else {
                    PinTries::NotReported
                };
                Err(Error::WrongPin {
                    module: self.module.path().to_path_buf(),
                    token: self.name.clone(),
                    pin_file: pin.file().map(ToOwned::to_owned),
                    tries,
                })
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(self.pin_locked()),
            Err(CkError::Pkcs11(RvError::UserPinNotInitialized, _)) => {
                Err(Error::PinNotInitialized {
                    module: self.module.path().to_path_buf(),
                    token: self.name.clone(),
                })
            }
            Err(e) => Err(self.error("C_Login")(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_describe_themselves() {
        assert_eq!(TokenQuery::label("admins").to_string(), "token \"admins\"");
        assert_eq!(
            TokenQuery::serial("12ab").to_string(),
            "the token with serial 12ab"
        );
        let both = TokenQuery {
            serial: Some("12ab".into()),
            ..TokenQuery::label("admins")
        };
        assert_eq!(both.to_string(), "token \"admins\" (serial 12ab)");
        assert_eq!(TokenQuery::default().to_string(), "a token");
    }
}
