//! STORE: flag changes on the selected messages, answered with the flags as shown
//! (including `$Replying` presence) unless `.SILENT`. `UNCHANGEDSINCE` (RFC 7162 §3.1.3)
//! is checked by the store in the request that writes (see `condstore.rs`).

use imap_codec::imap_types::{
    command::StoreModifier,
    core::Vec1,
    fetch::MessageDataItem,
    flag::{Flag, StoreResponse, StoreType},
    response::{Code, Data, Status},
    sequence::SequenceSet,
};

use super::condstore;
use super::select::add_presence;
use crate::{
    imap::{
        session::{Outcome, Refusal, Session, State, bad, done, no},
        wire::{flag_list, flags_of, nz, seq_of},
    },
    store::{FlagOp, MessageKey, UnchangedSince},
};

impl Session {
    pub(in crate::imap) async fn handle_store(
        &mut self,
        set: &SequenceSet,
        kind: StoreType,
        response: StoreResponse,
        flags: &[Flag<'_>],
        uid: bool,
        modifiers: &[StoreModifier],
    ) -> Outcome {
        let State::Selected(agent, sel) = &mut self.state else {
            return Err(Refusal::Bad("select a mailbox first".into()));
        };
        if !sel.writable {
            return Err(no(Some("NOPERM"), "mailbox is read-only"));
        }
        let mut unchanged_since = modifiers.iter().map(|m| match m {
            StoreModifier::UnchangedSince(v) => *v,
        });
        let unchanged_since = unchanged_since.next_back();
        // RFC 7162 §3.1: UNCHANGEDSINCE is a CONDSTORE-enabling command.
        let announce = unchanged_since.is_some() && !self.condstore.enabled;
        if unchanged_since.is_some() {
            self.condstore.enabled = true;
        }
        let indices = Self::resolve(sel, set, uid);
        let keys: Vec<MessageKey> = indices.iter().map(|i| sel.entries[*i].1.message).collect();
        let op = match kind {
            StoreType::Add => FlagOp::Add,
            StoreType::Remove => FlagOp::Remove,
            StoreType::Replace => FlagOp::Replace,
        };
        let store = &self.ctx.store;
        let (results, failed) = match unchanged_since {
            Some(modseq) => {
                let guard = UnchangedSince {
                    space: sel.space,
                    uids: indices.iter().map(|i| sel.entries[*i].0).collect(),
                    modseq,
                };
                store
                    .store_flags_unchanged_since(&agent.login, keys, op, flags_of(flags), guard)
                    .await?
            }
            None => (
                store
                    .store_flags(&agent.login, keys, op, flags_of(flags))
                    .await?,
                Vec::new(),
            ),
        };
        let mods = if self.condstore.enabled {
            condstore::modseqs(&self.ctx, &agent.login, sel, &indices)?
        } else {
            Vec::new()
        };
        let mut untagged = Vec::new();
        let mut modified = Vec::new();
        for (n, (index, mut flags)) in indices.into_iter().zip(results).enumerate() {
            if failed.contains(&n) {
                modified.push(if uid {
                    sel.entries[index].0
                } else {
                    seq_of(index).get()
                });
                continue;
            }
            add_presence(&self.ctx, &agent.login, sel.entries[index].1, &mut flags);
            sel.flags[index] = flags.clone();
            let mut items = Vec::new();
            // .SILENT: the client knows what it set (RFC 3501 §6.4.6); with CONDSTORE it
            // still learns the new MODSEQ (RFC 7162 §3.1.3).
            if response == StoreResponse::Answer {
                let recent = sel.recent.contains(&sel.entries[index].0);
                items.push(MessageDataItem::Flags(flag_list(&flags, recent)));
            }
            if let Some(m) = mods.get(n) {
                items.push(condstore::modseq_item(*m));
            }
            if items.is_empty() {
                continue;
            }
            if uid {
                items.insert(0, MessageDataItem::Uid(nz(sel.entries[index].0)));
            }
            untagged.push(Data::Fetch {
                seq: seq_of(index),
                items: Vec1::unvalidated(items),
            });
        }
        let mut answer = done(untagged, "STORE completed");
        if announce {
            let status = condstore::announce_highest(&self.ctx, &agent.login, sel)?;
            answer.untagged_status.push(status);
        }
        modified.sort_unstable();
        // RFC 7162 §3.1.3: the messages that failed UNCHANGEDSINCE, in the tagged OK.
        if let Some(set) = condstore::compact_set(&modified) {
            answer.status = Status::ok(
                None,
                Some(Code::Modified(set)),
                "Conditional STORE failed for some messages",
            )
            .map_err(bad)?;
        }
        Ok(answer)
    }
}
