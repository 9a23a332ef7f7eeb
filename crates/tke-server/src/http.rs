//! The HTTP/1.1 subset the server speaks: one request at a time per connection, bodies
//! with `Content-Length` only (no chunked encoding), keep-alive, and deadlines.
//!
//! The stream given to the readers has a short socket read timeout (the *poll
//! interval*), so that a blocked read returns regularly and the reader can check its
//! deadline and, while the connection is idle, whether the server is stopping.

use std::{
    io::{self, ErrorKind, Read, Write},
    time::Instant,
};

/// A parsed request head.
#[derive(Debug)]
pub struct RequestHead {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, without the query string.
    pub path: String,
    /// HTTP/1.x minor version.
    pub minor: u8,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl RequestHead {
    /// The first value of a header (name in lower case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// Every value of a header.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// Whether the client asked to keep the connection open.
    pub fn keep_alive(&self) -> bool {
        let tokens = |v: &[u8]| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        };
        let conn: Vec<String> = self.headers_named("connection").flat_map(tokens).collect();
        if self.minor == 0 {
            conn.iter().any(|t| t == "keep-alive")
        } else {
            !conn.iter().any(|t| t == "close")
        }
    }
}

/// Why a request could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The connection closed (or the server is stopping) before any byte of a request.
    Idle,
    /// The request did not arrive in time.
    Timeout,
    /// The head is larger than allowed.
    HeadTooLarge,
    /// The head is not valid HTTP/1.x.
    Malformed,
    /// The connection failed or closed in the middle of a request.
    Io(io::Error),
}

fn would_block(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

fn closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
    )
}

/// Reads a request head into `buf` (which may already hold bytes of it).
///
/// The request must be complete by its *deadline*: `read_timeout` after `started` when
/// given (a new connection: the TLS handshake counts), else after its first byte. Before
/// that first byte, `idle` is asked whether to stop waiting (keep-alive expired, server
/// stopping). Returns the head, the number of bytes of `buf` it used, and the deadline,
/// which also bounds the body.
///
/// # Errors
/// [`ReadError`].
pub fn read_head(
    stream: &mut impl Read,
    buf: &mut Vec<u8>,
    max: usize,
    read_timeout: std::time::Duration,
    started: Option<Instant>,
    idle: &dyn Fn() -> bool,
) -> Result<(RequestHead, usize, Instant), ReadError> {
    let mut deadline: Option<Instant> = started
        .or_else(|| (!buf.is_empty()).then(Instant::now))
        .map(|t| t + read_timeout);
    let mut chunk = [0u8; 4096];
    loop {
        if !buf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; 48];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(buf) {
                Ok(httparse::Status::Complete(used)) if used > max => {
                    return Err(ReadError::HeadTooLarge)
                }
                Ok(httparse::Status::Complete(used)) => {
                    let head = RequestHead {
                        method: req.method.unwrap_or_default().to_owned(),
                        path: req
                            .path
                            .unwrap_or_default()
                            .split('?')
                            .next()
                            .unwrap_or_default()
                            .to_owned(),
                        minor: req.version.unwrap_or(1),
                        headers: req
                            .headers
                            .iter()
                            .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
                            .collect(),
                    };
                    let deadline = deadline.unwrap_or_else(|| Instant::now() + read_timeout);
                    return Ok((head, used, deadline));
                }
                Ok(httparse::Status::Partial) => {
                    if buf.len() > max {
                        return Err(ReadError::HeadTooLarge);
                    }
                }
                Err(httparse::Error::TooManyHeaders) => return Err(ReadError::HeadTooLarge),
                Err(_) => return Err(ReadError::Malformed),
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) if buf.is_empty() && started.is_none() => return Err(ReadError::Idle),
            Ok(0) if buf.is_empty() => {
                return Err(ReadError::Io(io::Error::from(ErrorKind::UnexpectedEof)))
            }
            Ok(0) => {
                return Err(ReadError::Io(io::Error::from(ErrorKind::UnexpectedEof)));
            }
            Ok(k) => {
                if deadline.is_none() {
                    deadline = Some(Instant::now() + read_timeout);
                }
                buf.extend_from_slice(&chunk[..k]);
            }
            Err(e) if would_block(&e) || e.kind() == ErrorKind::Interrupted => match deadline {
                None if idle() => return Err(ReadError::Idle),
                Some(d) if Instant::now() >= d => return Err(ReadError::Timeout),
                _ => {}
            },
            Err(e) if buf.is_empty() && closed(&e) => return Err(ReadError::Idle),
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
}

/// Reads a body of exactly `len` bytes; `buf` holds those already received.
///
/// # Errors
/// [`ReadError::Timeout`] after `deadline`; [`ReadError::Io`].
pub fn read_body(
    stream: &mut impl Read,
    mut buf: Vec<u8>,
    len: usize,
    deadline: Instant,
) -> Result<Vec<u8>, ReadError> {
    let mut chunk = [0u8; 8192];
    while buf.len() < len {
        let want = (len - buf.len()).min(chunk.len());
        match stream.read(&mut chunk[..want]) {
            Ok(0) => return Err(ReadError::Io(io::Error::from(ErrorKind::UnexpectedEof))),
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
            Err(e) if would_block(&e) || e.kind() == ErrorKind::Interrupted => {
                if Instant::now() >= deadline {
                    return Err(ReadError::Timeout);
                }
            }
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
    buf.truncate(len);
    Ok(buf)
}

/// The most body bytes [`drain`] reads: more than any request this protocol's clients
/// send, so they see the refusal; bounded, so that a huge declared length costs little.
pub const DRAIN_LIMIT: usize = 1 << 20;

/// Reads and discards up to `len` bytes of a body that is refused unread (at most
/// [`DRAIN_LIMIT`]). A client sends its whole body before it reads the answer, and a
/// connection closed with unread bytes is reset: the client would see the reset, not the
/// answer. Stops at `deadline`, at the first poll interval without a byte (a client that
/// waits for the answer first), at the end of the stream or on an error. Returns the
/// number of bytes discarded.
pub fn drain(stream: &mut impl Read, len: usize, deadline: Instant) -> usize {
    let mut chunk = [0u8; 8192];
    let mut left = len.min(DRAIN_LIMIT);
    while left > 0 && Instant::now() < deadline {
        match stream.read(&mut chunk[..left.min(8192)]) {
            Ok(k) if k > 0 => left -= k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // The end, an error, or a poll interval without a byte.
            _ => break,
        }
    }
    len.min(DRAIN_LIMIT) - left
}

/// A response to send.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// Whether the connection must close after it.
    pub close: bool,
}

/// The reason phrase of the status codes we send.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Writes a response and flushes it.
///
/// # Errors
/// The I/O error (a write timeout is [`ErrorKind::WouldBlock`] or [`ErrorKind::TimedOut`]).
pub fn write_response(stream: &mut impl Write, r: &Response) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len()
    );
    for (n, v) in &r.headers {
        head.push_str(n);
        head.push_str(": ");
        head.push_str(v);
        head.push_str("\r\n");
    }
    head.push_str(if r.close {
        "Connection: close\r\n\r\n"
    } else {
        "Connection: keep-alive\r\n\r\n"
    });
    let mut out = head.into_bytes();
    out.extend_from_slice(&r.body);
    stream.write_all(&out)?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    #[test]
    fn parses_a_head_and_leaves_the_body() {
        let raw = b"POST /v1/x?y=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc";
        let mut buf = Vec::new();
        let (head, used, _) = read_head(
            &mut &raw[..],
            &mut buf,
            1024,
            Duration::from_secs(1),
            None,
            &|| false,
        )
        .unwrap();
        assert_eq!(head.method, "POST");
        assert_eq!(head.path, "/v1/x");
        assert_eq!(head.header("content-length"), Some(&b"3"[..]));
        assert!(!head.keep_alive());
        assert_eq!(&buf[used..], b"abc");
    }

    #[test]
    fn drain_reads_at_most_the_body_and_the_bound() {
        let later = Instant::now() + Duration::from_secs(5);
        let data = vec![7u8; DRAIN_LIMIT + 10];
        let mut rest = &data[..];
        assert_eq!(drain(&mut rest, 10, later), 10);
        assert_eq!(rest.len(), DRAIN_LIMIT);
        let mut rest = &data[..];
        assert_eq!(drain(&mut rest, usize::MAX, later), DRAIN_LIMIT);
        assert_eq!(rest.len(), 10);
        // The stream ends before the declared length.
        assert_eq!(drain(&mut &data[..5], 100, later), 5);
    }

    #[test]
    fn limits_and_garbage() {
        let mut buf = Vec::new();
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(5000));
        assert!(matches!(
            read_head(
                &mut long.as_bytes(),
                &mut buf,
                1024,
                Duration::from_secs(1),
                None,
                &|| false
            ),
            Err(ReadError::HeadTooLarge)
        ));
        let mut buf = Vec::new();
        assert!(matches!(
            read_head(
                &mut &b"\x16\x03\x01garbage\r\n\r\n"[..],
                &mut buf,
                1024,
                Duration::from_secs(1),
                None,
                &|| false
            ),
            Err(ReadError::Malformed)
        ));
        let mut buf = Vec::new();
        assert!(matches!(
            read_head(
                &mut &b""[..],
                &mut buf,
                1024,
                Duration::from_secs(1),
                None,
                &|| false
            ),
            Err(ReadError::Idle)
        ));
    }
}
