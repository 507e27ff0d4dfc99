//! The SpamAssassin daemon over the SPAMC protocol (`spamd/PROTOCOL` in SpamAssassin):
//! one `SYMBOLS SPAMC/1.5` request per message over TCP, answered with
//! `Spam: True ; 15.2 / 5.0` and the names of the rules that hit. Also the trusted-relay
//! headers `X-Spam-Flag:` / `X-Spam-Status:` that an upstream SpamAssassin writes.

use std::time::Duration;

use mail_parser::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{DECISIVE_SCORE, FilterError, Finding};

/// Larger messages are not sent to spamd: `spamc` itself skips anything over 500 KB
/// (`-s`), since SpamAssassin's run time grows with size and spam is small. 2 MiB keeps
/// every mail with a typical attachment in scope.
pub(super) const MAX_SCAN_BYTES: usize = 2 * 1024 * 1024;
/// spamd's answer to SYMBOLS is a status line, two headers and a list of rule names.
const MAX_RESPONSE_BYTES: u64 = 64 * 1024;

/// spamd's opinion of one message.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct SpamReport {
    pub score: f64,
    /// spamd's own `required_score` (reported; our `spam_threshold` decides).
    pub required: f64,
    /// Comma-separated rule names, e.g. `GTUBE,MISSING_DATE`.
    pub symbols: String,
}

/// Asks spamd at `addr` (`host:port`) about `raw`; `None` when the message is too large
/// to be worth scanning. Unreachable, timed out or talking nonsense:
/// [`FilterError::SpamdDown`].
pub(super) async fn check(
    addr: &str,
    raw: &[u8],
    limit: Duration,
) -> Result<Option<SpamReport>, FilterError> {
    if raw.len() > MAX_SCAN_BYTES {
        tracing::debug!(
            size = raw.len(),
            "larger than {MAX_SCAN_BYTES} bytes: not sent to spamd"
        );
        return Ok(None);
    }
    let head = format!(
        "SYMBOLS SPAMC/1.5\r\nContent-length: {}\r\nUser: teamgate\r\n\r\n",
        raw.len()
    );
    let response = tokio::time::timeout(limit, exchange(addr, &head, raw))
        .await
        .map_err(|_| FilterError::SpamdDown(format!("{addr}: no answer within {limit:?}")))?
        .map_err(|e| FilterError::SpamdDown(format!("{addr}: {e}")))?;
    parse_response(&response)
        .map(Some)
        .map_err(|e| FilterError::SpamdDown(format!("{addr}: {e}")))
}

/// One SPAMC request (`head`: the request line and headers, up to the blank line) with
/// the message, answered by spamd and read up to [`MAX_RESPONSE_BYTES`].
pub(super) async fn exchange(addr: &str, head: &str, raw: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(raw).await?;
    stream.shutdown().await?;
    let mut response = Vec::new();
    (&mut stream)
        .take(MAX_RESPONSE_BYTES)
        .read_to_end(&mut response)
        .await?;
    Ok(response)
}

/// Parses `SPAMD/1.1 0 EX_OK\r\nContent-length: 5\r\nSpam: True ; 1000.0 / 5.0\r\n\r\nGTUBE`.
fn parse_response(response: &[u8]) -> Result<SpamReport, String> {
    let text = String::from_utf8_lossy(response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .or_else(|| text.split_once("\n\n"))
        .unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap_or_default();
    let mut words = status.split_whitespace();
    let (Some(version), Some(code)) = (words.next(), words.next()) else {
        return Err(format!("bad status line {status:?}"));
    };
    if !version.starts_with("SPAMD/") {
        return Err(format!("bad status line {status:?}"));
    }
    if code != "0" {
        return Err(format!("spamd error: {}", status.trim()));
    }
    let spam = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("spam"))
        .map(|(_, value)| value)
        .ok_or("no Spam header in the answer")?;
    // "True ; 15.2 / 5.0"
    let (_, scores) = spam.split_once(';').ok_or("bad Spam header")?;
    let (score, required) = scores.split_once('/').ok_or("bad Spam header")?;
    let score: f64 = score.trim().parse().map_err(|_| "bad score")?;
    let required: f64 = required.trim().parse().map_err(|_| "bad required score")?;
    if !score.is_finite() || !required.is_finite() {
        return Err("bad score".into());
    }
    Ok(SpamReport {
        score,
        required,
        symbols: body.trim().to_string(),
    })
}

/// The spamd signal: its score, with the rules that hit.
pub(super) fn finding(report: &SpamReport) -> Finding {
    Finding {
        rule: "SPAMD",
        score: report.score,
        detail: format!(
            "spamd score {:.1} (spamd requires {:.1}): {}",
            report.score, report.required, report.symbols
        ),
    }
}

/// The trusted upstream signal: `X-Spam-Flag: YES` or `X-Spam-Status: Yes, …` anywhere in
/// the header (a relay's verdict cannot be hidden by a sender adding a `NO` above it).
/// Only consulted when `trust_upstream_spam_headers` is set.
pub(super) fn upstream_flag(message: Option<&Message<'_>>) -> Option<Finding> {
    let root = message?.parts.first()?;
    root.headers.iter().find_map(|header| {
        let name = header.name.as_str();
        let value = header.value.as_text()?.trim();
        let flagged = if name.eq_ignore_ascii_case("X-Spam-Flag") {
            value.eq_ignore_ascii_case("yes")
        } else if name.eq_ignore_ascii_case("X-Spam-Status") {
            value
                .split([',', ' '])
                .next()
                .is_some_and(|first| first.eq_ignore_ascii_case("yes"))
        } else {
            false
        };
        flagged.then(|| Finding {
            rule: "UPSTREAM_SPAM",
            score: DECISIVE_SCORE,
            detail: format!("{name}: {value}"),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::MessageParser;

    #[test]
    fn parses_symbols_answer() {
        let r = parse_response(
            b"SPAMD/1.1 0 EX_OK\r\nContent-length: 18\r\nSpam: True ; 1005.2 / 5.0\r\n\r\nGTUBE,MISSING_DATE",
        )
        .unwrap();
        assert_eq!(r.score, 1005.2);
        assert_eq!(r.required, 5.0);
        assert_eq!(r.symbols, "GTUBE,MISSING_DATE");
        let r = parse_response(b"SPAMD/1.1 0 EX_OK\r\nSpam: False ; -0.5 / 5.0\r\n\r\n").unwrap();
        assert_eq!((r.score, r.symbols.as_str()), (-0.5, ""));
    }

    #[test]
    fn rejects_errors_and_garbage() {
        for bad in [
            &b""[..],
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"SPAMD/1.0 76 Bad header line: (EOF)\r\n",
            b"SPAMD/1.1 0 EX_OK\r\n\r\n",
            b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; lots / 5.0\r\n\r\n",
            b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; NaN / 5.0\r\n\r\n",
            b"SPAMD/1.1 0 EX_OK\r\nSpam: True\r\n\r\n",
            b"\xff\xfe",
        ] {
            assert!(parse_response(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn upstream_headers() {
        let flagged = |raw: &[u8]| {
            let msg = MessageParser::default().parse(raw);
            upstream_flag(msg.as_ref()).is_some()
        };
        assert!(flagged(b"X-Spam-Flag: YES\r\nSubject: x\r\n\r\nb\r\n"));
        assert!(flagged(
            b"X-Spam-Status: Yes, score=12.1 required=5.0\r\nSubject: x\r\n\r\nb\r\n"
        ));
        assert!(flagged(
            b"X-Spam-Flag: NO\r\nX-Spam-Flag: YES\r\nSubject: x\r\n\r\nb\r\n"
        ));
        assert!(!flagged(
            b"X-Spam-Status: No, score=0.1 required=5.0\r\nSubject: x\r\n\r\nb\r\n"
        ));
        assert!(!flagged(b"X-Spam-Flag: NO\r\nSubject: x\r\n\r\nb\r\n"));
        assert!(!flagged(b"Subject: Yes\r\n\r\nb\r\n"));
    }
}
