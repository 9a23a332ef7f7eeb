//! Loading PKCS#11 modules, finding tokens by label, reading PIN files and logging in.
//!
//! `C_Initialize` is per process, so a loaded module is process-wide state: every backend
//! of a process that names the same module (by canonical path) shares one [`Pkcs11`]
//! context, kept in [`MODULES`] for the life of the process and never finalized. A module
//! that another component of the process initialized first (`CKR_CRYPTOKI_ALREADY_INITIALIZED`)
//! is used as it is.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Mutex,
};

use cryptoki::{
    context::{CInitializeArgs, CInitializeFlags, Pkcs11},
    error::{Error as CkError, RvError},
    session::{Session, UserType},
    slot::Slot,
    types::AuthPin,
};
use zeroize::Zeroizing;

use super::{Capabilities, TokenRef};
use crate::backend::BackendError;

/// A loaded module and what its tokens were found to compute.
struct Module {
    path: PathBuf,
    ctx: Pkcs11,
    /// Capabilities by token serial number (probed once per process).
    probed: Vec<(String, Capabilities)>,
}

/// Every module this process loaded, by canonical path.
static MODULES: Mutex<Vec<Module>> = Mutex::new(Vec::new());

fn modules() -> std::sync::MutexGuard<'static, Vec<Module>> {
    MODULES.lock().unwrap_or_else(|p| p.into_inner())
}

/// The context of the module of `token`, loading and initializing it on first use.
pub(crate) fn context(token: &TokenRef) -> Result<Pkcs11, BackendError> {
    let path = token.module();
    let canonical = fs::canonicalize(path).map_err(|source| BackendError::Pkcs11ModuleMissing {
        token: token.clone(),
        source,
    })?;
    let mut all = modules();
    if let Some(m) = all.iter().find(|m| m.path == canonical) {
        return Ok(m.ctx.clone());
    }
    let load_err = |source| BackendError::Pkcs11Module {
        token: token.clone(),
        source,
    };
    let ctx = Pkcs11::new(&canonical).map_err(load_err)?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(load_err(e)),
    }
    all.push(Module {
        path: canonical,
        ctx: ctx.clone(),
        probed: Vec::new(),
    });
    Ok(ctx)
}

/// The capabilities probed earlier for the token with this serial, if any.
pub(crate) fn probed(ctx_path: &Path, serial: &str) -> Option<Capabilities> {
    let canonical = fs::canonicalize(ctx_path).ok()?;
    modules()
        .iter()
        .find(|m| m.path == canonical)?
        .probed
        .iter()
        .find(|(s, _)| s == serial)
        .map(|(_, c)| *c)
}

/// Remembers the capabilities of the token with this serial.
pub(crate) fn remember(ctx_path: &Path, serial: &str, caps: Capabilities) {
    let Ok(canonical) = fs::canonicalize(ctx_path) else {
        return;
    };
    if let Some(m) = modules().iter_mut().find(|m| m.path == canonical) {
        m.probed.retain(|(s, _)| s != serial);
        m.probed.push((serial.to_owned(), caps));
    }
}

/// The slot of the one initialized token labelled `token.label`, and its serial number.
pub(crate) fn find_slot(ctx: &Pkcs11, token: &TokenRef) -> Result<(Slot, String), BackendError> {
    let op = |action, source| BackendError::Token {
        token: token.clone(),
        action,
        source,
    };
    let slots = ctx
        .get_slots_with_token()
        .map_err(|e| op("list the slots", e))?;
    let mut present = Vec::new();
    let mut found = Vec::new();
    for slot in slots {
        let info = ctx
            .get_token_info(slot)
            .map_err(|e| op("read a token's information", e))?;
        if !info.token_initialized() {
            continue;
        }
        let label = info.label().trim_end().to_owned();
        if label == token.label() {
            found.push((slot, info.serial_number().trim_end().to_owned()));
        }
        present.push(label);
    }
    match found.len() {
        0 => Err(BackendError::TokenNotFound {
            token: token.clone(),
            present,
        }),
        1 => Ok(found.remove(0)),
        count => Err(BackendError::TokenAmbiguous {
            token: token.clone(),
            count,
        }),
    }
}

/// Reads the user PIN from `path`: one line (a final newline is ignored), not empty, in
/// a file no other user can read.
pub(crate) fn read_pin(path: &Path, token: &TokenRef) -> Result<AuthPin, BackendError> {
    let bad = |problem| BackendError::PinFile {
        path: path.to_owned(),
        token: token.clone(),
        problem,
    };
    let io = |source| BackendError::PinFileIo {
        path: path.to_owned(),
        token: token.clone(),
        source,
    };
    let meta = fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(bad("is not a regular file"));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(bad(
            "can be read or written by other users: make it mode 0600 (chmod 600)",
        ));
    }
    let bytes = Zeroizing::new(fs::read(path).map_err(io)?);
    let text = std::str::from_utf8(&bytes).map_err(|_| bad("is not UTF-8 text"))?;
    let pin = text
        .strip_suffix('\n')
        .map_or(text, |t| t.strip_suffix('\r').unwrap_or(t));
    if pin.is_empty() {
        return Err(bad("is empty"));
    }
    if pin.contains(['\n', '\r']) {
        return Err(bad("holds more than one line"));
    }
    Ok(AuthPin::from(pin.to_owned()))
}

/// Opens a read-write session on `slot` and logs the user in with the PIN of `pin_file`.
///
/// Login is per application and token: if another session of this process is already
/// logged in to the token, the token answers `CKR_USER_ALREADY_LOGGED_IN` without
/// checking the PIN, and the new session shares that login. No session ever logs out:
/// closing the last session of a token ends the login.
pub(crate) fn login(
    ctx: &Pkcs11,
    slot: Slot,
    pin_file: &Path,
    token: &TokenRef,
) -> Result<Session, BackendError> {
    let pin = read_pin(pin_file, token)?;
    let session = ctx
        .open_rw_session(slot)
        .map_err(|source| BackendError::Token {
            token: token.clone(),
            action: "open a session",
            source,
        })?;
    let refused = |problem| BackendError::PinRefused {
        path: pin_file.to_owned(),
        token: token.clone(),
        problem,
    };
    match session.login(UserType::User, Some(&pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
        Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinLenRange, _)) => {
            let info = ctx.get_token_info(slot).ok();
            Err(refused(match info {
                Some(i) if i.user_pin_locked() => {
                    "the PIN is incorrect, and the token has now locked the user PIN"
                }
                Some(i) if i.user_pin_final_try() => {
                    "the PIN is incorrect; the next wrong PIN locks the token"
                }
                Some(i) if i.user_pin_count_low() => {
                    "the PIN is incorrect; the token reports that few tries are left"
                }
                _ => "the PIN is incorrect",
            }))
        }
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(refused(
            "the user PIN is locked: the security officer must reset it",
        )),
        Err(CkError::Pkcs11(RvError::UserPinNotInitialized, _)) => {
            Err(refused("the token's user PIN was never set (C_InitPIN)"))
        }
        Err(source) => Err(BackendError::Token {
            token: token.clone(),
            action: "log in",
            source,
        }),
    }
}
