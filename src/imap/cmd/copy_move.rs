//! COPY, MOVE and EXPUNGE. Between team views these are conversation gestures (`act`:
//! open, close, assign, trash, junk; SPEC §5), not message copies; folders hold copies.
//!
//! A private message (a draft, a `Personal/…` message) moved to `Trash` is deleted: Trash
//! is a team view of trashed conversations (GUIDE §0b) and a private message belongs to
//! none, so it cannot live there without giving Trash a per-agent part. The MOVE removes
//! it from its folder (a draft stops marking its conversation `$Replying`), answers
//! without COPYUID (there is no target UID), and never shows it to teammates; a COPY
//! there copies nothing, so a client's COPY + `\Deleted` + EXPUNGE deletes it as well.

use std::collections::BTreeSet;

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
        ConversationAction, ConversationId, Entry, FlagOp, Flags, FolderId, MessageKey,
        Status as ConvStatus, TeamView,
    },
};

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
        let source_is_team = matches!(sel.target, Target::Team(_));
        let source_is_junk = matches!(sel.target, Target::Team(TeamView::Junk { .. }));
        let source_folder = match &sel.target {
            Target::Folder(f) => Some(f.clone()),
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
        let (uid_validity, pairs) = match (&target_box, source_is_team) {
            (Target::Team(view), true) => {
                let Some(gesture) = gesture else {
                    return Err(no(
                        Some("CANNOT"),
                        format!("messages cannot be moved into {}", target.name),
                    ));
                };
                if source_is_junk {
                    if gesture == Gesture::Junk {
                        return Ok(done(Vec::new(), format!("{verb} completed (already junk)")));
                    }
                    // "Not spam": threaded like any mail; then what the target means.
                    let mut released = Vec::new();
                    for (src, e) in &entries {
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
                        if let Some(key) = accepted.message().or(Some(e.message)) {
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
                    }
                    let snapshot = self.ctx.store.sync_view(view).await?;
                    let pairs: Vec<(u32, u32)> = released
                        .iter()
                        .filter_map(|(src, key)| {
                            snapshot
                                .entries
                                .iter()
                                .find(|(_, d)| d.message == *key)
                                .map(|(dst, _)| (*src, *dst))
                        })
                        .collect();
                    let copyuid = copy_uid_code(snapshot.uid_validity, &pairs);
                    let mut answer = done(Vec::new(), format!("{verb} completed"));
                    if let Some(code) = copyuid {
                        answer.untagged_status.push(ok_code(code));
                    }
                    answer.untagged = self.sync().await?;
                    return Ok(answer);
                }
                let conversations: BTreeSet<ConversationId> =
                    entries.iter().filter_map(|(_, e)| e.conversation).collect();
                for conv in &conversations {
                    self.act(*conv, &gesture).await?;
                }
                let snapshot = self.ctx.store.sync_view(view).await?;
                let pairs: Vec<(u32, u32)> = entries
                    .iter()
                    .filter_map(|(src, e)| {
                        snapshot
                            .entries
                            .iter()
                            .find(|(_, d)| d == e)
                            .map(|(dst, _)| (*src, *dst))
                    })
                    .collect();
                (snapshot.uid_validity, pairs)
            }
            (Target::Team(_), false) if gesture == Some(Gesture::Trash) => {
                // Deleting a private message (Thunderbird: `UID MOVE n "Trash"` in Drafts).
                // Trash is a team view of trashed conversations and a draft is none, so
                // the message leaves its folder and goes nowhere (its bytes stay in the
                // segments, as after EXPUNGE): no target UID, so no COPYUID (RFC 4315 §3).
                // A COPY does nothing, so COPY + \Deleted + EXPUNGE still deletes.
                if is_move && let Some(folder) = &source_folder {
                    self.remove_from_folder(folder, entries.iter().map(|(u, _)| *u).collect())
                        .await?;
                }
                let untagged = self.sync().await?;
                let what = if is_move {
                    "deleted: Trash keeps no private messages"
                } else {
                    "nothing copied: Trash keeps no private messages"
                };
                return Ok(done(untagged, format!("{verb} completed ({what})")));
            }
            (Target::Team(_), false) => {
                // A private message dragged into a team inbox: intake (SPEC §5 APPEND rule).
                let Some(Gesture::Open | Gesture::OpenIn(_)) = gesture else {
                    return Err(no(
                        Some("CANNOT"),
                        format!(
                            "private messages can only go to INBOX or Inboxes/..., not {}",
                            target.name
                        ),
                    ));
                };
                for (_, e) in &entries {
                    let raw = self.ctx.store.read_message(e.message)?;
                    self.intake(&target.name, raw).await?;
                }
                if is_move && let Some(folder) = &source_folder {
                    self.remove_from_folder(folder, entries.iter().map(|(u, _)| *u).collect())
                        .await?;
                }
                let untagged = self.sync().await?;
                return Ok(done(untagged, format!("{verb} completed")));
            }
            (Target::Folder(folder), from_team) => {
                if is_move && from_team {
                    return Err(no(
                        Some("CANNOT"),
                        "moving would take the conversation from the team; COPY it instead",
                    ));
                }
                let keys = entries.iter().map(|(_, e)| e.message).collect();
                let (validity, new_uids) = self.ctx.store.folder_copy(folder, keys).await?;
                if is_move && let Some(src) = &source_folder {
                    self.remove_from_folder(src, entries.iter().map(|(u, _)| *u).collect())
                        .await?;
                }
                (
                    validity,
                    entries.iter().map(|(u, _)| *u).zip(new_uids).collect(),
                )
            }
        };
        let copyuid = copy_uid_code(uid_validity, &pairs);
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
                store
                    .mark_junk(conv, format!("marked as spam by {login}"))
                    .await?;
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
