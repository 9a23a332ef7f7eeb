//! Helpers shared by the tke-unitd tests: make a server directory, run the real
//! `tke-unitd` process (killed when the guard drops), talk to it raw or through the
//! tke-client HTTPS transport, and sign commands with in-memory administrators.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, missing_docs)]

use std::{
    fs,
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use tke_client::{ApiKey, Client, HttpsOptions, HttpsTransport, Transport};
use tke_proto::{
    p256::ecdsa::{signature::Signer as _, DerSignature, Signature, SigningKey},
    AdminCertificate, AdminName, CaCertificate,
};
use tke_sigkey::{SignError, Signer, SignerKind};

pub const UNITD: &str = env!("CARGO_BIN_EXE_tke-unitd");

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `tke-unitd init --dir DIR --listen 127.0.0.1:PORT ARGS...` and returns its stdout.
pub fn init(dir: &Path, port: u16, args: &[&str]) -> String {
    let out = Command::new(UNITD)
        .arg("init")
        .arg("--dir")
        .arg(dir)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A running `tke-unitd serve`; killed (SIGKILL) when dropped unless it already exited.
pub struct ServerProc {
    pub child: Child,
    pub dir: PathBuf,
    pub port: u16,
    pub log: PathBuf,
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerProc {
    /// Starts the server of `dir` and waits for its start-up line.
    pub fn start(dir: &Path, port: u16) -> Self {
        let n = fs::read_dir(dir).unwrap().count();
        let log = dir.join(format!("unitd-{n}.log"));
        let child = Command::new(UNITD)
            .arg("serve")
            .arg("--config")
            .arg(dir.join("unitd.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut s = Self {
            child,
            dir: dir.to_path_buf(),
            port,
            log,
        };
        s.wait_for_log("tke-unitd listening on", Duration::from_secs(30));
        s
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn logs(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_for_log(&mut self, what: &str, limit: Duration) {
        let start = Instant::now();
        loop {
            if self.logs().contains(what) {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "tke-unitd exited ({status}) before {what:?}:\n{}",
                    self.logs()
                );
            }
            assert!(
                start.elapsed() < limit,
                "no {what:?} in the log within {limit:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal and waits (bounded) for the process to exit; returns its status.
    pub fn signal_and_wait(&mut self, signal: &str, limit: Duration) -> std::process::ExitStatus {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
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

    /// Resident memory of the server, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }
}

pub fn ca_of(dir: &Path) -> CaCertificate {
    CaCertificate::from_pem(&fs::read_to_string(dir.join("ca.pem")).unwrap()).unwrap()
}

/// An HTTPS transport to a server, with the key in `key_file`.
pub fn transport(url: &str, ca: &CaCertificate, key_file: &Path) -> HttpsTransport {
    HttpsTransport::new("test", url, ca, ApiKey::from_file(key_file).unwrap())
        .unwrap()
        .with_options(HttpsOptions {
            io_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(20),
            ..HttpsOptions::default()
        })
}

/// A client over one server, with its default key.
pub fn client(server: &ServerProc) -> Client {
    let ca = ca_of(&server.dir);
    let t: Arc<dyn Transport> =
        Arc::new(transport(&server.url(), &ca, &server.dir.join("api-key")));
    Client::connect(vec![(t, ca)]).unwrap()
}

/// An administrator whose key is in memory (tests only).
pub struct MemSigner {
    /// Signs through aws-lc, as the file signer does.
    key: tke_proto::ecdsa_p256::EcdsaKey,
    cert: AdminCertificate,
}

impl MemSigner {
    pub fn new(name: &str) -> Self {
        let key = SigningKey::random(&mut rand_core::OsRng);
        let k = key.clone();
        let cert = AdminCertificate::build(
            &AdminName::new(name).unwrap(),
            &tke_proto::p256::PublicKey::from(key.verifying_key()),
            Box::new(move |m: &[u8]| {
                let s: Signature = k.sign(m);
                Ok(s.to_der())
            }),
        )
        .unwrap();
        Self {
            key: tke_proto::ecdsa_p256::EcdsaKey::new(key).unwrap(),
            cert,
        }
    }
}

impl Signer for MemSigner {
    fn certificate(&self) -> &AdminCertificate {
        &self.cert
    }
    fn kind(&self) -> SignerKind {
        SignerKind::File
    }
    fn sign(&self, message: &[u8]) -> Result<DerSignature, SignError> {
        Ok(self.key.sign(message).unwrap())
    }
}

/// An HTTP answer read raw.
#[derive(Debug)]
pub struct Raw {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Raw {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `bytes` as they are over a TLS connection trusting `ca`, and reads one answer.
pub fn raw(port: u16, ca: &CaCertificate, bytes: &[u8]) -> Raw {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(ca.der().to_vec()))
        .unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let conn = rustls::ClientConnection::new(
        Arc::new(cfg),
        rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
    )
    .unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    s.write_all(bytes).unwrap();
    s.flush().unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(used) = r.parse(&buf).unwrap() {
            let headers: Vec<(String, String)> = r
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_owned(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let len: usize = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .map(|(_, v)| v.parse().unwrap())
                .unwrap();
            let status = r.code.unwrap();
            while buf.len() < used + len {
                let n = s.read(&mut chunk).unwrap();
                assert!(n > 0, "answer cut short");
                buf.extend_from_slice(&chunk[..n]);
            }
            return Raw {
                status,
                headers,
                body: buf[used..used + len].to_vec(),
            };
        }
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed without an answer");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A request with headers and a body, as raw bytes.
pub fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut v = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n").into_bytes();
    for (n, h) in headers {
        v.extend_from_slice(format!("{n}: {h}\r\n").as_bytes());
    }
    v.extend_from_slice(b"\r\n");
    v.extend_from_slice(body);
    v
}

pub fn key(dir: &Path, name: &str) -> String {
    fs::read_to_string(dir.join(name))
        .unwrap()
        .trim()
        .to_owned()
}

pub fn instance_ids(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join("instance-id"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}
