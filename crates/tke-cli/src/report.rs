//! How `tke` reports a failure: the error and its causes, each printed once, then what
//! the operator can do about it (the CLI's advice, see the README's "Errors").

use tke_ceremony::{CeremonyError, Problem};
use tke_client::ClientError;
use tke_proto::ErrorChain;
use tke_workstation::{FilesDir, KeyFileError};

use crate::targets;

/// An error and its causes on one line (`error: cause: cause`), each cause once.
pub fn chain(err: &anyhow::Error) -> String {
    ErrorChain(err.as_ref()).to_string()
}

/// Lists the files a listing could not read — under `heading` on standard output, or
/// each on standard error with `--output json` — and fails with `advice`, so that a
/// script notices before a ceremony needs them. Nothing to list is success.
pub fn damaged_files(
    json: bool,
    heading: &str,
    problems: &[KeyFileError],
    advice: &'static str,
) -> anyhow::Result<()> {
    if problems.is_empty() {
        return Ok(());
    }
    if !json {
        println!("\n{heading}:");
    }
    for p in problems {
        let line = format!("  {}", ErrorChain(p));
        if json {
            eprintln!("Damaged:{line}");
        } else {
            println!("{line}");
        }
    }
    anyhow::bail!(advice)
}

/// What `tke` prints after `FAILED`: a network failure in the vendor's style, any other
/// error as its chain; then the advice for the errors the CLI knows what to do about.
pub fn failure(err: &anyhow::Error, files: Option<&FilesDir>) -> String {
    if let Some(s) = err.downcast_ref::<Stopped>() {
        return format!("{}\n{}", failure(&s.error, files), s.then);
    }
    let mut text = not_in_imprint_mode(err)
        .or_else(|| targets::explain(err, files))
        .unwrap_or_else(|| chain(err));
    for line in advice(err) {
        text.push('\n');
        text.push_str(line);
    }
    text
}

/// A ceremony that stopped part-way, and what to do once its cause is fixed (printed
/// after the error and the advice for it, e.g. "finish it with `--resume`").
#[derive(Debug)]
pub struct Stopped {
    /// Why it stopped.
    pub error: anyhow::Error,
    /// What to do then.
    pub then: String,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\n{}", chain(&self.error), self.then)
    }
}

impl std::error::Error for Stopped {}

/// Advice that names `tke` commands or flags: the libraries' messages do not, since they
/// do not know which program uses them.
fn advice(err: &anyhow::Error) -> Vec<&'static str> {
    let mut lines = Vec::new();
    for cause in err.chain() {
        if let Some(KeyFileError::NoDirectory) = cause.downcast_ref() {
            lines.push("Give the directory with --files-dir, or set CLOUDTKEFILES or HOME.");
        }
        if let Some(KeyFileError::EmptyEnv) = cause.downcast_ref() {
            lines.push(
                "Set CLOUDTKEFILES to your directory, give --files-dir, or unset CLOUDTKEFILES \
                 to use the per-user default.",
            );
        }
        if let Some(ClientError::FleetMissing { .. }) = cause.downcast_ref() {
            lines.push("Create one with `tke local init`.");
        }
        if let Some(e) = cause.downcast_ref() {
            lines.extend(crate::keyparts::advice(e));
        }
    }
    lines
}

/// A ceremony that failed on some units after it changed others: how many failed, what
/// became of the others, where to look, and each failure with its causes.
pub fn failed_on_some(
    what: &str,
    others: &str,
    check: &str,
    failures: &[(usize, ClientError)],
) -> anyhow::Error {
    anyhow::anyhow!(
        "{what} failed on {} crypto unit(s); {others}. Check with {check}:\n{}",
        failures.len(),
        failures
            .iter()
            .map(|(num, e)| format!("  - crypto unit {num}: {}", ErrorChain(e)))
            .collect::<Vec<_>>()
            .join("\n")
    )
}

/// `auto-init` refused because units are not in imprint mode: one message for the
/// instance naming the units by CRYPTO UNIT NUM, and advice that depends on whether a
/// current master key is set (zeroizing would lose it), instead of one line per unit.
fn not_in_imprint_mode(err: &anyhow::Error) -> Option<String> {
    let Some(CeremonyError::Problems(problems)) = err.downcast_ref() else {
        return None;
    };
    let mut nums = Vec::new();
    let mut with_key = Vec::new();
    let mut others = Vec::new();
    for p in problems {
        match p {
            Problem::NotInImprintMode {
                num,
                current_mk_set,
                ..
            } => {
                nums.push(*num);
                if *current_mk_set {
                    with_key.push(*num);
                }
            }
            other => others.push(ErrorChain(other).to_string()),
        }
    }
    if nums.is_empty() {
        return None;
    }
    let mut text = format!(
        "the service instance is not in imprint mode: {} already initialized (see `tke \
         cryptounit-compare`); no crypto unit was changed",
        units(&nums, "is", "are")
    );
    for o in &others {
        text.push_str(&format!("\nAlso: {o}"));
    }
    text.push('\n');
    if with_key.is_empty() {
        text.push_str(
            "No current master key is set. If an earlier auto-init was interrupted, finish it \
             with `tke auto-init --resume` (it keeps the administrators and thresholds the \
             units hold), or plan the rest as a ceremony file with `tke plan auto-init` \
             and those administrators and thresholds; to start over instead, zeroize the units with `tke \
             cryptounit-zeroize` and rerun `tke auto-init`.",
        );
    } else if with_key.len() == nums.len() {
        text.push_str(&format!(
            "C{} a current master key: the instance is initialized. Zeroize it (`tke \
             cryptounit-zeroize`) only if its key storage holds no keys encrypted under that \
             master key, which would be lost; then rerun `tke auto-init`.",
            &units(&with_key, "holds", "hold")[1..]
        ));
    } else {
        text.push_str(&format!(
            "Only c{} a current master key: an earlier auto-init was probably interrupted. \
             Finish it with `tke auto-init --resume`, or as a ceremony file with `tke plan \
             auto-init` and the administrators and thresholds the units hold: it copies that \
             master key to the other crypto units, with no zeroize.",
            &units(&with_key, "holds", "hold")[1..]
        ));
    }
    Some(text)
}

/// `crypto unit 2 is` / `crypto units 1, 2 and 4 are`.
fn units(nums: &[usize], one: &str, many: &str) -> String {
    match nums {
        [n] => format!("crypto unit {n} {one}"),
        [rest @ .., last] => {
            let rest: Vec<String> = rest.iter().map(ToString::to_string).collect();
            format!("crypto units {} and {last} {many}", rest.join(", "))
        }
        [] => String::new(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::{io, path::PathBuf};

    use super::*;

    fn io_error() -> io::Error {
        io::Error::new(io::ErrorKind::PermissionDenied, "disk says no")
    }

    #[test]
    fn not_in_imprint_mode_advice_depends_on_the_current_master_key() {
        let refused = |keys: [bool; 2]| {
            let problems = keys
                .iter()
                .enumerate()
                .map(|(i, &k)| Problem::NotInImprintMode {
                    num: i + 2,
                    unit: tke_proto::UnitId::random(),
                    current_mk_set: k,
                })
                .collect();
            failure(&CeremonyError::Problems(problems).into(), None)
        };
        let empty = refused([false, false]);
        assert_eq!(
            empty,
            "the service instance is not in imprint mode: crypto units 2 and 3 are already \
             initialized (see `tke cryptounit-compare`); no crypto unit was changed\n\
             No current master key is set. If an earlier auto-init was interrupted, finish it \
             with `tke auto-init --resume` (it keeps the administrators and thresholds the \
             units hold), or plan the rest as a ceremony file with `tke plan auto-init` \
             and those administrators and thresholds; to start over instead, zeroize the units with `tke \
             cryptounit-zeroize` and rerun `tke auto-init`."
        );
        let one = refused([false, true]);
        assert!(
            one.ends_with(
                "\nOnly crypto unit 3 holds a current master key: an earlier auto-init was \
                 probably interrupted. Finish it with `tke auto-init --resume`, or as a \
                 ceremony file with `tke plan auto-init` and the administrators and \
                 thresholds the units hold: it copies that master key to the other crypto \
                 units, with no zeroize."
            ),
            "{one}"
        );
        let all = refused([true, true]);
        assert!(
            all.ends_with(
                "\nCrypto units 2 and 3 hold a current master key: the instance is initialized. \
                 Zeroize it (`tke cryptounit-zeroize`) only if its key storage holds no keys \
                 encrypted under that master key, which would be lost; then rerun `tke \
                 auto-init`."
            ),
            "{all}"
        );
    }

    #[test]
    fn each_cause_is_printed_once() {
        // Three layers, each with its own text: all three, in order.
        let e = anyhow::Error::new(KeyFileError::Io {
            action: "write",
            path: PathBuf::from("/w/alice.pem"),
            source: io_error(),
        })
        .context("cannot save the signature key of alice");
        let text = chain(&e);
        assert_eq!(
            text,
            "cannot save the signature key of alice: cannot write /w/alice.pem: disk says no"
        );
        assert_eq!(text.matches("disk says no").count(), 1);
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_printed_again() {
        // A layer that writes its source into its own message (as the PKCS#11 module
        // errors did): the source is skipped, the layer above it kept.
        let e = anyhow::Error::new(io_error())
            .context("cannot load the module /x: disk says no")
            .context("--pkcs11");
        assert_eq!(
            chain(&e),
            "--pkcs11: cannot load the module /x: disk says no"
        );
    }

    #[test]
    fn advice_naming_commands_comes_from_the_cli() {
        let e = anyhow::Error::new(KeyFileError::NoDirectory);
        let text = failure(&e, None);
        let (first, advice) = text.split_once('\n').unwrap();
        assert!(!first.contains("--files-dir"), "{first}");
        assert!(advice.contains("--files-dir"), "{advice}");

        let e = anyhow::Error::new(ClientError::FleetMissing {
            path: PathBuf::from("/w/local"),
        });
        assert_eq!(
            failure(&e, None),
            "no embedded fleet at /w/local\nCreate one with `tke local init`."
        );
    }
}
