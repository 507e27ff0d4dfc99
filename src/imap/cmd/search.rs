//! SEARCH over the selected messages (keys evaluated in `imap/search.rs`); message bytes
//! are read only for keys that need them.

use imap_codec::imap_types::{
    core::{Charset, Vec1},
    response::Data,
    search::SearchKey,
};

use crate::imap::{
    search::{self, Candidate},
    session::{Outcome, Refusal, Session, State, done, no},
    wire::{flag_list_plain, nz},
};

impl Session {
    pub(in crate::imap) async fn handle_search(
        &mut self,
        charset: Option<Charset<'_>>,
        criteria: &Vec1<SearchKey<'_>>,
        uid: bool,
    ) -> Outcome {
        if let Some(cs) = charset {
            let cs = cs.as_ref().to_ascii_uppercase();
            if cs != "UTF-8" && cs != "US-ASCII" {
                return Err(no(Some("BADCHARSET"), "only UTF-8 and US-ASCII"));
            }
        }
        let criteria: &[SearchKey<'_>] = criteria.as_ref();
        let State::Selected(_, sel) = &self.state else {
            return Err(Refusal::Bad("select a mailbox first".into()));
        };
        let key = match criteria {
            [one] => one.clone(),
            many => SearchKey::And(Vec1::unvalidated(many.to_vec())),
        };
        let needs_content = needs_content(&key);
        let max_seq = sel.entries.len() as u32;
        let max_uid = sel.entries.last().map(|(u, _)| *u).unwrap_or(0);
        let mut hits = Vec::new();
        for (index, (uid_value, entry)) in sel.entries.iter().enumerate() {
            let flags = flag_list_plain(&sel.flags[index]);
            let meta = self.ctx.store.message_meta(entry.message)?;
            let raw = if needs_content {
                self.ctx.store.read_message(entry.message)?
            } else {
                Vec::new()
            };
            let candidate = Candidate {
                seq: index as u32 + 1,
                uid: *uid_value,
                flags: &flags,
                recent: sel.recent.contains(uid_value),
                internal_date: meta.as_ref().map(|m| m.received_at).unwrap_or(0),
                raw: &raw,
            };
            if search::matches(&key, &candidate, max_seq, max_uid) {
                hits.push(nz(if uid { *uid_value } else { index as u32 + 1 }));
            }
        }
        Ok(done(vec![Data::Search(hits, None)], "SEARCH completed"))
    }
}

/// Whether evaluating `key` needs the message bytes (headers, body or size), so flag
/// and UID searches never read a body.
fn needs_content(key: &SearchKey<'_>) -> bool {
    use SearchKey as K;
    match key {
        K::And(keys) => keys.as_ref().iter().any(needs_content),
        K::Not(k) => needs_content(k),
        K::Or(a, b) => needs_content(a) || needs_content(b),
        K::Bcc(_)
        | K::Body(_)
        | K::Cc(_)
        | K::From(_)
        | K::Header(..)
        | K::Larger(_)
        | K::SentBefore(_)
        | K::SentOn(_)
        | K::SentSince(_)
        | K::Smaller(_)
        | K::Subject(_)
        | K::Text(_)
        | K::To(_) => true,
        _ => false,
    }
}
