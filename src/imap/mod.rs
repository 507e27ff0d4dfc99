//! IMAP: `binary` (BINARY content), `extended` (command forms imap-codec does not parse),
//! `mailbox` (which mailboxes an agent sees and what they mean), `render` (FETCH data from
//! stored bytes), `search` (SEARCH keys), `sort_thread` (SORT and THREAD orders), `recent`
//! (who is told of a message first), `session` (state, login and command routing), `cmd`
//! (the handlers per command family), `names` (mailbox names on the wire), `wire`
//! (conversions to and from imap-codec types), `trace` (the operator's protocol trace) and
//! `server` (the I/O driver around imap-next).

pub mod binary;
mod cmd;
mod envelope;
pub mod extended;
pub mod mailbox;
mod names;
pub mod recent;
pub mod render;
pub mod search;
pub mod server;
pub mod session;
mod sort_thread;
pub mod trace;
mod wire;
