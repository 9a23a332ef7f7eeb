//! Helpers shared by the CLI tests: run the real `tke` binary in a private workstation
//! directory.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, missing_docs)]

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
};

pub mod snap;
pub mod terminal;
pub mod unitd;

/// Asserts that a run of `tke` failed with exit code `code`: 1 failure (`FAILED` and the
/// reason on standard error), 2 usage error, 3 cancelled at a confirmation.
pub fn assert_failed(o: &Output, code: i32, args: &[&str]) {
    assert_ne!(code, 0, "a failure has a non-zero exit code");
    assert_eq!(
        o.status.code(),
        Some(code),
        "tke {args:?}: expected exit code {code}\nstderr:\n{}\nstdout:\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    if code == 1 {
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            stderr.contains("FAILED\n"),
            "tke {args:?}: no FAILED in:\n{stderr}"
        );
    }
}

/// A private workstation directory and a secrets file.
pub struct Workstation {
    pub dir: tempfile::TempDir,
}

impl Workstation {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a secrets file (0600) with these passwords and returns its path.
    pub fn secrets(&self, pairs: &[(&str, &str)]) -> PathBuf {
        let p = self.dir.path().join("secrets.toml");
        let text: String = pairs
            .iter()
            .map(|(n, pw)| format!("{n} = \"{pw}\"\n"))
            .collect();
        fs::write(&p, text).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    /// A `tke` command with `--files-dir` set and no terminal on stdin.
    pub fn tke(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tke"));
        c.arg("--files-dir").arg(self.path());
        c.env_remove("CLOUDTKEFILES");
        c.stdin(std::process::Stdio::null());
        c
    }

    /// Runs `tke` with these arguments.
    pub fn run(&self, args: &[&str]) -> Output {
        self.tke().args(args).output().unwrap()
    }

    /// Runs `tke` and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "tke {args:?} failed: {}\nstdout:\n{}",
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// Runs `tke`, asserts that it exits with `code` (1 failure, 2 usage error, 3
    /// cancelled), returns stderr.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let o = self.run(args);
        assert_failed(&o, code, args);
        String::from_utf8(o.stderr).unwrap()
    }

    /// Runs `tke`, asserts its exit code and the snapshot `name` of what it showed (the
    /// workstation directory shows as `[WS]`, `paths` as their labels).
    pub fn check(&self, name: &str, args: &[&str], code: i32, paths: &[(&Path, &str)]) {
        let o = self.run(args);
        let mut all = vec![(self.path(), "[WS]")];
        all.extend_from_slice(paths);
        snap::assert_run(name, &o, code, &all);
    }

    /// `target add` for server `s`, with the fleet CA and API key of `fleet` (the server
    /// that made them; `s` itself when it made its own).
    pub fn add_target(&self, s: &unitd::Server, fleet: &unitd::Server) {
        self.ok(&[
            "target",
            "add",
            s.name,
            &s.url(),
            "--ca",
            &fleet.path("ca.pem"),
            "--api-key-file",
            &fleet.path("api-key"),
        ]);
    }

    /// Runs `tke` with `args`, and calls `react` with its process id once, as soon as a
    /// line of its standard output contains `at` (to act at that point of a ceremony).
    /// Returns whether `at` was seen, standard output and the finished run.
    pub fn run_reacting(
        &self,
        args: &[&str],
        at: &str,
        react: impl FnOnce(u32),
    ) -> (bool, String, Output) {
        let mut child = self
            .tke()
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut react = Some(react);
        let mut seen = String::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let line = line.unwrap();
            seen.push_str(&line);
            seen.push('\n');
            if line.contains(at) {
                if let Some(react) = react.take() {
                    react(child.id());
                }
            }
        }
        let out = child.wait_with_output().unwrap();
        (react.is_none(), seen, out)
    }

    /// `cryptounit-compare --output json`.
    pub fn compare_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["cryptounit-compare", "--output", "json"])).unwrap()
    }

    /// Every file below the directory with its bytes (to prove nothing changed).
    pub fn snapshot(&self) -> Vec<(PathBuf, Vec<u8>)> {
        fn walk(p: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
            for e in fs::read_dir(p).unwrap() {
                let e = e.unwrap();
                let path = e.path();
                if path.file_name().is_some_and(|n| n == ".lock") {
                    continue;
                }
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.push((path.clone(), fs::read(&path).unwrap()));
                }
            }
        }
        let mut v = Vec::new();
        walk(self.path(), &mut v);
        v.sort();
        v
    }
}
