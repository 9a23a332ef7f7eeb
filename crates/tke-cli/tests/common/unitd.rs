//! `tke-unitd` servers on loopback for the CLI tests: initialized in a temporary
//! directory, started, stopped (SIGTERM) or killed (SIGKILL, also when dropped), through
//! the server-process fixture of `tke-test-support`.
//!
//! `tke-unitd` is found next to the test binaries' `tke`: `cargo test --workspace` builds
//! both.

use std::path::{Path, PathBuf};

use tke_test_support::{server, ServerProc};

pub use tke_test_support::server::free_port;

/// A `tke-unitd` directory and, while running, its process (SIGKILLed when dropped).
pub struct Server {
    pub name: &'static str,
    pub dir: PathBuf,
    pub port: u16,
    process: Option<ServerProc>,
}

impl Server {
    /// `tke-unitd init` of `root/name` (relative paths in `args` name siblings in `root`).
    pub fn init(root: &Path, name: &'static str, args: &[&str]) -> Self {
        let dir = root.join(name);
        let port = free_port();
        server::init(&dir, port, args);
        Self {
            name,
            dir,
            port,
            process: None,
        }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Starts the server and waits until it listens.
    pub fn start(&mut self) {
        self.process = Some(ServerProc::start(&self.dir, self.port));
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill(&mut self) {
        self.process = None;
    }

    /// SIGTERM and wait for the graceful stop.
    pub fn stop(&mut self) {
        if let Some(p) = self.process.take() {
            p.stop();
        }
    }

    pub fn path(&self, file: &str) -> String {
        self.dir.join(file).to_str().unwrap().to_owned()
    }
}
