//! SoftHSM2 fixtures: every test runs in its own process with its own token directory.
//!
//! A PKCS#11 module is initialized once per process, and SoftHSM2 reads `SOFTHSM2_CONF`
//! (which names its token directory) only then. So [`isolated`] creates a private token
//! directory with `softhsm-config/make-tokens.sh`, then runs the test body in a child
//! process of this test binary (`<binary> <test> --exact`) whose environment has that
//! `SOFTHSM2_CONF`. No test changes the environment of a running process, and no two
//! tests share a token or a module instance. A missing SoftHSM2 or OpenSC fails the test
//! with a message naming `ci/setup.sh`; nothing is skipped.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, missing_docs)]

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use tke_sigkey_pkcs11::{Pin, Pkcs11Uri};

const CHILD_ENV: &str = "TKE_PKCS11_TEST_CHILD";
const DIR_ENV: &str = "TKE_PKCS11_TEST_TOKENS";

/// The SoftHSM2 module (Debian's path; `TKE_SOFTHSM2_MODULE` overrides it).
pub fn module() -> PathBuf {
    let m = std::env::var_os("TKE_SOFTHSM2_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"));
    assert!(
        m.exists(),
        "the SoftHSM2 PKCS#11 module {} is missing: SoftHSM2 is a required test component; \
         install it with ci/setup.sh (apt-get install softhsm2)",
        m.display()
    );
    m
}

/// The token directory of one test.
pub struct Tokens {
    pub dir: PathBuf,
}

impl Tokens {
    pub fn conf(&self) -> PathBuf {
        self.dir.join("softhsm2.conf")
    }

    pub fn pin_path(&self, label: &str) -> PathBuf {
        self.dir.join(format!("{label}.pin"))
    }

    pub fn pin_text(&self, label: &str) -> String {
        fs::read_to_string(self.pin_path(label)).unwrap()
    }

    pub fn pin(&self, label: &str) -> Pin {
        Pin::new(self.pin_text(label))
    }

    pub fn so_pin_text(&self, label: &str) -> String {
        fs::read_to_string(self.dir.join(format!("{label}.so-pin"))).unwrap()
    }

    /// `pkcs11:token=LABEL;object=OBJECT?module-path=...`
    pub fn uri_text(&self, label: &str, object: &str) -> String {
        format!(
            "pkcs11:token={label};object={object}?module-path={}",
            module().display()
        )
    }

    pub fn uri(&self, label: &str, object: &str) -> Pkcs11Uri {
        Pkcs11Uri::parse(&self.uri_text(label, object)).unwrap()
    }

    /// Runs OpenSC's `pkcs11-tool` on this directory's tokens.
    pub fn pkcs11_tool(&self, args: &[&str]) -> Output {
        let module = module();
        let out = Command::new("pkcs11-tool")
            .arg("--module")
            .arg(&module)
            .args(args)
            .env("SOFTHSM2_CONF", self.conf())
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run OpenSC's pkcs11-tool ({e}): OpenSC is a required test \
                     component; install it with ci/setup.sh (apt-get install opensc)"
                )
            });
        out
    }

    /// `pkcs11-tool` that must succeed; returns its standard output.
    pub fn pkcs11_tool_ok(&self, args: &[&str]) -> String {
        let out = self.pkcs11_tool(args);
        assert!(
            out.status.success(),
            "pkcs11-tool {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The SoftHSM2 file of the token labelled `label` (`tokens/<uuid>/token.object`).
    fn token_object_file(&self, label: &str) -> PathBuf {
        let mut padded = label.as_bytes().to_vec();
        padded.resize(32, b' ');
        let mut found = Vec::new();
        for d in fs::read_dir(self.dir.join("tokens")).unwrap() {
            let f = d.unwrap().path().join("token.object");
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
    /// of SoftHSM2's file object store. Must run before this process first loads the
    /// module.
    pub fn lock_user_pin(&self, label: &str) {
        const CKF_USER_PIN_LOCKED: u64 = 0x0004_0000;
        let f = self.token_object_file(label);
        let mut bytes = fs::read(&f).unwrap();
        let tag: [u8; 16] = [0, 0, 0, 0, 0x80, 0, 0x53, 0x4b, 0, 0, 0, 0, 0, 0, 0, 2];
        let at: Vec<usize> = bytes
            .windows(16)
            .enumerate()
            .filter(|(_, w)| *w == tag)
            .map(|(i, _)| i + 16)
            .collect();
        assert_eq!(
            at.len(),
            1,
            "SoftHSM2's token file format changed: no single token-flags attribute in {}",
            f.display()
        );
        let v = &mut bytes[at[0]..at[0] + 8];
        let flags = u64::from_be_bytes(v.try_into().unwrap()) | CKF_USER_PIN_LOCKED;
        v.copy_from_slice(&flags.to_be_bytes());
        fs::write(&f, bytes).unwrap();
    }
}

/// Creates a token directory in `dir` with one token per label (make-tokens.sh).
pub fn make_tokens(dir: &Path, labels: &[&str]) -> Tokens {
    module();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../softhsm-config/make-tokens.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(dir)
        .args(labels)
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
    Tokens {
        dir: fs::canonicalize(dir).unwrap(),
    }
}

/// Runs `body` in a child process of this test binary, with its own SoftHSM2 token
/// directory holding one token per label. `name` must be the test function's name.
pub fn isolated(name: &str, labels: &[&str], body: impl FnOnce(&Tokens)) {
    if std::env::var(CHILD_ENV).as_deref() == Ok(name) {
        let tokens = Tokens {
            dir: PathBuf::from(std::env::var_os(DIR_ENV).unwrap()),
        };
        assert_eq!(
            std::env::var_os("SOFTHSM2_CONF").map(PathBuf::from),
            Some(tokens.conf())
        );
        body(&tokens);
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tokens = make_tokens(tmp.path(), labels);
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, name)
        .env(DIR_ENV, &tokens.dir)
        .env("SOFTHSM2_CONF", tokens.conf())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "test {name} failed in its SoftHSM2 process:\n{stdout}\n{stderr}"
    );
}
