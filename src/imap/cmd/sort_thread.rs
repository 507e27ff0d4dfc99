//! SORT and THREAD (RFC 5256): the base SEARCH picks the messages, `imap/sort_thread.rs`
//! orders or threads them. On a team view THREAD=REFERENCES is the store's conversations,
//! the grouping agents already see; elsewhere it is computed from the headers.

use imap_codec::imap_types::{
    core::{Charset, Vec1},
    extensions::{sort::SortCriterion, thread::ThreadingAlgorithm},
    response::Data,
    search::SearchKey,
};

use crate::imap::{
    mailbox::Target,
    session::{Outcome, Refusal, Session, State, done},
    sort_thread::{self, Item},
    wire::nz,
};

impl Session {
    pub(in crate::imap) async fn handle_sort(
        &mut self,
        criteria: &Vec1<SortCriterion>,
        charset: Charset<'_>,
        search: &Vec1<SearchKey<'_>>,
        uid: bool,
    ) -> Outcome {
        let mut items = self.matching(charset, search, uid).await?;
        sort_thread::sort(&mut items, criteria.as_ref());
        let numbers = items.iter().map(|i| nz(i.number)).collect();
        Ok(done(vec![Data::Sort(numbers, None)], "SORT completed"))
    }

    pub(in crate::imap) async fn handle_thread(
        &mut self,
        algorithm: &ThreadingAlgorithm<'_>,
        charset: Charset<'_>,
        search: &Vec1<SearchKey<'_>>,
        uid: bool,
    ) -> Outcome {
        if let ThreadingAlgorithm::Other(other) = algorithm {
            return Err(Refusal::Bad(format!(
                "THREAD={} is not supported",
                other.as_ref()
            )));
        }
        let items = self.matching(charset, search, uid).await?;
        let team = matches!(
            &self.state,
            State::Selected(_, sel) if matches!(sel.target, Target::Team(_))
        );
        let threads = match algorithm {
            ThreadingAlgorithm::OrderedSubject => sort_thread::ordered_subject(&items),
            _ if team => sort_thread::by_conversation(&items),
            _ => sort_thread::references(&items),
        };
        Ok(done(vec![Data::Thread(threads)], "THREAD completed"))
    }

    /// The messages the search criteria select, with what sorting and threading need.
    async fn matching(
        &mut self,
        charset: Charset<'_>,
        search: &Vec1<SearchKey<'_>>,
        uid: bool,
    ) -> Result<Vec<Item>, Refusal> {
        let answer = self.handle_search(Some(charset), search, true).await?;
        let State::Selected(_, sel) = &self.state else {
            return Err(Refusal::Bad("select a mailbox first".into()));
        };
        let mut items = Vec::new();
        for data in &answer.untagged {
            let Data::Search(uids, ..) = data else {
                continue;
            };
            for u in uids {
                let Ok(index) = sel.entries.binary_search_by_key(&u.get(), |(x, _)| *x) else {
                    continue;
                };
                let (uid_value, entry) = &sel.entries[index];
                let seq = index as u32 + 1;
                let meta = self.ctx.store.message_meta(entry.message)?;
                let raw = self.ctx.store.read_message(entry.message)?;
                let arrival = meta.as_ref().map(|m| m.received_at).unwrap_or(0);
                let mut item = Item {
                    number: if uid { *uid_value } else { seq },
                    seq,
                    arrival,
                    sent: arrival,
                    size: raw.len() as u64,
                    conversation: entry.conversation.map(|c| c.0),
                    ..Item::default()
                };
                item.read_headers(&raw);
                items.push(item);
            }
        }
        Ok(items)
    }
}
