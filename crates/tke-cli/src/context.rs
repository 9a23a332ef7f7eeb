//! What every command needs: the workstation directory, output format, secrets, prompts,
//! and the fleet of crypto units.

use std::sync::Arc;

use anyhow::{Context as _, Result};
use tke_client::{Client, EmbeddedFleet, FleetSpec, KnownUnit, Transport};
use tke_keyfile::{FilesDir, Password, SigKeyEntry};
use tke_sigkey_file::FileSigner;

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
    /// embedded fleet, creating the default one on first use (with a notice on standard
    /// error).
    pub fn connect(&self) -> Result<Fleet> {
        let (targets, _) = crate::targets::active(&self.files)?;
        if !targets.is_empty() {
            return crate::targets::connect(&targets);
        }
        let dir = self.files.local_dir();
        let fleet = if EmbeddedFleet::exists(&dir) {
            EmbeddedFleet::open(&dir)?
        } else {
            let spec = FleetSpec::default();
            let f = EmbeddedFleet::create(&dir, spec)?;
            eprintln!(
                "Created the default embedded fleet ({} instance: {} operational + {} recovery crypto units) in {}",
                spec.instances,
                spec.operational,
                spec.recovery,
                dir.display()
            );
            f
        };
        let ca = fleet.ca().clone();
        let transport: Arc<dyn Transport> = Arc::new(fleet);
        let client = Client::connect(vec![(transport, ca)])?;
        Ok(Fleet { client })
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

    /// Opens a signature key file, asking again (up to three times) after a wrong
    /// password on a terminal.
    pub fn open_key(&self, entry: &SigKeyEntry) -> Result<FileSigner> {
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
                    println!("{e}\n");
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
