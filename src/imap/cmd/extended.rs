//! Answers to the extended commands of `imap/extended.rs`: LIST-EXTENDED with SPECIAL-USE
//! and LIST-STATUS, ESEARCH and MULTIAPPEND. imap-codec 2.0.0-alpha.10 has no types for a LIST
//! response's extended data (CHILDINFO) or for ESEARCH, so these answers are encoded here:
//! what imap-codec can encode (LIST, STATUS, statuses) it encodes, and only the extension
//! parts are written by hand.

use std::collections::HashSet;

use imap_codec::{
    ResponseCodec,
    encode::Encoder,
    imap_types::{
        IntoStatic,
        command::CommandBody,
        core::{QuotedChar, Tag},
        flag::FlagNameAttribute,
        mailbox::Mailbox,
        response::{Code, CodeOther, Data, Response, Status},
    },
};

use super::folders::attributes;
use crate::imap::{
    extended::{ExtCommand, Extended, ListExtended, SearchReturn},
    mailbox::{self, Target},
    session::{Refusal, Session, bad, no, respond},
    wire::attribute,
};

impl Session {
    /// Runs an extended command; returns its metrics name and the encoded answer, which
    /// the driver writes as is.
    pub async fn extended(&mut self, command: Extended) -> (&'static str, Vec<u8>) {
        let Extended { tag, command } = command;
        let (name, outcome) = match command {
            ExtCommand::List(list) => ("LIST", self.list_extended(list).await),
            ExtCommand::Search { uid, returns, base } => (
                if uid { "UID SEARCH" } else { "SEARCH" },
                self.esearch(&tag, uid, returns, base).await,
            ),
            ExtCommand::MultiAppend(messages) => ("APPEND", self.multi_append(messages).await),
            ExtCommand::Append(append) => ("APPEND", self.utf8_append(append).await),
        };
        let mut out = Vec::new();
        match outcome {
            Ok(Done { lines, code, text }) => {
                for line in lines {
                    out.extend_from_slice(&line);
                }
                let status = Status::ok(Some(tag), code, text).map_err(bad);
                match status {
                    Ok(status) => out.extend(encode(&Response::Status(status))),
                    Err(_) => out.extend_from_slice(b"* BAD status\r\n"),
                }
            }
            Err(refusal) => {
                out.extend(encode(&Response::Status(respond(tag, Err(refusal)).status)))
            }
        }
        (name, out)
    }

    /// RFC 5258 with RFC 6154 §3 (SPECIAL-USE) and RFC 5819 (STATUS return option).
    async fn list_extended(&mut self, list: ListExtended) -> Result<Done, Refusal> {
        let ListExtended {
            selection,
            reference,
            patterns,
            returns,
        } = list;
        let reference = self.mailbox_arg(&reference)?;
        let patterns = patterns
            .iter()
            .map(|p| self.pattern_arg(p))
            .collect::<Result<Vec<String>, Refusal>>()?;
        let delimiter = QuotedChar::try_from(mailbox::DELIMITER).ok();
        if patterns.iter().all(String::is_empty) {
            // RFC 5258 §3: an empty pattern still asks for the delimiter (RFC 3501 §6.3.8).
            let data = Data::List {
                items: vec![FlagNameAttribute::Noselect],
                delimiter,
                mailbox: Mailbox::try_from("").map_err(bad)?,
            };
            return Ok(Done::new(
                vec![encode(&Response::Data(data))],
                "LIST completed",
            ));
        }
        let boxes = self.mailboxes()?;
        let subscribed = self.subscribed(&boxes)?;
        let subscribed_set: HashSet<&str> = subscribed.iter().map(String::as_str).collect();
        let is_subscribed = |name: &str| subscribed_set.contains(name);
        let matches = |name: &str| {
            patterns
                .iter()
                .any(|p| mailbox::wildcard_match(&format!("{reference}{p}"), name))
        };
        // RFC 5258 §3.5: a subscribed descendant that the patterns do not list itself.
        let unlisted_subscribed_child = |name: &str| {
            let prefix = format!("{name}{}", mailbox::DELIMITER);
            subscribed
                .iter()
                .any(|s| s.starts_with(&prefix) && !matches(s))
        };
        // Names to consider, in mailbox order: the mailboxes, then (for the SUBSCRIBED
        // selection) subscribed names whose mailbox is gone and, with RECURSIVEMATCH,
        // their parents (RFC 5258 §3.1, §3.5).
        let mut candidates: Vec<(String, Option<&mailbox::MailboxInfo>)> =
            boxes.iter().map(|b| (b.name.clone(), Some(b))).collect();
        let mut known: HashSet<String> = candidates.iter().map(|(n, _)| n.clone()).collect();
        // RFC 3501 §6.3.8: with `%`, the levels above a mailbox that are no mailbox
        // themselves are listed too (here \NonExistent \HasChildren, RFC 5258 §3.4).
        let percent = patterns.iter().any(|p| p.contains('%'));
        if percent {
            for b in &boxes {
                let mut parent = String::new();
                let segments: Vec<&str> = b.name.split(mailbox::DELIMITER).collect();
                for segment in segments.iter().take(segments.len().saturating_sub(1)) {
                    if !parent.is_empty() {
                        parent.push(mailbox::DELIMITER);
                    }
                    parent.push_str(segment);
                    if known.insert(parent.clone()) {
                        candidates.push((parent.clone(), None));
                    }
                }
            }
        }
        if selection.subscribed {
            for name in &subscribed {
                let mut parent = String::new();
                for segment in name.split(mailbox::DELIMITER) {
                    if !parent.is_empty() {
                        parent.push(mailbox::DELIMITER);
                    }
                    parent.push_str(segment);
                    let wanted = &parent == name || selection.recursive_match;
                    if wanted && known.insert(parent.clone()) {
                        candidates.push((parent.clone(), None));
                    }
                }
            }
        }
        let mut lines = Vec::new();
        for (name, info) in candidates {
            if !matches(&name) {
                continue;
            }
            if selection.special_use && info.is_none_or(|b| b.special_use.is_none()) {
                continue;
            }
            let subscribed_here = is_subscribed(&name);
            let child_info = selection.recursive_match && unlisted_subscribed_child(&name);
            // RFC 5258 §3.1: the SUBSCRIBED selection lists subscribed names, and with
            // RECURSIVEMATCH also the parents of subscribed names it does not list.
            if selection.subscribed && !subscribed_here && !child_info {
                continue;
            }
            // RFC 5258 §4 and RFC 6154 §2: CHILDREN and special-use attributes are sent
            // whether or not asked for; a subscribed name without a mailbox is
            // \NonExistent (§3.4).
            let mut items = match info {
                Some(b) => attributes(b, &boxes),
                None => {
                    let prefix = format!("{name}{}", mailbox::DELIMITER);
                    let mut items = vec![attribute("NonExistent")];
                    if boxes.iter().any(|b| b.name.starts_with(&prefix)) {
                        items.push(attribute("HasChildren"));
                    }
                    items
                }
            };
            // RFC 5258 §3.1/§3.3: \Subscribed when SUBSCRIBED is selected or returned.
            if (selection.subscribed || returns.subscribed) && subscribed_here {
                items.push(attribute("Subscribed"));
            }
            let wire = self.wire_mailbox(&name)?;
            let mut line = encode(&Response::Data(Data::List {
                items,
                delimiter,
                mailbox: wire.clone(),
            }));
            if child_info {
                // `mbox-list-extended` after the name.
                line.truncate(line.len().saturating_sub(2));
                line.extend_from_slice(b" (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\n");
            }
            lines.push(line);
            // RFC 5819 §2: a STATUS for each selectable mailbox listed, right after its
            // LIST; a mailbox whose STATUS fails is listed without one.
            if let Some(items) = &returns.status
                && let Some(b) = info
                && !b.no_select
                && b.target.is_some()
                && let Ok(answer) = self.handle_status(&wire, items).await
            {
                for data in answer.untagged {
                    lines.push(encode(&Response::Data(data)));
                }
            }
        }
        Ok(Done::new(lines, "LIST completed"))
    }

    /// RFC 6855 §4: one message sent as `UTF8 (~{n})`, appended like any other.
    async fn utf8_append(&mut self, append: CommandBody<'static>) -> Result<Done, Refusal> {
        let CommandBody::Append {
            mailbox,
            flags,
            date,
            message,
        } = append
        else {
            return Err(Refusal::Bad("not an APPEND".into()));
        };
        let answer = self.handle_append(&mailbox, &flags, date, message).await?;
        let lines = answer
            .untagged
            .into_iter()
            .map(|d| encode(&Response::Data(d)))
            .collect();
        Ok(Done {
            lines,
            code: answer.status.code().cloned().map(IntoStatic::into_static),
            text: "APPEND completed",
        })
    }

    /// RFC 3502: every message appended, or none. Only into private folders, where an
    /// append can be taken back; a team mailbox's intake cannot.
    async fn multi_append(&mut self, messages: Vec<CommandBody<'static>>) -> Result<Done, Refusal> {
        let mut appends = Vec::with_capacity(messages.len());
        for m in messages {
            if let CommandBody::Append {
                mailbox,
                flags,
                date,
                message,
            } = m
            {
                appends.push((mailbox, flags, date, message));
            }
        }
        let Some((mailbox, ..)) = appends.first() else {
            return Err(Refusal::Bad("APPEND needs a message".into()));
        };
        let name = self.mailbox_arg(mailbox)?;
        let info = self
            .lookup(&name)
            .map_err(|_| no(Some("TRYCREATE"), format!("no mailbox {name}")))?;
        let Some(Target::Folder(folder)) = info.target.clone() else {
            return Err(no(
                Some("CANNOT"),
                format!("{}: append several messages one at a time here", info.name),
            ));
        };
        let mut lines = Vec::new();
        let mut uids = Vec::new();
        let mut validity = None;
        for (mailbox, flags, date, message) in appends {
            match self.handle_append(&mailbox, &flags, date, message).await {
                Ok(answer) => {
                    lines.extend(
                        answer
                            .untagged
                            .into_iter()
                            .map(|d| encode(&Response::Data(d))),
                    );
                    if let Some(Code::AppendUid { uid_validity, uid }) = answer.status.code() {
                        validity = Some(*uid_validity);
                        uids.push(uid.get());
                    }
                }
                Err(refusal) => {
                    // None (a store failure mid-way; sizes are bounded by the literal limit
                    // before we see the command): take back what was stored, unannounced.
                    if !uids.is_empty() {
                        self.ctx.store.folder_expunge(&folder, uids).await?;
                        self.sync().await?;
                    }
                    return Err(refusal);
                }
            }
        }
        let mut done = Done::new(lines, "APPEND completed");
        // RFC 4315 §3: APPENDUID with the set of new UIDs.
        if let Some(validity) = validity {
            uids.sort_unstable();
            let code = format!("APPENDUID {validity} {}", sequence_set(&uids));
            done.code = Some(Code::Other(CodeOther::unvalidated(code.into_bytes())));
        }
        Ok(done)
    }

    /// RFC 4731 §3.1: the base SEARCH, answered as one ESEARCH response.
    async fn esearch(
        &mut self,
        tag: &Tag<'static>,
        uid: bool,
        returns: SearchReturn,
        base: CommandBody<'static>,
    ) -> Result<Done, Refusal> {
        let CommandBody::Search {
            charset, criteria, ..
        } = base
        else {
            return Err(Refusal::Bad("not a SEARCH".into()));
        };
        let answer = self.handle_search(charset, &criteria, uid).await?;
        let mut hits: Vec<u32> = Vec::new();
        let mut with_modseq = false;
        let mut lines = Vec::new();
        for data in answer.untagged {
            match data {
                Data::Search(found, modseq) => {
                    hits.extend(found.iter().map(|n| n.get()));
                    with_modseq |= modseq.is_some();
                }
                other => lines.push(encode(&Response::Data(other))),
            }
        }
        hits.sort_unstable();
        // RFC 7162 §3.1.5: with a MODSEQ criterion, ESEARCH names the highest
        // mod-sequence of the messages it reports (with only MIN/MAX: just those).
        let modseq = if with_modseq && !hits.is_empty() {
            let reported: Vec<u32> = if returns.all || returns.count {
                hits.clone()
            } else {
                let mut ends = Vec::new();
                if returns.min {
                    ends.push(hits[0]);
                }
                if returns.max {
                    ends.push(hits[hits.len() - 1]);
                }
                ends
            };
            Some(self.highest_modseq_of(uid, &reported)?)
        } else {
            None
        };
        lines.push(esearch_line(tag, uid, returns, &hits, modseq));
        Ok(Done::new(lines, "SEARCH completed"))
    }

    /// The highest mod-sequence among these sequence numbers (or UIDs) of the selected
    /// mailbox, for this agent.
    fn highest_modseq_of(&self, uid: bool, numbers: &[u32]) -> Result<u64, Refusal> {
        let login = self.agent()?.login.clone();
        let sel = self.selected()?;
        let indices: Vec<usize> = numbers
            .iter()
            .filter_map(|&n| {
                if uid {
                    // Entries are in UID order (sequence numbers follow UIDs).
                    sel.entries.binary_search_by_key(&n, |(u, _)| *u).ok()
                } else {
                    usize::try_from(n).ok()?.checked_sub(1)
                }
            })
            .filter(|&i| i < sel.entries.len())
            .collect();
        let mods = super::condstore::modseqs(&self.ctx, &login, sel, &indices)?;
        Ok(mods.into_iter().max().unwrap_or(0))
    }
}

/// An extended command's success: its untagged lines and the tagged OK's code and text.
struct Done {
    lines: Vec<Vec<u8>>,
    code: Option<Code<'static>>,
    text: &'static str,
}

impl Done {
    fn new(lines: Vec<Vec<u8>>, text: &'static str) -> Done {
        Done {
            lines,
            code: None,
            text,
        }
    }
}

/// `* ESEARCH (TAG "t") [UID] [MIN n] [MAX n] [COUNT n] [ALL set]` (RFC 4731 §3.1/§7);
/// `hits` ascending. With no hits only COUNT is sent.
fn esearch_line(
    tag: &Tag<'_>,
    uid: bool,
    returns: SearchReturn,
    hits: &[u32],
    modseq: Option<u64>,
) -> Vec<u8> {
    // Tags are atoms without `"` or `\` (RFC 3501 §9 `tag`), so they quote as they are.
    let mut line = format!("* ESEARCH (TAG \"{}\")", tag.as_ref());
    if uid {
        line.push_str(" UID");
    }
    if let (Some(min), Some(max)) = (hits.first(), hits.last()) {
        if returns.min {
            line.push_str(&format!(" MIN {min}"));
        }
        if returns.max {
            line.push_str(&format!(" MAX {max}"));
        }
    }
    if returns.count {
        line.push_str(&format!(" COUNT {}", hits.len()));
    }
    if returns.all && !hits.is_empty() {
        line.push_str(" ALL ");
        line.push_str(&sequence_set(hits));
    }
    if let Some(modseq) = modseq {
        line.push_str(&format!(" MODSEQ {modseq}"));
    }
    line.push_str("\r\n");
    line.into_bytes()
}

/// `hits` (ascending) as a compact sequence-set: runs become ranges.
fn sequence_set(hits: &[u32]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < hits.len() {
        let start = hits[i];
        let mut end = start;
        while i + 1 < hits.len() && hits[i + 1] == end.saturating_add(1) {
            i += 1;
            end = hits[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}:{end}")
        });
        i += 1;
    }
    parts.join(",")
}

fn encode(response: &Response<'_>) -> Vec<u8> {
    ResponseCodec::default().encode(response).dump()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_become_ranges() {
        assert_eq!(sequence_set(&[1, 2, 3, 5, 7, 8]), "1:3,5,7:8");
        assert_eq!(sequence_set(&[4]), "4");
        assert_eq!(sequence_set(&[]), "");
    }

    #[test]
    fn esearch_sends_only_count_without_hits() {
        let tag = Tag::try_from("a1").unwrap();
        let all = SearchReturn {
            min: true,
            max: true,
            count: true,
            all: true,
        };
        let line = String::from_utf8(esearch_line(&tag, true, all, &[], None)).unwrap();
        assert_eq!(line, "* ESEARCH (TAG \"a1\") UID COUNT 0\r\n");
        let line = String::from_utf8(esearch_line(&tag, false, all, &[2, 3, 9], Some(7))).unwrap();
        assert_eq!(
            line,
            "* ESEARCH (TAG \"a1\") MIN 2 MAX 9 COUNT 3 ALL 2:3,9 MODSEQ 7\r\n"
        );
    }
}
