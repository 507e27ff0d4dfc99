//! The unix control socket `<data_dir>/control.sock` (mode 0600): one JSON request line in,
//! one JSON answer line out. sled locks its directory, so while the daemon runs this is how
//! the admin CLI reads the store (SPEC §1).

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::{fs::PermissionsExt, net::UnixStream as StdUnixStream},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as AsyncBufReader},
    net::{UnixListener, UnixStream},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, warn};

use crate::admin::{self, AdminContext, AdminRequest};

/// Requests are tiny; anything longer is not ours.
const MAX_REQUEST_BYTES: u64 = 64 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Serialize, Deserialize)]
pub struct Answer {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("control.sock")
}

/// Binds the socket, replacing a stale file left by a crashed daemon, and makes it 0600.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if path.exists() {
        if StdUnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is in use by a running daemon", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

pub async fn serve(
    listener: UnixListener,
    ctx: AdminContext,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let ctx = ctx.clone();
        tasks.spawn(async move {
            if let Err(e) = tokio::time::timeout(IO_TIMEOUT, answer(stream, ctx)).await {
                debug!(error = %e, "control request timed out");
            }
        });
    }
}

async fn answer(stream: UnixStream, ctx: AdminContext) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = AsyncBufReader::new(read.take(MAX_REQUEST_BYTES));
    if reader.read_line(&mut line).await.is_err() {
        return;
    }
    let answer = match serde_json::from_str::<AdminRequest>(line.trim_end()) {
        Ok(request) => {
            match tokio::task::spawn_blocking(move || admin::execute(&ctx, &request)).await {
                Ok(Ok(data)) => Answer {
                    ok: true,
                    data: Some(data),
                    error: None,
                },
                Ok(Err(e)) => Answer {
                    ok: false,
                    data: None,
                    error: Some(e.to_string()),
                },
                Err(e) => Answer {
                    ok: false,
                    data: None,
                    error: Some(format!("internal error: {e}")),
                },
            }
        }
        Err(e) => Answer {
            ok: false,
            data: None,
            error: Some(format!("bad request: {e}")),
        },
    };
    let mut bytes = serde_json::to_vec(&answer)
        .unwrap_or_else(|_| br#"{"ok":false,"error":"encoding"}"#.to_vec());
    bytes.push(b'\n');
    let _ = write.write_all(&bytes).await;
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("control socket {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("control socket {path}: bad answer: {source}")]
    Decode {
        path: String,
        source: serde_json::Error,
    },
}

/// Asks a running daemon. `Ok(None)` when no daemon listens on the socket.
pub fn request(path: &Path, req: &AdminRequest) -> Result<Option<Answer>, ClientError> {
    let io_err = |source| ClientError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut stream = match StdUnixStream::connect(path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(io_err(e)),
    };
    stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(io_err)?;
    stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(io_err)?;
    let mut line = serde_json::to_vec(req).map_err(|source| ClientError::Decode {
        path: path.display().to_string(),
        source,
    })?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io_err)?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(io_err)?;
    serde_json::from_str(&answer)
        .map(Some)
        .map_err(|source| ClientError::Decode {
            path: path.display().to_string(),
            source,
        })
}
