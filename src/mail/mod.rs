//! The bottom vocabulary of mail, one copy of each idea: the SMTP envelope and reply,
//! addresses and domains, Message-IDs, subjects and our `[#n]` tag, Outlook's
//! Thread-Index, the raw header section, and the clock. Protocols (smtp, imap) and the
//! domain (message, threading, contacts, forward, compose, ingest, submit) all take these
//! from here. It imports nothing else of the crate.

pub mod address;
pub mod clock;
pub mod envelope;
pub mod header;
pub mod message_id;
pub mod reply;
pub mod search_text;
pub mod subject;
pub mod thread_index;
