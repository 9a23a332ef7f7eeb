//! Snapshots of what `tke` shows: the exit code, standard output and standard error of
//! one run, committed under `tests/snapshots/` of the crate whose tests run, so that a
//! change of wording is a reviewed diff (`cargo insta review`, or `INSTA_UPDATE=always`
//! and `git diff`).
//!
//! What changes between runs is redacted: temporary directories (by the label the test
//! gives, else `[TMP]`), UUIDs, SKIs and other long hex strings, the 8 SKI digits in key
//! file names, the 8 random digits in master key part file names, loopback ports, times in UTC
//! and the package version.

use std::{
    path::{Path, PathBuf},
    process::Output,
};

/// Regular expressions for what changes between runs, and what stands in for them.
const FILTERS: &[(&str, &str)] = &[
    (
        r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b",
        "[UUID]",
    ),
    // SKIs (full or the 30-digit short form), verification patterns, hashes.
    (r"\b[0-9a-f]{16,}\b", "[HEX]"),
    // Key file stems are `NAME-` and the first 8 hex digits of the SKI.
    (r"-[0-9a-f]{8}\.(key|crt|ref)\.", "-[SKI8].$1."),
    // Master key part file stems are `DESCRIPTION-` and 8 random hex digits.
    (r"-[0-9a-f]{8}\.mkpart\.", "-[ID8].mkpart."),
    (r"(127\.0\.0\.1|localhost):[0-9]+", "$1:[PORT]"),
    // Times in UTC to the second (e.g. when a journaled ceremony stopped).
    (
        r"\b[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z",
        "[TIME]",
    ),
    // tke-unitd names its host after its port in unit locations.
    (r"unitd-[0-9]+", "unitd-[PORT]"),
    // Any temporary directory the test did not label.
    (r"/[^\s'`]*/\.tmp[A-Za-z0-9]{6}", "[TMP]"),
];

/// The text committed for one run: exit code, standard output, standard error, with
/// `paths` replaced by their labels.
pub fn transcript(o: &Output, paths: &[(&Path, &str)]) -> String {
    let code = o
        .status
        .code()
        .map_or_else(|| format!("{:?}", o.status), |c| c.to_string());
    let text = format!(
        "exit code: {code}\n--- stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    redact_paths(&text, paths)
}

/// Replaces each path (and its canonical form) by its label, longest path first so that a
/// directory inside another keeps its own label, and the version by `[VERSION]` (the
/// workspace's crates share one version).
pub fn redact_paths(text: &str, paths: &[(&Path, &str)]) -> String {
    let mut pairs: Vec<(String, &str)> = Vec::new();
    for (p, label) in paths {
        pairs.push((p.display().to_string(), label));
        if let Ok(c) = std::fs::canonicalize(p) {
            pairs.push((c.display().to_string(), label));
        }
    }
    pairs.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    let mut text = text.replace(env!("CARGO_PKG_VERSION"), "[VERSION]");
    for (p, label) in pairs {
        text = text.replace(&p, label);
    }
    text
}

/// `tests/snapshots/` of the crate whose tests run. Its manifest directory is read when
/// the test runs (Cargo sets `CARGO_MANIFEST_DIR` for the test processes it starts): at
/// compile time `env!` would name this crate, where the assertion is written.
fn snapshot_dir() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|| panic!("CARGO_MANIFEST_DIR is not set: run the tests with cargo"));
    PathBuf::from(manifest).join("tests").join("snapshots")
}

/// Asserts that `text` matches the committed snapshot `tests/snapshots/NAME.snap` once
/// redacted.
///
/// # Panics
/// When it does not (or there is none yet: `cargo insta review` accepts a new one).
pub fn assert_snapshot(name: &str, text: &str) {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(snapshot_dir());
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    for (re, with) in FILTERS {
        settings.add_filter(re, *with);
    }
    settings.bind(|| insta::assert_snapshot!(name, text));
}

/// Asserts the exit code of a run (as [`super::assert_failed`] unless 0), then its
/// snapshot `name`.
///
/// # Panics
/// When either differs.
pub fn assert_run(name: &str, o: &Output, code: i32, paths: &[(&Path, &str)]) {
    if code == 0 {
        assert!(
            o.status.success(),
            "{name}: expected success\nstderr:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
    } else {
        super::assert_failed(o, code, &[name]);
    }
    assert_snapshot(name, &transcript(o, paths));
}
