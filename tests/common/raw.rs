//! A bare HTTP/1.1 keep-alive client over one TCP connection, for tests that
//! must see what the server does to the connection itself. Pooled clients
//! (reqwest) quietly retry a request whose connection was closed under them,
//! which hides exactly the failures these tests look for.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One answer, as far as the tests need it.
#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawReply {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the server said it will close the connection after this answer.
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    }
}

/// A request to send: headers and body go out in two writes, flushed
/// apart, the way Python's `http.client` and many other clients send them,
/// so the body often reaches the server after the headers were handled.
pub struct RawRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: Vec<(&'a str, String)>,
    /// Sent as `Content-Length` when `declared_length` is `None`.
    pub body: &'a [u8],
    /// A `Content-Length` other than the body's (the body is then not sent:
    /// the caller expects the server to refuse it from the headers alone).
    pub declared_length: Option<usize>,
    /// Send the body as one chunk (`Transfer-Encoding: chunked`) instead.
    pub chunked: bool,
}

impl<'a> RawRequest<'a> {
    pub fn new(method: &'a str, path: &'a str, body: &'a [u8]) -> Self {
        Self {
            method,
            path,
            headers: Vec::new(),
            body,
            declared_length: None,
            chunked: false,
        }
    }

    pub fn header(mut self, name: &'a str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn bearer(self, token: Option<&str>) -> Self {
        match token {
            Some(t) => self.header("authorization", format!("Bearer {t}")),
            None => self,
        }
    }
}

/// A keep-alive connection to one server that reconnects only when the
/// server announced the close (`Connection: close`).
pub struct RawClient {
    addr: String,
    conn: Option<BufReader<TcpStream>>,
    /// Connections opened, the first included.
    pub connects: usize,
    /// Pause between the headers and the body, as a network delivering the
    /// body's segment a little later would make; without it a body sent
    /// over loopback right behind its headers usually arrives with them.
    pub body_lag: Duration,
}

impl RawClient {
    /// A client for `base` (`http://host:port`); connects on first use.
    pub fn new(base: &str) -> Self {
        Self {
            addr: base.trim_start_matches("http://").to_owned(),
            conn: None,
            connects: 0,
            body_lag: Duration::from_millis(2),
        }
    }

    /// Sends `req` on the current connection and reads the answer. Any I/O
    /// error, or the connection ending before a whole answer, is an `Err`:
    /// the server closed it without saying so. After an `Err` the next call
    /// starts a fresh connection.
    pub async fn send(&mut self, req: &RawRequest<'_>) -> io::Result<RawReply> {
        if self.conn.is_none() {
            let stream = TcpStream::connect(&self.addr).await?;
            // Each write leaves at once, as from clients that split their
            // writes; with Nagle the body would wait for the server's
            // delayed ACK of the headers (40 ms a request on Linux).
            stream.set_nodelay(true)?;
            self.conn = Some(BufReader::new(stream));
            self.connects += 1;
        }
        let result = match self.conn.as_mut() {
            Some(conn) => exchange(conn, req, self.body_lag).await,
            None => Err(io::ErrorKind::NotConnected.into()),
        };
        match &result {
            Ok(reply) if !reply.closes() => {}
            _ => self.conn = None,
        }
        result
    }
}

async fn exchange(
    conn: &mut BufReader<TcpStream>,
    req: &RawRequest<'_>,
    body_lag: Duration,
) -> io::Result<RawReply> {
    let length = req.declared_length.unwrap_or(req.body.len());
    let mut head = format!("{} {} HTTP/1.1\r\nhost: test\r\n", req.method, req.path);
    if req.chunked {
        head.push_str("transfer-encoding: chunked\r\n");
    } else {
        head.push_str(&format!("content-length: {length}\r\n"));
    }
    for (name, value) in &req.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let stream = conn.get_mut();
    stream.write_all(head.as_bytes()).await?;
    stream.flush().await?;
    if req.declared_length.is_none() && !req.body.is_empty() {
        tokio::time::sleep(body_lag).await;
        if req.chunked {
            let mut chunked = format!("{:x}\r\n", req.body.len()).into_bytes();
            chunked.extend_from_slice(req.body);
            chunked.extend_from_slice(b"\r\n0\r\n\r\n");
            stream.write_all(&chunked).await?;
        } else {
            stream.write_all(req.body).await?;
        }
        stream.flush().await?;
    }
    read_reply(conn).await
}

/// The final answer; interim ones (`100 Continue`) are skipped.
async fn read_reply(conn: &mut BufReader<TcpStream>) -> io::Result<RawReply> {
    let (status, headers) = loop {
        let head = read_head(conn).await?;
        if !(100..200).contains(&head.0) {
            break head;
        }
    };
    let mut reply = RawReply {
        status,
        headers,
        body: Vec::new(),
    };
    if reply
        .header("transfer-encoding")
        .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
    {
        reply.body = read_chunked(conn).await?;
    } else if let Some(n) = reply.header("content-length") {
        let n: usize = n.parse().map_err(|_| invalid("bad content-length"))?;
        let mut body = vec![0; n];
        conn.read_exact(&mut body).await?;
        reply.body = body;
    }
    Ok(reply)
}

/// A status line and its header lines, names in lower case.
async fn read_head(conn: &mut BufReader<TcpStream>) -> io::Result<(u16, Vec<(String, String)>)> {
    let status_line = read_line(conn).await?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(conn).await?;
        if line.is_empty() {
            return Ok((status, headers));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| invalid(format!("bad header line {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
}

async fn read_chunked(conn: &mut BufReader<TcpStream>) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let size_line = read_line(conn).await?;
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| invalid("bad chunk size"))?;
        if size == 0 {
            // Trailers, then the blank line.
            while !read_line(conn).await?.is_empty() {}
            return Ok(body);
        }
        let start = body.len();
        body.resize(start + size, 0);
        conn.read_exact(&mut body[start..]).await?;
        read_line(conn).await?;
    }
}

/// One CRLF-terminated line without its terminator; EOF is an error.
async fn read_line(conn: &mut BufReader<TcpStream>) -> io::Result<String> {
    let mut line = String::new();
    if conn.read_line(&mut line).await? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}
