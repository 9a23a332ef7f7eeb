//! A ceremony's workstation journal as the [`StepLog`] it records its steps in, for every
//! command with `--resume` (`auto-init` today; rotation and recovery can adopt it):
//! [`JournalLog::start`] before the first change, [`JournalLog::resume`] for the journal
//! an interrupted run left, [`JournalLog::stopped`] for the error of a run that stops,
//! [`JournalLog::finish`] when it ends well.

use std::sync::Mutex;

use anyhow::{Context as _, Result};
use serde::{de::DeserializeOwned, Serialize};
use tke_ceremony::StepLog;
use tke_proto::BoxError;
use tke_workstation::Journal;

use crate::context::Ctx;

/// A ceremony's journal, recording its steps.
pub struct JournalLog<P>(Mutex<Journal<P>>);

impl<P: Serialize + DeserializeOwned + Send> StepLog for JournalLog<P> {
    fn record(&self, step: &'static str, detail: Option<String>) -> Result<(), BoxError> {
        self.lock()
            .record(step, detail)
            .map_err(|e| Box::new(e) as BoxError)
    }
}

impl<P: Serialize + DeserializeOwned> JournalLog<P> {
    /// Starts the journal of `command` on `instance`, before the ceremony changes anything.
    ///
    /// # Errors
    /// It cannot be written (names the file); nothing was changed.
    pub fn start(ctx: &Ctx, command: &str, instance: &str, params: P) -> Result<Self> {
        let j = Journal::create(&ctx.files, command, instance, params).with_context(|| {
            format!(
                "{command} keeps a journal so that an interrupted run can be finished; no \
                 crypto unit was changed"
            )
        })?;
        Ok(Self(Mutex::new(j)))
    }

    /// Records in the journal an interrupted run left.
    pub fn resume(journal: Journal<P>) -> Self {
        Self(Mutex::new(journal))
    }

    /// The ceremony ended well: the journal is removed.
    ///
    /// # Errors
    /// It cannot be removed (names the file).
    pub fn finish(self) -> Result<()> {
        let j = self.0.into_inner().unwrap_or_else(|p| p.into_inner());
        let (command, path) = (j.command().to_owned(), j.path().to_owned());
        j.finish().with_context(|| {
            format!(
                "{command} is done, but its journal {} cannot be removed: remove it by hand",
                path.display()
            )
        })
    }
}

impl<P> JournalLog<P> {
    /// The error of a run that stopped, then where its journal is and how to finish.
    pub fn stopped(&self, error: impl Into<anyhow::Error>) -> anyhow::Error {
        let j = self.lock();
        crate::report::Stopped {
            error: error.into(),
            then: format!(
                "The journal {} records where {command} stopped: once the cause is fixed, \
                 finish it with `tke {command} --resume` (no zeroize is needed).",
                j.path().display(),
                command = j.command()
            ),
        }
        .into()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Journal<P>> {
        // A poisoned lock only means a panic elsewhere; the journal in it is whole.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
