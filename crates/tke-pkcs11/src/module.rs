//! The process-wide table of loaded PKCS#11 modules.
//!
//! A PKCS#11 module is initialized once per process (`C_Initialize`); a second
//! `C_Initialize` fails with `CKR_CRYPTOKI_ALREADY_INITIALIZED`, and `C_Finalize` would
//! close every session of every user of the module. So each module is loaded and
//! initialized the first time anyone in the process needs it, kept in one table keyed by
//! its canonical path, and shared (cryptoki's `Pkcs11` is a reference-counted handle). It
//! is initialized with `CKF_OS_LOCKING_OK`: the module may use the operating system's
//! threads and locks, since its users run on several threads. Modules are never
//! finalized; they are released when the process exits.
//!
//! If something outside this crate initialized the same module first,
//! `CKR_CRYPTOKI_ALREADY_INITIALIZED` is accepted: the module is ready.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` when it is initialized, so a process sees the token
//! directory named by that variable at its first use of the module.

use core::fmt;
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Mutex, OnceLock, PoisonError},
};

use cryptoki::{
    context::{CInitializeArgs, CInitializeFlags, Pkcs11},
    error::{Error as CkError, RvError},
};

use crate::{Error, Token, TokenList, TokenName, TokenQuery};

static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();

/// A loaded and initialized PKCS#11 module, shared by the whole process.
///
/// Cheap to clone. Errors name the module by the path its caller gave.
#[derive(Clone)]
pub struct Module {
    path: PathBuf,
    canonical: PathBuf,
    ctx: Pkcs11,
}

impl fmt::Debug for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Module")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Module {
    /// The module at `path`, loaded and initialized on the first use in this process and
    /// shared after that (by canonical path).
    ///
    /// # Errors
    /// [`Error::ModuleLoad`] when the file cannot be loaded as a PKCS#11 module;
    /// [`Error::Module`] when `C_Initialize` fails.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let table = MODULES.get_or_init(Mutex::default);
        // The table holds no invariant a panic could break: a poisoned lock is still usable.
        let mut table = table.lock().unwrap_or_else(PoisonError::into_inner);
        // A path that does not resolve is passed on as it is: the loader then says why.
        let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let module = |ctx: Pkcs11| Self {
            path: path.to_path_buf(),
            canonical: canonical.clone(),
            ctx,
        };
        if let Some(ctx) = table.get(&canonical) {
            return Ok(module(ctx.clone()));
        }
        let ctx = Pkcs11::new(&canonical).map_err(|source| Error::ModuleLoad {
            module: path.to_path_buf(),
            source,
        })?;
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(error) => {
                return Err(Error::Module {
                    module: path.to_path_buf(),
                    operation: "C_Initialize",
                    error,
                })
            }
        }
        table.insert(canonical.clone(), ctx.clone());
        Ok(module(ctx))
    }

    /// The module's path, as its caller gave it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The canonical path: the key of the process-wide table.
    pub fn canonical_path(&self) -> &Path {
        &self.canonical
    }

    /// The cryptoki context, for the calls this crate does not wrap.
    pub fn context(&self) -> &Pkcs11 {
        &self.ctx
    }

    fn err(&self, operation: &'static str) -> impl Fn(CkError) -> Error + '_ {
        move |error| Error::Module {
            module: self.path.clone(),
            operation,
            error,
        }
    }

    /// Every initialized token the module shows, in slot order.
    ///
    /// # Errors
    /// [`Error::Module`] when listing the slots or reading a token's information fails.
    pub fn tokens(&self) -> Result<Vec<Token>, Error> {
        let slots = self
            .ctx
            .get_slots_with_token()
            .map_err(self.err("C_GetSlotList"))?;
        let mut tokens = Vec::new();
        for slot in slots {
            let info = self
                .ctx
                .get_token_info(slot)
                .map_err(self.err("C_GetTokenInfo"))?;
            if !info.token_initialized() {
                continue;
            }
            let name = TokenName {
                label: info.label().to_owned(),
                serial: info.serial_number().to_owned(),
            };
            tokens.push(Token::new(self.clone(), slot, name, &info));
        }
        Ok(tokens)
    }

    /// The one initialized token that `wanted` matches: by label and/or serial (and
    /// manufacturer and model when given), never by slot number, which changes when
    /// tokens are added.
    ///
    /// # Errors
    /// [`Error::TokenNotFound`] (listing the tokens present) or [`Error::AmbiguousToken`]
    /// (listing the candidates), each list sorted by label and serial; [`Error::Module`]
    /// when the module cannot list them.
    pub fn find_token(&self, wanted: &TokenQuery) -> Result<Token, Error> {
        let mut tokens = self.tokens()?;
        // Slot order follows the module's own (SoftHSM2: its directory listing); messages
        // list tokens by label and serial, the same way every time.
        tokens.sort_by(|a, b| {
            (&a.name().label, &a.name().serial).cmp(&(&b.name().label, &b.name().serial))
        });
        let present = TokenList(tokens.iter().map(|t| t.name().clone()).collect());
        let mut matches: Vec<Token> = tokens.into_iter().filter(|t| t.matches(wanted)).collect();
        match matches.len() {
            1 => Ok(matches.remove(0)),
            0 => Err(Error::TokenNotFound {
                module: self.path.clone(),
                wanted: wanted.clone(),
                present,
            }),
            _ => Err(Error::AmbiguousToken {
                module: self.path.clone(),
                wanted: wanted.clone(),
                candidates: TokenList(matches.into_iter().map(|t| t.name().clone()).collect()),
            }),
        }
    }
}
