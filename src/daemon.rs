//! Wiring: open the store, bind every listener, spawn and track the tasks, reload on
//! SIGHUP, two-phase shutdown on SIGTERM/SIGINT (GUIDE §3.5). The only module that
//! spawns long-lived tasks.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use sd_notify::NotifyState;
use tokio::{net::TcpListener, signal::unix::SignalKind, sync::Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{error, info, warn};

use crate::{
    auth::Authenticator,
    config::{self, Config},
    control,
    filter::Filters,
    fts::{self, FtsIndex},
    imap::{self, session::ImapContext},
    ingest::Ingest,
    metrics::{self, Metrics},
    net::{listener::AcceptLoop, tls::Tls},
    outbound::{self, Outbound},
    reload::Reloadable,
    replying::Replying,
    smtp::{
        server::{self as smtp_server, SmtpContext},
        session::Mode,
    },
    store::{Store, StoreError, StoreOptions},
    submit::Submit,
};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("opening the data directory {path}: {source}")]
    Store { path: String, source: StoreError },
    #[error("binding {what} {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(#[from] crate::net::tls::TlsError),
    #[error("filters: {0}")]
    Filter(#[from] crate::filter::FilterError),
    #[error("creating {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("closing the store: {0}")]
    Close(StoreError),
    #[error("starting the search indexer: {0}")]
    Indexer(std::io::Error),
    #[error("internal: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Where the daemon actually listens (ports resolved, so tests can bind port 0).
#[derive(Debug, Clone)]
pub struct Addrs {
    pub smtp: Vec<SocketAddr>,
    pub submission: Vec<SocketAddr>,
    pub submission_tls: Vec<SocketAddr>,
    pub imap: Vec<SocketAddr>,
    pub imap_tls: Vec<SocketAddr>,
    /// The Prometheus endpoint (`[metrics] listen`), when configured.
    pub metrics: Option<SocketAddr>,
    pub control: PathBuf,
}

pub struct DaemonHandle {
    pub addrs: Addrs,
    config: Arc<Reloadable<Config>>,
    tls: Option<Tls>,
    filters: Arc<Reloadable<Filters>>,
    /// Its login cache is flushed on reload.
    auth: Authenticator,
    store: Store,
    outbound: Outbound,
    metrics: Metrics,
    /// The full-text indexer's thread, joined before the store closes.
    indexer: Option<std::thread::JoinHandle<()>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

/// Opens the store and binds every listener before returning, then serves in the background.
pub async fn start(config: Config) -> Result<DaemonHandle, DaemonError> {
    let data_dir = config.server.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| DaemonError::DataDir {
        path: data_dir.display().to_string(),
        source,
    })?;
    let store_dir = data_dir.clone();
    let opts = StoreOptions {
        expunge_log_len: config.imap.expunge_log_len,
        cache_capacity_bytes: config.store.cache_bytes,
        ..StoreOptions::default()
    };
    let (store, report) = tokio::task::spawn_blocking(move || Store::open(&store_dir, opts))
        .await?
        .map_err(|source| DaemonError::Store {
            path: data_dir.display().to_string(),
            source,
        })?;
    if report.bad_records.is_empty() {
        info!(messages = report.messages_checked, "store opened");
    } else {
        for bad in &report.bad_records {
            error!(record = %bad, "store record points at missing or damaged bytes");
        }
    }
    if report.truncated_tail_bytes > 0 {
        warn!(
            bytes = report.truncated_tail_bytes,
            "dropped a torn segment tail left by a crash"
        );
    }

    let fts = if config.search.index {
        let dir = data_dir.join("search");
        match tokio::task::spawn_blocking(move || FtsIndex::open_or_rebuild(&dir)).await? {
            Ok(index) => Some(index),
            Err(e) => {
                error!(error = %e, "search index unavailable; SEARCH scans every message");
                None
            }
        }
    } else {
        None
    };

    let tls = config.tls.as_ref().map(Tls::new).transpose()?;
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    // `smtp.max_connections` bounds the MX and, separately, the agents' submission
    // ports: a flood on port 25 must not lock the team out of replying.
    let smtp_slots = Arc::new(Semaphore::new(config.smtp.max_connections));
    let submission_slots = Arc::new(Semaphore::new(config.smtp.max_connections));

    let smtp_listeners = bind_all(&config.smtp.listen, "smtp.listen").await?;
    let submission_listeners = bind_all(&config.submission.listen, "submission.listen").await?;
    let submission_tls_listeners =
        bind_all(&config.submission.listen_tls, "submission.listen_tls").await?;
    let imap_listeners = bind_all(&config.imap.listen, "imap.listen").await?;
    let imap_tls_listeners = bind_all(&config.imap.listen_tls, "imap.listen_tls").await?;
    let metrics_listener = bind_all(config.metrics.listen.as_slice(), "metrics.listen")
        .await?
        .pop();
    let control_path = control::socket_path(&config.server.data_dir);
    let control_listener = control::bind(&control_path).map_err(|source| DaemonError::Bind {
        what: "control socket",
        addr: control_path.display().to_string(),
        source,
    })?;

    let addrs = Addrs {
        smtp: local_addrs(&smtp_listeners),
        submission: local_addrs(&submission_listeners),
        submission_tls: local_addrs(&submission_tls_listeners),
        imap: local_addrs(&imap_listeners),
        imap_tls: local_addrs(&imap_tls_listeners),
        metrics: metrics_listener.as_ref().and_then(|l| l.local_addr().ok()),
        control: control_path,
    };
    let metrics = Metrics::new();
    metrics.watch_store(store.clone());
    let indexer = match &fts {
        Some(index) => Some(
            fts::indexer::spawn(
                index.clone(),
                store.clone(),
                config.search.clone(),
                shutdown.clone(),
                metrics.clone(),
            )
            .map_err(DaemonError::Indexer)?,
        ),
        None => None,
    };
    let config = Arc::new(Reloadable::new(config));
    // The delivery worker; `Store::enqueue` wakes it (and so does `Outbound::wake`).
    let outbound = outbound::spawn(
        store.clone(),
        config.clone(),
        &tasks,
        shutdown.clone(),
        metrics.clone(),
    );
    let filters = Arc::new(Reloadable::new(Filters::from_config(
        &config.current().filter,
    )?));
    let ingest =
        Ingest::new(store.clone(), config.clone(), filters.clone()).with_metrics(metrics.clone());
    let ingest_for_admin = ingest.clone();
    // Teaches spamd from agents' Junk gestures; `Store::learn_enqueue` wakes it.
    tasks.spawn(crate::filter::learn::run(
        store.clone(),
        config.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    let auth = Authenticator::new(config.current().server.auth_workers, metrics.clone());
    let replying = Replying::default();
    tasks.spawn(crate::replying::run_expiry(
        replying.clone(),
        shutdown.clone(),
    ));
    let smtp_ctx = Arc::new(SmtpContext {
        config: config.clone(),
        tls: tls.clone(),
        ingest: ingest.clone(),
        auth: auth.clone(),
        submit: Submit::new(
            store.clone(),
            config.clone(),
            ingest.clone(),
            replying.clone(),
        ),
        shutdown: shutdown.clone(),
        metrics: metrics.clone(),
    });
    let smtp_like = smtp_listeners
        .into_iter()
        .map(|l| (l, Mode::Inbound, false, "smtp"))
        .chain(
            submission_listeners
                .into_iter()
                .map(|l| (l, Mode::Submission, false, "submission")),
        )
        .chain(
            submission_tls_listeners
                .into_iter()
                .map(|l| (l, Mode::Submission, true, "submissions")),
        );
    for (listener, mode, implicit_tls, protocol) in smtp_like {
        let ctx = smtp_ctx.clone();
        let accept = AcceptLoop {
            listener,
            slots: match mode {
                Mode::Inbound => smtp_slots.clone(),
                Mode::Submission => submission_slots.clone(),
            },
            tasks: tasks.clone(),
            shutdown: shutdown.clone(),
            busy_reply: b"421 4.7.0 Too many connections, try again later\r\n",
            protocol,
            on_refused: metrics.on_refused(),
        };
        tasks.spawn(accept.run(move |stream, peer, id| {
            smtp_server::serve(stream, peer, id, ctx.clone(), mode, implicit_tls)
        }));
    }
    let imap_ctx = Arc::new(ImapContext {
        config: config.clone(),
        store: store.clone(),
        submit: smtp_ctx.submit.clone(),
        replying,
        ingest,
        auth: auth.clone(),
        tls: tls.clone(),
        recent: Default::default(),
        fts: fts.clone(),
        metrics: metrics.clone(),
    });
    let imap_slots = Arc::new(Semaphore::new(config.current().imap.max_connections));
    let imap_listeners = imap_listeners
        .into_iter()
        .map(|l| (l, false))
        .chain(imap_tls_listeners.into_iter().map(|l| (l, true)));
    for (listener, implicit_tls) in imap_listeners {
        let ctx = imap_ctx.clone();
        let stop = shutdown.clone();
        let accept = AcceptLoop {
            listener,
            slots: imap_slots.clone(),
            tasks: tasks.clone(),
            shutdown: shutdown.clone(),
            busy_reply: b"* BYE Too many connections, try again later\r\n",
            protocol: "imap",
            on_refused: metrics.on_refused(),
        };
        let observe = metrics.clone();
        tasks.spawn(accept.run(move |stream, peer, id| {
            imap::server::serve(
                stream,
                peer,
                id,
                ctx.clone(),
                stop.clone(),
                implicit_tls,
                observe.clone(),
            )
        }));
    }
    if let Some(listener) = metrics_listener {
        tasks.spawn(metrics::http::serve(
            listener,
            metrics.clone(),
            config.current().metrics.clone(),
            tasks.clone(),
            shutdown.clone(),
        ));
    }
    let admin = crate::admin::AdminContext {
        store: store.clone(),
        ingest: ingest_for_admin,
        metrics: Some(metrics.clone()),
        fts,
    };
    tasks.spawn(control::serve(
        control_listener,
        admin,
        tasks.clone(),
        shutdown.clone(),
    ));
    info!(smtp = ?addrs.smtp, imap = ?addrs.imap, imap_tls = ?addrs.imap_tls, metrics = ?addrs.metrics, "listening");
    Ok(DaemonHandle {
        addrs,
        config,
        tls,
        filters,
        auth,
        store,
        outbound,
        metrics,
        indexer,
        tasks,
        shutdown,
    })
}

async fn bind_all(
    addrs: &[SocketAddr],
    what: &'static str,
) -> Result<Vec<TcpListener>, DaemonError> {
    let mut out = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let listener = listen(*addr).map_err(|source| DaemonError::Bind {
            what,
            addr: addr.to_string(),
            source,
        })?;
        out.push(listener);
    }
    Ok(out)
}

/// Connections the kernel queues for `accept` per listener (capped by
/// `net.core.somaxconn`). `TcpListener::bind` uses 128: a burst of a few hundred clients
/// then overflows the queue, and with SYN cookies the overflow leaves clients connected
/// in their own view but never accepted, so they get neither a greeting nor the polite
/// `421`/`* BYE` past `max_connections` (tests/faults.rs, a thousand connections).
const LISTEN_BACKLOG: u32 = 4096;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restarted daemon rebinds despite TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

fn local_addrs(listeners: &[TcpListener]) -> Vec<SocketAddr> {
    listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect()
}

impl DaemonHandle {
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// This daemon's metrics (what `/metrics` and `teamgate status` show).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The outbound delivery worker's handle.
    pub fn outbound(&self) -> &Outbound {
        &self.outbound
    }

    pub fn config(&self) -> Arc<Config> {
        self.config.current()
    }

    /// Applies a new config to new sessions. What needs a restart is logged and ignored.
    pub fn reload(&self, new: Config) -> Result<(), String> {
        let old = self.config.current();
        if new.server.data_dir != old.server.data_dir {
            warn!("server.data_dir changed: takes effect after a restart");
        }
        if new.smtp.listen != old.smtp.listen {
            warn!("smtp.listen changed: takes effect after a restart");
        }
        if new.smtp.max_connections != old.smtp.max_connections {
            warn!("smtp.max_connections changed: takes effect after a restart");
        }
        if new.metrics.listen != old.metrics.listen
            || new.metrics.max_connections != old.metrics.max_connections
            || new.metrics.timeout != old.metrics.timeout
        {
            warn!("[metrics] changed: takes effect after a restart");
        }
        match (&self.tls, &new.tls) {
            (Some(tls), Some(files)) => tls.reload(files).map_err(|e| e.to_string())?,
            (None, None) => {}
            _ => warn!("enabling or disabling [tls] takes effect after a restart"),
        }
        // spamd/clamd addresses, thresholds and the DNS source apply to the next message.
        self.filters
            .replace(Filters::from_config(&new.filter).map_err(|e| e.to_string())?);
        // Passwords or agents may have changed: every login checks its hash again.
        self.auth.flush_cache();
        self.config.replace(new);
        Ok(())
    }

    /// Two-phase stop: refuse new work, let sessions reach a safe point within the grace
    /// period, then flush and close the store (which releases its lock).
    pub async fn shutdown(self) -> Result<(), DaemonError> {
        let grace = self.config.current().server.shutdown_grace;
        self.shutdown.cancel();
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            warn!(
                left = self.tasks.len(),
                "grace period over; abandoning sessions"
            );
        }
        let _ = std::fs::remove_file(&self.addrs.control);
        if let Some(indexer) = self.indexer
            && !matches!(
                tokio::task::spawn_blocking(move || indexer.join()).await,
                Ok(Ok(()))
            )
        {
            warn!("the search indexer ended abnormally");
        }
        self.store.close().await.map_err(DaemonError::Close)
    }
}

/// `teamgate serve`: runs until SIGTERM/SIGINT, reloading on SIGHUP.
pub async fn serve(config_path: &Path, config: Config) -> Result<(), DaemonError> {
    // Handlers first: a signal that arrives while the listeners come up must not kill
    // the process with the default action.
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let handle = start(config).await?;
    notify(&[NotifyState::Ready, NotifyState::Status("accepting mail")]);
    let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
    let mut ping = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    loop {
        tokio::select! {
            _ = hup.recv() => {
                notify(&reloading());
                match config::load(config_path) {
                    Ok(new) => match handle.reload(new) {
                        Ok(()) => info!("configuration reloaded"),
                        Err(e) => error!(error = %e, "reload failed; keeping the old configuration"),
                    },
                    Err(errors) => {
                        for e in errors.iter() {
                            error!(problem = %e, "new configuration rejected; keeping the old one");
                        }
                    }
                }
                notify(&[NotifyState::Ready]);
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = ping.tick(), if watchdog.is_some() => notify(&[NotifyState::Watchdog]),
        }
    }
    info!("shutting down");
    notify(&[NotifyState::Stopping]);
    handle.shutdown().await?;
    info!("stopped");
    Ok(())
}

fn signal(kind: SignalKind) -> Result<tokio::signal::unix::Signal, DaemonError> {
    tokio::signal::unix::signal(kind).map_err(|source| DaemonError::Bind {
        what: "signal handler",
        addr: format!("{kind:?}"),
        source,
    })
}

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!(error = %e, "sd_notify failed");
    }
}

/// RELOADING=1 carries MONOTONIC_USEC so Type=notify-reload units accept it too.
fn reloading() -> Vec<NotifyState<'static>> {
    let mut states = vec![NotifyState::Reloading];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    states
}
