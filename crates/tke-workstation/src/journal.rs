//! Ceremony journals: one file per running ceremony, so that an interrupted ceremony can
//! be finished (`--resume`) with the parameters it was started with.
//!
//! See [`Journal`].

use std::{fs, io, path::PathBuf};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::{
    atomic,
    created::{create_new, remove_files, safe_stem},
    error::io_err,
    FilesDir, KeyFileError, Result,
};

/// The prefix of every journal file name: `journal-<command>-<instance>.json`.
pub const JOURNAL_PREFIX: &str = "journal-";

/// One completed step of a ceremony.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalStep {
    /// The step's name, as the ceremony names it (e.g. `thresholds-set`).
    pub step: String,
    /// What later steps need to know of it (e.g. a verification pattern in hex); never a
    /// secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Unix time in seconds when the step was recorded (absent in journals written before
    /// steps were timed), so that a resumed run can say when the ceremony stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<u64>,
}

/// The journal file, version 1.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JournalFileV1<P> {
    version: u64,
    command: String,
    instance: String,
    /// Unix time in seconds when the ceremony started.
    started: u64,
    params: P,
    steps: Vec<JournalStep>,
}

/// The journal of one running ceremony.
///
/// A journal records the command, the service instance, the ceremony's parameters (a
/// type of the ceremony's own, e.g. the administrators by SKI and the thresholds) and each
/// step completed, in order. It never holds a secret: passwords, PINs and key values stay
/// out of it. It is written before the ceremony changes any unit, rewritten (atomically,
/// 0600) after each step, and removed when the ceremony ends well; a journal left behind
/// means the ceremony stopped before its end.
///
/// The units stay the truth: a resumed ceremony reads what they hold and uses the journal
/// to know what was asked and to tell whether the units' state is one the ceremony can
/// have left.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use tke_workstation::{FilesDir, Journal};
///
/// #[derive(Serialize, Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct Params {
///     threshold: u8,
/// }
///
/// let tmp = tempfile::tempdir()?;
/// let dir = FilesDir::resolve(Some(tmp.path()))?;
/// let mut j = Journal::create(&dir, "example", "instance-1", Params { threshold: 2 })?;
/// j.record("first-step", None)?;
/// // After a crash, the next run finds it:
/// let j = Journal::<Params>::open(&dir, "example", "instance-1")?.expect("left behind");
/// assert_eq!(j.params().threshold, 2);
/// assert!(j.has("first-step"));
/// j.finish()?; // the ceremony ended well: the file is gone
/// assert!(Journal::<Params>::open(&dir, "example", "instance-1")?.is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Journal<P> {
    path: PathBuf,
    file: JournalFileV1<P>,
}

impl<P> std::fmt::Debug for Journal<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The parameters are left out: their type need not be Debug.
        f.debug_struct("Journal")
            .field("path", &self.path)
            .field("command", &self.file.command)
            .field("instance", &self.file.instance)
            .field("steps", &self.file.steps)
            .finish_non_exhaustive()
    }
}

impl FilesDir {
    /// The path of the journal of `command` on `instance`:
    /// `<dir>/journal-<command>-<instance>.json` (both made safe as a file name).
    pub fn journal_path(&self, command: &str, instance: &str) -> PathBuf {
        self.path().join(format!(
            "{JOURNAL_PREFIX}{}-{}.json",
            safe_stem(command),
            safe_stem(instance)
        ))
    }
}

impl<P: Serialize + DeserializeOwned> Journal<P> {
    /// Starts the journal of `command` on `instance` with its parameters, before the
    /// ceremony changes anything. The file is created new (0600, atomically).
    ///
    /// # Errors
    /// [`KeyFileError::AlreadyExists`] when a journal of the same command and instance is
    /// there (an interrupted ceremony to resume, or one running now);
    /// [`KeyFileError::Io`] when it cannot be written.
    pub fn create(dir: &FilesDir, command: &str, instance: &str, params: P) -> Result<Self> {
        let started = now();
        let journal = Self {
            path: dir.journal_path(command, instance),
            file: JournalFileV1 {
                version: 1,
                command: command.to_owned(),
                instance: instance.to_owned(),
                started,
                params,
                steps: Vec::new(),
            },
        };
        create_new(&journal.path, &journal.bytes()?)?;
        Ok(journal)
    }

    /// The journal of `command` on `instance`, if one was left behind.
    ///
    /// # Errors
    /// [`KeyFileError::Journal`] when the file is not a journal this version writes (bad
    /// JSON, an unknown field, other parameters), [`KeyFileError::JournalVersion`] for
    /// another format version, [`KeyFileError::JournalMismatch`] when it is the journal of
    /// another command or instance; [`KeyFileError::Io`] when it cannot be read.
    pub fn open(dir: &FilesDir, command: &str, instance: &str) -> Result<Option<Self>> {
        let path = dir.journal_path(command, instance);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        // The version first, so that a later format is reported as such and not as
        // whatever field it changed.
        #[derive(Deserialize)]
        struct Version {
            version: u64,
        }
        let version = serde_json::from_slice::<Version>(&bytes)
            .map_err(|source| KeyFileError::Journal {
                path: path.clone(),
                source,
            })?
            .version;
        if version != 1 {
            return Err(KeyFileError::JournalVersion { path, version });
        }
        let file: JournalFileV1<P> =
            serde_json::from_slice(&bytes).map_err(|source| KeyFileError::Journal {
                path: path.clone(),
                source,
            })?;
        for (what, found, asked) in [
            ("command", &file.command, command),
            ("service instance", &file.instance, instance),
        ] {
            if found != asked {
                return Err(KeyFileError::JournalMismatch {
                    path,
                    what,
                    found: found.clone(),
                    expected: asked.to_owned(),
                });
            }
        }
        Ok(Some(Self { path, file }))
    }

    /// Records that `step` is done (with what later steps need to know of it), durably,
    /// before the ceremony goes on.
    ///
    /// # Errors
    /// [`KeyFileError::Io`] when the file cannot be rewritten; it then holds the steps
    /// before.
    pub fn record(&mut self, step: &str, detail: Option<String>) -> Result<()> {
        self.file.steps.push(JournalStep {
            step: step.to_owned(),
            detail,
            at: Some(now()),
        });
        let written = self.bytes().and_then(|b| {
            atomic::write_private(&self.path, &b).map_err(io_err("write", &self.path))
        });
        if written.is_err() {
            self.file.steps.pop();
        }
        written
    }

    /// The journal ends with its ceremony: the file is removed (durably).
    ///
    /// # Errors
    /// [`KeyFileError::Io`] when it cannot be removed.
    pub fn finish(self) -> Result<()> {
        let dir = self
            .path
            .parent()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        remove_files(&dir, &[&self.path])
    }

    fn bytes(&self) -> Result<Vec<u8>> {
        let mut json =
            serde_json::to_vec_pretty(&self.file).map_err(|source| KeyFileError::Journal {
                path: self.path.clone(),
                source,
            })?;
        json.push(b'\n');
        Ok(json)
    }
}

/// Unix time in seconds (0 if the clock is before 1970).
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl<P> Journal<P> {
    /// When the ceremony last moved: the time of its last step, else when it started
    /// (Unix seconds).
    pub fn last_moved(&self) -> u64 {
        self.file
            .steps
            .iter()
            .rev()
            .find_map(|s| s.at)
            .unwrap_or(self.file.started)
    }

    /// The file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The ceremony's parameters.
    pub fn params(&self) -> &P {
        &self.file.params
    }

    /// The command that wrote it.
    pub fn command(&self) -> &str {
        &self.file.command
    }

    /// The service instance.
    pub fn instance(&self) -> &str {
        &self.file.instance
    }

    /// Unix time in seconds when the ceremony started.
    pub fn started(&self) -> u64 {
        self.file.started
    }

    /// The steps done, in order.
    pub fn steps(&self) -> &[JournalStep] {
        &self.file.steps
    }

    /// The last step done, if any.
    pub fn last_step(&self) -> Option<&JournalStep> {
        self.file.steps.last()
    }

    /// Whether `step` is recorded as done.
    pub fn has(&self, step: &str) -> bool {
        self.file.steps.iter().any(|s| s.step == step)
    }

    /// The detail recorded with `step`, if that step is done and has one.
    pub fn detail(&self, step: &str) -> Option<&str> {
        self.file
            .steps
            .iter()
            .find(|s| s.step == step)
            .and_then(|s| s.detail.as_deref())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Params {
        admins: Vec<String>,
        threshold: u8,
    }

    fn params() -> Params {
        Params {
            admins: vec!["ab12".into()],
            threshold: 2,
        }
    }

    fn dir() -> (tempfile::TempDir, FilesDir) {
        let t = tempfile::tempdir().unwrap();
        let d = FilesDir::resolve(Some(t.path())).unwrap();
        (t, d)
    }

    #[test]
    fn steps_survive_a_reopen_and_finish_removes_the_file() {
        let (_t, d) = dir();
        let mut j = Journal::create(&d, "auto-init", "inst/1", params()).unwrap();
        assert_eq!(j.path(), d.path().join("journal-auto-init-inst_1.json"));
        let mode = fs::metadata(j.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        j.record("admins-installed", None).unwrap();
        j.record("key-generated", Some("00ff".into())).unwrap();

        let j = Journal::<Params>::open(&d, "auto-init", "inst/1")
            .unwrap()
            .unwrap();
        assert_eq!(j.params(), &params());
        assert_eq!((j.command(), j.instance()), ("auto-init", "inst/1"));
        assert!(j.has("admins-installed") && !j.has("thresholds-set"));
        assert_eq!(j.detail("key-generated"), Some("00ff"));
        assert_eq!(j.last_step().unwrap().step, "key-generated");
        // Each step carries when it was recorded, for "interrupted after ... at ...".
        assert!(j
            .steps()
            .iter()
            .all(|s| s.at.is_some_and(|t| t >= j.started())));
        assert_eq!(Some(j.last_moved()), j.last_step().unwrap().at);
        let path = j.path().to_owned();
        j.finish().unwrap();
        assert!(!path.exists());
        assert!(Journal::<Params>::open(&d, "auto-init", "inst/1")
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_journal_without_step_times_opens_and_dates_from_its_start() {
        let (_t, d) = dir();
        fs::write(
            d.journal_path("auto-init", "i"),
            br#"{"version":1,"command":"auto-init","instance":"i","started":7,"params":{"admins":[],"threshold":2},"steps":[{"step":"a"}]}"#,
        )
        .unwrap();
        let j = Journal::<Params>::open(&d, "auto-init", "i")
            .unwrap()
            .unwrap();
        assert_eq!(j.steps()[0].at, None);
        assert_eq!(j.last_moved(), 7);
    }

    #[test]
    fn a_second_journal_of_the_same_ceremony_is_refused() {
        let (_t, d) = dir();
        Journal::create(&d, "auto-init", "i", params()).unwrap();
        let err = Journal::create(&d, "auto-init", "i", params()).unwrap_err();
        assert!(matches!(err, KeyFileError::AlreadyExists { .. }), "{err:?}");
        // Another instance has its own.
        Journal::create(&d, "auto-init", "j", params()).unwrap();
    }

    #[test]
    fn a_corrupt_journal_names_the_file_and_is_left_in_place() {
        let (_t, d) = dir();
        let path = d.journal_path("auto-init", "i");
        for (bytes, want) in [
            (&b"{not json"[..], "Journal"),
            (br#"{"version":2}"#, "JournalVersion"),
            (
                br#"{"version":1,"command":"auto-init","instance":"i","started":0,"params":{"admins":[],"threshold":2,"extra":1},"steps":[]}"#,
                "Journal",
            ),
            (
                br#"{"version":1,"command":"auto-init","instance":"other","started":0,"params":{"admins":[],"threshold":2},"steps":[]}"#,
                "JournalMismatch",
            ),
        ] {
            fs::write(&path, bytes).unwrap();
            let err = Journal::<Params>::open(&d, "auto-init", "i").unwrap_err();
            let kind = match &err {
                KeyFileError::Journal { .. } => "Journal",
                KeyFileError::JournalVersion { version: 2, .. } => "JournalVersion",
                KeyFileError::JournalMismatch {
                    what: "service instance",
                    ..
                } => "JournalMismatch",
                other => panic!("{other:?}"),
            };
            assert_eq!(kind, want, "{err}");
            assert!(err.to_string().contains(&path.display().to_string()), "{err}");
            assert_eq!(fs::read(&path).unwrap(), bytes, "the file is left as it was");
        }
    }
}
