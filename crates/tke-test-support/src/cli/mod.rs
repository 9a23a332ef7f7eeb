//! The real `tke` binary run in a private workstation directory, for any crate's tests
//! (feature `cli`): [`Workstation`] runs it and asserts what it did, [`snap`] commits what
//! it showed as insta snapshots, [`terminal`] drives it on a pseudo-terminal.
//!
//! `CARGO_BIN_EXE_tke` exists only while tke-cli's own tests compile, so the binary is
//! passed in: `Workstation::new(env!("CARGO_BIN_EXE_tke"))`. Snapshots are read from and
//! written to `tests/snapshots/NAME.snap` of the crate whose tests run.
//!
//! ```no_run
//! use tke_test_support::cli::Workstation;
//!
//! // In a test of tke-cli: `env!("CARGO_BIN_EXE_tke")`.
//! let w = Workstation::new("target/debug/tke");
//! w.ok(&["local", "init"]);
//! // Refused (exit code 1); what it printed is compared with
//! // tests/snapshots/local_init_twice.snap.
//! w.check("local_init_twice", &["local", "init"], 1, &[]);
//! ```

use std::{
    ffi::OsString,
    fs,
    os::unix::{fs::PermissionsExt, process::ExitStatusExt as _},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

pub mod snap;
pub mod terminal;

/// The vendor's first rotation milestone, verbatim: the new master key is committed in
/// every unit.
pub const ROTATION_COMMITTED: &str =
    "Delaying 30 seconds to allow server to discover new master key values";
/// The vendor's second rotation milestone, verbatim: key storage is under the new key.
pub const ROTATION_REWRAPPED: &str = "KMS CRK rewrap successful, waiting on cryptounit-mk-setimm";

/// The passwords of the tests' administrators (alice, bob) and master key parts (`part
/// a` … `part c`), as secrets-file entries.
pub const PASSWORDS: &[(&str, &str)] = &[
    ("alice", "alice-password-1"),
    ("bob", "bob-password-22"),
    ("\"part a\"", "part-a-password-1"),
    ("\"part b\"", "part-b-password-22"),
    ("\"part c\"", "part-c-password-333"),
];

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

/// A `tke` binary and a private workstation directory (deleted when dropped) that every
/// run of it uses (`--files-dir`).
pub struct Workstation {
    /// The workstation directory.
    pub dir: tempfile::TempDir,
    /// The `tke` binary.
    bin: PathBuf,
    /// Environment variables set for every run ([`Workstation::set_env`]).
    env: Vec<(OsString, OsString)>,
}

impl Workstation {
    /// A new empty workstation directory for the `tke` binary at `tke` (in tke-cli's
    /// tests, `env!("CARGO_BIN_EXE_tke")`).
    ///
    /// # Panics
    /// When no temporary directory can be made.
    pub fn new(tke: impl Into<PathBuf>) -> Self {
        Self {
            dir: tempfile::tempdir().unwrap_or_else(|e| panic!("temporary directory: {e}")),
            bin: tke.into(),
            env: Vec::new(),
        }
    }

    /// Sets an environment variable for every later run of `tke` (e.g. `SOFTHSM2_CONF`
    /// for a fleet whose units are on SoftHSM2 tokens made inside the directory).
    pub fn set_env(&mut self, key: impl Into<OsString>, value: impl Into<OsString>) {
        self.env.push((key.into(), value.into()));
    }

    /// The workstation directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a secrets file (0600) with these passwords and returns its path.
    ///
    /// # Panics
    /// When it cannot be written.
    pub fn secrets(&self, pairs: &[(&str, &str)]) -> PathBuf {
        let p = self.dir.path().join("secrets.toml");
        let text: String = pairs
            .iter()
            .map(|(n, pw)| format!("{n} = \"{pw}\"\n"))
            .collect();
        fs::write(&p, text)
            .and_then(|()| fs::set_permissions(&p, fs::Permissions::from_mode(0o600)))
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        p
    }

    /// Writes the secrets file of `pairs` (as [`Workstation::secrets`]) and creates a
    /// signature key file for each name with its password (`sigkey-add`); returns the
    /// secrets file's path.
    ///
    /// # Panics
    /// When a key cannot be created.
    pub fn file_keys(&self, pairs: &[(&str, &str)]) -> String {
        let s = self.secrets(pairs);
        let s = s
            .to_str()
            .unwrap_or_else(|| panic!("{}: not UTF-8", s.display()));
        for (name, _) in pairs {
            self.ok(&["--secrets", s, "sigkey-add", "--name", name]);
        }
        s.to_owned()
    }

    /// `tke --files-dir DIR`, with no `CLOUDTKEFILES` from the environment running the
    /// tests (it would name another directory); no standard input set.
    fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--files-dir").arg(self.path());
        c.env_remove("CLOUDTKEFILES");
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// A `tke` command with `--files-dir` set and no terminal on stdin.
    pub fn tke(&self) -> Command {
        let mut c = self.command();
        c.stdin(Stdio::null());
        c
    }

    /// Runs `tke` with these arguments.
    ///
    /// # Panics
    /// When it cannot be started.
    pub fn run(&self, args: &[&str]) -> Output {
        self.tke()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {} {args:?}: {e}", self.bin.display()))
    }

    /// Runs `tke` with the crash point `point` named (`TKE_CRASH_AT`, see
    /// `tke_ceremony::crash`) and asserts that the process killed itself there with
    /// SIGKILL; returns what it printed before.
    ///
    /// # Panics
    /// When it was not killed there, or its stdout is not UTF-8.
    pub fn crash(&self, point: &str, args: &[&str]) -> String {
        let o = self
            .tke()
            .env("TKE_CRASH_AT", point)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {} {args:?}: {e}", self.bin.display()));
        assert_eq!(
            o.status.signal(),
            Some(9),
            "{point}: not killed there\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap_or_else(|e| panic!("{point}: stdout: {e}"))
    }

    /// Runs `tke` and asserts success; returns stdout.
    ///
    /// # Panics
    /// When it fails or prints something that is not UTF-8.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "tke {args:?} failed: {}\nstdout:\n{}",
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8(o.stdout).unwrap_or_else(|e| panic!("tke {args:?}: stdout: {e}"))
    }

    /// Runs `tke`, asserts that it exits with `code` (1 failure, 2 usage error, 3
    /// cancelled), returns stderr.
    ///
    /// # Panics
    /// As [`assert_failed`], or when stderr is not UTF-8.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let o = self.run(args);
        assert_failed(&o, code, args);
        String::from_utf8(o.stderr).unwrap_or_else(|e| panic!("tke {args:?}: stderr: {e}"))
    }

    /// Runs `tke`, asserts its exit code and the snapshot `name` of what it showed (the
    /// workstation directory shows as `[WS]`, `paths` as their labels).
    ///
    /// # Panics
    /// As [`snap::assert_run`].
    pub fn check(&self, name: &str, args: &[&str], code: i32, paths: &[(&Path, &str)]) {
        let o = self.run(args);
        let mut all = vec![(self.path(), "[WS]")];
        all.extend_from_slice(paths);
        snap::assert_run(name, &o, code, &all);
    }

    /// `--secrets SECRETS auto-init` of the only instance with thresholds `(signature,
    /// revocation)`, installing the workstation's keys of `admins`, answered `--yes`.
    /// Returns stdout.
    ///
    /// # Panics
    /// As [`Workstation::ok`].
    pub fn auto_init(&self, secrets: &str, thresholds: (u8, u8), admins: &[&str]) -> String {
        let args = auto_init_args(secrets, thresholds, admins);
        self.ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// Installs the workstation's keys of `admins` in the selected units
    /// (`cryptounit-admin-add`, unsigned in imprint mode), then sets thresholds
    /// `(signature, revocation)` (`cryptounit-thrhld-set`, leaving imprint mode), with
    /// the passwords of `secrets`.
    ///
    /// # Panics
    /// As [`Workstation::ok`].
    pub fn install_admins(&self, secrets: &str, admins: &[&str], thresholds: (u8, u8)) {
        for admin in admins {
            self.ok(&[
                "--secrets",
                secrets,
                "cryptounit-admin-add",
                "--admin",
                admin,
            ]);
        }
        let (sig, rev) = (thresholds.0.to_string(), thresholds.1.to_string());
        self.ok(&[
            "--secrets",
            secrets,
            "cryptounit-thrhld-set",
            "--sig-threshold",
            &sig,
            "--rev-threshold",
            &rev,
        ]);
    }

    /// `target add` for server `s`, with the fleet CA and API key of `fleet` (the server
    /// that made them; `s` itself when it made its own).
    pub fn add_target(&self, s: &crate::server::Server, fleet: &crate::server::Server) {
        let args = target_add_args(s, fleet, &[]);
        self.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    }

    /// As [`Workstation::add_target`] with `--no-check`: the server is not contacted, so
    /// that a target can be down or wrong on purpose.
    pub fn add_target_unchecked(&self, s: &crate::server::Server, fleet: &crate::server::Server) {
        let args = target_add_args(s, fleet, &["--no-check"]);
        self.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
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
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start tke: {e}"));
        let stdout = child
            .stdout
            .take()
            .unwrap_or_else(|| panic!("tke's standard output is not piped"));
        let mut react = Some(react);
        let mut seen = String::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let line = line.unwrap_or_else(|e| panic!("reading tke's output: {e}"));
            seen.push_str(&line);
            seen.push('\n');
            if line.contains(at) {
                if let Some(react) = react.take() {
                    react(child.id());
                }
            }
        }
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("waiting for tke: {e}"));
        (react.is_none(), seen, out)
    }

    /// `cryptounit-compare --output json`.
    ///
    /// # Panics
    /// When it fails or does not print JSON.
    pub fn compare_json(&self) -> serde_json::Value {
        let out = self.ok(&["cryptounit-compare", "--output", "json"]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}:\n{out}"))
    }

    /// Every file below the directory with its bytes (to prove nothing changed). Lock files
    /// are left out: a command that only reads a fleet creates one too. So are a key
    /// store's SQLite index (`-shm`) and an empty write-ahead log (`-wal`): a process
    /// killed with the store open leaves them, and the next one to open it removes them;
    /// they hold no record.
    ///
    /// # Panics
    /// When the directory cannot be read.
    pub fn snapshot(&self) -> Vec<(PathBuf, Vec<u8>)> {
        fn walk(p: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
            let entries = fs::read_dir(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            for e in entries {
                let path = e.unwrap_or_else(|e| panic!("{}: {e}", p.display())).path();
                if path.file_name().is_some_and(|n| n == ".lock") {
                    continue;
                }
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    let bytes =
                        fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    let name = path.to_string_lossy();
                    if name.ends_with(".keys-shm")
                        || (name.ends_with(".keys-wal") && bytes.is_empty())
                    {
                        continue;
                    }
                    out.push((path, bytes));
                }
            }
        }
        let mut v = Vec::new();
        walk(self.path(), &mut v);
        v.sort();
        v
    }

    /// The path of the ceremony journal of `command` left in the workstation directory
    /// (`journal-COMMAND-INSTANCE.json`), if any.
    ///
    /// # Panics
    /// When there are several, or the directory cannot be read.
    pub fn journal_path(&self, command: &str) -> Option<PathBuf> {
        let prefix = format!("journal-{command}-");
        let mut found = Vec::new();
        for e in fs::read_dir(self.path()).unwrap_or_else(|e| panic!("{e}")) {
            let path = e.unwrap_or_else(|e| panic!("{e}")).path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            if name.is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".json")) {
                found.push(path);
            }
        }
        assert!(found.len() <= 1, "several journals of {command}: {found:?}");
        found.pop()
    }

    /// The ceremony journal of `command` left in the workstation directory
    /// (`journal-COMMAND-INSTANCE.json`), if any, as text, after asserting that it is
    /// the only one of that command, readable by its owner alone (0600) and holds none of
    /// the passwords of [`PASSWORDS`].
    ///
    /// # Panics
    /// When there are several, or one is not private, or holds a password.
    pub fn journal(&self, command: &str) -> Option<String> {
        use std::os::unix::fs::PermissionsExt as _;
        let path = self.journal_path(command)?;
        let mode = fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{}", path.display());
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for (_, password) in PASSWORDS {
            assert!(!text.contains(password), "{}: a password", path.display());
        }
        Some(text)
    }
}

/// The arguments of [`Workstation::auto_init`]: `--secrets SECRETS auto-init` with
/// thresholds `(signature, revocation)`, the workstation's keys of `admins`, `--yes`.
pub fn auto_init_args(secrets: &str, thresholds: (u8, u8), admins: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--secrets",
        secrets,
        "auto-init",
        "--sig-threshold",
        &thresholds.0.to_string(),
        "--rev-threshold",
        &thresholds.1.to_string(),
        "--yes",
    ]
    .map(str::to_owned)
    .to_vec();
    for a in admins {
        args.extend(["--admin".to_owned(), (*a).to_owned()]);
    }
    args
}

/// `target add` arguments for server `s` with the CA and API key of `fleet`, then `extra`.
pub fn target_add_args(
    s: &crate::server::Server,
    fleet: &crate::server::Server,
    extra: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "target".to_owned(),
        "add".to_owned(),
        s.name.to_owned(),
        s.url(),
        "--ca".to_owned(),
        fleet.path("ca.pem"),
        "--api-key-file".to_owned(),
        fleet.path("api-key"),
    ];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    args
}
