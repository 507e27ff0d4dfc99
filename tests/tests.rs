//! The single integration-test binary (ripgrep layout): every module drives a real
//! daemon over loopback with real clients.

mod harness;

// Inbound SMTP protocol behaviour, limits and smuggling.
mod smtp_inbound;
// STARTTLS and certificate reload.
mod tls;
// The real binary: CLI verbs, signals, control socket, kill -9 durability, swaks/python clients.
mod process;
// Durable storage seen through SMTP: group commit, duplicates, restart, shutdown drain.
mod storage;
// Fuzz seeds and the shared corpus through the fuzz entry points.
mod fuzz_seeds;
// Conversations, threading, forwards, auto-replies and contacts, with corpus scores.
mod conversations;
// Threading as production sees mail: every corpus theme into one daemon, in three orders.
mod threading_eval;
// Merging and splitting conversations by email command, with IMAP views and IDLE.
mod merge_split;
// Storage faults: a full disk gives 451, never a lost 250, and recovery.
mod faults;
// The IMAP view: protocol, conversation actions by moving, flags, IDLE, real clients.
mod imap;
// Dovecot imaptest's scripted compliance suite in a Personal/ folder.
mod imaptest;
// RFC 3501 base-protocol rules imaptest checks, one focused test each.
mod imap_rfc3501;
// IMAP extensions with the commands real clients send: LIST-EXTENDED, LIST-STATUS, ESEARCH, SORT, THREAD, BINARY, MULTIAPPEND.
mod imap_extensions;
// CONDSTORE/QRESYNC: mod-sequences, conditional STORE races, VANISHED, reconnect figures.
mod imap_condstore;
// Agents' replies through submission: AUTH, sender rules, logging, notes, collisions.
mod submission;
// A loopback SMTP sink standing in for the relay or a recipient's MX.
mod sink;
// Outbound delivery: queue, DKIM, retries, bounces into conversations, `queue` CLI.
mod outbound;
// Every path into a conversation meets the attachment policy; reports on our own mail;
// learning from Junk gestures; display-name spoofing (issue 13).
mod filter_paths;
// The filters as production sees mail: every corpus theme through real spamd and clamd.
mod filter_eval;
// The real spamd, clamd and dnsmasq the filter tests start, and the messages they send.
mod filter_services;
// Spam, sender authentication and attachment filters against real spamd, clamd and dnsmasq.
mod filters;
// The Prometheus endpoint scraped with curl after real traffic; `teamgate status`.
mod metrics;
// Backup while the daemon runs, restore into a fresh data dir: same conversations and UIDs.
mod backup;
// Security: no open relay, auth where allowed and throttled, inbox isolation through every
// command, no header injection, MIME and zip bombs bounded.
mod security;
// Indexed search equals the scan: corpus and generated mail, restarts, a damaged index.
mod search_index;
// The dependency arrows of src/: no import cycles, no upward imports (GUIDE §3.3).
mod layering;
// The operator's protocol trace of IMAP sessions ([log] protocol_trace).
mod trace;
// Every IMAP refusal is a tagged NO/BAD with a valid, reasoned text.
mod imap_refusals;
