//! The `[metrics] listen` endpoint: `GET /metrics` (and `HEAD`) answers the Prometheus
//! text exposition; other paths get `404`, other methods `405`. One request per
//! connection (`Connection: close`), read with a size bound and a deadline; the request
//! head is parsed by `httparse`, the decision ([`route`]) is pure, and the driver
//! ([`serve`]) only moves bytes.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    time::timeout,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::debug;

use super::{CONTENT_TYPE, Metrics};
use crate::{config::MetricsConfig, net::listener::AcceptLoop};

/// A scrape request is one short line and a few headers; 8 KiB is what most HTTP servers
/// allow for a whole request head (nginx's `large_client_header_buffers` default).
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Headers parsed at most; a request with more is refused (`431`).
const MAX_HEADERS: usize = 32;

/// Written to a scraper refused for lack of slots.
const BUSY_REPLY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// What a request head says, as far as it has arrived.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// The head is not complete yet.
    Partial,
    Complete {
        method: String,
        path: String,
    },
    /// Not HTTP/1.x, or too many headers.
    Bad(&'static str),
    /// No end of the head within [`MAX_REQUEST_BYTES`] (decided by the reader).
    TooLarge,
}

/// Parses a request head with `httparse`.
pub fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Ok(httparse::Status::Complete(_)) => match (request.method, request.path) {
            (Some(method), Some(path)) => Parsed::Complete {
                method: method.to_string(),
                path: path.to_string(),
            },
            _ => Parsed::Bad("incomplete request line"),
        },
        Err(httparse::Error::TooManyHeaders) => Parsed::Bad("too many headers"),
        Err(_) => Parsed::Bad("malformed request"),
    }
}

/// What to answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// The exposition; without the body for `HEAD`.
    Metrics {
        head: bool,
    },
    NotFound,
    MethodNotAllowed,
}

/// The decision for a parsed request. The query string is ignored (Prometheus may add
/// parameters of its own).
pub fn route(method: &str, path: &str) -> Route {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    if path != "/metrics" {
        return Route::NotFound;
    }
    match method {
        "GET" => Route::Metrics { head: false },
        "HEAD" => Route::Metrics { head: true },
        _ => Route::MethodNotAllowed,
    }
}

/// A complete HTTP/1.1 response that closes the connection.
fn response(status: &str, extra: &str, content_type: &str, body: &[u8], head: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head {
        out.extend_from_slice(body);
    }
    out
}

fn plain(status: &str, extra: &str, text: &str) -> Vec<u8> {
    response(
        status,
        extra,
        "text/plain; charset=utf-8",
        text.as_bytes(),
        false,
    )
}

/// Accepts scrapers until shutdown, at most `max_connections` at once.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    config: MetricsConfig,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    let accept = AcceptLoop {
        listener,
        slots: Arc::new(Semaphore::new(config.max_connections)),
        tasks: tasks.clone(),
        shutdown,
        busy_reply: BUSY_REPLY,
        protocol: "metrics",
        on_refused: metrics.on_refused(),
    };
    let limit = config.timeout;
    accept
        .run(move |stream, peer, _id| answer(stream, peer, metrics.clone(), limit))
        .await;
}

/// One request, one answer, all within `limit`.
async fn answer(mut stream: TcpStream, peer: SocketAddr, metrics: Metrics, limit: Duration) {
    let reply = match timeout(limit, read_head(&mut stream)).await {
        Ok(Ok(Parsed::Complete { method, path })) => match route(&method, &path) {
            Route::Metrics { head } => {
                let text = tokio::task::spawn_blocking(move || metrics.render()).await;
                match text {
                    Ok(text) => response("200 OK", "", CONTENT_TYPE, text.as_bytes(), head),
                    Err(e) => {
                        debug!(error = %e, "metrics: rendering failed");
                        plain("500 Internal Server Error", "", "rendering failed\n")
                    }
                }
            }
            Route::NotFound => plain("404 Not Found", "", "not found; metrics are at /metrics\n"),
            Route::MethodNotAllowed => plain(
                "405 Method Not Allowed",
                "Allow: GET, HEAD\r\n",
                "only GET and HEAD\n",
            ),
        },
        Ok(Ok(Parsed::TooLarge)) => plain(
            "431 Request Header Fields Too Large",
            "",
            "request too large\n",
        ),
        Ok(Ok(Parsed::Bad(why))) => {
            debug!(%peer, why, "metrics: bad request");
            plain("400 Bad Request", "", &format!("bad request: {why}\n"))
        }
        // The peer closed or failed before a whole request head.
        Ok(Ok(Parsed::Partial)) | Ok(Err(_)) => return,
        Err(_) => plain("408 Request Timeout", "", "request timeout\n"),
    };
    let _ = timeout(limit, async {
        stream.write_all(&reply).await?;
        stream.shutdown().await
    })
    .await;
}

/// Reads until the request head is complete, malformed or too large; `Partial` when the
/// peer closed first.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Parsed> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Parsed::Partial);
        }
        buf.extend_from_slice(&chunk[..n]);
        match parse(&buf) {
            Parsed::Partial if buf.len() >= MAX_REQUEST_BYTES => {
                return Ok(Parsed::TooLarge);
            }
            Parsed::Partial => {}
            done => return Ok(done),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_request_heads() {
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"),
            Parsed::Partial
        );
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Parsed::Complete {
                method: "GET".into(),
                path: "/metrics".into()
            }
        );
        assert_eq!(
            parse(b"GET /metrics HTTP/1.0\r\n\r\n"),
            Parsed::Complete {
                method: "GET".into(),
                path: "/metrics".into()
            }
        );
        assert!(matches!(parse(b"\x16\x03\x01\x02\x00"), Parsed::Bad(_)));
        assert!(matches!(
            parse(b"GET /metrics SMTP/1.1\r\n\r\n"),
            Parsed::Bad(_)
        ));
        let mut many = b"GET /metrics HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse(&many), Parsed::Bad("too many headers"));
    }

    #[test]
    fn routes() {
        assert_eq!(route("GET", "/metrics"), Route::Metrics { head: false });
        assert_eq!(
            route("GET", "/metrics?name[]=x"),
            Route::Metrics { head: false }
        );
        assert_eq!(route("HEAD", "/metrics"), Route::Metrics { head: true });
        assert_eq!(route("POST", "/metrics"), Route::MethodNotAllowed);
        assert_eq!(route("GET", "/"), Route::NotFound);
        assert_eq!(route("DELETE", "/metrics/x"), Route::NotFound);
    }

    #[test]
    fn responses_close_and_count_their_body() {
        let r = response("200 OK", "", CONTENT_TYPE, b"abc", false);
        assert_eq!(
            r,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
              Content-Length: 3\r\nConnection: close\r\n\r\nabc"
        );
        let head = response("200 OK", "", CONTENT_TYPE, b"abc", true);
        assert!(head.ends_with(b"Content-Length: 3\r\nConnection: close\r\n\r\n"));
    }
}
