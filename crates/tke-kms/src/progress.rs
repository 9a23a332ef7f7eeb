//! Running a rotation's re-encryption to its end with progress reports: keys done, total
//! and rate, for a progress bar or progress lines (the one re-encryption loop: the
//! rotation ceremonies run it, the CLI shows its reports).

use std::time::{Duration, Instant};

use crate::{KeyService, KmsError, Progress};

/// Where a re-encryption stands, as reported after each step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgressReport {
    /// Records under the new key, and in all.
    pub progress: Progress,
    /// Records moved by this run so far (not those a previous, interrupted run moved).
    pub moved: u64,
    /// Time since this run started.
    pub elapsed: Duration,
}

impl ProgressReport {
    /// Records moved per second by this run (0 before any time has passed).
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.moved as f64 / secs
        } else {
            0.0
        }
    }

    /// Percent done, 0 to 100 (100 for an empty store).
    pub fn percent(&self) -> f64 {
        if self.progress.total == 0 {
            100.0
        } else {
            self.progress.done.min(self.progress.total) as f64 * 100.0 / self.progress.total as f64
        }
    }
}

/// One progress line, for output that is not a terminal:
/// `Re-encrypting key storage: 8192 of 1000000 keys (0.8 %), 41000 keys/s`.
impl core::fmt::Display for ProgressReport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "Re-encrypting key storage: {} of {} keys ({:.1} %), {:.0} keys/s",
            self.progress.done,
            self.progress.total,
            self.percent(),
            self.rate()
        )
    }
}

/// Calls [`KeyService::reencrypt`] with `step` records at a time until none is left
/// under the old key, reporting after each call (and once before the first, with what an
/// interrupted run already did).
///
/// # Errors
/// The first error of [`KeyService::reencrypt`]; what was done until then stays done.
pub fn reencrypt_all(
    kms: &dyn KeyService,
    step: u64,
    report: &mut dyn FnMut(&ProgressReport),
) -> Result<Progress, KmsError> {
    let start = Instant::now();
    let step = step.max(1);
    // A zero-record call says where an interrupted run stopped.
    let first = kms.reencrypt(0)?;
    report(&ProgressReport {
        progress: first,
        moved: 0,
        elapsed: start.elapsed(),
    });
    let mut last = first;
    while last.remaining() > 0 {
        let p = kms.reencrypt(step)?;
        if p.done <= last.done && p.remaining() > 0 {
            // A step that moved nothing while records are left would loop for ever.
            return Err(KmsError::Rotation(format!(
                "re-encryption made no progress at {} of {} keys; run it again",
                p.done, p.total
            )));
        }
        last = p;
        report(&ProgressReport {
            progress: p,
            moved: p.done.saturating_sub(first.done),
            elapsed: start.elapsed(),
        });
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(done: u64, total: u64, moved: u64, secs: u64) -> ProgressReport {
        ProgressReport {
            progress: Progress { done, total },
            moved,
            elapsed: Duration::from_secs(secs),
        }
    }

    #[test]
    fn lines_show_counts_percent_and_rate() {
        let r = report(450, 1000, 400, 2);
        assert_eq!(r.rate(), 200.0);
        assert_eq!(
            r.to_string(),
            "Re-encrypting key storage: 450 of 1000 keys (45.0 %), 200 keys/s"
        );
        assert_eq!(report(0, 0, 0, 0).percent(), 100.0);
        assert_eq!(report(0, 0, 0, 0).rate(), 0.0);
    }
}
