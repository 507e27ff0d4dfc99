//! teamgate: a shared-inbox mail gateway daemon.
//!
//! # Layout (arrows only point down; see ../shared/GUIDE.md §3.3)
//! - `cli` → `daemon` → drivers (`smtp::server`, `control`) → domain (`ingest`, `message`,
//!   `threading`, `contacts`, `forward`) → bottom (`store`, `config`).
//! - `store` is the only module that touches sled or the message segment files.
//! - `metrics` owns every metric family; drivers and domain owners report events to it,
//!   `metrics::http` serves them at `[metrics] listen`, `teamgate status` shows them.
//! - `message`, `threading`, `contacts`, `forward` and `smtp::session` are pure: no I/O, no clock.
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
