//! The workstation directory (`CLOUDTKEFILES`).

use std::{
    ffi::OsString,
    fmt, fs,
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use crate::{atomic, KeyFileError, Result};

/// Where the workstation directory's path came from. Errors show it, so that a user sees
/// which setting to fix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DirOrigin {
    /// Given explicitly by the caller (the CLI's `--files-dir`).
    Explicit,
    /// The `CLOUDTKEFILES` environment variable.
    Env,
    /// The per-user default: `$XDG_DATA_HOME/tke`, else `$HOME/.local/share/tke`.
    Default,
}

impl fmt::Display for DirOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Explicit => "given explicitly",
            Self::Env => "from CLOUDTKEFILES",
            Self::Default => "the per-user default",
        })
    }
}

/// The workstation directory that holds every TKE file: signature keys, selections and
/// the embedded fleet (in [`FilesDir::local_dir`]).
///
/// A `FilesDir` exists only for a directory that exists and is writable; get one with
/// [`FilesDir::resolve`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilesDir {
    path: PathBuf,
    origin: DirOrigin,
}

impl FilesDir {
    /// The environment variable that names the directory.
    pub const ENV: &'static str = "CLOUDTKEFILES";

    /// Finds the workstation directory: `explicit` if given, else `$CLOUDTKEFILES`, else
    /// `$XDG_DATA_HOME/tke`, else `$HOME/.local/share/tke`. An empty `CLOUDTKEFILES` is
    /// an error (falling back to the default would silently pick another fleet); other
    /// empty variables count as unset; a relative `XDG_DATA_HOME` is ignored, as the XDG specification says. The directory
    /// is created with mode 0700 if missing (existing directories keep their mode).
    ///
    /// # Errors
    /// [`KeyFileError::NoDirectory`] when nothing names a directory;
    /// [`KeyFileError::EmptyEnv`] when `CLOUDTKEFILES` is set but empty;
    /// [`KeyFileError::NotADirectory`] when the path exists and is not a directory;
    /// [`KeyFileError::CreateDir`] when it cannot be created;
    /// [`KeyFileError::NotWritable`] when no file can be created in it.
    pub fn resolve(explicit: Option<&Path>) -> Result<Self> {
        Self::resolve_with_env(explicit, |name| std::env::var_os(name))
    }

    /// As [`FilesDir::resolve`], reading environment variables through `env` instead of
    /// the process environment (for tests and embedders).
    ///
    /// # Errors
    /// As [`FilesDir::resolve`].
    pub fn resolve_with_env(
        explicit: Option<&Path>,
        env: impl Fn(&str) -> Option<OsString>,
    ) -> Result<Self> {
        let set = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let (path, origin) = if let Some(p) = explicit {
            (p.to_path_buf(), DirOrigin::Explicit)
        } else if env(Self::ENV).is_some_and(|v| v.is_empty()) {
            return Err(KeyFileError::EmptyEnv);
        } else if let Some(p) = set(Self::ENV) {
            (p, DirOrigin::Env)
        } else if let Some(p) = set("XDG_DATA_HOME").filter(|p| p.is_absolute()) {
            (p.join("tke"), DirOrigin::Default)
        } else if let Some(p) = set("HOME") {
            (p.join(".local/share/tke"), DirOrigin::Default)
        } else {
            return Err(KeyFileError::NoDirectory);
        };
        Self::open(path, origin)
    }

    fn open(path: PathBuf, origin: DirOrigin) -> Result<Self> {
        // An absolute path makes every error message unambiguous.
        let path = std::path::absolute(&path).unwrap_or(path);
        match fs::metadata(&path) {
            Ok(m) if !m.is_dir() => return Err(KeyFileError::NotADirectory { path, origin }),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                atomic::create_private_dir(&path).map_err(|source| KeyFileError::CreateDir {
                    path: path.clone(),
                    origin,
                    source,
                })?;
            }
            Err(source) => {
                return Err(KeyFileError::CreateDir {
                    path,
                    origin,
                    source,
                })
            }
        }
        probe_writable(&path).map_err(|source| KeyFileError::NotWritable {
            path: path.clone(),
            origin,
            source,
        })?;
        Ok(Self { path, origin })
    }

    /// The directory (absolute).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the path came from.
    pub fn origin(&self) -> DirOrigin {
        self.origin
    }

    /// `<dir>/local`, where the embedded fleet of crypto units keeps its state. Not
    /// created here: the fleet creates it when it first starts.
    pub fn local_dir(&self) -> PathBuf {
        self.path.join("local")
    }
}

/// Proves that a file can be created in `dir`: creates a hidden probe file, then removes it.
fn probe_writable(dir: &Path) -> io::Result<()> {
    let mut rnd = [0u8; 6];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut rnd);
    let probe = dir.join(format!(
        ".tke-write-probe-{}",
        rnd.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&probe)?;
    let written = f.write_all(b"probe");
    drop(f);
    let removed = fs::remove_file(&probe);
    written.and(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{collections::HashMap, os::unix::fs::PermissionsExt};

    fn env_of(vars: &[(&str, &Path)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_os_str().to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn explicit_wins_over_cloudtkefiles() {
        let d = tempfile::tempdir().unwrap();
        let explicit = d.path().join("explicit");
        let env = d.path().join("env");
        let dir = FilesDir::resolve_with_env(Some(&explicit), env_of(&[("CLOUDTKEFILES", &env)]))
            .unwrap();
        assert_eq!(dir.path(), explicit);
        assert_eq!(dir.origin(), DirOrigin::Explicit);
        assert!(!env.exists());
    }

    #[test]
    fn cloudtkefiles_wins_over_the_default() {
        let d = tempfile::tempdir().unwrap();
        let env = d.path().join("env");
        let home = d.path().join("home");
        let dir =
            FilesDir::resolve_with_env(None, env_of(&[("CLOUDTKEFILES", &env), ("HOME", &home)]))
                .unwrap();
        assert_eq!(dir.path(), env);
        assert_eq!(dir.origin(), DirOrigin::Env);
        assert!(!home.exists());
    }

    #[test]
    fn default_is_xdg_data_home_then_home() {
        let d = tempfile::tempdir().unwrap();
        let xdg = d.path().join("xdg");
        let home = d.path().join("home");
        let dir =
            FilesDir::resolve_with_env(None, env_of(&[("XDG_DATA_HOME", &xdg), ("HOME", &home)]))
                .unwrap();
        assert_eq!(dir.path(), xdg.join("tke"));
        assert_eq!(dir.origin(), DirOrigin::Default);

        let dir = FilesDir::resolve_with_env(None, env_of(&[("HOME", &home)])).unwrap();
        assert_eq!(dir.path(), home.join(".local/share/tke"));
        // A relative XDG_DATA_HOME is ignored.
        let dir = FilesDir::resolve_with_env(
            None,
            env_of(&[("XDG_DATA_HOME", Path::new("rel")), ("HOME", &home)]),
        )
        .unwrap();
        assert_eq!(dir.path(), home.join(".local/share/tke"));
    }

    #[test]
    fn empty_cloudtkefiles_is_an_error_not_the_default() {
        let d = tempfile::tempdir().unwrap();
        let home = d.path().join("home");
        let err = FilesDir::resolve_with_env(
            None,
            env_of(&[("CLOUDTKEFILES", Path::new("")), ("HOME", &home)]),
        )
        .unwrap_err();
        assert!(matches!(err, KeyFileError::EmptyEnv), "{err:?}");
        assert!(!home.exists(), "the default directory must not be created");
    }

    #[test]
    fn nothing_set_is_an_error() {
        let err = FilesDir::resolve_with_env(None, |_| None).unwrap_err();
        assert!(matches!(err, KeyFileError::NoDirectory), "{err:?}");
        assert!(err.to_string().contains("CLOUDTKEFILES"));
    }

    #[test]
    fn missing_directory_is_created_0700() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b/tke");
        let dir = FilesDir::resolve(Some(&p)).unwrap();
        assert!(p.is_dir());
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(dir.local_dir(), p.join("local"));
        // The write probe leaves nothing behind.
        assert_eq!(fs::read_dir(&p).unwrap().count(), 0);
    }

    #[test]
    fn a_regular_file_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("file");
        fs::write(&p, b"x").unwrap();
        let err = FilesDir::resolve(Some(&p)).unwrap_err();
        assert!(
            matches!(err, KeyFileError::NotADirectory { ref path, origin: DirOrigin::Explicit } if path == &p),
            "{err:?}"
        );
        assert!(err.to_string().contains(&p.display().to_string()));
        assert_eq!(fs::read(&p).unwrap(), b"x");
    }

    #[test]
    fn an_unwritable_directory_is_refused() {
        // /proc refuses new files even to root, so this holds whoever runs the test.
        let err = FilesDir::resolve(Some(Path::new("/proc"))).unwrap_err();
        assert!(matches!(err, KeyFileError::NotWritable { .. }), "{err:?}");
        assert!(err.to_string().contains("/proc"));
    }
}
