//! `tke-unitd` servers on loopback for the CLI tests: initialized in a temporary
//! directory, started, stopped (SIGTERM) or killed (SIGKILL, also when dropped).
//!
//! `tke-unitd` is found next to the `tke` binary: `cargo test --workspace` builds both.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The `tke-unitd` binary, next to `tke`.
pub fn unitd() -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_tke")).with_file_name("tke-unitd");
    assert!(
        p.is_file(),
        "{} is missing: build it with `cargo build -p tke-server` (`cargo test --workspace` does)",
        p.display()
    );
    p
}

/// A loopback port nothing listens on (at the time of asking).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `tke-unitd` directory and, while running, its process (SIGKILLed when dropped).
pub struct Server {
    pub name: &'static str,
    pub dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
    starts: usize,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Server {
    pub fn init(root: &Path, name: &'static str, args: &[&str]) -> Self {
        let dir = root.join(name);
        let port = free_port();
        let out = Command::new(unitd())
            .arg("init")
            .arg("--dir")
            .arg(&dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(args)
            .current_dir(root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tke-unitd init {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            name,
            dir,
            port,
            child: None,
            starts: 0,
        }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join(format!("unitd-{}.log", self.starts))
    }

    pub fn start(&mut self) {
        self.starts += 1;
        let log = self.log();
        let child = Command::new(unitd())
            .args(["serve", "--config"])
            .arg(self.dir.join("unitd.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("tke-unitd listening on")
            {
                return;
            }
            if let Some(s) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "tke-unitd {} exited ({s}):\n{}",
                    self.name,
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{} did not start",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the graceful stop.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let ok = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status()
                .unwrap();
            assert!(ok.success());
            let start = Instant::now();
            while c.try_wait().unwrap().is_none() {
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "{} did not stop",
                    self.name
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub fn path(&self, file: &str) -> String {
        self.dir.join(file).to_str().unwrap().to_owned()
    }
}
