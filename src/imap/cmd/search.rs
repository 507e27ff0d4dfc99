//! SEARCH over the selected messages (keys evaluated in `imap/search.rs`); message bytes
//! are read only for keys that need them.

use imap_codec::imap_types::{
    core::{Charset, Vec1},
    response::Data,
    search::SearchKey,
};

use super::condstore;
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
        let State::Selected(agent, sel) = &self.state else {
            return Err(Refusal::Bad("select a mailbox first".into()));
        };
        let key = match criteria {
            [one] => one.clone(),
            many => SearchKey::And(Vec1::unvalidated(many.to_vec())),
        };
        // RFC 7162 §3.1.5: MODSEQ matches a mod-sequence at or above its value; it is
        // evaluated here, as the UIDs it matches, and enables CONDSTORE.
        let mods = if has_modseq(&key) {
            let all: Vec<usize> = (0..sel.entries.len()).collect();
            Some(condstore::modseqs(&self.ctx, &agent.login, sel, &all)?)
        } else {
            None
        };
        let key = match &mods {
            Some(mods) => with_modseq_resolved(key, &|at_least| {
                let uids: Vec<u32> = sel
                    .entries
                    .iter()
                    .zip(mods)
                    .filter(|(_, m)| **m >= at_least)
                    .map(|((u, _), _)| *u)
                    .collect();
                match condstore::compact_set(&uids) {
                    Some(set) => SearchKey::Uid(set),
                    None => SearchKey::Not(Box::new(SearchKey::All)),
                }
            }),
            None => key,
        };
        let mut highest = 0;
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
                if let Some(m) = mods.as_ref().and_then(|m| m.get(index)) {
                    highest = highest.max(*m);
                }
            }
        }
        // RFC 7162 §3.1.6: the highest mod-sequence of the matches, unless none matched.
        let modseq = mods
            .is_some()
            .then_some(highest)
            .and_then(std::num::NonZeroU64::new);
        let mut answer = done(vec![Data::Search(hits, modseq)], "SEARCH completed");
        if mods.is_some() && !self.condstore.enabled {
            answer
                .untagged_status
                .push(condstore::announce_highest(&self.ctx, &agent.login, sel)?);
        }
        if mods.is_some() {
            self.condstore.enabled = true;
        }
        Ok(answer)
    }
}

fn has_modseq(key: &SearchKey<'_>) -> bool {
    use SearchKey as K;
    match key {
        K::And(keys) => keys.as_ref().iter().any(has_modseq),
        K::Not(k) => has_modseq(k),
        K::Or(a, b) => has_modseq(a) || has_modseq(b),
        K::ModSequence { .. } => true,
        _ => false,
    }
}

/// `key` with every MODSEQ criterion replaced by `resolve(value)`.
fn with_modseq_resolved<'a>(
    key: SearchKey<'a>,
    resolve: &dyn Fn(u64) -> SearchKey<'a>,
) -> SearchKey<'a> {
    use SearchKey as K;
    match key {
        K::And(keys) => K::And(Vec1::unvalidated(
            keys.into_inner()
                .into_iter()
                .map(|k| with_modseq_resolved(k, resolve))
                .collect(),
        )),
        K::Not(k) => K::Not(Box::new(with_modseq_resolved(*k, resolve))),
        K::Or(a, b) => K::Or(
            Box::new(with_modseq_resolved(*a, resolve)),
            Box::new(with_modseq_resolved(*b, resolve)),
        ),
        K::ModSequence { modseq, .. } => resolve(modseq),
        other => other,
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
