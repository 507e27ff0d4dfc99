//! Networking shared by every listener: TLS with hot-reloadable certificates and the
//! accept loop with its connection limit. Knows nothing about SMTP or IMAP.

pub mod listener;
pub mod tls;
