//! IMAP command handlers, one file per command family: each adds an `impl Session` block
//! over the state in `session.rs`, whose `dispatch` routes commands to the `handle_*` here.

mod append;
mod condstore;
mod copy_move;
mod extended;
mod fetch;
mod folders;
mod idle;
mod keywords;
mod names;
mod search;
mod select;
mod sort_thread;
mod store;
