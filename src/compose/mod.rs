//! Reply composition for submitted mail (SPEC §6): email commands at the top of the
//! reply, placeholder and snippet expansion, and the outgoing header plan (`[#n]` subject
//! tag, Outlook `Thread-Index`, `X-Loop`, `In-Reply-To`/`References`).
//!
//! Pure: no I/O, no clock (snippets come in through [`Context::snippets`], the time for
//! the Thread-Index extension is the message's own `Date`). Never panics on input and
//! bounds its work.
//!
//! # Layout
//! This file holds the entry points ([`prepare`], [`expand`]), the shared types and the
//! order of one rewrite; the work is done in:
//! - `commands`: the email command block at the top of a text or HTML body, and the
//!   commands-only check.
//! - `placeholders`: `{{…}}` parsing and expansion, snippets, the per-message budget.
//! - `html`: the small HTML tokenizer behind the commands of an HTML body.
//! - `encode`: transfer-encoding writers (quoted-printable, base64, line ends).
//! - `mime_edit`: byte edits of the raw message: header fields and body text parts.
//! - `headers`: the header plan (`[#n]` subject tag, Thread-Index, `X-Loop`,
//!   `In-Reply-To`/`References`).
//!
//! # How a message is rewritten
//! mail-parser gives the MIME structure and the raw offsets of every top-level part; only
//! what must change is replaced, everything else is copied byte for byte:
//! - *Body text parts* are the `text/plain` and `text/html` parts of the top-level message
//!   that are not attachments (no `Content-Disposition: attachment`, no file name). Parts
//!   of an enclosed `message/rfc822` are never touched, nor is any other part.
//! - A body part whose text does not change keeps its bytes. A changed one gets a new
//!   body in its original transfer encoding (base64 stays base64, quoted-printable stays
//!   quoted-printable, 7bit/absent becomes quoted-printable once the text is 8-bit or has
//!   over-long lines, 8bit stays 8bit unless lines are over-long); its text is always
//!   written as UTF-8, and `charset=utf-8` is set unless the text is ASCII and the
//!   declared charset is ASCII-compatible. Only the part's `Content-Type` /
//!   `Content-Transfer-Encoding` fields change (plus `MIME-Version` for a bare RFC 5322
//!   message that gains MIME fields).
//! - The top-level header keeps its bytes except the fields of the header plan.
//!
//! # Decisions
//! - Commands come from the first body `text/plain` part; only when there is none from
//!   the first `text/html` part (its visible lines). When the plain part had commands, the
//!   HTML alternative's identical leading command lines are removed too.
//! - A line at the top whose first word is `#` + letters is a command line; an unknown
//!   keyword, `#assign` without exactly one login, or extra words after
//!   `#close`/`#unassign`/`#note` is [`ComposeError::UnknownCommand`]. `#1`, `#!`, `#foo!`
//!   are ordinary text and end the block. The command lines and the blank lines around
//!   them are removed.
//! - Commands-only: the text left after the commands has nothing but blank lines, quoted
//!   history (`>` lines, an attribution line ending in `:` before quoted lines, an Outlook
//!   `-----Original Message-----` / `From:`…`Sent:` block, quoted HTML `<blockquote>`) or
//!   a signature after `-- `, and the message has no attachment (inline images do not
//!   count). Rationale: clients auto-quote and auto-sign; the customer must not get their
//!   own mail back just because the agent typed `#close`.
//! - Placeholders: `{{` optional blanks, an identifier `[A-Za-z_][A-Za-z0-9_.-]*` (keys are
//!   case-insensitive) or `snippet:NAME`, optional blanks, `}}`. Any other `{{…}}` is
//!   left alone (`{{{x}}}` expands the inner `{{x}}`). Every identifier-like body must be
//!   known — also in quoted history — so a typo never reaches a customer.
//! - Snippets: trailing line breaks of the file are dropped; their placeholders are
//!   expanded, a snippet inside a snippet is an error (no recursion). Placeholder values
//!   are single-line (CR/LF become spaces) everywhere; in HTML all inserted text is
//!   escaped and snippet line breaks become `<br>`.
//! - Subject: placeholders expanded, then the tag goes after the reply/forward prefixes
//!   (as classified by `threading::subject_prefixes`); an existing `[#n]` for this
//!   conversation is kept, other `[#m]` tags are removed. Rewritten only when changed.
//! - Thread-Index: kept when the client's header already belongs to the conversation (its
//!   first 22 bytes equal the key); otherwise replaced by the key extended by one child
//!   block for the message's `Date` (no Date: a zero delta).
//! - `In-Reply-To`/`References` are added only when the client sent neither; the
//!   in-reply-to id is appended to References when missing.

mod commands;
mod encode;
mod headers;
mod html;
mod mime_edit;
mod placeholders;

use std::collections::HashMap;

use mail_parser::MessageParser;

use commands::{html_commands, text_commands};
use headers::plan_edits;
use mime_edit::{
    apply_edits, detect_eol, has_attachment, header_insert_point, is_body_text, part_text,
    rewrite_part,
};
use placeholders::{Budget, expand_inner};

/// Biggest message accepted, in bytes.
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// An email command from the top of a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `#assign LOGIN` (the login as written, without a leading `@`).
    Assign(String),
    /// `#unassign`
    Unassign,
    /// `#close`
    Close,
    /// `#note`: the message is an internal comment.
    Note,
    /// `#merge 123`: conversation 123's messages move into this one (SPEC §4).
    Merge(u64),
    /// `#split`: a new conversation from the message this replies to onward.
    Split,
}

/// Why a submission cannot be prepared; each maps to a `550` naming the culprit.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    /// An unknown or malformed command line (the line, shortened).
    #[error("unknown email command: {0}")]
    UnknownCommand(String),
    /// An identifier-like `{{…}}` that is not a known placeholder.
    #[error("unknown placeholder {{{{{0}}}}}")]
    UnknownPlaceholder(String),
    /// A snippet that does not exist (or is not allowed where it is used).
    #[error("unknown snippet {0}")]
    UnknownSnippet(String),
    /// The message cannot be rewritten safely.
    #[error("cannot prepare message: {0}")]
    Unparseable(String),
}

/// What placeholders expand to.
pub struct Context<'a> {
    pub contact_name: Option<&'a str>,
    pub contact_email: Option<&'a str>,
    pub agent_name: &'a str,
    pub conversation: Option<u64>,
    /// NAME → text of `config/snippets/NAME.txt`.
    pub snippets: &'a dyn Fn(&str) -> Option<String>,
}

/// The result of [`prepare`].
#[derive(Debug, Clone)]
pub struct Prepared {
    pub commands: Vec<Command>,
    /// Nothing but commands (plus blank lines, quoted history, a signature): send nothing out.
    pub only_commands: bool,
    /// The outgoing bytes.
    pub raw: Vec<u8>,
}

/// Header changes applied by [`prepare`].
#[derive(Debug, Clone)]
pub struct HeaderPlan<'a> {
    /// Add `[#n]` to the subject unless already there.
    pub subject_tag: Option<u64>,
    /// The conversation's 22-byte Outlook thread key; `None` = leave the header alone.
    pub thread_index: Option<&'a [u8]>,
    /// Adds `X-Loop: <value>` (e.g. the hostname).
    pub x_loop: &'a str,
    /// (in-reply-to id, references); set only when the client sent neither header.
    pub references: Option<(&'a str, Vec<String>)>,
}

/// Placeholder expansion on a plain string (exposed for tests and for the fuzzer).
/// With `html`, inserted values are HTML-escaped and snippet line breaks become `<br>`.
///
/// # Errors
/// [`ComposeError::UnknownPlaceholder`] / [`ComposeError::UnknownSnippet`] for the first
/// unknown one; [`ComposeError::Unparseable`] when the expansion exceeds its bounds.
pub fn expand(text: &str, ctx: &Context<'_>, html: bool) -> Result<String, ComposeError> {
    expand_inner(text, ctx, html, &mut Budget::new(), None)
}

/// Strips the command lines, expands placeholders and snippets in every body text/plain
/// and text/html part (escaped in HTML), re-encodes each rewritten part in its transfer
/// encoding, leaves every other part and the header byte for byte, then applies the
/// header plan. All-or-nothing: any unknown placeholder/snippet/command is an error.
///
/// # Errors
/// [`ComposeError::UnknownCommand`], [`ComposeError::UnknownPlaceholder`],
/// [`ComposeError::UnknownSnippet`]; [`ComposeError::Unparseable`] for input that cannot
/// be rewritten safely (no header, too large, a text part needing a rewrite whose
/// transfer encoding is broken, inconsistent offsets).
pub fn prepare(
    raw: &[u8],
    ctx: &Context<'_>,
    plan: &HeaderPlan<'_>,
) -> Result<Prepared, ComposeError> {
    prepare_inner(raw, ctx, plan, true)
}

fn prepare_inner(
    raw: &[u8],
    ctx: &Context<'_>,
    plan: &HeaderPlan<'_>,
    may_fix: bool,
) -> Result<Prepared, ComposeError> {
    if raw.len() > MAX_MESSAGE_BYTES {
        return Err(ComposeError::Unparseable("message too large".into()));
    }
    let msg = MessageParser::default()
        .parse(raw)
        .ok_or_else(|| ComposeError::Unparseable("no header".into()))?;
    if msg.parts.is_empty() {
        return Err(ComposeError::Unparseable("no parts".into()));
    }
    let eol = detect_eol(raw);
    if header_insert_point(raw, &msg.parts[0]).1 {
        // A header ending without a line end (no body): end it, then start over once.
        if !may_fix {
            return Err(ComposeError::Unparseable("header without line end".into()));
        }
        return prepare_inner(&[raw, eol.as_bytes()].concat(), ctx, plan, false);
    }
    let bodies: Vec<(usize, bool)> = msg
        .parts
        .iter()
        .enumerate()
        .filter_map(|(i, p)| is_body_text(p).map(|h| (i, h)))
        .collect();
    let first_plain = bodies.iter().find(|(_, h)| !h).map(|(i, _)| *i);
    let first_html = bodies.iter().find(|(_, h)| *h).map(|(i, _)| *i);

    // Commands.
    let mut stripped: HashMap<usize, String> = HashMap::new();
    let mut commands = Vec::new();
    let mut rest_empty = false;
    if let Some(p) = first_plain {
        let (cmds, text, empty) = text_commands(part_text(&msg.parts[p]))?;
        if !cmds.is_empty() {
            stripped.insert(p, text);
            if let Some(h) = first_html
                && let Ok((hcmds, html, _)) = html_commands(part_text(&msg.parts[h]))
                && hcmds == cmds
            {
                stripped.insert(h, html);
            }
        }
        (commands, rest_empty) = (cmds, empty);
    } else if let Some(h) = first_html {
        let (cmds, html, empty) = html_commands(part_text(&msg.parts[h]))?;
        if !cmds.is_empty() {
            stripped.insert(h, html);
        }
        (commands, rest_empty) = (cmds, empty);
    }

    // Bodies.
    let mut budget = Budget::new();
    let mut edits = Vec::new();
    for &(i, html) in &bodies {
        let original = part_text(&msg.parts[i]);
        let base = stripped.get(&i).map_or(original, String::as_str);
        let text = expand_inner(base, ctx, html, &mut budget, None)?;
        if text != original {
            rewrite_part(raw, &msg, i, &text, eol, &mut edits)?;
        }
    }

    plan_edits(raw, &msg, ctx, plan, eol, &mut budget, &mut edits)?;
    let only_commands = !commands.is_empty() && rest_empty && !has_attachment(&msg);
    Ok(Prepared {
        commands,
        only_commands,
        raw: apply_edits(raw, edits)?,
    })
}

#[cfg(test)]
mod tests;
