//! IMAP: `mailbox` (which mailboxes an agent sees and what they mean), `render` (FETCH
//! data from stored bytes), `search` (SEARCH keys), `recent` (who is told of a message
//! first), `session` (state, login and command routing), `cmd` (the handlers per command
//! family), `names` (mailbox names on the wire), `wire` (conversions to and from
//! imap-codec types) and `server` (the I/O driver around imap-next).

mod cmd;
mod envelope;
pub mod mailbox;
mod names;
pub mod recent;
pub mod render;
pub mod search;
pub mod server;
pub mod session;
pub mod trace;
mod wire;
