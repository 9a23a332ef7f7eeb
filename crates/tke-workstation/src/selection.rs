//! Selections that persist between commands: the selected crypto units and the selected
//! signature keys, in `selection.json`.

use std::{fs, io, path::PathBuf};

use serde::{Deserialize, Serialize};
use tke_proto::Ski;

use crate::{atomic, error::io_err, FilesDir, KeyFileError, Result};

/// The file name of the selection in the workstation directory.
pub const SELECTION_FILE: &str = "selection.json";

/// What the operator selected: the crypto units that commands address (`cryptounit-add`)
/// and the signature keys that may sign (`sigkey-sel`). Passwords are never stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// The selected crypto units, as UUIDs, in selection order.
    pub units: Vec<String>,
    /// The SKIs of the selected signature keys, in selection order.
    pub sigkeys: Vec<Ski>,
}

/// `selection.json`, version 1.
#[derive(Serialize, Deserialize)]
struct SelectionFileV1 {
    version: u64,
    #[serde(default)]
    units: Vec<String>,
    #[serde(default)]
    sigkeys: Vec<String>,
}

impl FilesDir {
    /// The path of the selection file.
    pub fn selection_path(&self) -> PathBuf {
        self.path().join(SELECTION_FILE)
    }

    /// Loads the selection. A missing file is an empty selection.
    ///
    /// # Errors
    /// [`KeyFileError::SelectionJson`], [`KeyFileError::SelectionVersion`] or
    /// [`KeyFileError::SelectionSki`] for a corrupt file; [`KeyFileError::Io`] when it
    /// cannot be read.
    pub fn load_selection(&self) -> Result<Selection> {
        let path = self.selection_path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Selection::default()),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        let file: SelectionFileV1 =
            serde_json::from_slice(&bytes).map_err(|source| KeyFileError::SelectionJson {
                path: path.clone(),
                source,
            })?;
        if file.version != 1 {
            return Err(KeyFileError::SelectionVersion {
                path,
                version: file.version,
            });
        }
        let sigkeys = file
            .sigkeys
            .iter()
            .enumerate()
            .map(|(index, s)| {
                Ski::from_hex(s).map_err(|_| KeyFileError::SelectionSki {
                    path: path.clone(),
                    index,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Selection {
            units: file.units,
            sigkeys,
        })
    }

    /// Saves the selection atomically (mode 0600), replacing the previous one.
    ///
    /// # Errors
    /// [`KeyFileError::Io`] when it cannot be written; the previous file is then unchanged.
    pub fn save_selection(&self, selection: &Selection) -> Result<()> {
        let path = self.selection_path();
        let file = SelectionFileV1 {
            version: 1,
            units: selection.units.clone(),
            sigkeys: selection.sigkeys.iter().map(Ski::to_hex).collect(),
        };
        let mut json =
            serde_json::to_vec_pretty(&file).map_err(|source| KeyFileError::SelectionJson {
                path: path.clone(),
                source,
            })?;
        json.push(b'\n');
        atomic::write_private(&path, &json).map_err(io_err("write", &path))
    }
}
