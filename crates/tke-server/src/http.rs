//! The HTTP/1.1 subset the server speaks: one request at a time per connection, bodies
//! with `Content-Length` only (no chunked encoding), keep-alive, and deadlines.
//!
//! The readers are asynchronous (tokio), so a connection that sends nothing, or one byte
//! a second, holds no thread: it only waits, until its deadline closes it.

use std::io::{self, ErrorKind};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    time::{timeout_at, Instant},
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
    /// The connection closed, stayed idle past its keep-alive time, or the server is
    /// stopping, before any byte of a request.
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

/// Parses a complete request head at the start of `buf`: `Ok(None)` while it is
/// incomplete, else the head and the number of bytes it used.
///
/// # Errors
/// [`ReadError::HeadTooLarge`] past `max` bytes (or too many headers);
/// [`ReadError::Malformed`].
pub fn parse_head(buf: &[u8], max: usize) -> Result<Option<(RequestHead, usize)>, ReadError> {
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(used)) if used > max => Err(ReadError::HeadTooLarge),
        Ok(httparse::Status::Complete(used)) => Ok(Some((
            RequestHead {
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
            },
            used,
        ))),
        Ok(httparse::Status::Partial) if buf.len() > max => Err(ReadError::HeadTooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(ReadError::HeadTooLarge),
        Err(_) => Err(ReadError::Malformed),
    }
}

/// When reading a request head gives up.
#[derive(Clone, Copy, Debug)]
pub struct HeadDeadlines {
    /// The whole request must be complete by then; `None`: `read_timeout` after its
    /// first byte.
    pub request: Option<Instant>,
    /// Before the first byte, stop waiting (as [`ReadError::Idle`]) at this time:
    /// the keep-alive time of an idle connection.
    pub idle: Option<Instant>,
    /// The read timeout, counted from the first byte when `request` is `None`.
    pub read_timeout: std::time::Duration,
}

/// Reads a request head into `buf` (which may already hold bytes of it).
///
/// Before the first byte, `stopping` resolving ends the wait as [`ReadError::Idle`] (the
/// server is stopping, or wants the connection back). Returns the head, the number of
/// bytes of `buf` it used, and the request's deadline, which also bounds the body.
///
/// # Errors
/// [`ReadError`].
pub async fn read_head<S, F>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    max: usize,
    deadlines: HeadDeadlines,
    stopping: F,
) -> Result<(RequestHead, usize, Instant), ReadError>
where
    S: AsyncRead + Unpin,
    F: std::future::Future<Output = ()>,
{
    let HeadDeadlines {
        request,
        idle,
        read_timeout,
    } = deadlines;
    let mut deadline = request.or_else(|| (!buf.is_empty()).then(|| Instant::now() + read_timeout));
    let mut chunk = [0u8; 4096];
    let mut stopping = std::pin::pin!(stopping);
    loop {
        if !buf.is_empty() {
            if let Some((head, used)) = parse_head(buf, max)? {
                let deadline = deadline.unwrap_or_else(|| Instant::now() + read_timeout);
                return Ok((head, used, deadline));
            }
        }
        let read = if buf.is_empty() {
            // Nothing of this request yet: the connection may be given up.
            let until = match (deadline, idle) {
                (Some(d), Some(i)) => Some(d.min(i)),
                (d, i) => d.or(i),
            };
            tokio::select! {
                r = read_until(stream, &mut chunk, until) => match r {
                    Err(ReadError::Timeout) if deadline.is_none_or(|d| Instant::now() < d) => {
                        return Err(ReadError::Idle)
                    }
                    r => r,
                },
                () = &mut stopping => return Err(ReadError::Idle),
            }
        } else {
            read_until(stream, &mut chunk, deadline).await
        };
        match read {
            Ok(0) if buf.is_empty() && request.is_none() => return Err(ReadError::Idle),
            Ok(0) => return Err(ReadError::Io(io::Error::from(ErrorKind::UnexpectedEof))),
            Ok(k) => {
                if deadline.is_none() {
                    deadline = Some(Instant::now() + read_timeout);
                }
                buf.extend_from_slice(&chunk[..k]);
            }
            Err(ReadError::Io(e)) if buf.is_empty() && closed(&e) => return Err(ReadError::Idle),
            Err(e) => return Err(e),
        }
    }
}

fn closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
    )
}

/// One read, given up at `until`.
async fn read_until<S: AsyncRead + Unpin>(
    stream: &mut S,
    chunk: &mut [u8],
    until: Option<Instant>,
) -> Result<usize, ReadError> {
    let r = match until {
        Some(t) => timeout_at(t, stream.read(chunk))
            .await
            .map_err(|_| ReadError::Timeout)?,
        None => stream.read(chunk).await,
    };
    r.map_err(ReadError::Io)
}

/// Reads a body of exactly `len` bytes; `buf` holds those already received.
///
/// # Errors
/// [`ReadError::Timeout`] after `deadline`; [`ReadError::Io`].
pub async fn read_body<S: AsyncRead + Unpin>(
    stream: &mut S,
    mut buf: Vec<u8>,
    len: usize,
    deadline: Instant,
) -> Result<Vec<u8>, ReadError> {
    let mut chunk = [0u8; 8192];
    while buf.len() < len {
        let want = (len - buf.len()).min(chunk.len());
        match read_until(stream, &mut chunk[..want], Some(deadline)).await? {
            0 => return Err(ReadError::Io(io::Error::from(ErrorKind::UnexpectedEof))),
            k => buf.extend_from_slice(&chunk[..k]),
        }
    }
    buf.truncate(len);
    Ok(buf)
}

/// The most body bytes [`drain`] reads: more than any request this protocol's clients
/// send, so they see the refusal; bounded, so that a huge declared length costs little.
pub const DRAIN_LIMIT: usize = 1 << 20;

/// How long [`drain`] waits for a next byte: a client that waits for the answer before
/// sending its body gets it after this.
const DRAIN_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// Reads and discards up to `len` bytes of a body that is refused unread (at most
/// [`DRAIN_LIMIT`]). A client sends its whole body before it reads the answer, and a
/// connection closed with unread bytes is reset: the client would see the reset, not the
/// answer. Stops at `deadline`, after 0.1 s without a byte, at the end of the
/// stream or on an error. Returns the number of bytes discarded.
pub async fn drain<S: AsyncRead + Unpin>(stream: &mut S, len: usize, deadline: Instant) -> usize {
    let mut chunk = [0u8; 8192];
    let mut left = len.min(DRAIN_LIMIT);
    while left > 0 {
        let until = deadline.min(Instant::now() + DRAIN_PAUSE);
        match read_until(stream, &mut chunk[..left.min(8192)], Some(until)).await {
            Ok(k) if k > 0 => left -= k,
            // The end, an error, the deadline, or a pause without a byte.
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

/// Writes a response and flushes it, within `deadline`.
///
/// # Errors
/// The I/O error; [`ErrorKind::TimedOut`] past the deadline.
pub async fn write_response<S: AsyncWrite + Unpin>(
    stream: &mut S,
    r: &Response,
    deadline: Instant,
) -> io::Result<()> {
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
    timeout_at(deadline, async {
        stream.write_all(&out).await?;
        stream.flush().await
    })
    .await
    .map_err(|_| io::Error::from(ErrorKind::TimedOut))?
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    fn deadlines() -> HeadDeadlines {
        HeadDeadlines {
            request: None,
            idle: None,
            read_timeout: Duration::from_secs(1),
        }
    }

    async fn read(raw: &[u8], buf: &mut Vec<u8>) -> Result<(RequestHead, usize), ReadError> {
        let mut s = raw;
        read_head(&mut s, buf, 1024, deadlines(), std::future::pending())
            .await
            .map(|(h, used, _)| (h, used))
    }

    #[tokio::test]
    async fn parses_a_head_and_leaves_the_body() {
        let raw = b"POST /v1/x?y=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc";
        let mut buf = Vec::new();
        let (head, used) = read(raw, &mut buf).await.unwrap();
        assert_eq!(head.method, "POST");
        assert_eq!(head.path, "/v1/x");
        assert_eq!(head.header("content-length"), Some(&b"3"[..]));
        assert!(!head.keep_alive());
        assert_eq!(&buf[used..], b"abc");
    }

    #[tokio::test]
    async fn drain_reads_at_most_the_body_and_the_bound() {
        let later = Instant::now() + Duration::from_secs(5);
        let data = vec![7u8; DRAIN_LIMIT + 10];
        let mut rest = &data[..];
        assert_eq!(drain(&mut rest, 10, later).await, 10);
        assert_eq!(rest.len(), DRAIN_LIMIT);
        let mut rest = &data[..];
        assert_eq!(drain(&mut rest, usize::MAX, later).await, DRAIN_LIMIT);
        assert_eq!(rest.len(), 10);
        // The stream ends before the declared length.
        assert_eq!(drain(&mut &data[..5], 100, later).await, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn drain_stops_after_a_pause_without_a_byte() {
        let (_client, mut server) = tokio::io::duplex(64);
        let started = Instant::now();
        let later = started + Duration::from_secs(5);
        assert_eq!(drain(&mut server, 100, later).await, 0);
        assert_eq!(started.elapsed(), DRAIN_PAUSE);
    }

    #[tokio::test]
    async fn limits_and_garbage() {
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(5000));
        assert!(matches!(
            read(long.as_bytes(), &mut Vec::new()).await,
            Err(ReadError::HeadTooLarge)
        ));
        assert!(matches!(
            read(b"\x16\x03\x01garbage\r\n\r\n", &mut Vec::new()).await,
            Err(ReadError::Malformed)
        ));
        assert!(matches!(
            read(b"", &mut Vec::new()).await,
            Err(ReadError::Idle)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_sent_one_byte_at_a_time_is_cut_off_at_its_deadline() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let sender = tokio::spawn(async move {
            for b in b"GET /v1/health HTTP/1.1\r\nHost: x\r\n" {
                if client.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let started = Instant::now();
        let r = read_head(
            &mut server,
            &mut Vec::new(),
            1024,
            HeadDeadlines {
                request: Some(started + Duration::from_secs(10)),
                idle: None,
                read_timeout: Duration::from_secs(10),
            },
            std::future::pending(),
        )
        .await;
        assert!(matches!(r, Err(ReadError::Timeout)), "{r:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        sender.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_given_up_at_its_keep_alive_time_or_on_stop() {
        let (_client, mut server) = tokio::io::duplex(64);
        let started = Instant::now();
        let idle = HeadDeadlines {
            request: None,
            idle: Some(started + Duration::from_secs(5)),
            read_timeout: Duration::from_secs(10),
        };
        let r = read_head(
            &mut server,
            &mut Vec::new(),
            1024,
            idle,
            std::future::pending(),
        )
        .await;
        assert!(matches!(r, Err(ReadError::Idle)), "{r:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        let no_idle = HeadDeadlines { idle: None, ..idle };
        let r = read_head(&mut server, &mut Vec::new(), 1024, no_idle, async {}).await;
        assert!(matches!(r, Err(ReadError::Idle)), "{r:?}");
    }
}
