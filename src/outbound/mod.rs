//! Outbound mail (SPEC §6, last bullet): the durable queue lives in the store
//! (`Store::enqueue` and friends); this module delivers it. [`spawn`] starts the worker
//! ([`worker`]), which DKIM-signs ([`dkim`]), finds hosts ([`resolve`]: the relay or the
//! recipients' MX), talks SMTP ([`client`]), retries per `[outbound]
//! retry_schedule_secs` ([`retry`]) and files a bounce ([`dsn`]) into the conversation
//! when a recipient fails for good.
//!
//! Submission never calls delivery code directly: it enqueues, then calls
//! [`Outbound::wake`] (GUIDE §3.3 rule 5), so the persistent queue is the interface.

pub mod client;
pub mod dkim;
pub mod dsn;
pub mod resolve;
pub mod retry;
pub mod worker;

use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::reload::Reloadable;
use crate::store::Store;

pub use client::Timeouts;
pub use resolve::{DnsResolver, Resolve, ResolveError, StaticResolver, Target};

/// Handle on the running delivery worker. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbound {
    wake: Arc<Notify>,
}

impl Outbound {
    /// Tells the worker to look at the queue now (after an enqueue). `Store::enqueue`
    /// already does this; calling it again is harmless.
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// Starts the delivery worker on `tasks`; it stops when `shutdown` is cancelled. MX
/// lookups use the system's DNS configuration. Attempts are counted in `metrics`.
pub fn spawn(
    store: Store,
    config: Arc<Reloadable<Config>>,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
    metrics: Metrics,
) -> Outbound {
    let resolver: Arc<dyn Resolve> = Arc::new(DnsResolver::from_system_conf());
    spawn_with(
        store,
        config,
        tasks,
        shutdown,
        resolver,
        Timeouts::default(),
        metrics,
    )
}

/// [`spawn`] with a chosen resolver and timeouts (tests: a [`StaticResolver`] mapping
/// domains to loopback sinks, short timeouts).
pub fn spawn_with(
    store: Store,
    config: Arc<Reloadable<Config>>,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
    resolver: Arc<dyn Resolve>,
    timeouts: Timeouts,
    metrics: Metrics,
) -> Outbound {
    let wake = store.queue_wakeup();
    let tls = match mail_send::smtp::tls::build_tls_connector(true) {
        Ok(tls) => tls,
        Err(e) => {
            // Only the platform-verifier path of mail-send can fail, not this one; were it
            // to, the mail stays safely queued and the log says why nothing goes out.
            tracing::error!(error = %e, "outbound: TLS client setup failed; not delivering");
            return Outbound { wake };
        }
    };
    let worker = Arc::new(worker::Worker {
        store,
        config,
        resolver,
        tls,
        timeouts,
        wake: wake.clone(),
        metrics,
    });
    tasks.spawn(worker::run(worker, tasks.clone(), shutdown));
    Outbound { wake }
}
