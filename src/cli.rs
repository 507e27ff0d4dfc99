//! Command line: `serve`, `check-config`, `hash-password` and the admin verbs, which ask a
//! running daemon over the control socket or open the data directory themselves.

use std::{
    io::{Read, Write},
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context, anyhow, bail};
use clap::{Parser, Subcommand};
use serde_json::Value;

use crate::{
    admin::{self, AdminContext, AdminRequest, StatusReport},
    auth,
    config::{self, Config, LogFormat},
    control,
    ingest::Ingest,
    reload::Reloadable,
    store::{
        self, BackupManifest, BackupSnapshot, ContactDetail, ContactJson, ConversationDetail,
        ConversationJson, JunkJson, QuarantineJson, QueueJson, Store, StoreError, StoreOptions,
        finish_backup,
    },
};

#[derive(Debug, Parser)]
#[command(name = "teamgate", version, about = "Shared-inbox mail gateway")]
pub struct Cli {
    /// Configuration file.
    #[arg(long, global = true, default_value = "/etc/teamgate/teamgate.toml")]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground.
    Serve,
    /// Validate the configuration; print every problem.
    CheckConfig,
    /// Read a password on stdin, print its argon2id hash.
    HashPassword,
    /// Inspect conversations.
    Conversations {
        #[command(subcommand)]
        verb: ConversationsVerb,
    },
    /// Inspect contacts.
    Contacts {
        #[command(subcommand)]
        verb: ContactsVerb,
    },
    /// Inspect the outbound queue, retry an entry now.
    Queue {
        #[command(subcommand)]
        verb: QueueVerb,
    },
    /// Mail judged spam; release one as "not spam" (it is threaded like any mail).
    Junk {
        #[command(subcommand)]
        verb: JunkVerb,
    },
    /// Quarantined attachments; release one back into its conversation.
    Quarantine {
        #[command(subcommand)]
        verb: QuarantineVerb,
    },
    /// The daemon at a glance: mail accepted and refused, junk, quarantine, queue,
    /// sessions, latencies (the numbers `/metrics` serves) and the store's counters.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Copy a consistent snapshot of the data directory into DIR (new, or empty), while
    /// the daemon runs or not.
    Backup {
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Rebuild the data directory from a backup made by `teamgate backup`. The daemon
    /// must be stopped and the data directory empty or missing: restore never overwrites.
    Restore {
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConversationsVerb {
    List {
        #[arg(long)]
        json: bool,
    },
    /// Conversations with a message holding QUERY in a header or its text (IMAP SEARCH
    /// TEXT: case-insensitive substring).
    Search {
        query: String,
        #[arg(long)]
        json: bool,
    },
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Move every message of conversation FROM into INTO; FROM then redirects to INTO.
    Merge {
        into: String,
        from: String,
        #[arg(long)]
        json: bool,
    },
    /// Start a new conversation from the message with MESSAGE_ID onward.
    Split {
        id: String,
        message_id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum QueueVerb {
    List {
        #[arg(long)]
        json: bool,
    },
    /// Try to deliver an entry now (keeps its attempt count).
    Retry {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum JunkVerb {
    List {
        #[arg(long)]
        json: bool,
    },
    Release {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum QuarantineVerb {
    List {
        #[arg(long)]
        json: bool,
    },
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    Release {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

/// `12` or `#12`.
fn number(id: &str, what: &str) -> anyhow::Result<u64> {
    id.trim_start_matches('#')
        .parse()
        .with_context(|| format!("not a {what}: {id}"))
}

#[derive(Debug, Subcommand)]
pub enum ContactsVerb {
    List {
        #[arg(long)]
        json: bool,
    },
    Show {
        email: String,
        #[arg(long)]
        json: bool,
    },
}

/// Runs a command; the returned code is the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::CheckConfig => Ok(check_config(&cli.config)),
        Command::HashPassword => {
            let mut password = String::new();
            std::io::stdin()
                .read_to_string(&mut password)
                .context("reading the password from stdin")?;
            let password = password.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                bail!("empty password on stdin");
            }
            println!(
                "{}",
                auth::hash_password(password).map_err(|e| anyhow!("{e}"))?
            );
            Ok(0)
        }
        Command::Serve => {
            let config = load(&cli.config)?;
            init_logging(&config);
            runtime()?.block_on(crate::daemon::serve(&cli.config, config))?;
            Ok(0)
        }
        Command::Conversations { verb } => {
            let (request, json) = match verb {
                ConversationsVerb::List { json } => (AdminRequest::ConversationsList, json),
                ConversationsVerb::Search { query, json } => {
                    (AdminRequest::ConversationsSearch { query }, json)
                }
                ConversationsVerb::Show { id, json } => (
                    AdminRequest::ConversationsShow {
                        id: number(&id, "conversation number")?,
                    },
                    json,
                ),
                ConversationsVerb::Merge { into, from, json } => (
                    AdminRequest::ConversationsMerge {
                        into: number(&into, "conversation number")?,
                        from: number(&from, "conversation number")?,
                    },
                    json,
                ),
                ConversationsVerb::Split {
                    id,
                    message_id,
                    json,
                } => (
                    AdminRequest::ConversationsSplit {
                        id: number(&id, "conversation number")?,
                        message_id,
                    },
                    json,
                ),
            };
            admin_command(&cli.config, &request, json)
        }
        Command::Contacts { verb } => {
            let (request, json) = match verb {
                ContactsVerb::List { json } => (AdminRequest::ContactsList, json),
                ContactsVerb::Show { email, json } => (AdminRequest::ContactsShow { email }, json),
            };
            admin_command(&cli.config, &request, json)
        }
        Command::Junk { verb } => {
            let (request, json) = match verb {
                JunkVerb::List { json } => (AdminRequest::JunkList, json),
                JunkVerb::Release { id, json } => (
                    AdminRequest::JunkRelease {
                        id: number(&id, "junk id")?,
                    },
                    json,
                ),
            };
            admin_command(&cli.config, &request, json)
        }
        Command::Quarantine { verb } => {
            let (request, json) = match verb {
                QuarantineVerb::List { json } => (AdminRequest::QuarantineList, json),
                QuarantineVerb::Show { id, json } => (
                    AdminRequest::QuarantineShow {
                        id: number(&id, "quarantine id")?,
                    },
                    json,
                ),
                QuarantineVerb::Release { id, json } => (
                    AdminRequest::QuarantineRelease {
                        id: number(&id, "quarantine id")?,
                    },
                    json,
                ),
            };
            admin_command(&cli.config, &request, json)
        }
        Command::Queue { verb } => {
            let (request, json) = match verb {
                QueueVerb::List { json } => (AdminRequest::QueueList, json),
                QueueVerb::Retry { id, json } => (
                    AdminRequest::QueueRetry {
                        id: number(&id, "queue id")?,
                    },
                    json,
                ),
            };
            admin_command(&cli.config, &request, json)
        }
        Command::Status { json } => admin_command(&cli.config, &AdminRequest::Status, json),
        Command::Backup { dir, json } => backup(&cli.config, &dir, json),
        Command::Restore { dir, json } => restore(&cli.config, &dir, json),
    }
}

fn check_config(path: &Path) -> u8 {
    match config::load(path) {
        Ok(_) => {
            println!("{}: OK", path.display());
            0
        }
        Err(errors) => {
            for e in errors.iter() {
                println!("{e}");
            }
            1
        }
    }
}

fn load(path: &Path) -> anyhow::Result<Config> {
    config::load(path).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        anyhow!("invalid configuration:\n{}", lines.join("\n"))
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    // RUST_LOG overrides [log].level (SPEC §2).
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Asks the running daemon; without one, opens the data directory directly.
fn admin_command(config_path: &Path, request: &AdminRequest, json: bool) -> anyhow::Result<u8> {
    let config = load(config_path)?;
    let data = ask(&config, request)?;
    print_answer(request, data, json)
}

/// The answer to `request`, from the running daemon or, without one, from the data
/// directory opened here.
fn ask(config: &Config, request: &AdminRequest) -> anyhow::Result<Value> {
    let socket = control::socket_path(&config.server.data_dir);
    Ok(match control::request(&socket, request)? {
        Some(answer) if answer.ok => answer.data.unwrap_or(Value::Null),
        Some(answer) => bail!("{}", answer.error.unwrap_or_else(|| "unknown error".into())),
        None => offline(config, request)?,
    })
}

fn print_answer(request: &AdminRequest, data: Value, json: bool) -> anyhow::Result<u8> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &data)?;
        writeln!(out)?;
    } else {
        print_human(&mut out, request, data)?;
    }
    Ok(0)
}

fn offline(config: &Config, request: &AdminRequest) -> anyhow::Result<Value> {
    let data_dir = config.server.data_dir.as_path();
    if !data_dir.join("meta").exists() {
        // Nothing stored yet: answer as an empty store would, without creating files.
        return match request {
            AdminRequest::ConversationsList
            | AdminRequest::ConversationsSearch { .. }
            | AdminRequest::ContactsList
            | AdminRequest::QueueList => Ok(Value::Array(Vec::new())),
            AdminRequest::QueueRetry { id } => bail!("queue entry {id} not found"),
            AdminRequest::JunkList | AdminRequest::QuarantineList => Ok(Value::Array(Vec::new())),
            AdminRequest::JunkRelease { id } => bail!("junk message {id} not found"),
            AdminRequest::QuarantineShow { id } | AdminRequest::QuarantineRelease { id } => {
                bail!("quarantine entry {id} not found")
            }
            AdminRequest::ConversationsShow { id }
            | AdminRequest::ConversationsSplit { id, .. }
            | AdminRequest::ConversationsMerge { from: id, .. } => {
                bail!("conversation #{id} not found")
            }
            AdminRequest::ContactsShow { email } => bail!("contact {email} not found"),
            AdminRequest::Status => Ok(serde_json::to_value(StatusReport {
                store: Default::default(),
                running: false,
                metrics: None,
            })?),
            AdminRequest::Backup { .. } => {
                bail!("no data in {} to back up", data_dir.display())
            }
        };
    }
    let (store, _report) = match Store::open(data_dir, StoreOptions::default()) {
        Ok(s) => s,
        Err(StoreError::Locked(_)) => {
            bail!(
                "{} is locked by a running daemon, but its control socket does not answer",
                data_dir.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("opening {}", data_dir.display())),
    };
    // Releases re-thread mail without filtering it again: no DNS is needed here.
    let mut config = config.clone();
    config.filter.dns = crate::config::DnsSource::Off;
    let filters =
        crate::filter::Filters::from_config(&config.filter).map_err(|e| anyhow!("{e}"))?;
    let shared = Arc::new(Reloadable::new(config));
    let ingest = Ingest::new(store.clone(), shared, Arc::new(Reloadable::new(filters)));
    let result = admin::execute(
        &AdminContext {
            store: store.clone(),
            ingest,
            metrics: None,
            fts: crate::fts::FtsIndex::open_existing(&data_dir.join("search"))
                .ok()
                .flatten(),
        },
        request,
    );
    runtime()?
        .block_on(store.close())
        .context("closing the store")?;
    Ok(result?)
}

fn print_human(out: &mut impl Write, request: &AdminRequest, data: Value) -> anyhow::Result<()> {
    match request {
        AdminRequest::ConversationsList | AdminRequest::ConversationsSearch { .. } => {
            let list: Vec<ConversationJson> = serde_json::from_value(data)?;
            writeln!(
                out,
                "{:>6}  {:<7} {:<14} {:<10} {:<30} {:<20}  SUBJECT",
                "ID", "STATUS", "INBOX", "ASSIGNEE", "CONTACT", "UPDATED"
            )?;
            for c in list {
                writeln!(
                    out,
                    "{:>6}  {:<7} {:<14} {:<10} {:<30} {:<20}  {}",
                    format!("#{}", c.id.0),
                    format!("{:?}", c.status).to_lowercase(),
                    c.inbox,
                    c.assignee.as_deref().unwrap_or("-"),
                    c.contact.as_deref().unwrap_or("-"),
                    c.updated,
                    c.subject
                )?;
            }
        }
        AdminRequest::ConversationsShow { .. } => {
            let c: ConversationDetail = serde_json::from_value(data)?;
            let v = &c.conversation;
            writeln!(out, "#{} {}", v.id.0, v.subject)?;
            writeln!(out, "  inbox:    {}", v.inbox)?;
            let junk = if c.junk { " (junk: in Junk only)" } else { "" };
            writeln!(
                out,
                "  status:   {}{junk}",
                format!("{:?}", v.status).to_lowercase()
            )?;
            writeln!(out, "  assignee: {}", v.assignee.as_deref().unwrap_or("-"))?;
            writeln!(out, "  contact:  {}", v.contact.as_deref().unwrap_or("-"))?;
            if let Some(link) = c.linked_to {
                writeln!(out, "  linked to #{}", link.0)?;
            }
            if let Some(into) = c.merged_into {
                writeln!(out, "  merged into #{}", into.0)?;
            }
            for m in &c.messages {
                let dir = format!("{:?}", m.direction).to_lowercase();
                let auto = if m.automatic { " (automatic)" } else { "" };
                writeln!(
                    out,
                    "  - {} {dir}{auto} from {} ({} bytes) <{}>",
                    m.date,
                    m.from.as_deref().unwrap_or("-"),
                    m.size,
                    m.message_id
                )?;
                if let Some(by) = &m.threaded_by {
                    // The rule's name as the JSON spells it (kebab-case).
                    let rule = serde_json::to_value(by.rule)?;
                    let evidence = by.evidence.as_deref().unwrap_or("");
                    writeln!(
                        out,
                        "      threaded by {}: {evidence}",
                        rule.as_str().unwrap_or("?")
                    )?;
                }
                for a in &m.attachments {
                    let q = if a.quarantined { " [quarantined]" } else { "" };
                    writeln!(
                        out,
                        "      attachment {} ({}, {} bytes){q}",
                        a.name, a.content_type, a.size
                    )?;
                }
            }
        }
        AdminRequest::ContactsList => {
            let list: Vec<ContactJson> = serde_json::from_value(data)?;
            for c in list {
                let convs: Vec<String> = c
                    .conversations
                    .iter()
                    .map(|id| format!("#{}", id.0))
                    .collect();
                writeln!(
                    out,
                    "{:<36} {:<28} last seen {}  {}",
                    c.email,
                    c.name.as_deref().unwrap_or("-"),
                    c.last_seen,
                    convs.join(" ")
                )?;
            }
        }
        AdminRequest::ContactsShow { .. } => {
            let c: ContactDetail = serde_json::from_value(data)?;
            writeln!(
                out,
                "{} {}",
                c.contact.email,
                c.contact.name.as_deref().unwrap_or("")
            )?;
            writeln!(
                out,
                "  first seen {}, last seen {}",
                c.contact.first_seen, c.contact.last_seen
            )?;
            for t in &c.timeline {
                let conv = t
                    .conversation
                    .map(|id| format!("#{}", id.0))
                    .unwrap_or_default();
                writeln!(
                    out,
                    "  {} {:<12} {conv:<6} {}",
                    t.at,
                    format!("{:?}", t.kind).to_lowercase(),
                    t.detail
                )?;
            }
        }
        AdminRequest::JunkList => {
            let list: Vec<JunkJson> = serde_json::from_value(data)?;
            writeln!(
                out,
                "{:>6}  {:>6}  {:<14} {:<32} {:<20}  SUBJECT / REASON",
                "ID", "SCORE", "INBOX", "FROM", "AT"
            )?;
            for j in list {
                writeln!(
                    out,
                    "{:>6}  {:>6.1}  {:<14} {:<32} {:<20}  {} / {}",
                    j.id.0,
                    j.score,
                    j.inbox,
                    j.from.as_deref().unwrap_or("-"),
                    j.at,
                    j.subject,
                    j.reason
                )?;
            }
        }
        AdminRequest::QuarantineList => {
            let list: Vec<QuarantineJson> = serde_json::from_value(data)?;
            writeln!(
                out,
                "{:>6}  {:>6}  {:<20}  {:<9} {:<30}  REASON",
                "ID", "CONV", "AT", "STATE", "FILE"
            )?;
            for q in list {
                let conv = q
                    .conversation
                    .map(|c| format!("#{}", c.0))
                    .unwrap_or_else(|| "-".into());
                let state = if q.released { "released" } else { "held" };
                writeln!(
                    out,
                    "{:>6}  {:>6}  {:<20}  {state:<9} {:<30}  {}",
                    q.id.0, conv, q.at, q.filename, q.reason
                )?;
            }
        }
        AdminRequest::ConversationsMerge { into, from } => {
            writeln!(out, "#{from} merged into #{into}")?;
        }
        AdminRequest::ConversationsSplit { id, .. } => {
            let new = data.get("new").and_then(Value::as_u64).unwrap_or(0);
            writeln!(out, "#{id} split: new conversation #{new}")?;
        }
        AdminRequest::JunkRelease { .. }
        | AdminRequest::QuarantineRelease { .. }
        | AdminRequest::QuarantineShow { .. } => {
            if let Value::Object(map) = data {
                for (k, v) in map {
                    match v {
                        Value::String(s) => writeln!(out, "{k}: {s}")?,
                        other => writeln!(out, "{k}: {other}")?,
                    }
                }
            }
        }
        AdminRequest::QueueList => {
            let list: Vec<QueueJson> = serde_json::from_value(data)?;
            writeln!(
                out,
                "{:>6}  {:>8}  {:<20}  {:<40}  RECIPIENTS / LAST ERROR",
                "ID", "ATTEMPTS", "NEXT ATTEMPT", "MESSAGE-ID"
            )?;
            for q in list {
                writeln!(
                    out,
                    "{:>6}  {:>8}  {:<20}  {:<40}  {}",
                    q.id.0,
                    q.attempts,
                    q.next_attempt,
                    q.message_id,
                    q.recipients.join(", ")
                )?;
                if let Some(e) = &q.last_error {
                    writeln!(out, "{:>80}  last error: {e}", "")?;
                }
            }
        }
        AdminRequest::QueueRetry { id } => {
            writeln!(out, "queue entry {id} will be retried now")?;
        }
        AdminRequest::Status => {
            let report: StatusReport = serde_json::from_value(data)?;
            print_status(out, &report)?;
        }
        AdminRequest::Backup { dir } => {
            let m: BackupManifest = serde_json::from_value(data)?;
            writeln!(
                out,
                "backup written to {} at {}",
                dir.display(),
                m.created_at
            )?;
            writeln!(
                out,
                "  {} conversations, {} messages",
                m.conversations, m.messages
            )?;
            writeln!(
                out,
                "  metadata: {} ({} entries in {} trees, {} bytes)",
                m.meta.file, m.meta.entries, m.meta.trees, m.meta.bytes
            )?;
            writeln!(
                out,
                "  segments: {} files, {} bytes",
                m.segments.len(),
                m.segments.iter().map(|s| s.bytes).sum::<u64>()
            )?;
        }
    }
    Ok(())
}

/// `teamgate status` for people: the daemon's numbers, then the store's.
fn print_status(out: &mut impl Write, report: &StatusReport) -> anyhow::Result<()> {
    match &report.metrics {
        Some(snapshot) => {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            for (topic, text) in snapshot.summary(now) {
                writeln!(out, "{:<16}{text}", format!("{topic}:"))?;
            }
        }
        None => writeln!(
            out,
            "{:<16}not running (counts below are read from the data directory)",
            "daemon:"
        )?,
    }
    let s = &report.store;
    writeln!(
        out,
        "{:<16}{} conversations, {} messages, {} contacts; {} queued for delivery",
        "store:", s.conversations, s.messages, s.contacts, s.queued
    )?;
    writeln!(
        out,
        "{:<16}{} segments, {} bytes of messages, {} bytes of metadata",
        "disk:", s.segments, s.segment_bytes, s.db_bytes
    )?;
    Ok(())
}

/// `teamgate backup DIR`: the daemon (or this process, when none runs) exports the
/// metadata between two writer batches and reports the segments' lengths; this process
/// then copies the segments up to those lengths and writes the manifest
/// (`store::finish_backup`), so a long copy never holds the writer or the control socket.
fn backup(config_path: &Path, dir: &Path, json: bool) -> anyhow::Result<u8> {
    let config = load(config_path)?;
    // The daemon's working directory is not ours.
    let dir = std::path::absolute(dir).with_context(|| format!("resolving {}", dir.display()))?;
    // The store checks again; this gives the clear message before the daemon is asked.
    if let Ok(mut entries) = std::fs::read_dir(&dir)
        && entries.next().is_some()
    {
        bail!(
            "refusing to back up into {}: the directory is not empty (a backup never \
             overwrites anything; give a new or empty directory)",
            dir.display()
        );
    }
    let request = AdminRequest::Backup { dir: dir.clone() };
    let snapshot: BackupSnapshot =
        serde_json::from_value(ask(&config, &request)?).context("decoding the backup snapshot")?;
    let manifest = finish_backup(&config.server.data_dir, &dir, &snapshot)
        .with_context(|| format!("copying the segments into {}", dir.display()))?;
    print_answer(&request, serde_json::to_value(manifest)?, json)
}

/// `teamgate restore DIR` into the configured data directory (see `store::restore`).
fn restore(config_path: &Path, dir: &Path, json: bool) -> anyhow::Result<u8> {
    let config = load(config_path)?;
    let data_dir = config.server.data_dir.as_path();
    let socket = control::socket_path(data_dir);
    if control::request(&socket, &AdminRequest::Status)?.is_some() {
        bail!(
            "refusing to restore into {}: a running teamgate daemon answers on {}; stop it \
             first (restore never overwrites a live data directory)",
            data_dir.display(),
            socket.display()
        );
    }
    let report = runtime()?
        .block_on(store::restore(dir, data_dir))
        .map_err(|e| match e {
            StoreError::Locked(m) => anyhow!("refusing to restore: {m}"),
            StoreError::AlreadyExists(m) => anyhow!("refusing to restore: {m}"),
            other => anyhow!(
                "restoring {} into {} failed (nothing was kept): {other}",
                dir.display(),
                data_dir.display()
            ),
        })?;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "restored {} (made {}) into {}",
            report.backup, report.created_at, report.data_dir
        )?;
        writeln!(
            out,
            "  {} conversations, {} messages, {} metadata entries",
            report.conversations, report.messages, report.sled_entries
        )?;
        writeln!(
            out,
            "  segments: {} files, {} bytes",
            report.segments, report.segment_bytes
        )?;
        writeln!(
            out,
            "  recovery: {} messages checked, no bad records",
            report.recovery.messages_checked
        )?;
    }
    Ok(0)
}
