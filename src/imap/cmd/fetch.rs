//! FETCH: message data items rendered from the stored bytes (`render.rs`); a non-PEEK
//! body fetch in a writable mailbox sets `\Seen`.

use imap_codec::imap_types::{
    ToStatic,
    command::FetchModifier,
    core::{Tag, Vec1},
    fetch::{MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName},
    response::{Data, Status},
    sequence::SequenceSet,
};

use super::condstore;
use super::select::shown_flag;
use crate::{
    imap::{
        binary,
        render::{Rendered, partial},
        session::{FetchCursor, Outcome, Refusal, Session, State, done, no, respond},
        wire::{flag_list, header_section, internal_date, nstring, nz, seq_of, text_section},
    },
    store::{FlagOp, Flags, MessageKey},
};

impl Session {
    pub(in crate::imap) async fn handle_fetch(
        &mut self,
        set: &SequenceSet,
        items: &MacroOrMessageDataItemNames<'_>,
        uid: bool,
        modifiers: &[FetchModifier],
    ) -> Outcome {
        let State::Selected(agent, sel) = &mut self.state else {
            return Err(Refusal::Bad("select a mailbox first".into()));
        };
        let mut changed_since = None;
        let mut vanished = false;
        for m in modifiers {
            match m {
                FetchModifier::ChangedSince(v) => changed_since = Some(v.get()),
                FetchModifier::Vanished => vanished = true,
            }
        }
        // RFC 7162 §3.2.6: VANISHED only in UID FETCH with CHANGEDSINCE, after ENABLE QRESYNC.
        if vanished && !(uid && changed_since.is_some() && self.condstore.qresync) {
            return Err(Refusal::Bad(
                "VANISHED needs UID FETCH, CHANGEDSINCE and ENABLE QRESYNC".into(),
            ));
        }
        let mut names: Vec<MessageDataItemName<'_>> = match items {
            MacroOrMessageDataItemNames::Macro(m) => m.expand(),
            MacroOrMessageDataItemNames::MessageDataItemNames(n) => n.clone(),
        };
        if uid && !names.contains(&MessageDataItemName::Uid) {
            names.insert(0, MessageDataItemName::Uid);
        }
        // RFC 7162 §3.1: CHANGEDSINCE and MODSEQ enable CONDSTORE; CHANGEDSINCE implies
        // MODSEQ (§3.1.4.1), and once enabled, FLAGS come with MODSEQ.
        let enables = changed_since.is_some() || names.contains(&MessageDataItemName::ModSeq);
        let announce = enables && !self.condstore.enabled;
        if enables {
            self.condstore.enabled = true;
        }
        if !names.contains(&MessageDataItemName::ModSeq)
            && (changed_since.is_some()
                || (self.condstore.enabled && names.contains(&MessageDataItemName::Flags)))
        {
            names.push(MessageDataItemName::ModSeq);
        }
        let wants_modseq = names.contains(&MessageDataItemName::ModSeq);
        let needs_body = names.iter().any(|n| {
            matches!(
                n,
                MessageDataItemName::Body
                    | MessageDataItemName::BodyExt { .. }
                    | MessageDataItemName::BodyStructure
                    | MessageDataItemName::Envelope
                    | MessageDataItemName::Rfc822
                    | MessageDataItemName::Rfc822Header
                    | MessageDataItemName::Rfc822Text
                    | MessageDataItemName::Binary { .. }
                    | MessageDataItemName::BinarySize { .. }
            )
        });
        let marks_seen = sel.writable
            && names.iter().any(|n| {
                matches!(
                    n,
                    MessageDataItemName::BodyExt { peek: false, .. }
                        | MessageDataItemName::Binary { peek: false, .. }
                        | MessageDataItemName::Rfc822
                        | MessageDataItemName::Rfc822Text
                )
            });
        let mut indices = Self::resolve(sel, set, uid);
        let mut untagged = Vec::with_capacity(indices.len());
        if let Some(since) = changed_since {
            let mods = condstore::modseqs(&self.ctx, &agent.login, sel, &indices)?;
            indices = indices
                .into_iter()
                .zip(mods)
                .filter(|(_, m)| *m > since)
                .map(|(i, _)| i)
                .collect();
            if vanished
                && let Some(v) = condstore::vanished_earlier(&self.ctx, sel, since, Some(set))?
            {
                untagged.push(v);
            }
        }
        if marks_seen {
            let unseen: Vec<MessageKey> = indices
                .iter()
                .filter(|i| !sel.flags[**i].seen)
                .map(|i| sel.entries[*i].1.message)
                .collect();
            if !unseen.is_empty() {
                let seen = Flags {
                    seen: true,
                    ..Flags::default()
                };
                self.ctx
                    .store
                    .store_flags(&agent.login, unseen, FlagOp::Add, seen)
                    .await?;
            }
        }
        // The flags this session holds are current unless written since its last sync
        // (or presence moved): `UID FETCH 1:* (FLAGS)` after SELECT reads none again.
        let flags_written = if sel.synced_at.1 == self.ctx.replying.generation() {
            self.ctx.store.flags_changed_since(sel.synced_at.0)
        } else {
            None
        };
        let mods = if wants_modseq {
            condstore::modseqs(&self.ctx, &agent.login, sel, &indices)?
        } else {
            Vec::new()
        };
        // The message record is read only for the items that need it: `UID FETCH 1:*
        // (FLAGS)`, what every client sends on open, then reads no record at all.
        let needs_meta = names.iter().any(|n| {
            matches!(
                n,
                MessageDataItemName::InternalDate | MessageDataItemName::Rfc822Size
            )
        });
        let mut cursor = FetchCursor {
            names: names.iter().map(ToStatic::to_static).collect(),
            indices,
            mods,
            next: 0,
            needs_meta,
            needs_body,
            marks_seen,
            flags_written,
            updates_at_end: false,
            finished: false,
            // Set by `Session::command` before any later chunk.
            tag: Tag::unvalidated("A"),
        };
        untagged.extend(self.fetch_chunk(&mut cursor)?);
        let mut answer = done(untagged, "FETCH completed");
        if announce {
            let State::Selected(agent, sel) = &self.state else {
                return Err(Refusal::Bad("select a mailbox first".into()));
            };
            let status = condstore::announce_highest(&self.ctx, &agent.login, sel)?;
            answer.untagged_status.push(status);
        }
        if cursor.next < cursor.indices.len() {
            answer.more = Some(cursor);
        }
        Ok(answer)
    }

    /// The next chunk of a FETCH answered in chunks; then, once, the changes held back for
    /// its end (an EXPUNGE between chunks would renumber what is still to come); then
    /// `None`. A failure is the command's tagged NO, to send instead of its OK.
    pub async fn fetch_more(
        &mut self,
        cursor: &mut FetchCursor,
    ) -> Result<Option<Vec<Data<'static>>>, Status<'static>> {
        if cursor.next < cursor.indices.len() {
            return match self.fetch_chunk(cursor) {
                Ok(mut chunk) => {
                    self.announce_keywords(&mut chunk);
                    Ok(Some(chunk))
                }
                Err(refusal) => {
                    cursor.next = cursor.indices.len();
                    cursor.finished = true;
                    Err(respond(cursor.tag.clone(), Err(refusal)).status)
                }
            };
        }
        if cursor.finished {
            return Ok(None);
        }
        cursor.finished = true;
        Ok(Some(if cursor.updates_at_end {
            self.pending_updates().await
        } else {
            Vec::new()
        }))
    }

    /// Renders the next [`FETCH_CHUNK`] messages of `cursor`.
    fn fetch_chunk(&mut self, cursor: &mut FetchCursor) -> Result<Vec<Data<'static>>, Refusal> {
        let State::Selected(agent, sel) = &mut self.state else {
            return Err(Refusal::Bad("select a mailbox first".into()));
        };
        let end = cursor.indices.len().min(cursor.next + FETCH_CHUNK);
        let mut untagged = Vec::with_capacity(end - cursor.next);
        let (needs_meta, needs_body, marks_seen) =
            (cursor.needs_meta, cursor.needs_body, cursor.marks_seen);
        for n in cursor.next..end {
            let index = cursor.indices[n];
            let Some(&(uid_value, entry)) = sel.entries.get(index) else {
                continue;
            };
            let meta = if needs_meta {
                self.ctx.store.message_meta(entry.message)?
            } else {
                None
            };
            let raw = if needs_body {
                self.ctx.store.read_message(entry.message)?
            } else {
                Vec::new()
            };
            let rendered = needs_body.then(|| Rendered::new(&raw));
            let mut out = Vec::with_capacity(cursor.names.len());
            let mut flags_sent = false;
            for name in &cursor.names {
                let item = match name {
                    MessageDataItemName::Uid => MessageDataItem::Uid(nz(uid_value)),
                    MessageDataItemName::Flags => {
                        flags_sent = true;
                        let known = cursor
                            .flags_written
                            .as_ref()
                            .is_some_and(|w| !w.contains(&entry.message));
                        let flags = match sel.flags.get(index) {
                            Some(told) if known => told.clone(),
                            _ => shown_flag(&self.ctx, &agent.login, (uid_value, entry))?,
                        };
                        sel.flags[index] = flags.clone();
                        MessageDataItem::Flags(flag_list(&flags, sel.recent.contains(&uid_value)))
                    }
                    MessageDataItemName::InternalDate => MessageDataItem::InternalDate(
                        internal_date(meta.as_ref().map(|m| m.received_at).unwrap_or(0)),
                    ),
                    MessageDataItemName::Rfc822Size => MessageDataItem::Rfc822Size(
                        u32::try_from(meta.as_ref().map(|m| m.size).unwrap_or(0))
                            .unwrap_or(u32::MAX),
                    ),
                    MessageDataItemName::Envelope => match &rendered {
                        Some(r) => MessageDataItem::Envelope(r.envelope()),
                        None => continue,
                    },
                    MessageDataItemName::BodyStructure => match &rendered {
                        Some(r) => MessageDataItem::BodyStructure(r.body_structure(true)),
                        None => continue,
                    },
                    MessageDataItemName::Body => match &rendered {
                        Some(r) => MessageDataItem::Body(r.body_structure(false)),
                        None => continue,
                    },
                    MessageDataItemName::BodyExt {
                        section,
                        partial: part,
                        ..
                    } => {
                        let Some(r) = &rendered else { continue };
                        let bytes = r.section(section.as_ref());
                        let (origin, data) = match part {
                            Some((origin, length)) => (
                                Some(*origin),
                                partial(&bytes, *origin, length.get()).to_vec(),
                            ),
                            None => (None, bytes),
                        };
                        MessageDataItem::BodyExt {
                            section: section.as_ref().map(ToStatic::to_static),
                            origin,
                            data: nstring(data),
                        }
                    }
                    MessageDataItemName::ModSeq => match cursor.mods.get(n) {
                        Some(m) => condstore::modseq_item(*m),
                        None => continue,
                    },
                    MessageDataItemName::Rfc822 => MessageDataItem::Rfc822(nstring(raw.clone())),
                    MessageDataItemName::Rfc822Header => match &rendered {
                        Some(r) => MessageDataItem::Rfc822Header(nstring(
                            r.section(Some(&header_section())),
                        )),
                        None => continue,
                    },
                    MessageDataItemName::Rfc822Text => match &rendered {
                        Some(r) => {
                            MessageDataItem::Rfc822Text(nstring(r.section(Some(&text_section()))))
                        }
                        None => continue,
                    },
                    // RFC 3516 §4.2.
                    MessageDataItemName::Binary {
                        section,
                        partial: part,
                        ..
                    } => {
                        let Some(r) = &rendered else { continue };
                        let bytes = binary::binary(r, &raw, section).map_err(unknown_cte)?;
                        let data = match part {
                            Some((origin, length)) => {
                                partial(&bytes, *origin, length.get()).to_vec()
                            }
                            None => bytes,
                        };
                        MessageDataItem::Binary {
                            section: section.clone(),
                            value: binary::value(data),
                        }
                    }
                    MessageDataItemName::BinarySize { section } => {
                        let Some(r) = &rendered else { continue };
                        let bytes = binary::binary(r, &raw, section).map_err(unknown_cte)?;
                        MessageDataItem::BinarySize {
                            section: section.clone(),
                            size: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
                        }
                    }
                };
                out.push(item);
            }
            if marks_seen && !flags_sent {
                let flags = shown_flag(&self.ctx, &agent.login, (uid_value, entry))?;
                if flags != sel.flags[index] {
                    sel.flags[index] = flags.clone();
                    out.push(MessageDataItem::Flags(flag_list(
                        &flags,
                        sel.recent.contains(&uid_value),
                    )));
                }
            }
            if let Ok(items) = Vec1::try_from(out) {
                untagged.push(Data::Fetch {
                    seq: seq_of(index),
                    items,
                });
            }
        }
        cursor.next = end;
        Ok(untagged)
    }
}

/// Messages rendered per chunk of a FETCH: a FETCH of a whole mailbox holds this many
/// responses in memory at once, not one per message.
const FETCH_CHUNK: usize = 500;

fn unknown_cte(e: binary::UnknownCte) -> Refusal {
    no(Some("UNKNOWN-CTE"), e.0)
}
