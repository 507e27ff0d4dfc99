//! SEARCH over the selected messages (keys evaluated in `imap/search.rs`); message bytes
//! are read only for keys that need them.

use imap_codec::imap_types::{
    core::{AString, Charset, Vec1},
    response::Data,
    search::SearchKey,
};

use super::condstore;
use crate::fts::{Field, FtsIndex, Prefilter};
use crate::imap::{
    search::{self, Candidate},
    session::{Outcome, Refusal, Session, State, done, no},
    wire::{flag_list_plain, nz},
};
use crate::mail::search_text;

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
        let needs = needs(&key);
        let prefilter = match (&self.ctx.fts, needs.content) {
            (Some(index), true) => prefilter(index, &key, 0),
            _ => Prefilter::Everything,
        };
        let max_seq = sel.entries.len() as u32;
        let max_uid = sel.entries.last().map(|(u, _)| *u).unwrap_or(0);
        let mut hits = Vec::new();
        let mut bodies_read = 0;
        for (index, (uid_value, entry)) in sel.entries.iter().enumerate() {
            if !prefilter.admits(entry.message) {
                continue;
            }
            let flags = flag_list_plain(&sel.flags[index]);
            let meta = if needs.meta {
                self.ctx.store.message_meta(entry.message)?
            } else {
                None
            };
            let raw = if needs.content {
                bodies_read += 1;
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
                size: meta.as_ref().map(|m| m.size).unwrap_or(0),
                raw: &raw,
            };
            if search::matches(&key, &candidate, max_seq, max_uid) {
                hits.push(nz(if uid { *uid_value } else { index as u32 + 1 }));
                if let Some(m) = mods.as_ref().and_then(|m| m.get(index)) {
                    highest = highest.max(*m);
                }
            }
        }
        if needs.content {
            self.ctx.metrics.search(prefilter.narrows(), bodies_read);
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

/// What evaluating a key reads besides flags and UIDs: flag and UID searches read
/// neither a record nor a body.
#[derive(Debug, Clone, Copy, Default)]
struct Needs {
    /// The message record (internal date, size).
    meta: bool,
    /// The message bytes.
    content: bool,
}

fn needs(key: &SearchKey<'_>) -> Needs {
    use SearchKey as K;
    let either = |a: Needs, b: Needs| Needs {
        meta: a.meta || b.meta,
        content: a.content || b.content,
    };
    match key {
        K::And(keys) => keys
            .as_ref()
            .iter()
            .map(needs)
            .fold(Needs::default(), either),
        K::Not(k) => needs(k),
        K::Or(a, b) => either(needs(a), needs(b)),
        K::Before(_) | K::On(_) | K::Since(_) | K::Larger(_) | K::Smaller(_) => Needs {
            meta: true,
            content: false,
        },
        K::Bcc(_)
        | K::Body(_)
        | K::Cc(_)
        | K::From(_)
        | K::Header(..)
        | K::SentBefore(_)
        | K::SentOn(_)
        | K::SentSince(_)
        | K::Subject(_)
        | K::Text(_)
        | K::To(_) => Needs {
            meta: false,
            content: true,
        },
        _ => Needs::default(),
    }
}

/// The messages `key` may match, as far as the full-text index can tell. An index
/// failure, like anything it cannot narrow, admits every message: the scan decides.
fn prefilter(index: &FtsIndex, key: &SearchKey<'_>, depth: usize) -> Prefilter {
    use SearchKey as K;
    if depth > search::MAX_KEY_DEPTH {
        return Prefilter::Everything;
    }
    let text = |field: Field, s: &AString<'_>| {
        let needle = search_text::fold(&String::from_utf8_lossy(s.as_ref()));
        match index.candidates(field, &needle) {
            Ok(Some(c)) => Prefilter::Only(c),
            Ok(None) => Prefilter::Everything,
            Err(e) => {
                tracing::warn!(error = %e, "search index query failed; scanning");
                Prefilter::Everything
            }
        }
    };
    match key {
        K::And(keys) => Prefilter::all(
            keys.as_ref()
                .iter()
                .map(|k| prefilter(index, k, depth + 1))
                .collect(),
        ),
        K::Or(a, b) => Prefilter::any(vec![
            prefilter(index, a, depth + 1),
            prefilter(index, b, depth + 1),
        ]),
        K::From(s) => text(Field::From, s),
        K::To(s) => text(Field::To, s),
        K::Cc(s) => text(Field::Cc, s),
        K::Bcc(s) => text(Field::Bcc, s),
        K::Subject(s) => text(Field::Subject, s),
        K::Header(name, s) => {
            let name = String::from_utf8_lossy(name.as_ref()).to_ascii_lowercase();
            let field = match name.as_str() {
                "from" => Field::From,
                "to" => Field::To,
                "cc" => Field::Cc,
                "bcc" => Field::Bcc,
                "subject" => Field::Subject,
                _ => Field::Headers,
            };
            text(field, s)
        }
        K::Body(s) => text(Field::Body, s),
        K::Text(s) => Prefilter::any(vec![text(Field::Headers, s), text(Field::Body, s)]),
        _ => Prefilter::Everything,
    }
}
