//! SoftHSM2 tokens for tests and benches.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` (which names its token directory) and lists its tokens
//! once, at `C_Initialize`; a PKCS#11 module is initialized once per process; and the
//! environment is process-wide while tests run in threads. So every token directory here
//! is private ([`Tokens`], made with `softhsm-config/make-tokens.sh`: tokens initialized
//! with `--free` and found by label, never by slot number), and a process that loads the
//! module uses one of two patterns:
//!
//! - [`Pool`]: one token directory for the whole process, made (and `SOFTHSM2_CONF` set)
//!   by the first test that needs it, before anything loads the module; each test then
//!   takes tokens of its own from it.
//! - [`isolated`]: the test body runs in a child process of the test binary whose
//!   environment names a token directory of its own; no two tests share a module instance.
//!
//! Tests that only run other programs (`tke`, `pkcs11-tool`) hand [`Tokens::conf`] to them
//! and never load the module themselves.
//!
//! The module path comes from one environment variable, [`MODULE_ENV`]. A missing SoftHSM2
//! or OpenSC fails the test with a message naming `ci/setup.sh`; nothing is skipped.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{
        atomic::{AtomicUsize, Ordering},
        OnceLock,
    },
};

/// The environment variable naming the PKCS#11 module the tests use.
pub const MODULE_ENV: &str = "TKE_PKCS11_MODULE";

/// The SoftHSM2 module on Debian and Ubuntu (`apt-get install softhsm2`), used when
/// [`MODULE_ENV`] is not set.
pub const DEFAULT_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// The PKCS#11 module: [`MODULE_ENV`], else [`DEFAULT_MODULE`].
///
/// # Panics
/// When the module does not exist: SoftHSM2 is a required test component.
pub fn module() -> PathBuf {
    let m = std::env::var_os(MODULE_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_MODULE));
    assert!(
        m.is_file(),
        "the PKCS#11 module {} is missing (set by {MODULE_ENV}, default {DEFAULT_MODULE}): \
         SoftHSM2 is a required test component; install it with ci/setup.sh \
         (apt-get install softhsm2)",
        m.display()
    );
    m
}

/// [`module`] as text, for URIs, command lines and messages (read once per process).
pub fn module_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| module().display().to_string())
}

/// `softhsm-config/make-tokens.sh` of the workspace.
fn make_tokens_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../softhsm-config/make-tokens.sh")
}

/// A private SoftHSM2 token directory: `softhsm2.conf`, `tokens/`, and `<label>.pin` /
/// `<label>.so-pin` per token, as `softhsm-config/make-tokens.sh` writes them.
pub struct Tokens {
    dir: PathBuf,
    /// Set when the directory is a temporary one of this value's own.
    _tmp: Option<tempfile::TempDir>,
}

impl Tokens {
    /// Makes a token directory in `dir` with one token per label (random PINs).
    ///
    /// # Panics
    /// When SoftHSM2 is missing or `make-tokens.sh` fails.
    pub fn make<S: AsRef<str>>(dir: &Path, labels: &[S]) -> Self {
        module();
        let script = make_tokens_script();
        let out = Command::new("bash")
            .arg(&script)
            .arg(dir)
            .args(labels.iter().map(AsRef::as_ref))
            // Fixed PINs would let one test's PIN open another's token.
            .env_remove("TKE_TEST_PIN")
            .env_remove("TKE_TEST_SO_PIN")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} failed (SoftHSM2's softhsm2-util is a required test component; install it \
             with ci/setup.sh):\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let dir = fs::canonicalize(dir)
            .unwrap_or_else(|e| panic!("token directory {}: {e}", dir.display()));
        Self { dir, _tmp: None }
    }

    /// Makes a token directory in a temporary directory of its own, removed on drop.
    ///
    /// # Panics
    /// As [`Tokens::make`].
    pub fn temp<S: AsRef<str>>(labels: &[S]) -> Self {
        let tmp = tempfile::tempdir()
            .unwrap_or_else(|e| panic!("cannot make a temporary directory: {e}"));
        let mut tokens = Self::make(tmp.path(), labels);
        tokens._tmp = Some(tmp);
        tokens
    }

    /// The token directory that [`Tokens::make`] made earlier in `dir` (e.g. handed to a
    /// child process).
    pub fn existing(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            _tmp: None,
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its `softhsm2.conf`: the `SOFTHSM2_CONF` of whatever uses these tokens.
    pub fn conf(&self) -> PathBuf {
        self.dir.join("softhsm2.conf")
    }

    /// Sets `SOFTHSM2_CONF` of this process to [`Tokens::conf`]. Call it while the process
    /// has a single thread, before anything loads the module (SoftHSM2 reads it once).
    pub fn set_conf_for_this_process(&self) {
        std::env::set_var("SOFTHSM2_CONF", self.conf());
    }

    /// The user PIN file of token `label`.
    pub fn pin_path(&self, label: &str) -> PathBuf {
        self.dir.join(format!("{label}.pin"))
    }

    /// The user PIN of token `label`.
    ///
    /// # Panics
    /// When there is no such token.
    pub fn pin(&self, label: &str) -> String {
        read(&self.pin_path(label))
    }

    /// The security officer PIN of token `label`.
    ///
    /// # Panics
    /// When there is no such token.
    pub fn so_pin(&self, label: &str) -> String {
        read(&self.dir.join(format!("{label}.so-pin")))
    }

    /// `DIR/{label}.pin`: the PIN file pattern `tke local init --pkcs11-pin-file` takes.
    pub fn pin_pattern(&self) -> String {
        format!("{}/{{label}}.pin", self.dir.display())
    }

    /// `pkcs11:token=LABEL;object=OBJECT?module-path=MODULE`.
    pub fn uri(&self, label: &str, object: &str) -> String {
        format!(
            "pkcs11:token={label};object={object}?module-path={}",
            module_text()
        )
    }

    /// Runs OpenSC's `pkcs11-tool --module MODULE ARGS...` on these tokens.
    ///
    /// # Panics
    /// When `pkcs11-tool` cannot run: OpenSC is a required test component.
    pub fn pkcs11_tool(&self, args: &[&str]) -> Output {
        Command::new("pkcs11-tool")
            .arg("--module")
            .arg(module())
            .args(args)
            .env("SOFTHSM2_CONF", self.conf())
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run OpenSC's pkcs11-tool ({e}): OpenSC is a required test \
                     component; install it with ci/setup.sh (apt-get install opensc)"
                )
            })
    }

    /// [`Tokens::pkcs11_tool`] that must succeed; returns its standard output.
    ///
    /// # Panics
    /// When it fails.
    pub fn pkcs11_tool_ok(&self, args: &[&str]) -> String {
        let out = self.pkcs11_tool(args);
        assert!(
            out.status.success(),
            "pkcs11-tool {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The SoftHSM2 file of the token labelled `label` (`tokens/<uuid>/token.object`).
    fn token_object_file(&self, label: &str) -> PathBuf {
        let mut padded = label.as_bytes().to_vec();
        padded.resize(32, b' ');
        let mut found = Vec::new();
        for d in read_dir(&self.dir.join("tokens")) {
            let f = d.join("token.object");
            if let Ok(bytes) = fs::read(&f) {
                if bytes.windows(32).any(|w| w == padded.as_slice()) {
                    found.push(f);
                }
            }
        }
        assert_eq!(found.len(), 1, "token {label:?}: {found:?}");
        found.remove(0)
    }

    /// Marks the user PIN of token `label` locked (`CKF_USER_PIN_LOCKED`), as a token does
    /// after too many wrong PINs. SoftHSM2 2.6 never locks a PIN by itself (it only sets
    /// `CKF_USER_PIN_COUNT_LOW`), so this sets the flag in its token file: the token flags
    /// are the attribute CKA_OS_TOKENFLAGS (0x8000534b, a CK_ULONG, stored big-endian)
    /// of SoftHSM2's file object store. Must run before the process using the token
    /// first loads the module.
    ///
    /// # Panics
    /// When the token file is not as expected.
    pub fn lock_user_pin(&self, label: &str) {
        const CKF_USER_PIN_LOCKED: u64 = 0x0004_0000;
        let f = self.token_object_file(label);
        let mut bytes = fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let tag: [u8; 16] = [0, 0, 0, 0, 0x80, 0, 0x53, 0x4b, 0, 0, 0, 0, 0, 0, 0, 2];
        let at: Vec<usize> = bytes
            .windows(16)
            .enumerate()
            .filter(|(_, w)| *w == tag)
            .map(|(i, _)| i + 16)
            .collect();
        assert!(
            at.len() == 1 && at[0] + 8 <= bytes.len(),
            "SoftHSM2's token file format changed: no single token-flags attribute in {}",
            f.display()
        );
        let v = &mut bytes[at[0]..at[0] + 8];
        let mut flags = [0u8; 8];
        flags.copy_from_slice(v);
        let flags = u64::from_be_bytes(flags) | CKF_USER_PIN_LOCKED;
        v.copy_from_slice(&flags.to_be_bytes());
        fs::write(&f, bytes).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn read_dir(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            e.unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .path()
        })
        .collect()
}

/// The token directory of a whole process, with tokens of unique labels that tests take
/// one by one.
pub struct Pool {
    tokens: Tokens,
    labels: Vec<String>,
    next: AtomicUsize,
}

static POOL: OnceLock<Pool> = OnceLock::new();

/// How many `make-tokens.sh` run at once (each into a directory of its own, merged after):
/// each `softhsm2-util` scans every token already there, so one long run is quadratic.
const SHARDS: usize = 4;

impl Pool {
    /// The pool of this process: made by the first call, in `parent/softhsm-<pid>`, with
    /// `size` tokens `tke-test-000`, `tke-test-001`, ...; `SOFTHSM2_CONF` is set then,
    /// before anything can have loaded the module. Directories of processes that are gone
    /// are removed. Later calls return the same pool.
    ///
    /// # Panics
    /// When SoftHSM2 is missing or the tokens cannot be made.
    pub fn of_process(parent: &Path, size: usize) -> &'static Pool {
        POOL.get_or_init(|| Pool::make(parent, size))
    }

    fn make(parent: &Path, size: usize) -> Self {
        module();
        remove_stale(parent);
        let pid = std::process::id();
        let dir = parent.join(format!("softhsm-{pid}"));
        let _ = fs::remove_dir_all(&dir);
        let labels: Vec<String> = (0..size).map(|i| format!("tke-test-{i:03}")).collect();
        let shard_dirs: Vec<PathBuf> = (0..SHARDS)
            .map(|k| match k {
                0 => dir.clone(),
                _ => parent.join(format!("softhsm-{pid}.shard{k}")),
            })
            .collect();
        std::thread::scope(|s| {
            for (k, d) in shard_dirs.iter().enumerate() {
                let chunk: Vec<String> = labels.iter().skip(k).step_by(SHARDS).cloned().collect();
                if !chunk.is_empty() {
                    s.spawn(move || Tokens::make(d, &chunk));
                }
            }
        });
        let tokens = Tokens::existing(&dir);
        for d in shard_dirs[1..].iter().filter(|d| d.exists()) {
            for t in read_dir(&d.join("tokens")) {
                move_into(&t, &dir.join("tokens"));
            }
            for f in read_dir(d) {
                if f.extension().is_some_and(|x| x == "pin" || x == "so-pin") {
                    move_into(&f, &dir);
                }
            }
            let _ = fs::remove_dir_all(d);
        }
        tokens.set_conf_for_this_process();
        Self {
            tokens,
            labels,
            next: AtomicUsize::new(0),
        }
    }

    /// The token directory.
    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// A fresh token of its own: its label and PIN file.
    ///
    /// # Panics
    /// When the pool is used up.
    pub fn take(&self) -> (String, PathBuf) {
        let i = self.next.fetch_add(1, Ordering::SeqCst);
        let label = self.labels.get(i).unwrap_or_else(|| {
            panic!(
                "the SoftHSM2 token pool of this process is used up ({} tokens): ask for a \
                 larger one",
                self.labels.len()
            )
        });
        (label.clone(), self.tokens.pin_path(label))
    }
}

fn move_into(from: &Path, dir: &Path) {
    let Some(name) = from.file_name() else {
        return;
    };
    let to = dir.join(name);
    fs::rename(from, &to)
        .unwrap_or_else(|e| panic!("move {} to {}: {e}", from.display(), to.display()));
}

/// Removes the pool directories of processes that are gone.
fn remove_stale(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("softhsm-") else {
            continue;
        };
        let pid = rest.split('.').next().unwrap_or_default();
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// Names the test an [`isolated`] child process runs.
const CHILD_ENV: &str = "TKE_SOFTHSM2_TEST_CHILD";
/// The token directory of an [`isolated`] child process.
const DIR_ENV: &str = "TKE_SOFTHSM2_TEST_TOKENS";

/// Runs `body` in a child process of this test binary (`<binary> <name> --exact`), with a
/// token directory of its own holding one token per label and `SOFTHSM2_CONF` naming it.
/// `name` must be the name of the calling test function.
///
/// # Panics
/// When the body fails in the child, or the child did not run exactly that test.
pub fn isolated(name: &str, labels: &[&str], body: impl FnOnce(&Tokens)) {
    if std::env::var(CHILD_ENV).as_deref() == Ok(name) {
        let dir = std::env::var_os(DIR_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("{DIR_ENV} is not set in the child process of {name}"));
        let tokens = Tokens::existing(&dir);
        assert_eq!(
            std::env::var_os("SOFTHSM2_CONF").map(PathBuf::from),
            Some(tokens.conf())
        );
        body(&tokens);
        return;
    }
    let tokens = Tokens::temp(labels);
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("the test binary: {e}"));
    let out = Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, name)
        .env(DIR_ENV, tokens.dir())
        .env("SOFTHSM2_CONF", tokens.conf())
        .output()
        .unwrap_or_else(|e| panic!("cannot run the child process of {name}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "test {name} failed in its SoftHSM2 process:\n{stdout}\n{stderr}"
    );
}
