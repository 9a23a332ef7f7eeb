//! SoftHSM2 tokens for the tests of one test binary.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` and lists its tokens once, at `C_Initialize`: tokens
//! that another process initializes later are invisible to this one, and environment
//! variables are process-wide while tests run in threads. So the first test that needs a
//! token makes the pool of the whole binary, under a `OnceLock`, before anything loads the
//! module: one private token directory made with `softhsm-config/make-tokens.sh`, with
//! [`POOL_SIZE`] tokens of unique labels, and `SOFTHSM2_CONF` pointing at it. Each unit then
//! takes a token of its own ([`Pool::take`]). SoftHSM2 missing is a failure naming
//! `ci/setup.sh`, never a skip.

#![allow(dead_code)]

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicUsize, Ordering},
        OnceLock,
    },
};

use tke_unit::Pkcs11Config;

/// The SoftHSM2 module on Debian and Ubuntu (`apt-get install softhsm2`).
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// Tokens made for one test binary; a test that runs out says so.
pub const POOL_SIZE: usize = 184;

/// How many `make-tokens.sh` run at once (each into a directory of its own, merged after).
const SHARDS: usize = 4;

/// The token directory of this test binary.
pub struct Pool {
    /// The directory (`softhsm2.conf`, `tokens/`, `<label>.pin`).
    pub dir: PathBuf,
    labels: Vec<String>,
    next: AtomicUsize,
}

static POOL: OnceLock<Pool> = OnceLock::new();

/// The pool, made on first use.
pub fn pool() -> &'static Pool {
    POOL.get_or_init(|| Pool::make(POOL_SIZE))
}

/// Fails (never skips) when SoftHSM2 is not installed.
pub fn require_softhsm() {
    let util = Command::new("softhsm2-util").arg("--version").output();
    assert!(
        Path::new(MODULE).is_file() && util.is_ok_and(|o| o.status.success()),
        "SoftHSM2 is missing ({MODULE} and softhsm2-util): run ci/setup.sh, which installs softhsm2 and opensc"
    );
}

/// `softhsm-config/make-tokens.sh` of the workspace.
pub fn make_tokens_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../softhsm-config/make-tokens.sh")
}

/// Runs `make-tokens.sh dir labels...`.
pub fn make_tokens(dir: &Path, labels: &[String]) {
    let out = Command::new("bash")
        .arg(make_tokens_script())
        .arg(dir)
        .args(labels)
        .output()
        .expect("run softhsm-config/make-tokens.sh");
    assert!(
        out.status.success(),
        "softhsm-config/make-tokens.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Removes the token directories of test processes that are gone.
fn remove_stale(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("softhsm-") else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

impl Pool {
    fn make(size: usize) -> Self {
        require_softhsm();
        let parent = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        remove_stale(&parent);
        let dir = parent.join(format!("softhsm-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let labels: Vec<String> = (0..size).map(|i| format!("tke-test-{i:03}")).collect();
        // Shards in parallel (each softhsm2-util scans every token already there), then
        // their tokens and PIN files move into the first shard's directory.
        let shard_dirs: Vec<PathBuf> = (0..SHARDS)
            .map(|k| {
                if k == 0 {
                    dir.clone()
                } else {
                    dir.with_file_name(format!("softhsm-{}.shard{k}", std::process::id()))
                }
            })
            .collect();
        std::thread::scope(|s| {
            for (k, d) in shard_dirs.iter().enumerate() {
                let chunk: Vec<String> = labels.iter().skip(k).step_by(SHARDS).cloned().collect();
                s.spawn(move || make_tokens(d, &chunk));
            }
        });
        for d in &shard_dirs[1..] {
            for e in fs::read_dir(d.join("tokens")).unwrap() {
                let e = e.unwrap();
                fs::rename(e.path(), dir.join("tokens").join(e.file_name())).unwrap();
            }
            for e in fs::read_dir(d).unwrap() {
                let e = e.unwrap();
                if e.path()
                    .extension()
                    .is_some_and(|x| x == "pin" || x == "so-pin")
                {
                    fs::rename(e.path(), dir.join(e.file_name())).unwrap();
                }
            }
            fs::remove_dir_all(d).unwrap();
        }
        // Before any thread loads the module: SoftHSM2 reads it at C_Initialize.
        std::env::set_var("SOFTHSM2_CONF", dir.join("softhsm2.conf"));
        Self {
            dir,
            labels,
            next: AtomicUsize::new(0),
        }
    }

    /// A fresh token of its own: its label and PIN file.
    pub fn take(&self) -> (String, PathBuf) {
        let i = self.next.fetch_add(1, Ordering::SeqCst);
        let label = self.labels.get(i).unwrap_or_else(|| {
            panic!("the SoftHSM2 token pool of this test binary is used up: raise POOL_SIZE ({POOL_SIZE}) in tests/support/softhsm.rs")
        });
        (label.clone(), self.dir.join(format!("{label}.pin")))
    }

    /// A fresh token's configuration.
    pub fn config(&self) -> Pkcs11Config {
        let (label, pin) = self.take();
        Pkcs11Config::new(MODULE, label, pin)
    }

    /// The security officer PIN of a token.
    pub fn so_pin(&self, label: &str) -> String {
        fs::read_to_string(self.dir.join(format!("{label}.so-pin"))).unwrap()
    }
}
