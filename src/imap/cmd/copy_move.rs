//! COPY, MOVE and EXPUNGE. Between team views these are conversation gestures (`act`:
//! open, close, assign, trash, junk; SPEC §5), not message copies; folders hold copies.
//!
//! A private message (a draft, a `Personal/…` message) moved to `Trash` goes to the
//! agent's own part of it: each agent's Trash is its own UID space holding the trashed
//! conversations and that agent's deleted private messages, which teammates never see.
//! A draft leaving `Drafts` stops marking its conversation `$Replying`. From Trash a
//! private message can be moved back to a folder (restore), or expunged for good.

use std::collections::{BTreeSet, HashMap};

use imap_codec::imap_types::{
    mailbox::Mailbox,
    response::{Data, Status},
    sequence::SequenceSet,
};

use crate::{
    imap::{
        mailbox::{Gesture, Target},
        session::{Outcome, Refusal, Session, State, bad, done, no},
        wire::{copy_uid_code, ok_code},
    },
    store::{
        ConversationAction, ConversationId, Entry, FlagOp, Flags, FolderId, MailboxSnapshot,
        MessageKey, Status as ConvStatus, TeamView,
    },
};

/// (source uid, target uid) of each moved message the target view now holds. A message
/// is in a view at most once, so its key finds it (one pass over the view, not one per
/// message moved).
fn target_pairs(
    snapshot: &MailboxSnapshot,
    moved: impl IntoIterator<Item = (u32, MessageKey)>,
) -> Vec<(u32, u32)> {
    let uid_of: HashMap<MessageKey, u32> = snapshot
        .entries
        .iter()
        .map(|(uid, e)| (e.message, *uid))
        .collect();
    moved
        .into_iter()
        .filter_map(|(src, key)| uid_of.get(&key).map(|dst| (src, *dst)))
        .collect()
}

/// Where private messages of a COPY/MOVE come from.
enum PrivateSource {
    Folder(FolderId),
    /// The agent's `Trash` (entries with no conversation).
    Trash(TeamView),
}

impl Session {
    pub(in crate::imap) async fn handle_expunge(&mut self) -> Outcome {
        let untagged = self.expunge(None, false).await?;
        Ok(done(untagged, "EXPUNGE completed"))
    }

    pub(in crate::imap) async fn handle_uid_expunge(
        &mut self,
        sequence_set: SequenceSet,
    ) -> Outcome {
        let untagged = self.expunge(Some(sequence_set), false).await?;
        Ok(done(untagged, "UID EXPUNGE completed"))
    }

    /// EXPUNGE / UID EXPUNGE / CLOSE. In a team view it moves the conversations of the
    /// `\Deleted` messages to the trash (nothing is destroyed, SPEC §5); in a folder it
    /// removes the messages.
    pub(super) async fn expunge(
        &mut self,
        only: Option<SequenceSet>,
        silent: bool,
    ) -> Result<Vec<Data<'static>>, Refusal> {
        let State::Selected(agent, sel) = &self.state else {
            return Err(Refusal::Bad("select a mailbox first".into()));
        };
        if !sel.writable {
            return Err(no(Some("NOPERM"), "mailbox is read-only"));
        }
        let mut chosen: Vec<usize> = (0..sel.entries.len())
            .filter(|i| sel.flags[*i].deleted)
            .collect();
        if let Some(set) = &only {
            let named = Self::resolve(sel, set, true);
            chosen.retain(|i| named.contains(i));
        }
        if chosen.is_empty() {
            return Ok(Vec::new());
        }
        let login = agent.login.clone();
        match &sel.target {
            Target::Folder(folder) => {
                let uids: Vec<u32> = chosen.iter().map(|i| sel.entries[*i].0).collect();
                self.remove_from_folder(folder, uids).await?;
            }
            Target::Team(view) => {
                // The agent's own private messages in Trash are deleted for good.
                if matches!(view, TeamView::Trash { .. }) {
                    let private: Vec<u32> = chosen
                        .iter()
                        .map(|i| sel.entries[*i])
                        .filter(|(_, e)| e.conversation.is_none())
                        .map(|(uid, _)| uid)
                        .collect();
                    if !private.is_empty() {
                        self.ctx.store.trash_expunge(view, private).await?;
                    }
                }
                let keys: Vec<MessageKey> =
                    chosen.iter().map(|i| sel.entries[*i].1.message).collect();
                // Only conversations still in this view go to the trash. Clients that move
                // by COPY + \Deleted + EXPUNGE have already moved the conversation with the
                // COPY (e.g. closed it); its EXPUNGE must not trash it as well.
                let current = self.ctx.store.sync_view(view).await?;
                let conversations: BTreeSet<ConversationId> = chosen
                    .iter()
                    .map(|i| sel.entries[*i])
                    .filter(|(uid, _)| current.entries.iter().any(|(u, _)| u == uid))
                    .filter_map(|(_, e)| e.conversation)
                    .collect();
                for conv in conversations {
                    self.ctx
                        .store
                        .conversation_action(conv, ConversationAction::SetStatus(ConvStatus::Trash))
                        .await?;
                }
                let deleted = Flags {
                    deleted: true,
                    ..Flags::default()
                };
                self.ctx
                    .store
                    .store_flags(&login, keys, FlagOp::Remove, deleted)
                    .await?;
            }
        }
        let untagged = self.sync().await?;
        Ok(if silent { Vec::new() } else { untagged })
    }

    pub(in crate::imap) async fn handle_copy_or_move(
        &mut self,
        set: &SequenceSet,
        mailbox: &Mailbox<'_>,
        uid: bool,
        is_move: bool,
    ) -> Outcome {
        let target_name = &self.mailbox_arg(mailbox)?;
        let verb = if is_move { "MOVE" } else { "COPY" };
        let target = self.lookup(target_name)?;
        let State::Selected(agent, sel) = &self.state else {
            return Err(Refusal::Bad("select a mailbox first".into()));
        };
        if is_move && !sel.writable {
            return Err(no(Some("NOPERM"), "source mailbox is read-only"));
        }
        let indices = Self::resolve(sel, set, uid);
        if indices.is_empty() {
            return Ok(done(
                Vec::new(),
                format!("{verb} completed (nothing to do)"),
            ));
        }
        let entries: Vec<(u32, Entry)> = indices.iter().map(|i| sel.entries[*i]).collect();
        let source_is_junk = matches!(sel.target, Target::Team(TeamView::Junk { .. }));
        let private_source = match &sel.target {
            Target::Folder(f) => Some(PrivateSource::Folder(f.clone())),
            Target::Team(view @ TeamView::Trash { .. }) => Some(PrivateSource::Trash(view.clone())),
            Target::Team(_) => None,
        };
        let Some(target_box) = target.target.clone() else {
            return Err(no(
                Some("CANNOT"),
                format!("{} only groups other mailboxes", target.name),
            ));
        };
        if !target.writable {
            return Err(no(
                Some("NOPERM"),
                format!("{} is read-only for you", target.name),
            ));
        }
        let gesture = agent.boxes.gesture(&target.name);
        if source_is_junk && let Target::Team(view) = &target_box {
            let Some(gesture) = gesture else {
                return Err(no(
                    Some("CANNOT"),
                    format!("messages cannot be moved into {}", target.name),
                ));
            };
            return self.release_from_junk(&entries, view, gesture, verb).await;
        }
        // Private messages (a folder's, or the agent's own in Trash) are copies; the
        // rest are conversations, whose move is a gesture.
        let (private, shared): (Vec<_>, Vec<_>) = entries
            .into_iter()
            .partition(|(_, e)| private_source.is_some() && e.conversation.is_none());
        let mut uid_validity = None;
        let mut pairs = Vec::new();
        if let Some(source) = &private_source
            && !private.is_empty()
        {
            let (validity, copied) = self
                .copy_private(
                    source,
                    &private,
                    &target_box,
                    gesture.as_ref(),
                    &target.name,
                )
                .await?;
            if is_move {
                self.remove_private(source, private.iter().map(|(u, _)| *u).collect())
                    .await?;
            }
            uid_validity = uid_validity.or(validity);
            pairs.extend(copied);
        }
        if !shared.is_empty() {
            let (validity, copied) = match &target_box {
                Target::Team(view) => {
                    let Some(gesture) = &gesture else {
                        return Err(no(
                            Some("CANNOT"),
                            format!("messages cannot be moved into {}", target.name),
                        ));
                    };
                    let conversations: BTreeSet<ConversationId> =
                        shared.iter().filter_map(|(_, e)| e.conversation).collect();
                    for conv in &conversations {
                        self.act(*conv, gesture).await?;
                    }
                    let snapshot = self.ctx.store.sync_view(view).await?;
                    let moved = shared.iter().map(|(src, e)| (*src, e.message));
                    (snapshot.uid_validity, target_pairs(&snapshot, moved))
                }
                Target::Folder(folder) => {
                    if is_move {
                        return Err(no(
                            Some("CANNOT"),
                            "moving would take the conversation from the team; COPY it instead",
                        ));
                    }
                    let keys = shared.iter().map(|(_, e)| e.message).collect();
                    let (validity, new_uids) = self.ctx.store.folder_copy(folder, keys).await?;
                    (
                        validity,
                        shared.iter().map(|(u, _)| *u).zip(new_uids).collect(),
                    )
                }
            };
            uid_validity = uid_validity.or(Some(validity));
            pairs.extend(copied);
        }
        pairs.sort_unstable();
        let copyuid = uid_validity.and_then(|v| copy_uid_code(v, &pairs));
        let mut answer = done(Vec::new(), format!("{verb} completed"));
        if is_move {
            if let Some(code) = copyuid {
                answer.untagged_status.push(ok_code(code));
            }
            answer.untagged = self.sync().await?;
        } else if let Some(code) = copyuid {
            answer.status = Status::ok(None, Some(code), "COPY completed").map_err(bad)?;
        }
        Ok(answer)
    }

    /// "Not spam": junk messages moved out of `Junk` are threaded like any mail, then
    /// the target's gesture applies to their conversations.
    async fn release_from_junk(
        &mut self,
        entries: &[(u32, Entry)],
        view: &TeamView,
        gesture: Gesture,
        verb: &str,
    ) -> Outcome {
        if gesture == Gesture::Junk {
            return Ok(done(Vec::new(), format!("{verb} completed (already junk)")));
        }
        let mut released = Vec::new();
        for (src, e) in entries {
            let Some(id) = self.ctx.store.junk_of_message(e.message)? else {
                // Released with an earlier message of its conversation.
                released.push((*src, e.message));
                continue;
            };
            let accepted = self
                .ctx
                .ingest
                .release_junk(id)
                .await
                .map_err(|e| no(None, e.to_string()))?;
            // A duplicate (it never left its conversation) keeps its key.
            let key = accepted.message().unwrap_or(e.message);
            released.push((*src, key));
            if let Some(conv) = self
                .ctx
                .store
                .message_meta(key)?
                .and_then(|m| m.conversation)
                && !matches!(gesture, Gesture::Open | Gesture::OpenIn(_))
            {
                self.act(conv, &gesture).await?;
            }
        }
        let snapshot = self.ctx.store.sync_view(view).await?;
        let pairs = target_pairs(&snapshot, released);
        let copyuid = copy_uid_code(snapshot.uid_validity, &pairs);
        let mut answer = done(Vec::new(), format!("{verb} completed"));
        if let Some(code) = copyuid {
            answer.untagged_status.push(ok_code(code));
        }
        answer.untagged = self.sync().await?;
        Ok(answer)
    }

    /// Copies private messages to the target: into a folder, into the agent's `Trash`
    /// (a deleted draft), or into a team inbox as intake (SPEC §5 APPEND rule). Returns
    /// the target's UIDVALIDITY and (source, target) uid pairs where the target keeps
    /// them as messages with uids.
    async fn copy_private(
        &self,
        source: &PrivateSource,
        entries: &[(u32, Entry)],
        target_box: &Target,
        gesture: Option<&Gesture>,
        target_name: &str,
    ) -> Result<(Option<u32>, Vec<(u32, u32)>), Refusal> {
        let keys: Vec<MessageKey> = entries.iter().map(|(_, e)| e.message).collect();
        let sources = entries.iter().map(|(u, _)| *u);
        match (target_box, gesture) {
            (Target::Team(_), Some(Gesture::Trash))
                if matches!(source, PrivateSource::Trash(_)) =>
            {
                Ok((None, Vec::new()))
            }
            (Target::Team(view), Some(Gesture::Trash)) => {
                let (validity, uids) = self.ctx.store.trash_copy(view, keys).await?;
                Ok((Some(validity), sources.zip(uids).collect()))
            }
            (Target::Team(_), Some(Gesture::Open | Gesture::OpenIn(_))) => {
                for key in keys {
                    let raw = self.ctx.store.read_message(key)?;
                    self.intake(target_name, raw).await?;
                }
                Ok((None, Vec::new()))
            }
            (Target::Team(_), _) => Err(no(
                Some("CANNOT"),
                format!(
                    "private messages can only go to INBOX, Inboxes/..., Trash or a folder, not {target_name}"
                ),
            )),
            (Target::Folder(folder), _) => {
                let (validity, uids) = self.ctx.store.folder_copy(folder, keys).await?;
                Ok((Some(validity), sources.zip(uids).collect()))
            }
        }
    }

    /// Removes private messages from where they were: a folder, or the agent's `Trash`.
    async fn remove_private(&self, source: &PrivateSource, uids: Vec<u32>) -> Result<(), Refusal> {
        match source {
            PrivateSource::Folder(folder) => self.remove_from_folder(folder, uids).await,
            PrivateSource::Trash(view) => {
                self.ctx.store.trash_expunge(view, uids).await?;
                Ok(())
            }
        }
    }

    /// Expunges from a private folder; a draft leaving `Drafts` no longer marks its
    /// conversation `$Replying`.
    async fn remove_from_folder(&self, folder: &FolderId, uids: Vec<u32>) -> Result<(), Refusal> {
        if folder.name == "Drafts" {
            self.ctx.replying.drafts_removed(&folder.owner, &uids);
        }
        self.ctx.store.folder_expunge(folder, uids).await?;
        Ok(())
    }

    /// Carries out what moving a conversation into a team view means (SPEC §5).
    async fn act(&self, conv: ConversationId, gesture: &Gesture) -> Result<(), Refusal> {
        let store = &self.ctx.store;
        let open = ConversationAction::SetStatus(ConvStatus::Open);
        match gesture {
            Gesture::Open => store.conversation_action(conv, open).await?,
            Gesture::OpenIn(inbox) => {
                let info = store
                    .conversation_info(conv)?
                    .ok_or_else(|| no(Some("NONEXISTENT"), "conversation gone"))?;
                if &info.inbox != inbox {
                    store
                        .conversation_action(
                            conv,
                            ConversationAction::Transfer {
                                inbox: inbox.clone(),
                            },
                        )
                        .await?;
                }
                store.conversation_action(conv, open).await?;
            }
            Gesture::Close => {
                store
                    .conversation_action(conv, ConversationAction::SetStatus(ConvStatus::Closed))
                    .await?
            }
            Gesture::Trash => {
                store
                    .conversation_action(conv, ConversationAction::SetStatus(ConvStatus::Trash))
                    .await?
            }
            Gesture::Assign(login) => {
                store
                    .conversation_action(conv, ConversationAction::Assign(Some(login.clone())))
                    .await?;
                store.conversation_action(conv, open).await?;
            }
            Gesture::Junk => {
                let login = self.agent()?.login.clone();
                self.ctx
                    .ingest
                    .mark_spam(conv, &login)
                    .await
                    .map_err(|e| no(None, e.to_string()))?;
            }
            Gesture::Unassign => {
                store
                    .conversation_action(conv, ConversationAction::Assign(None))
                    .await?;
                store.conversation_action(conv, open).await?;
            }
        }
        Ok(())
    }
}
