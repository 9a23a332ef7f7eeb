//! What every command needs: the workstation directory, output format, secrets, prompts,
//! and the fleet of crypto units.

use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use tke_client::{Client, EmbeddedFleet, KnownUnit, Transport};
use tke_sigkey::Signer;
use tke_sigkey_file::FileSigner;
use tke_sigkey_pkcs11::{tke_pkcs11, Pin, Pkcs11Error, Pkcs11Signer, Pkcs11Uri};
use tke_workstation::{FilesDir, Password, SigKeyEntry, SigKeyKind};

use crate::{prompt::Prompter, secrets::Secrets};

/// Shared state of one `tke` invocation.
pub struct Ctx {
    /// The workstation directory (`--files-dir`, `$CLOUDTKEFILES`, or the default).
    pub files: FilesDir,
    /// `--output json`.
    pub json: bool,
    /// `--secrets FILE`.
    pub secrets: Option<Secrets>,
    /// Terminal prompts.
    pub prompt: Prompter,
}

/// A connected fleet.
pub struct Fleet {
    /// The client over every transport.
    pub client: Client,
}

impl Ctx {
    /// Connects a client to the targets (`tke target add`, or `TKE_TARGETS`): the units of
    /// every tke-unitd server, numbered over all of them. With no target, opens the
    /// embedded fleet, which `tke local init` made (a missing one is an error, never
    /// created implicitly).
    pub fn connect(&self) -> Result<Fleet> {
        let (targets, _) = crate::targets::active(&self.files)?;
        if !targets.is_empty() {
            return crate::targets::connect(&targets);
        }
        // Never created here, only by `tke local init`: a mistyped CLOUDTKEFILES would
        // otherwise make a new fleet and run ceremonies on it instead of the real one.
        let fleet = EmbeddedFleet::open(&self.files.local_dir())?;
        let ca = fleet.ca().clone();
        let transport: Arc<dyn Transport> = Arc::new(fleet);
        let client = Client::connect(vec![(transport, ca)])?;
        Ok(Fleet { client })
    }

    /// As [`Ctx::connect`], for commands that only read: targets that cannot be reached
    /// are left out and returned with their errors, by name.
    pub fn connect_reachable(&self) -> Result<(Fleet, Vec<(String, anyhow::Error)>)> {
        let (targets, _) = crate::targets::active(&self.files)?;
        if !targets.is_empty() {
            return crate::targets::connect_reachable(&targets);
        }
        Ok((self.connect()?, Vec::new()))
    }

    /// The selected units (persisted in the workstation directory), in number order.
    pub fn selected<'f>(&self, fleet: &'f Fleet) -> Result<Vec<&'f KnownUnit>> {
        let sel = self.files.load_selection()?;
        Ok(fleet
            .client
            .units()
            .iter()
            .filter(|u| sel.units.contains(&u.id().uuid()))
            .collect())
    }

    /// Records which units are selected.
    pub fn save_selected(&self, units: &[&KnownUnit]) -> Result<()> {
        let mut sel = self.files.load_selection()?;
        sel.units = units.iter().map(|u| u.id().uuid()).collect();
        self.files.save_selection(&sel)?;
        Ok(())
    }

    /// The password of a signature key: from `--secrets`, else a hidden prompt.
    pub fn key_password(&self, name: &str, ski_short: &str) -> Result<Password> {
        if let Some(p) = self.secrets.as_ref().and_then(|s| s.get(name)) {
            return Ok(p.clone());
        }
        self.prompt.password(
            &format!(
                "Enter the password for the signature key identified by:\n{name} ({ski_short})"
            ),
            &format!("--secrets FILE (a line `{name} = \"...\"`)"),
        )
    }

    /// Opens any listed signature key, wherever it is: a key file with its password, a key
    /// on a PKCS#11 token with the token's PIN, a key on a YubiKey with its PIN (each from
    /// `--secrets`, else a hidden prompt; a PKCS#11 PIN also from the URI's `pin-source`).
    pub fn open_signer(&self, entry: &SigKeyEntry) -> Result<Box<dyn Signer>> {
        match entry.kind {
            SigKeyKind::File => Ok(Box::new(self.open_file_key(entry)?)),
            SigKeyKind::Pkcs11 => Ok(Box::new(self.open_token_key(entry)?)),
            SigKeyKind::YubiKey(r) => Ok(Box::new(crate::yubikey::open(self, entry, &r)?)),
            other => bail!(
                "the signature key of {} is a {} key, which this version of tke cannot open",
                entry.name,
                other.label()
            ),
        }
    }

    /// The user PIN of the token holding the key of administrator `name`: from
    /// `--secrets` (by administrator name), else the URI's `pin-source` file, else a
    /// hidden prompt that names the token and the key. Says whether it was asked for.
    pub fn token_pin(&self, name: &str, uri: &Pkcs11Uri) -> Result<(Pin, bool)> {
        if let Some(p) = self.secrets.as_ref().and_then(|s| s.get(name)) {
            return Ok((Pin::new(p.expose_secret()), false));
        }
        if let Some(path) = uri.pin_source() {
            let pin = Pin::from_file(path)
                .with_context(|| format!("cannot read the PIN for the signature key of {name}"))?;
            return Ok((pin, false));
        }
        let pw = self.prompt.password(
            &format!(
                "Enter the user PIN of PKCS#11 {} for the signature key of {name} ({}):",
                uri.token_description(),
                uri.key_description()
            ),
            &format!("--secrets FILE (a line `{name} = \"PIN\"`) or pin-source=file:PATH in the key's URI"),
        )?;
        Ok((Pin::new(pw.expose_secret()), true))
    }

    /// Opens a signature key on a PKCS#11 token, asking again (up to three times) after a
    /// wrong PIN typed on a terminal.
    pub fn open_token_key(&self, entry: &SigKeyEntry) -> Result<Pkcs11Signer> {
        let name = entry.name.as_str();
        let text = entry.token_uri.as_deref().unwrap_or_default();
        let uri = Pkcs11Uri::parse(text).with_context(|| {
            format!(
                "the reference file {} of the signature key of {name} holds an invalid PKCS#11 URI",
                entry.key_path.display()
            )
        })?;
        let mut tries = 0;
        loop {
            let (pin, asked) = self.token_pin(name, &uri)?;
            match Pkcs11Signer::open(&uri, &entry.certificate, &pin) {
                Ok(s) => return Ok(s),
                Err(e @ Pkcs11Error::Pkcs11(tke_pkcs11::Error::WrongPin { .. }))
                    if asked && tries < 2 =>
                {
                    println!("{e}\n");
                    tries += 1;
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("cannot open the signature key of {name} on its PKCS#11 token")
                    })
                }
            }
        }
    }

    /// Opens a signature key file, asking again (up to three times) after a wrong
    /// password on a terminal.
    pub fn open_file_key(&self, entry: &SigKeyEntry) -> Result<FileSigner> {
        let name = entry.name.as_str();
        let mut tries = 0;
        loop {
            let pw = self.key_password(name, &entry.ski.short())?;
            match FileSigner::open(entry, &pw) {
                Ok(s) => return Ok(s),
                Err(e)
                    if self.prompt.interactive()
                        && tries < 2
                        && self.secrets.as_ref().and_then(|s| s.get(name)).is_none() =>
                {
                    println!("{}\n", tke_proto::ErrorChain(&e));
                    tries += 1;
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot open the signature key of {name}"))
                }
            }
        }
    }
}
