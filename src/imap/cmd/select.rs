//! The selected state: entering it (SELECT/EXAMINE), leaving it (UNSELECT/CLOSE), STATUS,
//! and keeping it current (`sync`, NOOP/CHECK, IDLE's `pending_updates`). `sync` lives
//! here, not in `session.rs`, because it maintains what SELECT builds: the same entries,
//! shown flags and generations; the session only asks for its updates after a command.

use std::{borrow::Cow, collections::BTreeSet, num::NonZeroU32};

use imap_codec::imap_types::{
    command::SelectParameter,
    core::Vec1,
    fetch::MessageDataItem,
    mailbox::Mailbox,
    response::{Code, Data, Status},
    sequence::SequenceSet,
    status::{StatusDataItem, StatusDataItemName},
};

use super::condstore;
use crate::{
    imap::{
        cmd::keywords::{flags_data, initial_keywords, permanent_flags},
        mailbox::Target,
        session::{
            After, Answer, ImapContext, Outcome, Refusal, Selected, Session, State, bad, done, no,
        },
        wire::{flag_list, nz, ok_code, seq_of, set_contains},
    },
    store::{Entry, Flags, MailboxSnapshot, MessageKey, StoreError},
};

impl Session {
    /// SELECT / EXAMINE.
    pub(in crate::imap) async fn handle_select(
        &mut self,
        mailbox: &Mailbox<'_>,
        read_only: bool,
        params: &[SelectParameter],
    ) -> Outcome {
        let name = &self.mailbox_arg(mailbox)?;
        let mut qresync = None;
        for p in params {
            match p {
                // RFC 7162 §3.1.8: a CONDSTORE-enabling command.
                SelectParameter::CondStore => self.condstore.enabled = true,
                SelectParameter::QResync { .. } => {
                    // RFC 7162 §3.2.5: QRESYNC without ENABLE QRESYNC is a BAD.
                    if !self.condstore.qresync {
                        return Err(Refusal::Bad(
                            "ENABLE QRESYNC before SELECT (QRESYNC)".into(),
                        ));
                    }
                    qresync = Some(p);
                }
            }
        }
        // RFC 7162 §3.2.11: the previous mailbox's responses end with [CLOSED].
        let was_selected = matches!(self.state, State::Selected(..));
        self.unselect();
        let info = self.lookup(name)?;
        let Some(target) = info.target.clone() else {
            return Err(no(
                Some("CANNOT"),
                format!("{} only groups other mailboxes", info.name),
            ));
        };
        let agent = self.agent()?;
        let synced_at = self.generations();
        let snapshot = self.snapshot(&target).await?;
        let flags = shown_flags(&self.ctx, &agent.login, &snapshot.entries)?;
        let writable = info.writable && !read_only;
        let exists = u32::try_from(snapshot.entries.len()).unwrap_or(u32::MAX);
        let uids: Vec<u32> = snapshot.entries.iter().map(|(uid, _)| *uid).collect();
        // RFC 3501 §6.3.1/§6.3.2: SELECT takes \Recent over, EXAMINE only reports it.
        let recent: BTreeSet<u32> = self
            .ctx
            .recent
            .told(&target, snapshot.uid_validity, &uids, writable)
            .into_iter()
            .collect();
        let keywords = initial_keywords(&flags);
        let mut untagged = vec![
            flags_data(&keywords),
            Data::Exists(exists),
            Data::Recent(u32::try_from(recent.len()).unwrap_or(u32::MAX)),
        ];
        let mut statuses = Vec::new();
        if was_selected {
            statuses.push(ok_code(Code::Closed));
        }
        statuses.push(permanent_flags(writable));
        if let Some(first_unseen) = flags.iter().position(|f| !f.seen)
            && let Some(n) = NonZeroU32::new(u32::try_from(first_unseen + 1).unwrap_or(u32::MAX))
        {
            statuses.push(ok_code(Code::Unseen(n)));
        }
        if let Some(v) = NonZeroU32::new(snapshot.uid_validity) {
            statuses.push(ok_code(Code::UidValidity(v)));
        }
        if let Some(n) = NonZeroU32::new(snapshot.uid_next) {
            statuses.push(ok_code(Code::UidNext(n)));
        }
        // RFC 7162 §3.1.2.1: every SELECT of a mailbox with persistent mod-sequences.
        let highest = condstore::highest(&self.ctx, &agent.login, &snapshot)?;
        statuses.push(ok_code(Code::HighestModSeq(highest)));
        let selected = Selected {
            name: info.name.clone(),
            target,
            space: snapshot.space,
            writable,
            uid_validity: snapshot.uid_validity,
            uid_next: snapshot.uid_next,
            entries: snapshot.entries,
            flags,
            recent,
            keywords,
            synced_at,
        };
        if let Some(param) = qresync {
            untagged.extend(condstore::qresync_answer(
                &self.ctx,
                &agent.login,
                &selected,
                param,
            )?);
        }
        let state = std::mem::replace(&mut self.state, State::NotAuthenticated);
        if let State::Authenticated(agent) = state {
            self.state = State::Selected(agent, Box::new(selected));
        }
        let code = if writable {
            Code::ReadWrite
        } else {
            Code::ReadOnly
        };
        let verb = if read_only { "EXAMINE" } else { "SELECT" };
        untagged.shrink_to_fit();
        Ok(Answer {
            untagged,
            untagged_status: statuses,
            status: Status::ok(None, Some(code), format!("{verb} completed")).map_err(bad)?,
            after: After::Continue,
            more: None,
        })
    }

    pub(in crate::imap) async fn handle_noop(&mut self) -> Outcome {
        let untagged = self.sync().await?;
        Ok(done(untagged, "NOOP completed"))
    }

    pub(in crate::imap) fn handle_unselect(&mut self) -> Outcome {
        self.selected()?;
        self.unselect();
        Ok(done(Vec::new(), "UNSELECT completed"))
    }

    pub(in crate::imap) async fn handle_close(&mut self) -> Outcome {
        let writable = self.selected()?.writable;
        if writable {
            self.expunge(None, true).await?;
        }
        self.unselect();
        Ok(done(Vec::new(), "CLOSE completed"))
    }

    pub(super) fn unselect(&mut self) {
        if let State::Selected(..) = self.state {
            let state = std::mem::replace(&mut self.state, State::NotAuthenticated);
            if let State::Selected(agent, _) = state {
                self.state = State::Authenticated(agent);
            }
        }
    }

    pub(in crate::imap) async fn handle_status(
        &mut self,
        mailbox: &Mailbox<'_>,
        items: &[StatusDataItemName],
    ) -> Outcome {
        let name = &self.mailbox_arg(mailbox)?;
        let info = self.lookup(name)?;
        let Some(target) = &info.target else {
            return Err(no(
                Some("CANNOT"),
                format!("{} only groups other mailboxes", info.name),
            ));
        };
        let login = self.agent()?.login.clone();
        let snapshot = self.snapshot(target).await?;
        let mut out = Vec::new();
        for item in items {
            match item {
                StatusDataItemName::Messages => {
                    out.push(StatusDataItem::Messages(snapshot.entries.len() as u32))
                }
                StatusDataItemName::Recent => {
                    // RFC 3501 §6.3.10: messages no session has been told of yet.
                    let uids: Vec<u32> = snapshot.entries.iter().map(|(uid, _)| *uid).collect();
                    let n = self.ctx.recent.count(target, snapshot.uid_validity, &uids);
                    out.push(StatusDataItem::Recent(u32::try_from(n).unwrap_or(u32::MAX)));
                }
                // RFC 7162 §3.1.7: the value SELECT's HIGHESTMODSEQ would give.
                StatusDataItemName::HighestModSeq => {
                    let h = condstore::highest(&self.ctx, &login, &snapshot)?;
                    out.push(StatusDataItem::HighestModSeq(h.get()));
                }
                StatusDataItemName::UidNext => {
                    out.push(StatusDataItem::UidNext(nz(snapshot.uid_next)))
                }
                StatusDataItemName::UidValidity => {
                    out.push(StatusDataItem::UidValidity(nz(snapshot.uid_validity)))
                }
                StatusDataItemName::Unseen => {
                    let keys: Vec<MessageKey> =
                        snapshot.entries.iter().map(|(_, e)| e.message).collect();
                    let unseen = self
                        .ctx
                        .store
                        .flags_many(&login, &keys)?
                        .iter()
                        .filter(|f| !f.seen)
                        .count();
                    out.push(StatusDataItem::Unseen(unseen as u32));
                }
                _ => {}
            }
        }
        let data = Data::Status {
            mailbox: self.wire_mailbox(&info.name)?,
            items: Cow::Owned(out),
        };
        Ok(done(vec![data], "STATUS completed"))
    }

    async fn snapshot(&self, target: &Target) -> Result<MailboxSnapshot, Refusal> {
        Ok(match target {
            Target::Team(view) => self.ctx.store.sync_view(view).await?,
            Target::Folder(folder) => self.ctx.store.sync_folder(folder).await?,
        })
    }

    /// Changes to push while the client idles; a store failure pushes nothing (the next
    /// command reports it).
    pub async fn pending_updates(&mut self) -> Vec<Data<'static>> {
        match self.sync().await {
            Ok(mut data) => {
                // PERMANENTFLAGS already holds `\*`: the new FLAGS is what clients need.
                self.announce_keywords(&mut data);
                data
            }
            Err(e) => {
                tracing::warn!(error = ?e, "mailbox update failed");
                Vec::new()
            }
        }
    }

    /// What the selected state was last brought up to date against.
    fn generations(&self) -> (u64, u64) {
        (
            self.ctx.store.change_counter(),
            self.ctx.replying.generation(),
        )
    }

    /// Brings the selected mailbox up to date: EXPUNGE for messages that left (highest
    /// first, so numbers stay valid), EXISTS for new ones, FETCH FLAGS for changed flags.
    pub(super) async fn sync(&mut self) -> Result<Vec<Data<'static>>, Refusal> {
        // Read before looking: a change landing meanwhile is seen by the next sync.
        let generations = self.generations();
        let cs = self.condstore;
        let State::Selected(agent, sel) = &mut self.state else {
            return Ok(Vec::new());
        };
        if sel.synced_at == generations {
            return Ok(Vec::new());
        }
        let snapshot = match &sel.target {
            Target::Team(view) => self.ctx.store.sync_view(view).await?,
            Target::Folder(folder) => match self.ctx.store.sync_folder(folder).await {
                Ok(s) => s,
                // The folder was deleted by another session: everything is gone.
                Err(StoreError::NotFound(_)) => MailboxSnapshot {
                    space: 0,
                    uid_validity: sel.uid_validity,
                    uid_next: sel.uid_next,
                    entries: Vec::new(),
                    highest_change: 0,
                },
                Err(e) => return Err(e.into()),
            },
        };
        let mut untagged = Vec::new();
        let now: BTreeSet<u32> = snapshot.entries.iter().map(|(uid, _)| *uid).collect();
        let mut vanished = Vec::new();
        for index in (0..sel.entries.len()).rev() {
            if !now.contains(&sel.entries[index].0) {
                let (uid, _) = sel.entries.remove(index);
                sel.flags.remove(index);
                sel.recent.remove(&uid);
                // RFC 7162 §3.2.10: with QRESYNC, VANISHED replaces EXPUNGE.
                if cs.qresync {
                    vanished.push(uid);
                } else if let Some(seq) =
                    NonZeroU32::new(u32::try_from(index + 1).unwrap_or(u32::MAX))
                {
                    untagged.push(Data::Expunge(seq));
                }
            }
        }
        vanished.reverse();
        if let Some(known_uids) = condstore::compact_set(&vanished) {
            untagged.push(Data::Vanished {
                earlier: false,
                known_uids,
            });
        }
        let known_max = sel.entries.last().map(|(uid, _)| *uid).unwrap_or(0);
        let fresh: Vec<(u32, Entry)> = snapshot
            .entries
            .iter()
            .filter(|(uid, _)| *uid > known_max)
            .copied()
            .collect();
        // Only the flags written since the last sync can differ, unless presence moved
        // or the store no longer remembers which were written.
        let written = if sel.synced_at.1 == generations.1 {
            self.ctx.store.flags_changed_since(sel.synced_at.0)
        } else {
            None
        };
        let stale: Vec<usize> = match &written {
            Some(keys) => (0..sel.entries.len())
                .filter(|&i| keys.contains(&sel.entries[i].1.message))
                .collect(),
            None => (0..sel.entries.len()).collect(),
        };
        let stale_entries: Vec<(u32, Entry)> = stale.iter().map(|&i| sel.entries[i]).collect();
        let current = shown_flags(&self.ctx, &agent.login, &stale_entries)?;
        let changed: Vec<(usize, Flags)> = stale
            .into_iter()
            .zip(current)
            .filter(|(index, flags)| sel.flags[*index] != *flags)
            .collect();
        // RFC 7162 §3.1: with CONDSTORE, unsolicited FETCHes carry MODSEQ.
        let mods = if cs.enabled {
            let indices: Vec<usize> = changed.iter().map(|(i, _)| *i).collect();
            condstore::modseqs(&self.ctx, &agent.login, sel, &indices)?
        } else {
            Vec::new()
        };
        for (n, (index, flags)) in changed.into_iter().enumerate() {
            let mut items = vec![
                MessageDataItem::Uid(nz(sel.entries[index].0)),
                MessageDataItem::Flags(flag_list(
                    &flags,
                    sel.recent.contains(&sel.entries[index].0),
                )),
            ];
            if let Some(m) = mods.get(n) {
                items.push(condstore::modseq_item(*m));
            }
            untagged.push(Data::Fetch {
                seq: seq_of(index),
                items: Vec1::unvalidated(items),
            });
            sel.flags[index] = flags;
        }
        if !fresh.is_empty() {
            let fresh_flags = shown_flags(&self.ctx, &agent.login, &fresh)?;
            let uids: Vec<u32> = fresh.iter().map(|(uid, _)| *uid).collect();
            // RFC 3501 §2.3.2: this session is told of them now (EXISTS below).
            let recent = self
                .ctx
                .recent
                .told(&sel.target, sel.uid_validity, &uids, sel.writable);
            sel.recent.extend(recent);
            sel.entries.extend(fresh);
            sel.flags.extend(fresh_flags);
            untagged.push(Data::Exists(
                u32::try_from(sel.entries.len()).unwrap_or(u32::MAX),
            ));
            // RFC 3501 §7.3.2: the number of \Recent messages changed with them (counted
            // over what is still here: an EXPUNGE elsewhere leaves its UID in `recent`).
            let recent = sel
                .entries
                .iter()
                .filter(|(uid, _)| sel.recent.contains(uid))
                .count();
            untagged.push(Data::Recent(u32::try_from(recent).unwrap_or(u32::MAX)));
        }
        sel.uid_next = snapshot.uid_next;
        sel.synced_at = generations;
        Ok(untagged)
    }

    /// Indices of the selected messages named by a sequence set (or UID set).
    pub(super) fn resolve(sel: &Selected, set: &SequenceSet, uid: bool) -> Vec<usize> {
        if sel.entries.is_empty() {
            return Vec::new();
        }
        let largest = if uid {
            sel.entries.last().map(|(u, _)| *u).unwrap_or(1)
        } else {
            sel.entries.len() as u32
        };
        sel.entries
            .iter()
            .enumerate()
            .filter(|(index, (u, _))| {
                let value = if uid { *u } else { *index as u32 + 1 };
                set_contains(set, value, largest)
            })
            .map(|(index, _)| index)
            .collect()
    }
}

/// Flags as `login` sees them: stored flags plus `$Replying` while a teammate has a
/// reply draft open for the conversation (derived presence, never stored).
fn shown_flags(
    ctx: &ImapContext,
    login: &str,
    entries: &[(u32, Entry)],
) -> Result<Vec<Flags>, StoreError> {
    let keys: Vec<MessageKey> = entries.iter().map(|(_, e)| e.message).collect();
    let mut flags = ctx.store.flags_many(login, &keys)?;
    for (f, (_, entry)) in flags.iter_mut().zip(entries) {
        add_presence(ctx, login, *entry, f);
    }
    Ok(flags)
}

pub(super) fn shown_flag(
    ctx: &ImapContext,
    login: &str,
    entry: (u32, Entry),
) -> Result<Flags, StoreError> {
    let mut f = ctx.store.flags(login, entry.1.message)?;
    add_presence(ctx, login, entry.1, &mut f);
    Ok(f)
}

pub(super) fn add_presence(ctx: &ImapContext, login: &str, entry: Entry, flags: &mut Flags) {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if let Some(conv) = entry.conversation
        && ctx.replying.others_replying(conv, login, now)
    {
        flags.keywords.insert(REPLYING.to_string());
    }
}

/// The presence keyword of SPEC §5.
const REPLYING: &str = "$Replying";
