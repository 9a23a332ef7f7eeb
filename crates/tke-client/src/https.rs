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
//! HTTP/1.1 is hyper's client (one connection per request in flight), TLS is rustls
//! through tokio-rustls with the configuration above, and URLs are parsed by the `url`
//! crate. The transport is synchronous, like the trait: each transport drives its
//! connections on a small runtime of its own (one thread), and
//! [`crate::fanout::parallel`] drives many units (and many servers) at once. Being
//! blocking, it must not be called from inside an async task (tokio refuses to block
//! there): call it from a blocking thread.

use std::{
    collections::HashMap,
    fs,
    io::{self, ErrorKind},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{
    client::conn::http1::{self, SendRequest},
    header::{self, HeaderValue},
};
use hyper_util::rt::TokioIo;
use rustls::{
    pki_types::{CertificateDer, ServerName},
    RootCertStore,
};
use serde::Deserialize;
use tke_proto::{CaCertificate, UnitId, UnitType};
use tokio::{net::TcpStream, time::timeout};
use zeroize::Zeroizing;

use crate::{untrusted::sanitize, ClientError, InstanceId, Transport, UnitDescriptor};

mod kms;

/// Media type of a request body: the DER of a TKE `Request`.
pub const REQUEST_TYPE: &str = "application/vnd.tke.request+der";
/// Media type of an exchange's answer: the DER of a TKE `SignedResponse`.
pub const RESPONSE_TYPE: &str = "application/vnd.tke.response+der";

/// Largest answer accepted from a server.
const MAX_ANSWER: usize = 4 << 20;
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
        source: UntrustedReason,
    },
    /// Another TLS failure.
    #[error("TLS failure while {phase}")]
    Tls {
        /// Where.
        phase: Phase,
        /// rustls' reason.
        source: rustls::Error,
    },
    /// The transport's runtime (its thread) cannot be started.
    #[error("cannot start the HTTPS transport's thread")]
    Runtime {
        /// Why.
        source: io::Error,
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
    /// Time allowed for the TLS handshake, and for each request to be sent and its whole
    /// answer received.
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

/// A kept-alive connection and when it last finished a request.
struct Idle {
    sender: SendRequest<Full<Bytes>>,
    since: Instant,
}

/// The transport's runtime; stopped without waiting when the transport is dropped (its
/// only tasks are idle connections).
struct Runtime(Option<tokio::runtime::Runtime>);

impl Runtime {
    /// One worker thread: the transport's calls block on it one at a time.
    fn start() -> Result<Self, HttpsError> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tke-https")
            .enable_all()
            .build()
            .map(|rt| Self(Some(rt)))
            .map_err(|source| HttpsError::Runtime { source })
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// The units of one `tke-unitd` server, reached over HTTPS.
pub struct HttpsTransport {
    name: String,
    url: String,
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    tls: tokio_rustls::TlsConnector,
    runtime: Runtime,
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
    // Checked first: the url crate would take `http://...` or a bare word differently.
    if !url.starts_with("https://") {
        return Err(bad("it must start with https://"));
    }
    let parsed = url::Url::parse(url).map_err(|e| {
        bad(match e {
            url::ParseError::EmptyHost => "the host is empty",
            url::ParseError::InvalidPort => "the port is not a number from 1 to 65535",
            url::ParseError::InvalidIpv6Address => "an IPv6 address needs a closing ]",
            _ => "it is not a URL",
        })
    })?;
    if !parsed.username().is_empty()
        || parsed.password().is_some()
        || parsed.path() != "/"
        || parsed.query().is_some()
        || parsed.fragment().is_some()
    {
        return Err(bad("only a host and a port may follow https://"));
    }
    let host = match parsed.host() {
        Some(url::Host::Domain(d)) if !d.is_empty() => d.to_owned(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => a.to_string(),
        _ => return Err(bad("the host is empty")),
    };
    let port = parsed
        .port_or_known_default()
        .filter(|p| *p != 0)
        .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?;
    Ok((host, port))
}

/// Classifies an I/O error of a TLS stream.
fn classify(e: io::Error, phase: Phase) -> HttpsError {
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .cloned();
    match tls {
        Some(source @ rustls::Error::InvalidCertificate(_)) => HttpsError::UntrustedServer {
            source: UntrustedReason(source),
        },
        Some(source) => HttpsError::Tls { phase, source },
        None if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            HttpsError::Timeout { phase }
        }
        None => HttpsError::Io { phase, source: e },
    }
}

/// Why rustls refused the server's certificate, in words: rustls writes the names a
/// certificate presents in its own debug notation (`DnsName("unitd.example")`).
#[derive(Debug)]
pub struct UntrustedReason(pub rustls::Error);

impl std::fmt::Display for UntrustedReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use rustls::{CertificateError, Error};
        match &self.0 {
            Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                expected,
                presented,
            }) => {
                let names: Vec<&str> = presented.iter().map(|p| plain_name(p)).collect();
                write!(
                    f,
                    "the certificate is not valid for {:?}; it names {}",
                    expected.to_str(),
                    if names.is_empty() {
                        "no host".to_owned()
                    } else {
                        names.join(", ")
                    }
                )
            }
            other => other.fmt(f),
        }
    }
}

impl std::error::Error for UntrustedReason {}

/// `unitd.example` from rustls' `DnsName("unitd.example")`, `10.0.0.1` from
/// `IpAddress(10.0.0.1)`; anything else as it is.
fn plain_name(presented: &str) -> &str {
    presented
        .strip_prefix("DnsName(\"")
        .and_then(|r| r.strip_suffix("\")"))
        .or_else(|| {
            presented
                .strip_prefix("IpAddress(")
                .and_then(|r| r.strip_suffix(')'))
        })
        .unwrap_or(presented)
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

/// A request body: the DER of a TKE `Request`, or JSON (the key service).
#[derive(Clone, Copy)]
enum Body<'a> {
    Der(&'a [u8]),
    Json(&'a [u8]),
}

impl<'a> Body<'a> {
    fn bytes(self) -> &'a [u8] {
        match self {
            Self::Der(b) | Self::Json(b) => b,
        }
    }
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
    /// [`HttpsError::Url`] for a bad URL, [`HttpsError::CaUnusable`],
    /// [`HttpsError::Runtime`].
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
        let runtime = Runtime::start()?;
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
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            runtime,
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

    /// A transport to the same server with the same settings and its own connections
    /// (for a service that outlives a borrow of this one).
    ///
    /// # Errors
    /// [`HttpsError::Runtime`].
    fn sibling(&self) -> Result<Self, HttpsError> {
        let runtime = Runtime::start()?;
        Ok(Self {
            name: self.name.clone(),
            url: self.url.clone(),
            host: self.host.clone(),
            port: self.port,
            server_name: self.server_name.clone(),
            tls: self.tls.clone(),
            runtime,
            key: ApiKey(self.key.0.clone()),
            instance: self.instance.clone(),
            options: self.options,
            pool: Mutex::new(Vec::new()),
            routes: Mutex::new(HashMap::new()),
        })
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

    /// A new connection: TCP, then the TLS handshake (so that an untrusted server is
    /// refused before anything is sent), then HTTP/1.1.
    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, HttpsError> {
        let addr = format!("{}:{}", self.url_host(), self.port);
        let addrs: Vec<_> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|source| HttpsError::Resolve {
                addr: addr.clone(),
                source,
            })?
            .collect();
        let mut last = io::Error::new(ErrorKind::NotFound, "no address");
        let mut tcp = None;
        for a in addrs {
            match timeout(self.options.connect_timeout, TcpStream::connect(a)).await {
                Ok(Ok(s)) => {
                    tcp = Some(s);
                    break;
                }
                Ok(Err(e)) => last = e,
                Err(_) => last = io::Error::from(ErrorKind::TimedOut),
            }
        }
        let tcp = tcp.ok_or(HttpsError::Connect { addr, source: last })?;
        let io = |source| HttpsError::Io {
            phase: Phase::Connecting,
            source,
        };
        tcp.set_nodelay(true).map_err(io)?;
        let tls = timeout(
            self.options.io_timeout,
            self.tls.connect(self.server_name.clone(), tcp),
        )
        .await
        .map_err(|_| HttpsError::Timeout {
            phase: Phase::Connecting,
        })?
        .map_err(|e| classify(e, Phase::Connecting))?;
        let (sender, connection) =
            http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| HttpsError::Io {
                    phase: Phase::Connecting,
                    source: io::Error::other(e),
                })?;
        // Reads and writes the connection until it closes (or the transport is dropped).
        tokio::spawn(connection);
        Ok(sender)
    }

    fn url_host(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    /// A pooled connection used within `fresh` and still open, if any.
    fn pooled(&self, fresh: Duration) -> Option<SendRequest<Full<Bytes>>> {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(idle) = pool.pop() {
            // Closed: the server ended it (hyper's connection task saw the close).
            if idle.since.elapsed() <= fresh && !idle.sender.is_closed() {
                return Some(idle.sender);
            }
        }
        None
    }

    fn give_back(&self, sender: SendRequest<Full<Bytes>>) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOL_MAX {
            pool.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// One request on one connection, its answer read whole within the I/O timeout.
    /// `Ok(None)`: the connection closed before the request could be sent (nothing sent).
    async fn round_trip(
        &self,
        sender: &mut SendRequest<Full<Bytes>>,
        method: &str,
        path: &str,
        body: Option<Body<'_>>,
    ) -> Result<Option<Answer>, HttpsError> {
        if sender.ready().await.is_err() {
            return Ok(None);
        }
        let bad_request = |_| HttpsError::BadAnswer {
            what: "the request cannot be built",
        };
        // Sensitive: hyper keeps it out of its debug output.
        let mut auth =
            HeaderValue::from_str(&Zeroizing::new(format!("Bearer {}", self.key.0.as_str())))
                .map_err(|_| HttpsError::BadAnswer {
                    what: "the API key is not a valid header value",
                })?;
        auth.set_sensitive(true);
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, format!("{}:{}", self.url_host(), self.port))
            .header(header::AUTHORIZATION, auth)
            .header(
                header::USER_AGENT,
                concat!("tke/", env!("CARGO_PKG_VERSION")),
            );
        request = match body {
            Some(Body::Der(_)) => request
                .header(header::CONTENT_TYPE, REQUEST_TYPE)
                .header(header::ACCEPT, RESPONSE_TYPE),
            Some(Body::Json(_)) => request
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::ACCEPT, "application/json"),
            None => request.header(header::ACCEPT, "application/json"),
        };
        let request = request
            .body(Full::new(Bytes::copy_from_slice(
                body.map(Body::bytes).unwrap_or_default(),
            )))
            .map_err(bad_request)?;
        let exchange = async {
            let response = match sender.send_request(request).await {
                Ok(r) => r,
                Err(e) if e.is_canceled() => return Ok(None),
                Err(e) => {
                    return Err(HttpsError::Io {
                        phase: Phase::Receiving,
                        source: io::Error::other(e),
                    })
                }
            };
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(';').next())
                .unwrap_or_default()
                .trim()
                .to_owned();
            let body = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| match e.downcast::<hyper::Error>() {
                    Ok(e) => HttpsError::Io {
                        phase: Phase::Receiving,
                        source: io::Error::other(e),
                    },
                    Err(_) => HttpsError::BadAnswer {
                        what: "the answer is too large",
                    },
                })?
                .to_bytes()
                .to_vec();
            Ok(Some(Answer {
                status,
                content_type,
                body,
            }))
        };
        timeout(self.options.io_timeout, exchange)
            .await
            .map_err(|_| HttpsError::Timeout {
                phase: Phase::Receiving,
            })?
    }

    /// Sends a request and returns a 200 answer. `idempotent` requests are retried.
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Body<'_>>,
        idempotent: bool,
    ) -> Result<Answer, HttpsError> {
        let Some(runtime) = &self.runtime.0 else {
            return Err(HttpsError::Runtime {
                source: io::Error::from(ErrorKind::NotConnected),
            });
        };
        let mut attempt = 0;
        loop {
            let result = runtime.block_on(self.attempt(method, path, body, idempotent));
            match result {
                Err(e) if idempotent && e.retryable() && attempt < self.options.query_retries => {
                    std::thread::sleep(self.options.retry_backoff * 2u32.saturating_pow(attempt));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn attempt(
        &self,
        method: &str,
        path: &str,
        body: Option<Body<'_>>,
        idempotent: bool,
    ) -> Result<Answer, HttpsError> {
        let fresh = if idempotent {
            QUERY_REUSE
        } else {
            COMMAND_REUSE
        };
        let (mut sender, reused) = match self.pooled(fresh) {
            Some(s) => (s, true),
            None => (self.connect().await?, false),
        };
        let answer = match self.round_trip(&mut sender, method, path, body).await {
            Ok(Some(answer)) => answer,
            Err(e) if !(reused && idempotent && matches!(e, HttpsError::Io { .. })) => {
                return Err(e)
            }
            // Once more on a new connection: a kept-alive connection the server had just
            // closed before anything was sent (any request), or as the request went out
            // (a query only: a command may have arrived, and is never sent twice).
            _ => {
                sender = self.connect().await?;
                self.round_trip(&mut sender, method, path, body)
                    .await?
                    .ok_or(HttpsError::Io {
                        phase: Phase::Connecting,
                        source: io::Error::from(ErrorKind::ConnectionReset),
                    })?
            }
        };
        if !sender.is_closed() {
            self.give_back(sender);
        }
        if answer.status != 200 {
            let parsed: Option<ErrorBody> = serde_json::from_slice(&answer.body).ok();
            // The server's text is untrusted: escaped before anyone can print it.
            let (code, message) = match parsed {
                Some(b) => (
                    sanitize(&b.code).into_owned(),
                    sanitize(&b.message).into_owned(),
                ),
                None => (
                    String::new(),
                    sanitize(&String::from_utf8_lossy(
                        &answer.body[..answer.body.len().min(200)],
                    ))
                    .into_owned(),
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
                    location: sanitize(&u.location).into_owned(),
                    device_certificate: der,
                });
            }
        }
        Ok(out)
    }
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
        // The CHOICE tag says what the request is: [0] a query, [1] a command, [2] a
        // service request, [3] an audit query. All but commands change nothing in the
        // unit, so they may be sent again.
        let (kind, idempotent) = match request_der.first() {
            Some(0xa0) => ("query", true),
            Some(0xa2) => ("service", true),
            Some(0xa3) => ("audit", true),
            _ => ("command", false),
        };
        let path = format!("/v1/tke/{}/hsms/{}/{kind}", instance.0, unit.uuid());
        let answer = self
            .request("POST", &path, Some(Body::Der(request_der)), idempotent)
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

    fn key_service(
        &self,
        instance: &InstanceId,
    ) -> Result<Option<Arc<dyn tke_kms::KeyService>>, ClientError> {
        let transport = self.sibling().map_err(|e| self.net_err(None, e))?;
        Ok(Some(Arc::new(kms::RemoteKms::new(
            transport,
            instance.clone(),
        ))))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn untrusted_names_read_as_names() {
        use rustls::{pki_types::ServerName, CertificateError, Error};
        let e = UntrustedReason(Error::InvalidCertificate(
            CertificateError::NotValidForNameContext {
                expected: ServerName::try_from("127.0.0.1").unwrap().to_owned(),
                presented: vec!["DnsName(\"unitd.example\")".into(), "odd".into()],
            },
        ));
        assert_eq!(
            e.to_string(),
            "the certificate is not valid for \"127.0.0.1\"; it names unitd.example, odd"
        );
    }

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
        let q = t
            .request("POST", "/q", Some(Body::Der(&[0xa0])), true)
            .unwrap_err();
        assert!(q.retryable(), "{q}");
        assert!(!q.may_have_reached_server(), "nothing was sent: {q}");
        let tried = count.load(Ordering::SeqCst);
        assert_eq!(tried, 3, "a query is tried 1 + 2 times");
        let c = t
            .request("POST", "/c", Some(Body::Der(&[0xa1])), false)
            .unwrap_err();
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
