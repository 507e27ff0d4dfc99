//! teamgate: a shared-inbox mail gateway daemon.
//!
//! # Layout
//! Arrows only point down; `tests/layering.rs` checks them (no import cycle between
//! files, no import of a higher layer, `smtp` and `imap` apart, sled only in `store`).
//!
//! - **Bottom.** `mail`: the vocabulary every layer shares, one copy each: the SMTP
//!   envelope and reply, address and domain rules, Message-ID forms, subject prefixes and
//!   our `[#n]` tag, Outlook's Thread-Index, the raw header section, the clock.
//!   `config`: raw TOML/env → validated, typed `Config` (every problem at once).
//!   `net`: TLS with reloadable certificates, the accept loop with its connection limit.
//! - **Storage.** `store`: the only owner of persistence (sled metadata, append-only
//!   message segments, group commit); domain types in and out.
//! - **Observability.** `metrics`: every metric family, `/metrics`, `teamgate status`.
//!   `reload`: a value SIGHUP may swap.
//! - **Search index.** `fts`: the full-text index (tantivy) that narrows SEARCH to the
//!   messages that may match; the scan then decides.
//! - **Pure domain** (no I/O, no clock). `message`: facts of one raw message.
//!   `forward`: who wrote a forwarded original. `threading`: which conversation a message
//!   joins. `contacts`: contact touches. `compose`: a reply's email commands,
//!   placeholders, MIME edits and header plan.
//! - **Policy.** `auth`: credentials, argon2id, throttling, who may send as what.
//!   `filter`: SPF/DKIM/DMARC, spamd, clamd, attachment policy. `replying`: `$Replying`
//!   presence.
//! - **Pipelines.** `ingest`: an accepted message → filters → threads → one store write.
//!   `submit`: an agent's reply → conversation, collision guard, queue. `admin`: the
//!   admin answers shared by the control socket and the offline CLI. `outbound`: the
//!   delivery worker (retry schedule, DKIM, MX lookup, DSNs).
//! - **Protocols.** `smtp`: the pure session and its I/O driver (MX and submission).
//!   `imap`: the session, one file per command family, views of conversations as
//!   mailboxes. `control`: the admin socket.
//! - **Wiring and entry.** `daemon`: binds, spawns, reloads, shuts down. `cli`: the
//!   command line. `fuzzing`, `test_corpus`: entry points for fuzz targets and tests.
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod cli;
pub mod compose;
pub mod config;
pub mod contacts;
pub mod control;
pub mod daemon;
pub mod filter;
pub mod forward;
pub mod fts;
#[doc(hidden)]
pub mod fuzzing;
pub mod imap;
pub mod ingest;
pub mod mail;
pub mod message;
pub mod metrics;
pub mod net;
pub mod outbound;
pub mod reload;
pub mod replying;
pub mod smtp;
pub mod store;
pub mod submit;
#[doc(hidden)]
pub mod test_corpus;
pub mod threading;
