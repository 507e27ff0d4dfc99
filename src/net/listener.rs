//! Accept loop with a connection limit. Over the limit the client is told so (`busy_reply`)
//! instead of being left in the kernel backlog (GUIDE §4 example 3).

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument, debug, info_span, warn};

/// How long a refused client gets to read its "too busy" line.
const BUSY_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Told of every connection refused for lack of slots, with the listener's protocol name
/// (the metrics count them; `net` stays below `metrics`).
pub type OnRefused = Arc<dyn Fn(&'static str) + Send + Sync>;

pub struct AcceptLoop {
    pub listener: TcpListener,
    pub slots: Arc<Semaphore>,
    pub tasks: TaskTracker,
    pub shutdown: CancellationToken,
    /// Written to a client refused for lack of slots, e.g. `421 4.7.0 ...`.
    pub busy_reply: &'static [u8],
    pub protocol: &'static str,
    pub on_refused: OnRefused,
}

impl AcceptLoop {
    pub async fn run<F, Fut>(self, on_conn: F)
    where
        F: Fn(TcpStream, SocketAddr, u64) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut next_id: u64 = 0;
        loop {
            let (stream, peer) = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                r = self.listener.accept() => match r {
                    Ok(conn) => conn,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning or exiting.
                        warn!(error = %e, protocol = self.protocol, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            next_id += 1;
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                debug!(%peer, protocol = self.protocol, "connection limit reached");
                (self.on_refused)(self.protocol);
                let reply = self.busy_reply;
                self.tasks.spawn(async move {
                    let mut stream = stream;
                    let _ = tokio::time::timeout(BUSY_WRITE_TIMEOUT, async {
                        stream.write_all(reply).await?;
                        stream.shutdown().await
                    })
                    .await;
                });
                continue;
            };
            let on_conn = on_conn.clone();
            let span = info_span!("session", protocol = self.protocol, %peer, id = next_id);
            self.tasks.spawn(
                async move {
                    let _permit = permit;
                    on_conn(stream, peer, next_id).await
                }
                .instrument(span),
            );
        }
    }
}
