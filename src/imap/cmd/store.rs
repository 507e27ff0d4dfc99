//! STORE: flag changes on the selected messages, answered with the flags as shown
//! (including `$Replying` presence) unless `.SILENT`.

use imap_codec::imap_types::{
    core::Vec1,
    fetch::MessageDataItem,
    flag::{Flag, StoreResponse, StoreType},
    response::Data,
    sequence::SequenceSet,
};

use super::select::add_presence;
use crate::{
    imap::{
        session::{Outcome, Refusal, Session, State, done, no},
        wire::{flag_list, flags_of, nz, seq_of},
    },
    store::{FlagOp, MessageKey},
};

impl Session {
    pub(in crate::imap) async fn handle_store(
        &mut self,
        set: &SequenceSet,
        kind: StoreType,
        response: StoreResponse,
        flags: &[Flag<'_>],
        uid: bool,
    ) -> Outcome {
        let State::Selected(agent, sel) = &mut self.state else {
            return Err(Refusal::Bad("select a mailbox first".into()));
        };
        if !sel.writable {
            return Err(no(Some("NOPERM"), "mailbox is read-only"));
        }
        let indices = Self::resolve(sel, set, uid);
        let keys: Vec<MessageKey> = indices.iter().map(|i| sel.entries[*i].1.message).collect();
        let op = match kind {
            StoreType::Add => FlagOp::Add,
            StoreType::Remove => FlagOp::Remove,
            StoreType::Replace => FlagOp::Replace,
        };
        let results = self
            .ctx
            .store
            .store_flags(&agent.login, keys, op, flags_of(flags))
            .await?;
        let mut untagged = Vec::new();
        for (index, mut flags) in indices.into_iter().zip(results) {
            add_presence(&self.ctx, &agent.login, sel.entries[index].1, &mut flags);
            sel.flags[index] = flags.clone();
            // .SILENT: the client knows what it set (RFC 3501 §6.4.6).
            if response == StoreResponse::Answer {
                let recent = sel.recent.contains(&sel.entries[index].0);
                let mut items = vec![MessageDataItem::Flags(flag_list(&flags, recent))];
                if uid {
                    items.insert(0, MessageDataItem::Uid(nz(sel.entries[index].0)));
                }
                untagged.push(Data::Fetch {
                    seq: seq_of(index),
                    items: Vec1::unvalidated(items),
                });
            }
        }
        Ok(done(untagged, "STORE completed"))
    }
}
