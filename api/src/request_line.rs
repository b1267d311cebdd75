//! Lets raw `"`, `<` and `>` through in HTTP/1 request targets.
//!
//! Entra's logs show match queries with raw double quotes (`filter=userName+eq+"…"`), and
//! RFC 3986 does not allow them; the HTTP parser under poem refuses such a request with a bare
//! 400 before any handler runs, which Entra would count as a failed probe. This acceptor
//! percent-encodes those three bytes in the request line only, before the parser sees it.
//!
//! To find request lines on a keep-alive connection it follows HTTP/1 framing: a head ends at
//! the first empty line and a `Content-Length` body is passed through untouched. Anything it
//! does not understand (chunked bodies, HTTP/2, oversized heads) switches the connection to
//! plain pass-through, so the worst case is the parser's usual answer.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Heads longer than this are passed through as they are (the parser refuses them anyway).
const MAX_HEAD: usize = 64 * 1024;
const READ_CHUNK: usize = 8 * 1024;

/// Wraps an acceptor so that every connection's request lines are made parseable.
pub struct LenientRequestLines<A>(pub A);

impl<A: Acceptor> Acceptor for LenientRequestLines<A> {
    type Io = RequestLineFix<A::Io>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.0.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        let (io, local, remote, scheme) = self.0.accept().await?;
        Ok((RequestLineFix::new(io), local, remote, scheme))
    }
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Collecting a request head.
    Head,
    /// Passing this many body bytes through.
    Body(u64),
    /// Passing everything through for the rest of the connection.
    PassThrough,
}

/// A connection whose inbound request lines are rewritten; writes pass straight through.
pub struct RequestLineFix<Io> {
    inner: Io,
    state: State,
    head: Vec<u8>,
    ready: Vec<u8>,
    ready_from: usize,
}

impl<Io> RequestLineFix<Io> {
    fn new(inner: Io) -> Self {
        RequestLineFix {
            inner,
            state: State::Head,
            head: Vec::new(),
            ready: Vec::new(),
            ready_from: 0,
        }
    }

    /// Runs freshly read bytes through the framing state machine into `ready`.
    fn process(&mut self, mut input: &[u8]) {
        while !input.is_empty() {
            match self.state {
                State::PassThrough => {
                    self.ready.extend_from_slice(input);
                    return;
                }
                State::Body(remaining) => {
                    let take = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(input.len());
                    self.ready.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    let left = remaining - take as u64;
                    self.state = if left == 0 {
                        State::Head
                    } else {
                        State::Body(left)
                    };
                }
                State::Head => input = self.collect_head(input),
            }
        }
    }

    /// Adds bytes to the head being collected; returns what follows the head, if it ended.
    fn collect_head<'a>(&mut self, input: &'a [u8]) -> &'a [u8] {
        let already = self.head.len();
        self.head.extend_from_slice(input);
        let search_from = already.saturating_sub(3);
        let Some(end) = find(&self.head[search_from..], b"\r\n\r\n").map(|i| search_from + i + 4)
        else {
            if self.head.len() > MAX_HEAD {
                self.ready.append(&mut self.head);
                self.state = State::PassThrough;
            }
            return &[];
        };
        let rest = &input[end - already..];
        let head = std::mem::take(&mut self.head);
        self.state = next_state(&head[..end]);
        self.ready.extend(rewrite_request_line(&head[..end]));
        rest
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What follows a head: its `Content-Length` body, the next head, or pass-through when the
/// framing is anything else.
fn next_state(head: &[u8]) -> State {
    let Ok(text) = std::str::from_utf8(head) else {
        return State::PassThrough;
    };
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    if !(request_line.ends_with(" HTTP/1.1") || request_line.ends_with(" HTTP/1.0")) {
        return State::PassThrough;
    }
    let mut length = 0u64;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            return State::PassThrough;
        }
        if name.eq_ignore_ascii_case("content-length") {
            match value.trim().parse() {
                Ok(n) => length = n,
                Err(_) => return State::PassThrough,
            }
        }
    }
    if length == 0 {
        State::Head
    } else {
        State::Body(length)
    }
}

/// Percent-encodes `"`, `<` and `>` in the request line of an HTTP/1 head.
fn rewrite_request_line(head: &[u8]) -> Vec<u8> {
    let line_end = find(head, b"\r\n").unwrap_or(head.len());
    let mut out = Vec::with_capacity(head.len() + 16);
    for &byte in &head[..line_end] {
        match byte {
            b'"' => out.extend_from_slice(b"%22"),
            b'<' => out.extend_from_slice(b"%3C"),
            b'>' => out.extend_from_slice(b"%3E"),
            other => out.push(other),
        }
    }
    out.extend_from_slice(&head[line_end..]);
    out
}

impl<Io: AsyncRead + Unpin> AsyncRead for RequestLineFix<Io> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.ready_from < this.ready.len() {
                let available = &this.ready[this.ready_from..];
                let n = available.len().min(buf.remaining());
                buf.put_slice(&available[..n]);
                this.ready_from += n;
                if this.ready_from == this.ready.len() {
                    this.ready.clear();
                    this.ready_from = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; READ_CHUNK];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    // End of stream: hand over an unfinished head as it is.
                    if this.head.is_empty() {
                        return Poll::Ready(Ok(()));
                    }
                    this.ready.append(&mut this.head);
                }
                Poll::Ready(Ok(())) => this.process(read.filled()),
                other => return other,
            }
        }
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for RequestLineFix<Io> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Feeds `input` through the fix in chunks of `chunk` bytes and returns what comes out.
    async fn through(input: &[u8], chunk: usize) -> Vec<u8> {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut fixed = RequestLineFix::new(server);
        for piece in input.chunks(chunk.max(1)) {
            client.write_all(piece).await.unwrap();
        }
        drop(client);
        let mut out = Vec::new();
        fixed.read_to_end(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn quotes_in_the_request_line_are_encoded() {
        let input = b"GET /scim/v2/Users?filter=userName+eq+\"a@b.c\" HTTP/1.1\r\nHost: x\r\n\r\n";
        let out = through(input, 7).await;
        assert_eq!(
            out,
            b"GET /scim/v2/Users?filter=userName+eq+%22a@b.c%22 HTTP/1.1\r\nHost: x\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn bodies_and_later_requests_on_the_connection() {
        let body = br#"{"userName":"<b>\r\n\r\nGET \"x\" HTTP/1.1"}"#;
        let mut input = format!(
            "POST /Users HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        input.extend_from_slice(body);
        input.extend_from_slice(b"GET /Users?f=\"v\" HTTP/1.1\r\n\r\n");

        let out = through(&input, 5).await;

        let mut expected = format!(
            "POST /Users HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        expected.extend_from_slice(body);
        expected.extend_from_slice(b"GET /Users?f=%22v%22 HTTP/1.1\r\n\r\n");
        assert_eq!(out, expected);
    }

    #[tokio::test]
    async fn chunked_and_unknown_framing_pass_through() {
        let input = b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n\"a\"\r\n0\r\n\r\nGET /\"q\" HTTP/1.1\r\n\r\n";
        assert_eq!(through(input, 4).await, input.to_vec());
        let h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\"binary\"";
        assert_eq!(through(h2, 3).await, h2.to_vec());
    }

    proptest! {
        #[test]
        fn only_request_lines_change(
            target in "/[a-z\"<>=+ ]{0,40}".prop_map(|t| t.replace(' ', "+")),
            body in proptest::collection::vec(any::<u8>(), 0..200),
            chunk in 1usize..64,
        ) {
            let mut input = format!("POST {target} HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
            input.extend_from_slice(&body);
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let out = runtime.block_on(through(&input, chunk));
            let encoded = target.replace('"', "%22").replace('<', "%3C").replace('>', "%3E");
            let mut expected = format!("POST {encoded} HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
            expected.extend_from_slice(&body);
            prop_assert_eq!(out, expected);
        }
    }
}
