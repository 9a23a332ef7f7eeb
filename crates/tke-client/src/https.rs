//! The HTTPS transport: reaches the units of a `tke-unitd` server (docs/protocol.md §16)
//! behind the same [`Transport`] trait as the embedded fleet.
//!
//! * **The fleet CA is pinned.** The TLS root store holds that one certificate and nothing
//!   else: a server whose certificate the CA did not issue (or that names another host) is
//!   refused before any request is sent. The same CA then checks every device certificate
//!   ([`crate::Client`]), which is what makes a unit's answer trustworthy.
//! * **API key.** Every request carries `Authorization: Bearer <key>`. The key never
//!   appears in `Debug` output or errors and is wiped from memory when dropped.
//! * **Timeouts** on connecting and on every read and write.
//! * **Retries for queries only.** Listings and status queries are idempotent and are
//!   retried after a network failure or a 503. A command is never sent twice: it may have
//!   executed even when its answer was lost, so the failure is reported as it is (the
//!   operator checks with `tke cryptounit-compare`).
//! * **Connections are reused** (keep-alive). A command goes out on a pooled connection
//!   only if it was used moments ago and is still open, else on a new one.
//!
//! The transport is synchronous, like the trait: [`crate::fanout::parallel`] drives many
//! units (and many servers) at once, one connection each.

use std::{
    collections::HashMap,
    fs,
    io::{self, ErrorKind, Read, Write},
    net::{TcpStream, ToSocketAddrs},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rustls::{
    pki_types::{CertificateDer, ServerName},
    ClientConnection, RootCertStore, StreamOwned,
};
use serde::Deserialize;
use tke_proto::{CaCertificate, UnitId, UnitType};
use zeroize::Zeroizing;

use crate::{ClientError, InstanceId, Transport, UnitDescriptor};

/// Media type of a request body: the DER of a TKE `Request`.
pub const REQUEST_TYPE: &str = "application/vnd.tke.request+der";
/// Media type of an exchange's answer: the DER of a TKE `SignedResponse`.
pub const RESPONSE_TYPE: &str = "application/vnd.tke.response+der";

/// Largest answer accepted from a server.
const MAX_ANSWER: usize = 4 << 20;
/// Largest answer head accepted.
const MAX_HEAD: usize = 16 << 10;
/// A pooled connection carries a command only if it was used this recently (a server
/// closes idle connections only after they have been idle longer than this).
const COMMAND_REUSE: Duration = Duration::from_millis(300);
/// A pooled connection carries a query only if it was used this recently.
const QUERY_REUSE: Duration = Duration::from_secs(2);
/// Idle connections kept per transport.
const POOL_MAX: usize = 16;

/// Where an exchange failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Connecting or the TLS handshake: nothing was sent.
    Connecting,
    /// Sending the request: the server may have received it.
    Sending,
    /// Waiting for or reading the answer: the server may have acted on the request.
    Receiving,
}

impl core::fmt::Display for Phase {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Connecting => "connecting",
            Self::Sending => "sending the request",
            Self::Receiving => "waiting for the answer",
        })
    }
}

/// Why an HTTPS exchange failed. Never contains the API key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpsError {
    /// The target URL is not `https://HOST[:PORT]`.
    #[error("{url:?} is not a valid target URL ({what}); write https://HOST:PORT")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong.
        what: &'static str,
    },
    /// The API key file cannot be read.
    #[error("cannot read the API key file {}", path.display())]
    ApiKeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The API key file can be read by other users.
    #[error("the API key file {} can be read by other users; restrict it with `chmod 600 {}`", path.display(), path.display())]
    ApiKeyPermissions {
        /// The file.
        path: PathBuf,
    },
    /// The API key file does not hold a key.
    #[error("the API key file {} does not hold an API key ({what})", path.display())]
    ApiKeyFormat {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: &'static str,
    },
    /// The CA certificate cannot be used as a TLS trust anchor.
    #[error("the fleet CA certificate cannot be used to check the server")]
    CaUnusable {
        /// rustls' reason.
        source: rustls::Error,
    },
    /// The host name does not resolve.
    #[error("cannot resolve {addr}")]
    Resolve {
        /// `HOST:PORT`.
        addr: String,
        /// Why.
        source: io::Error,
    },
    /// No TCP connection could be made.
    #[error("cannot connect to {addr}")]
    Connect {
        /// `HOST:PORT`.
        addr: String,
        /// Why (refused, unreachable, timed out).
        source: io::Error,
    },
    /// The server's certificate was not issued by the pinned CA, or names another host.
    #[error("the server's TLS certificate is not trusted")]
    UntrustedServer {
        /// rustls' reason (unknown issuer, bad signature, not valid for this name...).
        source: rustls::Error,
    },
    /// Another TLS failure.
    #[error("TLS failure while {phase}")]
    Tls {
        /// Where.
        phase: Phase,
        /// rustls' reason.
        source: rustls::Error,
    },
    /// The server did not answer in time.
    #[error("no answer in time while {phase}")]
    Timeout {
        /// Where.
        phase: Phase,
    },
    /// The connection failed.
    #[error("connection failure while {phase}")]
    Io {
        /// Where.
        phase: Phase,
        /// Why.
        source: io::Error,
    },
    /// The server answered with an HTTP error.
    #[error("Status code: {status}, Message: {message} ({code})")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The server's stable error code (empty when the body was not our JSON).
        code: String,
        /// The server's sentence.
        message: String,
    },
    /// The answer is not what the API specifies.
    #[error("the server's answer is not valid: {what}")]
    BadAnswer {
        /// What is wrong.
        what: &'static str,
    },
}

impl HttpsError {
    /// The HTTP status, when the server answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether a request may have reached the server (so a command may have run).
    pub fn may_have_reached_server(&self) -> bool {
        match self {
            Self::Tls { phase, .. } | Self::Timeout { phase } | Self::Io { phase, .. } => {
                *phase != Phase::Connecting
            }
            Self::Status { .. } | Self::BadAnswer { .. } => true,
            _ => false,
        }
    }

    /// Whether an idempotent request may be tried again.
    fn retryable(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Timeout { .. } | Self::Io { .. } => true,
            Self::Status { status, .. } => *status == 503,
            _ => false,
        }
    }
}

/// An API key. `Debug` never shows it; it is wiped from memory when dropped.
pub struct ApiKey(Zeroizing<String>);

impl core::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl ApiKey {
    /// Reads a key file (the key on its first line). Refuses a file that other users can
    /// read, as `ssh` does for private keys.
    ///
    /// # Errors
    /// [`HttpsError::ApiKeyFile`], [`HttpsError::ApiKeyPermissions`],
    /// [`HttpsError::ApiKeyFormat`].
    pub fn from_file(path: &Path) -> Result<Self, HttpsError> {
        let file_err = |source| HttpsError::ApiKeyFile {
            path: path.to_path_buf(),
            source,
        };
        let meta = fs::metadata(path).map_err(file_err)?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(HttpsError::ApiKeyPermissions {
                path: path.to_path_buf(),
            });
        }
        let text = Zeroizing::new(fs::read_to_string(path).map_err(file_err)?);
        let key = text.lines().next().unwrap_or_default().trim();
        if key.is_empty() {
            return Err(HttpsError::ApiKeyFormat {
                path: path.to_path_buf(),
                what: "the file is empty",
            });
        }
        if key.len() > 512 || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(HttpsError::ApiKeyFormat {
                path: path.to_path_buf(),
                what: "a key is one line of at most 512 visible ASCII characters",
            });
        }
        Ok(Self(Zeroizing::new(key.to_owned())))
    }
}

/// Timeouts and retries of an [`HttpsTransport`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpsOptions {
    /// Time allowed to open a TCP connection.
    pub connect_timeout: Duration,
    /// Time allowed for each read and write (the TLS handshake included).
    pub io_timeout: Duration,
    /// How many times a query (listing, status query) is tried again after a network
    /// failure or a 503. Commands are never tried again.
    pub query_retries: u32,
    /// The pause before the first retry; it doubles at each retry.
    pub retry_backoff: Duration,
}

impl Default for HttpsOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(30),
            query_retries: 2,
            retry_backoff: Duration::from_millis(200),
        }
    }
}

struct Idle {
    stream: StreamOwned<ClientConnection, TcpStream>,
    since: Instant,
}

/// The units of one `tke-unitd` server, reached over HTTPS.
pub struct HttpsTransport {
    name: String,
    url: String,
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
    key: ApiKey,
    instance: Option<InstanceId>,
    options: HttpsOptions,
    pool: Mutex<Vec<Idle>>,
    routes: Mutex<HashMap<UnitId, InstanceId>>,
}

impl core::fmt::Debug for HttpsTransport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HttpsTransport")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("instance", &self.instance)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Splits `https://HOST[:PORT][/]` into host (without brackets) and port.
fn parse_url(url: &str) -> Result<(String, u16), HttpsError> {
    let bad = |what| HttpsError::Url {
        url: url.to_owned(),
        what,
    };
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| bad("it must start with https://"))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#', '@']) {
        return Err(bad("only a host and a port may follow https://"));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("an IPv6 address needs a closing ]"))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?),
        };
        (h.to_owned(), port)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (rest.to_owned(), None),
        }
    };
    if host.is_empty() {
        return Err(bad("the host is empty"));
    }
    let port = match port {
        None => 443,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?,
    };
    Ok((host, port))
}

/// Classifies an I/O error of a TLS stream.
fn classify(e: io::Error, phase: Phase) -> HttpsError {
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .cloned();
    match tls {
        Some(source @ rustls::Error::InvalidCertificate(_)) => {
            HttpsError::UntrustedServer { source }
        }
        Some(source) => HttpsError::Tls { phase, source },
        None if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            HttpsError::Timeout { phase }
        }
        None => HttpsError::Io { phase, source: e },
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct InstancesBody {
    instances: Vec<InstanceEntry>,
}

#[derive(Deserialize)]
struct InstanceEntry {
    id: String,
}

#[derive(Deserialize)]
struct UnitsBody {
    instance: String,
    units: Vec<UnitEntry>,
}

#[derive(Deserialize)]
struct UnitEntry {
    id: String,
    #[serde(rename = "type")]
    unit_type: String,
    location: String,
    device_certificate: String,
}

/// An answer: status, content type and body.
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

impl HttpsTransport {
    /// A transport to the server at `url` (`https://HOST:PORT`), named `name` in messages,
    /// trusting only `ca` for its TLS certificate, sending `key`. Nothing is sent yet.
    ///
    /// # Errors
    /// [`HttpsError::Url`] for a bad URL, [`HttpsError::CaUnusable`].
    pub fn new(name: &str, url: &str, ca: &CaCertificate, key: ApiKey) -> Result<Self, HttpsError> {
        let (host, port) = parse_url(url)?;
        let server_name = ServerName::try_from(host.clone()).map_err(|_| HttpsError::Url {
            url: url.to_owned(),
            what: "the host is neither a DNS name nor an IP address",
        })?;
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(ca.der().to_vec()))
            .map_err(|source| HttpsError::CaUnusable { source })?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|source| HttpsError::CaUnusable { source })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let shown_host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        Ok(Self {
            name: name.to_owned(),
            url: format!("https://{shown_host}:{port}"),
            host,
            port,
            server_name,
            tls: Arc::new(tls),
            key,
            instance: None,
            options: HttpsOptions::default(),
            pool: Mutex::new(Vec::new()),
            routes: Mutex::new(HashMap::new()),
        })
    }

    /// Sets timeouts and retries.
    pub fn with_options(mut self, options: HttpsOptions) -> Self {
        self.options = options;
        self
    }

    /// Lists only this instance (instead of every instance the key opens).
    pub fn for_instance(mut self, instance: InstanceId) -> Self {
        self.instance = Some(instance);
        self
    }

    /// The target's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The normalized URL (`https://HOST:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    fn net_err(&self, unit: Option<UnitId>, source: HttpsError) -> ClientError {
        ClientError::Network {
            target: self.name.clone(),
            url: self.url.clone(),
            unit,
            source: Box::new(source),
        }
    }

    fn connect(&self) -> Result<StreamOwned<ClientConnection, TcpStream>, HttpsError> {
        let addr = format!("{}:{}", self.url_host(), self.port);
        let addrs: Vec<_> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|source| HttpsError::Resolve {
                addr: addr.clone(),
                source,
            })?
            .collect();
        let mut last = io::Error::new(ErrorKind::NotFound, "no address");
        let mut tcp = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, self.options.connect_timeout) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let tcp = tcp.ok_or(HttpsError::Connect { addr, source: last })?;
        let io = |source| HttpsError::Io {
            phase: Phase::Connecting,
            source,
        };
        tcp.set_nodelay(true).map_err(io)?;
        tcp.set_read_timeout(Some(self.options.io_timeout))
            .map_err(io)?;
        tcp.set_write_timeout(Some(self.options.io_timeout))
            .map_err(io)?;
        let conn = ClientConnection::new(self.tls.clone(), self.server_name.clone()).map_err(
            |source| HttpsError::Tls {
                phase: Phase::Connecting,
                source,
            },
        )?;
        let mut stream = StreamOwned::new(conn, tcp);
        // Handshake now, so that an untrusted server is refused before anything is sent.
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .map_err(|e| classify(e, Phase::Connecting))?;
        }
        Ok(stream)
    }

    fn url_host(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    /// A pooled connection used within `fresh` and still open, if any.
    fn pooled(&self, fresh: Duration) -> Option<StreamOwned<ClientConnection, TcpStream>> {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(idle) = pool.pop() {
            if idle.since.elapsed() > fresh {
                continue;
            }
            if still_open(&idle.stream.sock) {
                return Some(idle.stream);
            }
        }
        None
    }

    fn give_back(&self, stream: StreamOwned<ClientConnection, TcpStream>) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOL_MAX {
            pool.push(Idle {
                stream,
                since: Instant::now(),
            });
        }
    }

    /// One request on one connection; returns the answer and whether the connection may
    /// be reused.
    fn round_trip(
        &self,
        stream: &mut StreamOwned<ClientConnection, TcpStream>,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<(Answer, bool), HttpsError> {
        let mut head = Zeroizing::new(Vec::with_capacity(512));
        let _ = write!(
            head,
            "{method} {path} HTTP/1.1\r\nHost: {}:{}\r\nAuthorization: Bearer {}\r\nUser-Agent: tke/{}\r\n",
            self.url_host(),
            self.port,
            self.key.0.as_str(),
            env!("CARGO_PKG_VERSION")
        );
        match body {
            Some(b) => {
                let _ = write!(
                    head,
                    "Content-Type: {REQUEST_TYPE}\r\nAccept: {RESPONSE_TYPE}\r\nContent-Length: {}\r\n\r\n",
                    b.len()
                );
                head.extend_from_slice(b);
            }
            None => head.extend_from_slice(b"Accept: application/json\r\n\r\n"),
        }
        stream
            .write_all(&head)
            .and_then(|()| stream.flush())
            .map_err(|e| classify(e, Phase::Sending))?;

        let mut buf: Vec<u8> = Vec::with_capacity(1024);
        let mut chunk = [0u8; 8192];
        let deadline = Instant::now() + self.options.io_timeout;
        let (status, content_type, length, close, used) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&buf) {
                Ok(httparse::Status::Complete(used)) => {
                    let mut length = None;
                    let mut close = resp.version == Some(0);
                    let mut content_type = String::new();
                    for h in resp.headers.iter() {
                        let v = String::from_utf8_lossy(h.value);
                        if h.name.eq_ignore_ascii_case("content-length") {
                            length = v.trim().parse::<usize>().ok();
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            close = v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close"));
                        } else if h.name.eq_ignore_ascii_case("content-type") {
                            content_type =
                                v.split(';').next().unwrap_or_default().trim().to_owned();
                        }
                    }
                    let length = length.ok_or(HttpsError::BadAnswer {
                        what: "no Content-Length",
                    })?;
                    break (resp.code.unwrap_or(0), content_type, length, close, used);
                }
                Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => {}
                _ => {
                    return Err(HttpsError::BadAnswer {
                        what: "not an HTTP/1.1 answer",
                    })
                }
            }
            if Instant::now() > deadline {
                return Err(HttpsError::Timeout {
                    phase: Phase::Receiving,
                });
            }
            match stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(HttpsError::Io {
                        phase: Phase::Receiving,
                        source: io::Error::new(
                            ErrorKind::UnexpectedEof,
                            "the server closed the connection without answering",
                        ),
                    })
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(classify(e, Phase::Receiving)),
            }
        };
        if length > MAX_ANSWER {
            return Err(HttpsError::BadAnswer {
                what: "the answer is too large",
            });
        }
        let mut body = buf.split_off(used);
        while body.len() < length {
            if Instant::now() > deadline {
                return Err(HttpsError::Timeout {
                    phase: Phase::Receiving,
                });
            }
            match stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(HttpsError::Io {
                        phase: Phase::Receiving,
                        source: io::Error::from(ErrorKind::UnexpectedEof),
                    })
                }
                Ok(n) => body.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(classify(e, Phase::Receiving)),
            }
        }
        let reusable = !close && body.len() == length;
        body.truncate(length);
        Ok((
            Answer {
                status,
                content_type,
                body,
            },
            reusable,
        ))
    }

    /// Sends a request and returns a 200 answer. `idempotent` requests are retried.
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        idempotent: bool,
    ) -> Result<Answer, HttpsError> {
        let mut attempt = 0;
        loop {
            let result = self.attempt(method, path, body, idempotent);
            match result {
                Err(e) if idempotent && e.retryable() && attempt < self.options.query_retries => {
                    std::thread::sleep(self.options.retry_backoff * 2u32.saturating_pow(attempt));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn attempt(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        idempotent: bool,
    ) -> Result<Answer, HttpsError> {
        let fresh = if idempotent {
            QUERY_REUSE
        } else {
            COMMAND_REUSE
        };
        let (mut stream, reused) = match self.pooled(fresh) {
            Some(s) => (s, true),
            None => (self.connect()?, false),
        };
        let answer = match self.round_trip(&mut stream, method, path, body) {
            Ok((answer, reusable)) => {
                if reusable {
                    self.give_back(stream);
                }
                answer
            }
            // A kept-alive connection the server had just closed: a query goes again
            // at once on a new connection (a command never does).
            Err(HttpsError::Io { .. }) if reused && idempotent => {
                let mut stream = self.connect()?;
                let (answer, reusable) = self.round_trip(&mut stream, method, path, body)?;
                if reusable {
                    self.give_back(stream);
                }
                answer
            }
            Err(e) => return Err(e),
        };
        if answer.status != 200 {
            let parsed: Option<ErrorBody> = serde_json::from_slice(&answer.body).ok();
            let (code, message) = match parsed {
                Some(b) => (b.code, b.message),
                None => (
                    String::new(),
                    String::from_utf8_lossy(&answer.body[..answer.body.len().min(200)])
                        .chars()
                        .filter(|c| !c.is_control())
                        .collect(),
                ),
            };
            return Err(HttpsError::Status {
                status: answer.status,
                code,
                message,
            });
        }
        Ok(answer)
    }

    fn get_json<T: for<'de> Deserialize<'de>>(&self, path: &str) -> Result<T, HttpsError> {
        let a = self.request("GET", path, None, true)?;
        serde_json::from_slice(&a.body).map_err(|_| HttpsError::BadAnswer {
            what: "the JSON body does not have the documented shape",
        })
    }

    fn list(&self) -> Result<Vec<UnitDescriptor>, HttpsError> {
        let bad = |what| HttpsError::BadAnswer { what };
        let instances = match &self.instance {
            Some(i) => vec![i.0.clone()],
            None => {
                let body: InstancesBody = self.get_json("/v1/instances")?;
                body.instances.into_iter().map(|i| i.id).collect()
            }
        };
        let mut out = Vec::new();
        for inst in instances {
            if UnitId::from_uuid(&inst).is_err() {
                return Err(bad("an instance id is not a UUID"));
            }
            let body: UnitsBody = self.get_json(&format!("/v1/tke/{inst}/hsms"))?;
            if body.instance != inst {
                return Err(bad("the unit listing names another instance"));
            }
            for u in body.units {
                let unit_id =
                    UnitId::from_uuid(&u.id).map_err(|_| bad("a unit id is not a UUID"))?;
                let unit_type = match u.unit_type.as_str() {
                    "operational" => UnitType::Operational,
                    "recovery" => UnitType::Recovery,
                    "failover" => UnitType::Failover,
                    _ => return Err(bad("a unit has an unknown type")),
                };
                let (_, der) = tke_proto::der::pem::decode_vec(u.device_certificate.as_bytes())
                    .map_err(|_| bad("a device certificate is not PEM"))?;
                out.push(UnitDescriptor {
                    instance: InstanceId(inst.clone()),
                    unit_id,
                    unit_type,
                    location: u.location,
                    device_certificate: der,
                });
            }
        }
        Ok(out)
    }
}

/// Whether a kept-alive socket is still open: nothing to read yet (a server that closed
/// it would have sent a TLS alert or end-of-file).
fn still_open(sock: &TcpStream) -> bool {
    if sock.set_nonblocking(true).is_err() {
        return false;
    }
    let mut b = [0u8; 1];
    let open = matches!(sock.peek(&mut b), Err(e) if e.kind() == ErrorKind::WouldBlock);
    sock.set_nonblocking(false).is_ok() && open
}

impl Transport for HttpsTransport {
    fn describe(&self) -> String {
        format!("{} (target {})", self.url, self.name)
    }

    fn list_units(&self) -> Result<Vec<UnitDescriptor>, ClientError> {
        let units = self.list().map_err(|e| self.net_err(None, e))?;
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        for u in &units {
            routes.insert(u.unit_id, u.instance.clone());
        }
        Ok(units)
    }

    fn exchange(&self, unit: &UnitId, request_der: &[u8]) -> Result<Vec<u8>, ClientError> {
        let instance = self
            .routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(unit)
            .cloned()
            .ok_or(ClientError::UnknownUnit { unit: *unit })?;
        // The CHOICE tag says what the request is: [0] a query, [1] a command.
        let query = request_der.first() == Some(&0xa0);
        let path = format!(
            "/v1/tke/{}/hsms/{}/{}",
            instance.0,
            unit.uuid(),
            if query { "query" } else { "command" }
        );
        let answer = self
            .request("POST", &path, Some(request_der), query)
            .map_err(|e| self.net_err(Some(*unit), e))?;
        if answer.content_type != RESPONSE_TYPE {
            return Err(self.net_err(
                Some(*unit),
                HttpsError::BadAnswer {
                    what: "the answer is not a TKE SignedResponse",
                },
            ));
        }
        Ok(answer.body)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("https://127.0.0.1:9441").unwrap(),
            ("127.0.0.1".into(), 9441)
        );
        assert_eq!(
            parse_url("https://unitd.example/").unwrap(),
            ("unitd.example".into(), 443)
        );
        assert_eq!(
            parse_url("https://[::1]:8443").unwrap(),
            ("::1".into(), 8443)
        );
        for bad in [
            "http://127.0.0.1:1",
            "https://",
            "https://h:0",
            "https://h:x",
            "https://h:1/v1",
            "https://u@h:1",
            "https://[::1",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    /// A TCP server that accepts connections and closes them at once, counting them.
    fn slammer() -> (
        u16,
        Arc<std::sync::atomic::AtomicUsize>,
        Arc<std::sync::atomic::AtomicBool>,
    ) {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let count = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (count.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((conn, _)) => {
                        c.fetch_add(1, Ordering::SeqCst);
                        drop(conn);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        (port, count, stop)
    }

    fn test_ca() -> CaCertificate {
        use tke_proto::p256::ecdsa::{signature::Signer as _, Signature, SigningKey};
        let key = SigningKey::random(&mut rand_core::OsRng);
        let k = key.clone();
        CaCertificate::build(
            "test",
            &tke_proto::p256::PublicKey::from(key.verifying_key()),
            Box::new(move |m: &[u8]| {
                let s: Signature = k.sign(m);
                Ok(s.to_der())
            }),
        )
        .unwrap()
    }

    #[test]
    fn queries_are_retried_and_commands_never() {
        use std::sync::atomic::Ordering;
        let (port, count, stop) = slammer();
        let t = HttpsTransport::new(
            "t",
            &format!("https://127.0.0.1:{port}"),
            &test_ca(),
            ApiKey(Zeroizing::new("k".into())),
        )
        .unwrap()
        .with_options(HttpsOptions {
            query_retries: 2,
            retry_backoff: Duration::from_millis(10),
            ..HttpsOptions::default()
        });
        let q = t.request("POST", "/q", Some(&[0xa0]), true).unwrap_err();
        assert!(q.retryable(), "{q}");
        assert!(!q.may_have_reached_server(), "nothing was sent: {q}");
        let tried = count.load(Ordering::SeqCst);
        assert_eq!(tried, 3, "a query is tried 1 + 2 times");
        let c = t.request("POST", "/c", Some(&[0xa1]), false).unwrap_err();
        assert!(
            matches!(c, HttpsError::Io { .. } | HttpsError::Tls { .. }),
            "{c}"
        );
        assert_eq!(
            count.load(Ordering::SeqCst),
            tried + 1,
            "a command is tried once"
        );
        stop.store(true, Ordering::SeqCst);
    }

    #[test]
    fn the_key_is_never_shown() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        fs::write(&p, "tkek_0123456789abcdef\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        let k = ApiKey::from_file(&p).unwrap();
        assert!(!format!("{k:?}").contains("0123456789"));
        let t = HttpsTransport::new("t", "https://127.0.0.1:1", &test_ca(), k).unwrap();
        let shown = format!("{t:?}");
        assert!(
            shown.contains("127.0.0.1") && !shown.contains("0123456789"),
            "{shown}"
        );
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            ApiKey::from_file(&p),
            Err(HttpsError::ApiKeyPermissions { .. })
        ));
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&p, "\n").unwrap();
        assert!(matches!(
            ApiKey::from_file(&p),
            Err(HttpsError::ApiKeyFormat { .. })
        ));
    }
}
