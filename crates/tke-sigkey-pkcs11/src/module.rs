//! The process-wide table of loaded PKCS#11 modules.
//!
//! A PKCS#11 module is initialized once per process (`C_Initialize`); a second
//! `C_Initialize` fails with `CKR_CRYPTOKI_ALREADY_INITIALIZED`, and `C_Finalize` would
//! close every session of every user of the module. So each module is loaded and
//! initialized the first time a signer needs it, kept in one table keyed by its
//! canonical path, and shared by every signer (cryptoki's `Pkcs11` is a reference-counted
//! handle). It is initialized with `CKF_OS_LOCKING_OK`: the module may use the
//! operating system's threads and locks, since signers are used from several threads.
//! Modules are never finalized; they are released when the process exits.
//!
//! If another part of the process initialized the same module first (another crate
//! using cryptoki), `CKR_CRYPTOKI_ALREADY_INITIALIZED` is accepted: the module is ready.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` when it is initialized, so a process sees the token
//! directory named by that variable at its first use of the module.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Mutex, OnceLock, PoisonError},
};

use cryptoki::{
    context::{CInitializeArgs, CInitializeFlags, Pkcs11},
    error::{Error as CkError, RvError},
};

use crate::Pkcs11Error;

static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();

/// The initialized module at `path`, loading and initializing it on first use.
pub(crate) fn context(path: &Path) -> Result<Pkcs11, Pkcs11Error> {
    let table = MODULES.get_or_init(Mutex::default);
    // The table holds no invariant a panic could break: a poisoned lock is still usable.
    let mut table = table.lock().unwrap_or_else(PoisonError::into_inner);
    let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    if let Some(ctx) = table.get(&key) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(&key).map_err(|source| Pkcs11Error::ModuleLoad {
        module: path.to_path_buf(),
        source,
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(source) => {
            return Err(Pkcs11Error::Module {
                module: path.to_path_buf(),
                operation: "C_Initialize",
                source,
            })
        }
    }
    table.insert(key, ctx.clone());
    Ok(ctx)
}
