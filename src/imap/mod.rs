//! IMAP: `mailbox` (which mailboxes an agent sees and what they mean), `render` (FETCH
//! data from stored bytes), `search` (SEARCH keys), `session` (command handling per
//! state) and `server` (the I/O driver around imap-next).

pub mod mailbox;
pub mod render;
pub mod search;
pub mod server;
pub mod session;
