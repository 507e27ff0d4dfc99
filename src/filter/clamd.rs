//! ClamAV's daemon over its `INSTREAM` command (clamd(8)): each attachment's decoded
//! contents go out in length-prefixed chunks over TCP or a unix socket, and clamd answers
//! `stream: OK` or `stream: <signature> FOUND`. One connection per attachment, so a hit
//! names its part.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::attachments::Part;
use super::{AttachmentHit, FilterError, HitCause};
use crate::config::ClamdAddr;

/// Bytes per INSTREAM chunk (clamd reads chunks of any size up to StreamMaxLength).
const CHUNK: usize = 64 * 1024;
/// clamd's reply is one short line.
const MAX_REPLY_BYTES: u64 = 4096;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What clamd said about one stream.
#[derive(Debug, PartialEq, Eq)]
enum ScanResult {
    Clean,
    Infected(String),
    /// Larger than clamd's `StreamMaxLength`: it cannot vouch for it.
    TooLarge,
}

/// Scans every part; all within `limit`. clamd unreachable, timed out or answering an
/// error: [`FilterError::ClamdDown`].
pub(super) async fn scan_parts(
    addr: &ClamdAddr,
    parts: &[Part<'_>],
    limit: Duration,
) -> Result<Vec<AttachmentHit>, FilterError> {
    let down = |why: String| FilterError::ClamdDown(format!("{}: {why}", show(addr)));
    let scan_all = async {
        let mut hits = Vec::new();
        for part in parts.iter().filter(|p| !p.contents.is_empty()) {
            let (reason, cause) = match scan(addr, part.contents).await.map_err(&down)? {
                ScanResult::Clean => continue,
                ScanResult::Infected(signature) => {
                    (format!("infected: {signature} (clamd)"), HitCause::Virus)
                }
                ScanResult::TooLarge => (
                    "not scanned: larger than clamd's StreamMaxLength".into(),
                    HitCause::NotScanned,
                ),
            };
            hits.push(AttachmentHit {
                part_path: part.path.clone(),
                filename: part.filename.clone(),
                reason,
                cause,
            });
        }
        Ok(hits)
    };
    tokio::time::timeout(limit, scan_all)
        .await
        .map_err(|_| down(format!("no answer within {limit:?}")))?
}

fn show(addr: &ClamdAddr) -> String {
    match addr {
        ClamdAddr::Tcp(hostport) => hostport.clone(),
        ClamdAddr::Unix(path) => path.display().to_string(),
    }
}

async fn connect(addr: &ClamdAddr) -> std::io::Result<Box<dyn Io>> {
    Ok(match addr {
        ClamdAddr::Tcp(hostport) => Box::new(TcpStream::connect(hostport.as_str()).await?),
        ClamdAddr::Unix(path) => Box::new(UnixStream::connect(path).await?),
    })
}

async fn scan(addr: &ClamdAddr, data: &[u8]) -> Result<ScanResult, String> {
    let mut stream = connect(addr).await.map_err(|e| e.to_string())?;
    // clamd stops reading and answers as soon as a stream passes StreamMaxLength, so a
    // failed write may still be followed by a useful answer.
    let sent = send(&mut stream, data).await;
    let mut reply = Vec::new();
    let read = (&mut stream)
        .take(MAX_REPLY_BYTES)
        .read_to_end(&mut reply)
        .await;
    match (parse_reply(&reply), sent, read) {
        (Ok(result), _, _) => Ok(result),
        (Err(_), Err(e), _) | (Err(_), Ok(()), Err(e)) => Err(e.to_string()),
        (Err(e), Ok(()), Ok(_)) => Err(e),
    }
}

async fn send(stream: &mut Box<dyn Io>, data: &[u8]) -> std::io::Result<()> {
    // `z` prefix: NUL-terminated command and reply.
    stream.write_all(b"zINSTREAM\0").await?;
    for chunk in data.chunks(CHUNK) {
        let len = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
        stream.write_all(&len.to_be_bytes()).await?;
        stream.write_all(chunk).await?;
    }
    stream.write_all(&0u32.to_be_bytes()).await?;
    stream.flush().await
}

/// `stream: OK\0`, `stream: Eicar-Signature FOUND\0`,
/// `INSTREAM size limit exceeded. ERROR\0`.
fn parse_reply(reply: &[u8]) -> Result<ScanResult, String> {
    let text = String::from_utf8_lossy(reply);
    let text = text.trim_end_matches(['\0', '\r', '\n', ' ']);
    let body = text.strip_prefix("stream:").map(str::trim);
    if body == Some("OK") {
        Ok(ScanResult::Clean)
    } else if let Some(signature) = body.and_then(|b| b.strip_suffix(" FOUND")) {
        Ok(ScanResult::Infected(signature.trim().to_string()))
    } else if text.contains("size limit exceeded") {
        Ok(ScanResult::TooLarge)
    } else if text.is_empty() {
        Err("connection closed without an answer".into())
    } else {
        Err(format!("unexpected answer {text:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies() {
        assert_eq!(parse_reply(b"stream: OK\0"), Ok(ScanResult::Clean));
        assert_eq!(
            parse_reply(b"stream: Eicar-Signature FOUND\0"),
            Ok(ScanResult::Infected("Eicar-Signature".into()))
        );
        assert_eq!(
            parse_reply(b"INSTREAM size limit exceeded. ERROR\0"),
            Ok(ScanResult::TooLarge)
        );
        assert!(parse_reply(b"").is_err());
        assert!(parse_reply(b"UNKNOWN COMMAND\0").is_err());
        assert!(parse_reply(b"stream: lstat() failed. ERROR\0").is_err());
    }

    #[tokio::test]
    async fn unreachable_clamd_is_down() {
        let dir = tempfile::tempdir().unwrap();
        let addr = ClamdAddr::Unix(dir.path().join("missing.sock"));
        let part = Part {
            path: vec![1],
            filename: "a.pdf".into(),
            content_type: "application/pdf".into(),
            contents: b"%PDF",
        };
        let err = scan_parts(&addr, &[part], Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, FilterError::ClamdDown(_)), "{err:?}");
        // Nothing to scan: clamd is not asked.
        assert_eq!(
            scan_parts(&addr, &[], Duration::from_secs(5)).await,
            Ok(vec![])
        );
    }
}
