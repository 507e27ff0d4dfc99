//! APPEND, and `intake`: a message an agent puts into a team inbox enters as if it came
//! by SMTP (SPEC §5); into `Drafts` it may mark a reply in progress, into `Sent` it logs.
//!
//! A copy APPENDed to `Sent` of a reply submitted here is not stored again: the client's
//! flags go on the logged reply (per agent where they are per agent), and APPENDUID
//! names that reply, i.e. the message as it was sent, with teamgate's changes (`[#n]` in
//! the subject, `X-Loop`, expanded placeholders), not the appended bytes.

use std::num::NonZeroU32;

use imap_codec::imap_types::{
    datetime::DateTime,
    extensions::binary::LiteralOrLiteral8,
    flag::Flag,
    mailbox::Mailbox,
    response::{Code, Status},
};

use crate::{
    imap::{
        mailbox::{Gesture, Target},
        session::{Outcome, Refusal, Session, bad, done, no},
        wire::flags_of,
    },
    mail::envelope::{Envelope, Recipient},
    store::{FlagOp, Flags, MessageKey, TeamView},
};

impl Session {
    pub(in crate::imap) async fn handle_append(
        &mut self,
        mailbox: &Mailbox<'_>,
        flags: &[Flag<'_>],
        date: Option<DateTime>,
        message: LiteralOrLiteral8<'_>,
    ) -> Outcome {
        let raw = match message {
            LiteralOrLiteral8::Literal(l) => l.data().to_vec(),
            LiteralOrLiteral8::Literal8(l) => l.data.to_vec(),
        };
        let date = date.map(|d| d.as_ref().timestamp());
        let name = &self.mailbox_arg(mailbox)?;
        let info = self
            .lookup(name)
            .map_err(|_| no(Some("TRYCREATE"), format!("no mailbox {name}")))?;
        if !info.writable {
            return Err(no(
                Some("NOPERM"),
                format!("{} is read-only for you", info.name),
            ));
        }
        let max = self.config.smtp.max_message_size;
        if raw.len() > max {
            return Err(no(Some("TOOBIG"), format!("message exceeds {max} bytes")));
        }
        let mut completed = "APPEND completed";
        let (validity, uid) = match &info.target {
            Some(Target::Folder(folder)) => {
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                let date = date.unwrap_or(now);
                let login = self.agent()?.login.clone();
                let draft = (folder.owner == login && folder.name == "Drafts").then(|| raw.clone());
                // Parsing sees client bytes: off the async threads.
                let (raw, summary) = tokio::task::spawn_blocking(move || {
                    let summary = crate::message::folder_summary(&raw);
                    (raw, summary)
                })
                .await
                .map_err(|e| Refusal::Bad(format!("message not parsed: {e}")))?;
                let (validity, uid) = self
                    .ctx
                    .store
                    .folder_append(folder, raw, summary, flags_of(flags), date)
                    .await?;
                // A reply draft: teammates see `$Replying` on its conversation for a while.
                if let Some(draft) = draft
                    && let Some(conv) = self.ctx.submit.draft_conversation(&login, draft).await
                {
                    let window = self.config.workflow.collision_window.as_secs() as i64;
                    self.ctx
                        .replying
                        .draft_saved(conv, &login, uid, now + window);
                }
                (validity, uid)
            }
            Some(Target::Team(view))
                if matches!(
                    self.agent()?.boxes.gesture(&info.name),
                    Some(Gesture::Open | Gesture::OpenIn(_))
                ) =>
            {
                let key = self.intake(&info.name, raw).await?;
                let snapshot = self.ctx.store.sync_view(view).await?;
                let uid = key
                    .and_then(|k| {
                        snapshot
                            .entries
                            .iter()
                            .rev()
                            .find(|(_, e)| e.message == k)
                            .map(|(u, _)| *u)
                    })
                    .unwrap_or(0);
                (snapshot.uid_validity, uid)
            }
            Some(Target::Team(view @ TeamView::Sent { .. })) => {
                // The client's copy of a reply it just submitted: recognised by Message-ID
                // and not stored twice; a message sent some other way is logged as sent.
                let agent = self.agent()?.login.clone();
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                let (key, recognised) = self
                    .ctx
                    .submit
                    .record_sent_copy(&agent, raw, now)
                    .await
                    .map_err(|r| no(None, r.text))?;
                // RFC 3501 §6.3.11: the flags the client appends with (Thunderbird's
                // `\Seen`) are set on the stored copy, per agent where they are per agent.
                let wanted = flags_of(flags);
                if wanted != Flags::default() {
                    self.ctx
                        .store
                        .store_flags(&agent, vec![key], FlagOp::Add, wanted)
                        .await?;
                }
                if recognised {
                    completed = "APPEND completed (logged when it was sent; Sent keeps that copy)";
                }
                let snapshot = self.ctx.store.sync_view(view).await?;
                let uid = snapshot
                    .entries
                    .iter()
                    .rev()
                    .find(|(_, e)| e.message == key)
                    .map(|(u, _)| *u)
                    .unwrap_or(0);
                (snapshot.uid_validity, uid)
            }
            _ => {
                return Err(no(
                    Some("CANNOT"),
                    format!("messages cannot be appended to {}", info.name),
                ));
            }
        };
        let untagged = self.sync().await?;
        let mut answer = done(untagged, completed);
        // RFC 4315 §3: APPENDUID names the stored message; for a recognised Sent copy that
        // is the message as sent, whose bytes may differ from the appended ones.
        if let (Some(uid_validity), Some(uid)) = (NonZeroU32::new(validity), NonZeroU32::new(uid)) {
            answer.status =
                Status::ok(None, Some(Code::AppendUid { uid_validity, uid }), completed)
                    .map_err(bad)?;
        }
        Ok(answer)
    }

    /// A message entering a team inbox as if it arrived by SMTP, credited to its From.
    pub(super) async fn intake(
        &self,
        target: &str,
        raw: Vec<u8>,
    ) -> Result<Option<MessageKey>, Refusal> {
        let agent = self.agent()?;
        let inbox = match agent.boxes.gesture(target) {
            Some(Gesture::OpenIn(inbox)) => inbox,
            // INBOX: the agent's first inbox.
            _ => agent
                .boxes
                .member_of
                .first()
                .cloned()
                .ok_or_else(|| no(Some("NOPERM"), "you are in no inbox"))?,
        };
        if !agent.boxes.member_of.contains(&inbox) {
            return Err(no(
                Some("NOPERM"),
                format!("you are not a member of {inbox}"),
            ));
        }
        let address = self
            .config
            .inbox(&inbox)
            .and_then(|i| i.addresses.first().cloned())
            .ok_or_else(|| no(None, format!("inbox {inbox} has no address")))?;
        // Credited to its own From (SPEC §5), not to a null sender (which would make it
        // look like a bounce).
        let from = mail_parser::MessageParser::default()
            .parse_headers(&raw)
            .and_then(|m| {
                m.from()
                    .and_then(|a| a.first())
                    .and_then(|a| a.address())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let envelope = Envelope {
            mail_from: from,
            rcpts: vec![Recipient {
                address,
                inbox: Some(inbox),
                tag: None,
            }],
            smtputf8: true,
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        // An agent's deliberate intake: not filtered, no trace header of ours.
        match self.ctx.ingest.deliver(&envelope, raw, "", None, now).await {
            Ok(accepted) => Ok(accepted.message()),
            Err(e) => Err(no(None, format!("message refused: {e}"))),
        }
    }
}
