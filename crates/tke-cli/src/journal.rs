//! A ceremony's workstation journal as the [`StepLog`] it records its steps in, for every
//! command with `--resume` (`auto-init`, `auto-mk-rotate`, `cryptounit-mk-rotate`,
//! `auto-recover`): [`JournalLog::start`] before the first change, [`JournalLog::resume`]
//! for the journal an interrupted run left, [`JournalLog::stopped`] for the error of a run
//! that stops, [`JournalLog::finish`] when it ends well; [`where_stopped`],
//! [`not_found`] and [`not_this`] for what a resumed run says of the journal.

use std::sync::Mutex;

use anyhow::{Context as _, Result};
use serde::{de::DeserializeOwned, Serialize};
use tke_ceremony::StepLog;
use tke_proto::BoxError;
use tke_workstation::{FilesDir, Journal};

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
        self.stopped_with(error, None)
    }

    /// [`Self::stopped`], with `advice` on the cause before how to finish.
    pub fn stopped_with(
        &self,
        error: impl Into<anyhow::Error>,
        advice: Option<&str>,
    ) -> anyhow::Error {
        let j = self.lock();
        let finish = format!(
            "The journal {} records where {command} stopped: once the cause is fixed, finish \
             it with `tke {command} --resume` (no zeroize is needed).",
            j.path().display(),
            command = j.command()
        );
        crate::report::Stopped {
            error: error.into(),
            then: match advice {
                Some(a) => format!("{a}\n{finish}"),
                None => finish,
            },
        }
        .into()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Journal<P>> {
        // A poisoned lock only means a panic elsewhere; the journal in it is whole.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Unix seconds as `2026-11-29T10:15:02Z`.
pub fn utc(secs: u64) -> String {
    let millis = i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let text = tke_keystore::Created::from_unix_millis(millis).to_string();
    // Whole seconds: the milliseconds are always `.000`.
    text.strip_suffix(".000Z")
        .map_or(text.clone(), |t| format!("{t}Z"))
}

/// Where the ceremony of `journal` stopped: `auto-mk-rotate of service instance X was
/// interrupted after step key-committed at 2026-11-29T10:15:02Z (journal PATH)`.
pub fn where_stopped<P>(journal: &Journal<P>) -> String {
    let step = match journal.last_step() {
        Some(s) => format!("after step {}", s.step),
        None => "before its first step".to_owned(),
    };
    format!(
        "{} of service instance {} was interrupted {step} at {} (journal {})",
        journal.command(),
        journal.instance(),
        utc(journal.last_moved()),
        journal.path().display()
    )
}

/// Where the ceremony of `journal` stopped, for `--output json`: `{"step", "at"}` (the
/// last step done, or null, and when).
pub fn stopped_json<P>(journal: &Journal<P>) -> serde_json::Value {
    serde_json::json!({
        "step": journal.last_step().map(|s| s.step.clone()),
        "at": utc(journal.last_moved()),
    })
}

/// What a resumed run says when no journal is left: it goes on from what the units (and
/// `also`, e.g. key storage) hold.
pub fn not_found(files: &FilesDir, command: &str, instance: &str, also: &str) -> String {
    format!(
        "No journal of an interrupted {command} of service instance {instance} is in {} (it \
         ran on another workstation, or its journal was removed): resuming from what the \
         crypto units{also} hold.",
        files.path().display()
    )
}

/// The refusal of a journal left by another ceremony than the one the units show (`why`):
/// nothing is changed, and the operator decides what the journal was.
pub fn not_this<P>(journal: &Journal<P>, why: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "the journal {path} is not the journal of this {command}: {why}; no crypto unit was \
         changed\nIf the {command} it records is over or was abandoned, move the journal \
         away (it holds no secret) and rerun `tke {command} --resume`: it then goes on from \
         what the crypto units hold.",
        path = journal.path().display(),
        command = journal.command()
    )
}
