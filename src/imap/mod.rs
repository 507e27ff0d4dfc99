//! IMAP: `binary` (BINARY content), `extended` (command forms imap-codec does not parse),
//! `mailbox` (which mailboxes an agent sees and what they mean), `render` (FETCH data from
//! stored bytes), `search` (SEARCH keys), `sort_thread` (SORT and THREAD orders), `session`
//! (state, login and command routing), `cmd` (the handlers per command family), `wire`
//! (conversions to and from imap-codec types) and `server` (the I/O driver around
//! imap-next).

pub mod binary;
mod cmd;
pub mod extended;
pub mod mailbox;
pub mod render;
pub mod search;
pub mod server;
pub mod session;
mod sort_thread;
mod wire;
