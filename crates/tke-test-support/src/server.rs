//! Real `tke-unitd` processes on loopback: make a server directory ([`init`], or
//! [`join`] one to an existing fleet through a request the CA signs), start the
//! server and wait until it listens ([`ServerProc::start`]), stop it (SIGKILL when the
//! [`ServerProc`] drops, or a graceful SIGTERM with [`ServerProc::stop`]), and talk to it
//! through tke-client's HTTPS transport ([`client`]). [`Server`] keeps a directory and its
//! port together for tests that start, stop and kill one server several times.

use std::{
    ffi::OsStr,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use tke_client::{ApiKey, Client, HttpsOptions, HttpsTransport, Transport};
use tke_proto::CaCertificate;

/// The line `tke-unitd serve` logs once it accepts connections.
const READY: &str = "tke-unitd listening on";

/// How long a server may take to start or stop.
const LIMIT: Duration = Duration::from_secs(30);

/// The `tke-unitd` binary of this build: in the target directory of the running test or
/// bench (`target/<profile>/deps/<test>` → `target/<profile>/tke-unitd`), where Cargo puts
/// it for tke-server's own tests and `cargo test --workspace` builds it.
///
/// # Panics
/// When it has not been built.
pub fn unitd() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("the test binary: {e}"));
    let profile_dir = exe
        .parent()
        .and_then(|deps| {
            if deps.ends_with("deps") {
                deps.parent()
            } else {
                Some(deps)
            }
        })
        .unwrap_or_else(|| panic!("no target directory above {}", exe.display()));
    let p = profile_dir.join("tke-unitd");
    assert!(
        p.is_file(),
        "{} is missing: build it with `cargo build -p tke-server` (`cargo test --workspace` does)",
        p.display()
    );
    p
}

/// A loopback port that was free a moment ago.
///
/// # Panics
/// When no port can be bound.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
        .port()
}

/// The fleet CA passphrase [`ca_passphrase_file`] holds.
pub const CA_PASSPHRASE: &str = "fleet-ca-passphrase-of-the-tests";

/// `root/ca-passphrase`, holding [`CA_PASSPHRASE`] with mode 0600 (made on first use):
/// the `--ca-passphrase-file` of the servers made in `root`.
///
/// # Panics
/// When it cannot be written.
pub fn ca_passphrase_file(root: &Path) -> PathBuf {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let path = root.join("ca-passphrase");
    if !path.exists() {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{CA_PASSPHRASE}"))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    path
}

/// Runs `tke-unitd ARGS...` in `cwd` and returns its standard output.
///
/// # Panics
/// When it fails.
fn run_unitd(cwd: &Path, args: &[&OsStr]) -> String {
    let out = Command::new(unitd())
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run tke-unitd: {e}"));
    assert!(
        out.status.success(),
        "tke-unitd {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn parent_of(dir: &Path) -> &Path {
    dir.parent()
        .filter(|p| p.is_dir())
        .unwrap_or_else(|| panic!("{} has no parent directory", dir.display()))
}

/// Runs `tke-unitd init --dir DIR --listen 127.0.0.1:PORT ARGS...` in the parent directory
/// of `dir` (so relative paths in `args`, e.g. `--ca-dir a`, name its siblings) and
/// returns its standard output. Unless `args` has one, the CA passphrase comes from
/// [`ca_passphrase_file`] of that parent directory. Unless `args` has a `--tls-name`, the
/// TLS certificate names `127.0.0.1` (`--tls-name 127.0.0.1`), the address the tests
/// connect to.
///
/// # Panics
/// When `init` fails.
pub fn init(dir: &Path, port: u16, args: &[&str]) -> String {
    let parent = parent_of(dir);
    let listen = format!("127.0.0.1:{port}");
    let passphrase = ca_passphrase_file(parent);
    let mut all: Vec<&OsStr> = vec![
        OsStr::new("init"),
        OsStr::new("--dir"),
        dir.as_os_str(),
        OsStr::new("--listen"),
        OsStr::new(&listen),
    ];
    all.extend(args.iter().map(OsStr::new));
    loopback_name(&mut all, args);
    if !args.contains(&"--ca-passphrase-file") {
        all.extend([OsStr::new("--ca-passphrase-file"), passphrase.as_os_str()]);
    }
    run_unitd(parent, &all)
}

/// Adds `--tls-name 127.0.0.1` to a command line unless `args` names the TLS certificate's
/// hosts itself: `tke-unitd` no longer names loopback addresses unless asked to.
fn loopback_name(line: &mut Vec<&OsStr>, args: &[&str]) {
    if !args.contains(&"--tls-name") {
        line.extend([OsStr::new("--tls-name"), OsStr::new("127.0.0.1")]);
    }
}

/// Joins a new server `dir` to the fleet whose CA is in `ca_dir` (made by [`init`] in the
/// same parent directory), as operators do: `tke-unitd join --request` (with `args`, run
/// in the parent directory; `--tls-name 127.0.0.1` unless `args` has a `--tls-name`),
/// `tke-unitd ca-sign` with [`ca_passphrase_file`], `tke-unitd
/// join --certificates`. The request and the certificates are `NAME.req` and `NAME.crt`
/// beside `dir`. Returns the three standard outputs.
///
/// # Panics
/// When a step fails.
pub fn join(dir: &Path, port: u16, ca_dir: &Path, args: &[&str]) -> String {
    let parent = parent_of(dir);
    let name = dir
        .file_name()
        .unwrap_or_else(|| panic!("{} has no name", dir.display()))
        .to_string_lossy();
    let request = parent.join(format!("{name}.req"));
    let certs = parent.join(format!("{name}.crt"));
    let listen = format!("127.0.0.1:{port}");
    let ca = ca_dir.join("ca.pem");
    let mut first: Vec<&OsStr> = vec![
        OsStr::new("join"),
        OsStr::new("--dir"),
        dir.as_os_str(),
        OsStr::new("--listen"),
        OsStr::new(&listen),
        OsStr::new("--ca"),
        ca.as_os_str(),
        OsStr::new("--request"),
        request.as_os_str(),
    ];
    first.extend(args.iter().map(OsStr::new));
    loopback_name(&mut first, args);
    let mut out = run_unitd(parent, &first);
    let passphrase = ca_passphrase_file(parent);
    out += &run_unitd(
        parent,
        &[
            OsStr::new("ca-sign"),
            OsStr::new("--ca-dir"),
            ca_dir.as_os_str(),
            OsStr::new("--request"),
            request.as_os_str(),
            OsStr::new("--out"),
            certs.as_os_str(),
            OsStr::new("--ca-passphrase-file"),
            passphrase.as_os_str(),
        ],
    );
    out += &run_unitd(
        parent,
        &[
            OsStr::new("join"),
            OsStr::new("--dir"),
            dir.as_os_str(),
            OsStr::new("--certificates"),
            certs.as_os_str(),
        ],
    );
    out
}

/// A running `tke-unitd serve`; killed (SIGKILL) when dropped unless it already exited.
pub struct ServerProc {
    /// The process.
    pub child: Child,
    /// Its server directory.
    pub dir: PathBuf,
    /// The loopback port it listens on.
    pub port: u16,
    /// The file its log (standard error) goes to: `DIR/unitd-N.log`, one per start.
    pub log: PathBuf,
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerProc {
    /// Starts the server of `dir` (made by [`init`] for `port`) and waits for its start-up
    /// line.
    ///
    /// # Panics
    /// When it exits or does not listen within 30 s.
    pub fn start(dir: &Path, port: u16) -> Self {
        Self::start_with(dir, port, &[])
    }

    /// As [`ServerProc::start`], with more arguments for `serve` (such as
    /// `--latency-ms 20`).
    ///
    /// # Panics
    /// As [`ServerProc::start`].
    pub fn start_with(dir: &Path, port: u16, args: &[&str]) -> Self {
        let log = (1..)
            .map(|n| dir.join(format!("unitd-{n}.log")))
            .find(|l| !l.exists())
            .unwrap_or_else(|| dir.join("unitd.log"));
        let stderr = fs::File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let child = Command::new(unitd())
            .arg("serve")
            .arg("--config")
            .arg(dir.join("unitd.toml"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start tke-unitd: {e}"));
        let mut s = Self {
            child,
            dir: dir.to_path_buf(),
            port,
            log,
        };
        s.wait_for_log(READY, LIMIT);
        s
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// What the server logged so far.
    pub fn logs(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log holds `what`.
    ///
    /// # Panics
    /// When the server exits first, or `limit` passes.
    pub fn wait_for_log(&mut self, what: &str, limit: Duration) {
        let start = Instant::now();
        loop {
            if self.logs().contains(what) {
                return;
            }
            if let Some(status) = self.try_wait() {
                panic!(
                    "tke-unitd {} exited ({status}) before {what:?}:\n{}",
                    self.dir.display(),
                    self.logs()
                );
            }
            assert!(
                start.elapsed() < limit,
                "no {what:?} in the log of tke-unitd {} within {limit:?}:\n{}",
                self.dir.display(),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .try_wait()
            .unwrap_or_else(|e| panic!("tke-unitd {}: {e}", self.dir.display()))
    }

    /// Sends a signal (`TERM`, `INT`, ...) and waits (bounded) for the process to exit;
    /// returns its status.
    ///
    /// # Panics
    /// When the signal cannot be sent or the process outlives `limit`.
    pub fn signal_and_wait(&mut self, signal: &str, limit: Duration) -> ExitStatus {
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(sent, "cannot send SIG{signal} to tke-unitd");
        let start = Instant::now();
        loop {
            if let Some(s) = self.try_wait() {
                return s;
            }
            assert!(
                start.elapsed() < limit,
                "tke-unitd did not exit within {limit:?} after SIG{signal}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Graceful stop: SIGTERM, and wait for the process to exit.
    ///
    /// # Panics
    /// As [`ServerProc::signal_and_wait`].
    pub fn stop(mut self) -> ExitStatus {
        self.signal_and_wait("TERM", LIMIT)
    }

    /// Resident memory of the server, in KiB.
    ///
    /// # Panics
    /// When `/proc` does not say.
    pub fn rss_kib(&self) -> u64 {
        let path = format!("/proc/{}/status", self.child.id());
        let status = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in {path}"))
    }
}

/// A `tke-unitd` directory and, while running, its process (SIGKILLed when dropped).
pub struct Server {
    /// Its name, the directory's last component.
    pub name: &'static str,
    /// The server directory.
    pub dir: PathBuf,
    /// The loopback port it listens on.
    pub port: u16,
    process: Option<ServerProc>,
}

impl Server {
    /// [`init`] of `root/name` on a free port (relative paths in `args` name siblings in
    /// `root`).
    ///
    /// # Panics
    /// As [`init`].
    pub fn init(root: &Path, name: &'static str, args: &[&str]) -> Self {
        let dir = root.join(name);
        let port = free_port();
        init(&dir, port, args);
        Self {
            name,
            dir,
            port,
            process: None,
        }
    }

    /// [`join`] of `root/name` on a free port to the fleet of `ca` (its directory holds
    /// the CA key): `args` as for `tke-unitd join --request`.
    ///
    /// # Panics
    /// As [`join`].
    pub fn join(root: &Path, name: &'static str, ca: &Server, args: &[&str]) -> Self {
        let dir = root.join(name);
        let port = free_port();
        join(&dir, port, &ca.dir, args);
        Self {
            name,
            dir,
            port,
            process: None,
        }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Starts the server and waits until it listens.
    ///
    /// # Panics
    /// As [`ServerProc::start`].
    pub fn start(&mut self) {
        self.process = Some(ServerProc::start(&self.dir, self.port));
    }

    /// As [`Server::start`], with more arguments for `serve` (such as `--latency-ms 20`).
    ///
    /// # Panics
    /// As [`ServerProc::start`].
    pub fn start_with(&mut self, args: &[&str]) {
        self.process = Some(ServerProc::start_with(&self.dir, self.port, args));
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill(&mut self) {
        self.process = None;
    }

    /// SIGTERM and wait for the graceful stop.
    ///
    /// # Panics
    /// As [`ServerProc::stop`].
    pub fn stop(&mut self) {
        if let Some(p) = self.process.take() {
            p.stop();
        }
    }

    /// The path of `file` in the server directory, as a string for command lines.
    ///
    /// # Panics
    /// When the path is not UTF-8.
    pub fn path(&self, file: &str) -> String {
        let p = self.dir.join(file);
        p.to_str()
            .unwrap_or_else(|| panic!("{} is not UTF-8", p.display()))
            .to_owned()
    }
}

/// The fleet CA of a server directory (`DIR/ca.pem`).
///
/// # Panics
/// When it cannot be read.
pub fn ca_of(dir: &Path) -> CaCertificate {
    let path = dir.join("ca.pem");
    let pem = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    CaCertificate::from_pem(&pem).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// An HTTPS transport to a server, with the API key in `key_file` and generous timeouts
/// (test machines are loaded).
///
/// # Panics
/// When the key file or the CA is refused.
pub fn transport(url: &str, ca: &CaCertificate, key_file: &Path) -> HttpsTransport {
    let key = ApiKey::from_file(key_file)
        .unwrap_or_else(|e| panic!("API key {}: {e}", key_file.display()));
    HttpsTransport::new("test", url, ca, key)
        .unwrap_or_else(|e| panic!("HTTPS transport to {url}: {e}"))
        .with_options(HttpsOptions {
            io_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(20),
            ..HttpsOptions::default()
        })
}

/// A client over several servers of one fleet, whose CA is `ca`, with the API key in
/// `key_file`.
///
/// # Panics
/// When the client cannot connect.
pub fn fleet_client(servers: &[&ServerProc], ca: &CaCertificate, key_file: &Path) -> Client {
    let endpoints = servers
        .iter()
        .map(|s| {
            let t: Arc<dyn Transport> = Arc::new(transport(&s.url(), ca, key_file));
            (t, ca.clone())
        })
        .collect();
    Client::connect(endpoints).unwrap_or_else(|e| panic!("connect to the fleet: {e}"))
}

/// A client over one server, with its default API key (`DIR/api-key`).
///
/// # Panics
/// When the client cannot connect.
pub fn client(server: &ServerProc) -> Client {
    let ca = ca_of(&server.dir);
    let t: Arc<dyn Transport> =
        Arc::new(transport(&server.url(), &ca, &server.dir.join("api-key")));
    Client::connect(vec![(t, ca)]).unwrap_or_else(|e| panic!("connect to {}: {e}", server.url()))
}
