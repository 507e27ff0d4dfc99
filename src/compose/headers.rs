//! The header plan of an outgoing reply: the `[#n]` subject tag, the Outlook
//! Thread-Index extended by one child block, `X-Loop`, and `In-Reply-To`/`References`.
//! The vocabulary (tags, Thread-Index bytes, ids) is `crate::mail`'s; this file decides
//! which headers a reply gets.

use mail_builder::headers::Header as _;
use mail_parser::Message;

use crate::mail::{
    message_id,
    subject::tag_subject,
    thread_index::{self, THREAD_KEY_LEN},
};

use super::mime_edit::{
    Edit, field_ranges, header_insert_point, set_field, simple_field, with_eol,
};
use super::placeholders::{Budget, expand_inner, one_line};
use super::{ComposeError, Context, HeaderPlan};

pub(super) fn plan_edits(
    raw: &[u8],
    msg: &Message<'_>,
    ctx: &Context<'_>,
    plan: &HeaderPlan<'_>,
    eol: &str,
    budget: &mut Budget,
    edits: &mut Vec<Edit>,
) -> Result<(), ComposeError> {
    let root = msg
        .parts
        .first()
        .ok_or_else(|| ComposeError::Unparseable("no parts".into()))?;
    let (insert_at, _) = header_insert_point(raw, root);
    let insert = |bytes: Vec<u8>, edits: &mut Vec<Edit>| {
        edits.push(Edit {
            start: insert_at,
            end: insert_at,
            bytes,
        });
    };

    // Subject.
    let old = msg.subject().unwrap_or_default();
    let mut subject = one_line(&expand_inner(old, ctx, false, budget, None)?);
    if let Some(n) = plan.subject_tag {
        subject = tag_subject(&subject, n);
    }
    if subject != old {
        let mut f = b"Subject: ".to_vec();
        mail_builder::headers::text::Text::new(subject.as_str()).write_header(&mut f, 9);
        let f = with_eol(f, eol);
        if field_ranges(root, "Subject").is_empty() {
            insert(f, edits);
        } else {
            set_field(root, "Subject", Some(f), insert_at, edits);
        }
    }

    // Thread-Index.
    if let Some(key) = plan.thread_index.filter(|k| k.len() >= THREAD_KEY_LEN) {
        let key = &key[..THREAD_KEY_LEN];
        let client = msg
            .header_raw("Thread-Index")
            .and_then(thread_index::decode);
        if client.as_deref().and_then(|c| c.get(..THREAD_KEY_LEN)) != Some(key) {
            let now = msg
                .date()
                .map(|d| d.to_timestamp())
                .or_else(|| thread_index::header_unix(key))
                .unwrap_or(0);
            let f = simple_field("Thread-Index", &thread_index::extend(Some(key), now), eol);
            if field_ranges(root, "Thread-Index").is_empty() {
                insert(f, edits);
            } else {
                set_field(root, "Thread-Index", Some(f), insert_at, edits);
            }
        }
    }

    // X-Loop.
    let x_loop = one_line(plan.x_loop).trim().to_string();
    if !x_loop.is_empty() {
        let present = root.headers.iter().any(|h| {
            h.name.as_str().eq_ignore_ascii_case("X-Loop")
                && h.value
                    .as_text()
                    .is_some_and(|v| v.trim().eq_ignore_ascii_case(&x_loop))
        });
        if !present {
            insert(simple_field("X-Loop", &x_loop, eol), edits);
        }
    }

    // In-Reply-To / References.
    if let Some((irt, refs)) = &plan.references {
        let has = !field_ranges(root, "In-Reply-To").is_empty()
            || !field_ranges(root, "References").is_empty();
        let irt = message_id::header_form(irt);
        if !has && !irt.is_empty() {
            insert(simple_field("In-Reply-To", &format!("<{irt}>"), eol), edits);
            let mut ids: Vec<String> = refs
                .iter()
                .map(|r| message_id::header_form(r))
                .filter(|r| !r.is_empty())
                .collect();
            if !ids.contains(&irt) {
                ids.push(irt);
            }
            let skip = ids.len().saturating_sub(50);
            let mut line = String::from("References:");
            let mut col = line.len();
            for id in ids.iter().skip(skip) {
                let w = id.len() + 3;
                if col + w > 76 && col > "References:".len() {
                    line.push_str(eol);
                    col = 0;
                }
                line.push_str(" <");
                line.push_str(id);
                line.push('>');
                col += w;
            }
            line.push_str(eol);
            insert(line.into_bytes(), edits);
        }
    }
    Ok(())
}
