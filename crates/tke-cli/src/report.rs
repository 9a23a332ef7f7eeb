//! How `tke` reports a failure: the error and its causes, each printed once, then what
//! the operator can do about it (the CLI's advice, see the README's "Errors").

use tke_ceremony::{CeremonyError, Problem};
use tke_client::ClientError;
use tke_proto::ErrorChain;
use tke_workstation::{FilesDir, KeyFileError};

use crate::targets;

/// The advice after a unit that is not in imprint mode refuses `auto-init`.
const NOT_IN_IMPRINT_MODE: &str = "Use 'tke cryptounit-compare' to see how the crypto units are configured. If no current master key register is set, zeroize the crypto units with 'tke cryptounit-zeroize' and rerun 'tke auto-init'. Do not zeroize while the instance's key storage holds keys.";

/// An error and its causes on one line (`error: cause: cause`), each cause once.
pub fn chain(err: &anyhow::Error) -> String {
    ErrorChain(err.as_ref()).to_string()
}

/// What `tke` prints after `FAILED`: a network failure in the vendor's style, any other
/// error as its chain; then the advice for the errors the CLI knows what to do about.
pub fn failure(err: &anyhow::Error, files: Option<&FilesDir>) -> String {
    let mut text = targets::explain(err, files).unwrap_or_else(|| chain(err));
    for line in advice(err) {
        text.push('\n');
        text.push_str(line);
    }
    text
}

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
        if let Some(CeremonyError::Problems(problems)) = cause.downcast_ref() {
            if problems
                .iter()
                .any(|p| matches!(p, Problem::NotInImprintMode { .. }))
            {
                lines.push(NOT_IN_IMPRINT_MODE);
            }
        }
    }
    lines
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
