//! Reply composition for submitted mail (SPEC §6): email commands at the top of the
//! reply, placeholder and snippet expansion, and the outgoing header plan (`[#n]` subject
//! tag, Outlook `Thread-Index`, `X-Loop`, `In-Reply-To`/`References`).
//!
//! Pure: no I/O, no clock (snippets come in through [`Context::snippets`], the time for
//! the Thread-Index extension is the message's own `Date`). Never panics on input and
//! bounds its work.
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

use std::collections::HashMap;

use base64::Engine as _;
use mail_builder::headers::Header as _;
use mail_parser::{Encoding, Message, MessageParser, MessagePart, MimeHeaders, PartType};

use crate::mail::subject::{subject_prefixes, subject_tag};

/// Biggest message accepted, in bytes.
const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// Most bytes all expansions of one message may produce (and most bytes of one text).
const MAX_EXPANDED_BYTES: usize = 96 << 20;
/// Most placeholders in one message (snippet contents included).
const MAX_PLACEHOLDERS: usize = 20_000;
/// Longest placeholder body between the braces.
const MAX_PLACEHOLDER_BODY: usize = 128;
/// Biggest snippet text used.
const MAX_SNIPPET_BYTES: usize = 1 << 20;
/// Most command lines in the block.
const MAX_COMMAND_LINES: usize = 32;
/// Most HTML tokens looked at for commands.
const MAX_HTML_TOKENS: usize = 20_000;
/// Most child blocks kept in a Thread-Index (keeps the header line short).
const MAX_THREAD_CHILDREN: usize = 100;
/// Outlook thread key length.
const THREAD_KEY_LEN: usize = 22;
/// Seconds between 1601-01-01 and 1970-01-01.
const FILETIME_UNIX_OFFSET: i64 = 11_644_473_600;

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

// ---------------------------------------------------------------------------------------
// Placeholders

struct Budget {
    placeholders: usize,
    bytes: usize,
}

impl Budget {
    fn new() -> Self {
        Budget {
            placeholders: 0,
            bytes: 0,
        }
    }

    fn count(&mut self) -> Result<(), ComposeError> {
        self.placeholders += 1;
        if self.placeholders > MAX_PLACEHOLDERS {
            return Err(ComposeError::Unparseable(format!(
                "more than {MAX_PLACEHOLDERS} placeholders"
            )));
        }
        Ok(())
    }

    fn charge(&mut self, n: usize) -> Result<(), ComposeError> {
        self.bytes = self.bytes.saturating_add(n);
        if self.bytes > MAX_EXPANDED_BYTES {
            return Err(ComposeError::Unparseable("expanded text too large".into()));
        }
        Ok(())
    }
}

enum Placeholder<'t> {
    Var(&'t str),
    Snippet(&'t str),
}

/// The placeholder right after a `{{` (`after` starts behind the braces) and the bytes it
/// takes including the closing `}}`. `Ok(None)`: not a placeholder.
fn parse_placeholder(after: &str) -> Result<Option<(Placeholder<'_>, usize)>, ComposeError> {
    let Some(close) = after
        .as_bytes()
        .windows(2)
        .take(MAX_PLACEHOLDER_BODY + 1)
        .position(|w| w == b"}}")
    else {
        return Ok(None);
    };
    let Some(body) = after.get(..close) else {
        return Ok(None);
    };
    if body.contains(['{', '\n', '\r']) {
        return Ok(None);
    }
    let body = body.trim();
    if let Some(head) = body.get(..7)
        && head.eq_ignore_ascii_case("snippet")
        && let Some(name) = body.get(7..).and_then(|r| r.trim_start().strip_prefix(':'))
    {
        let name = name.trim();
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(ComposeError::UnknownSnippet(printable(name)));
        }
        return Ok(Some((Placeholder::Snippet(name), close + 2)));
    }
    let mut bytes = body.bytes();
    let ident = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    Ok(ident.then_some((Placeholder::Var(body), close + 2)))
}

/// A value for one line: control characters (CR, LF, …) become spaces.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn html_escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

fn var_value(name: &str, ctx: &Context<'_>) -> Result<String, ComposeError> {
    let value = match name.to_ascii_lowercase().as_str() {
        "contact.name" => ctx
            .contact_name
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .or_else(|| {
                ctx.contact_email
                    .and_then(|e| e.trim().rsplit_once('@').map(|(l, _)| l))
                    .filter(|l| !l.is_empty())
            })
            .unwrap_or_default()
            .to_string(),
        "contact.email" => ctx.contact_email.unwrap_or_default().trim().to_string(),
        "agent.name" => ctx.agent_name.trim().to_string(),
        "conversation.id" => ctx.conversation.map(|n| n.to_string()).unwrap_or_default(),
        _ => return Err(ComposeError::UnknownPlaceholder(printable(name))),
    };
    Ok(one_line(&value))
}

fn expand_inner(
    text: &str,
    ctx: &Context<'_>,
    html: bool,
    budget: &mut Budget,
    inside_snippet: Option<&str>,
) -> Result<String, ComposeError> {
    if !text.contains("{{") {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("{{") {
        out.push_str(rest.get(..i).unwrap_or_default());
        let after = rest.get(i + 2..).unwrap_or_default();
        match parse_placeholder(after)? {
            None => {
                out.push('{');
                rest = rest.get(i + 1..).unwrap_or_default();
                continue;
            }
            Some((ph, used)) => {
                budget.count()?;
                let before = out.len();
                match ph {
                    Placeholder::Var(name) => {
                        let v = var_value(name, ctx)?;
                        if html {
                            html_escape_into(&mut out, &v);
                        } else {
                            out.push_str(&v);
                        }
                    }
                    Placeholder::Snippet(name) => {
                        if let Some(outer) = inside_snippet {
                            return Err(ComposeError::UnknownSnippet(format!(
                                "{name} (used inside snippet {outer}; snippets cannot include snippets)"
                            )));
                        }
                        let s = (ctx.snippets)(name)
                            .ok_or_else(|| ComposeError::UnknownSnippet(name.to_string()))?;
                        if s.len() > MAX_SNIPPET_BYTES {
                            return Err(ComposeError::Unparseable(format!(
                                "snippet {name} is larger than {MAX_SNIPPET_BYTES} bytes"
                            )));
                        }
                        let s = s.strip_prefix('\u{feff}').unwrap_or(&s);
                        let s = s.replace("\r\n", "\n");
                        let s = s.trim_end_matches(['\n', '\r']);
                        let v = expand_inner(s, ctx, false, budget, Some(name))?;
                        if html {
                            for (k, line) in v.split('\n').enumerate() {
                                if k > 0 {
                                    out.push_str("<br>");
                                }
                                html_escape_into(&mut out, line);
                            }
                        } else {
                            out.push_str(&v);
                        }
                    }
                }
                budget.charge(out.len() - before)?;
                rest = after.get(used..).unwrap_or_default();
            }
        }
    }
    out.push_str(rest);
    budget.charge(0)?;
    if out.len() > MAX_EXPANDED_BYTES {
        return Err(ComposeError::Unparseable("expanded text too large".into()));
    }
    Ok(out)
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

/// Text safe for an SMTP reply line: printable, at most 80 characters.
fn printable(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(80)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().nth(80).is_some() {
        out.push('…');
    }
    out
}

// ---------------------------------------------------------------------------------------
// Commands

/// `None`: not a command line. `Some(Err)`: a command line that is not understood.
fn parse_command_line(line: &str) -> Option<Result<Command, ComposeError>> {
    let t = line.trim();
    let rest = t.strip_prefix('#')?;
    let kw_end = rest
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(rest.len());
    let (kw, after) = (rest.get(..kw_end)?, rest.get(kw_end..)?);
    if kw.is_empty() || !(after.is_empty() || after.starts_with(char::is_whitespace)) {
        return None;
    }
    let args: Vec<&str> = after.split_whitespace().take(3).collect();
    let bad = || Err(ComposeError::UnknownCommand(printable(t)));
    Some(match (kw.to_ascii_lowercase().as_str(), args.as_slice()) {
        ("assign", [login]) => {
            let login = login.strip_prefix('@').unwrap_or(login);
            let ok = !login.is_empty()
                && login.len() <= 64
                && login.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b'+')
                });
            if ok {
                Ok(Command::Assign(login.to_string()))
            } else {
                bad()
            }
        }
        ("unassign", []) => Ok(Command::Unassign),
        ("close", []) => Ok(Command::Close),
        ("note", []) => Ok(Command::Note),
        _ => bad(),
    })
}

/// Parses the command block over `lines`. Returns the commands and the index of the
/// first line after the block (the first non-blank, non-command line; `lines.len()` when
/// there is none). No commands: `(vec![], 0)`.
fn command_block<S: AsRef<str>>(lines: &[S]) -> Result<(Vec<Command>, usize), ComposeError> {
    let mut commands = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let line = line.as_ref();
        if line.trim().is_empty() {
            continue;
        }
        match parse_command_line(line) {
            None => {
                return Ok(if commands.is_empty() {
                    (commands, 0)
                } else {
                    (commands, i)
                });
            }
            Some(c) => {
                commands.push(c?);
                if commands.len() > MAX_COMMAND_LINES {
                    return Err(ComposeError::Unparseable(format!(
                        "more than {MAX_COMMAND_LINES} command lines"
                    )));
                }
            }
        }
    }
    let end = if commands.is_empty() { 0 } else { lines.len() };
    Ok((commands, end))
}

/// One line of text for the commands-only check.
struct RestLine<'a> {
    text: &'a str,
    quoted: bool,
}

fn is_attribution_end(s: &str) -> bool {
    let t = s.trim_end();
    t.ends_with(':') || t.ends_with('：')
}

/// True when the remaining lines hold nothing but blanks, quoted history or a signature.
fn rest_is_empty(lines: &[RestLine<'_>]) -> bool {
    let next_content = |from: usize| {
        lines
            .get(from..)
            .unwrap_or_default()
            .iter()
            .find(|l| !l.text.trim().is_empty())
    };
    let is_quoted = |l: &RestLine<'_>| l.quoted || l.text.trim_start().starts_with('>');
    let mut i = 0;
    while let Some(line) = lines.get(i) {
        let t = line.text.trim();
        i += 1;
        if t.is_empty() || is_quoted(line) {
            continue;
        }
        let lower = t.to_lowercase();
        // Signature, or top-posted history after an Outlook separator: the rest is not text.
        if line.text.trim_end() == "--"
            || (t.starts_with("-----") && lower.contains("original message"))
            || (t.len() >= 20 && t.chars().all(|c| c == '_'))
        {
            return true;
        }
        if lower.starts_with("from:")
            && lines.get(i..).unwrap_or_default().iter().take(4).any(|l| {
                let l = l.text.trim_start().to_lowercase();
                l.starts_with("sent:") || l.starts_with("date:")
            })
        {
            return true;
        }
        // "On … wrote:" (possibly over two lines) before quoted lines.
        if is_attribution_end(t) && next_content(i).is_some_and(is_quoted) {
            continue;
        }
        if let Some(second) = lines.get(i)
            && !second.text.trim().is_empty()
            && !is_quoted(second)
            && is_attribution_end(second.text)
            && next_content(i + 1).is_some_and(is_quoted)
        {
            i += 1;
            continue;
        }
        return false;
    }
    true
}

/// Commands of a text/plain body: (commands, text without the block, rest-is-empty).
fn text_commands(text: &str) -> Result<(Vec<Command>, String, bool), ComposeError> {
    // Only the top of the text matters; look at a bounded number of lines.
    let lines: Vec<&str> = text.split('\n').take(4 * MAX_COMMAND_LINES + 64).collect();
    let (commands, end) = command_block(&lines)?;
    if commands.is_empty() {
        return Ok((commands, text.to_string(), false));
    }
    let offset: usize = lines.iter().take(end).map(|l| l.len() + 1).sum();
    let rest = text.get(offset.min(text.len())..).unwrap_or_default();
    let rest_lines: Vec<RestLine<'_>> = rest
        .split('\n')
        .map(|l| RestLine {
            text: l.trim_end_matches('\r'),
            quoted: false,
        })
        .collect();
    let empty = rest_is_empty(&rest_lines);
    Ok((commands, rest.to_string(), empty))
}

// ---------------------------------------------------------------------------------------
// Minimal HTML lexing (visible text lines at the top; never a full parser)

#[derive(Debug, Clone, PartialEq)]
enum TokKind {
    Text,
    Tag { name: String, closing: bool },
    Other,
}

#[derive(Debug, Clone)]
struct Token {
    kind: TokKind,
    start: usize,
    end: usize,
}

fn find_bytes(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > hay.len() {
        return None;
    }
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
        .map(|p| p + from)
}

/// Index after the `>` closing the tag at `start`, honouring quoted attribute values.
fn tag_end(b: &[u8], start: usize) -> usize {
    let mut quote: Option<u8> = None;
    let mut i = start + 1;
    while let Some(&c) = b.get(i) {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == b'"' || c == b'\'' => quote = Some(c),
            None if c == b'>' => return i + 1,
            None => {}
        }
        i += 1;
    }
    b.len()
}

fn html_tokens(html: &str) -> (Vec<Token>, bool) {
    let b = html.as_bytes();
    let mut pos = 0;
    // Start inside <body> when there is one.
    let mut search = 0;
    while let Some(p) = find_bytes(b, b"<body", search) {
        if b.get(p + 5)
            .is_none_or(|c| c.is_ascii_whitespace() || *c == b'>')
        {
            pos = tag_end(b, p);
            break;
        }
        search = p + 5;
    }
    let mut toks = Vec::new();
    while pos < b.len() {
        if toks.len() >= MAX_HTML_TOKENS {
            return (toks, true);
        }
        let start = pos;
        if b.get(pos..).is_some_and(|r| r.starts_with(b"<!--")) {
            let end = find_bytes(b, b"-->", pos + 4).map_or(b.len(), |e| e + 3);
            toks.push(Token {
                kind: TokKind::Other,
                start,
                end,
            });
            pos = end;
            continue;
        }
        let next = b.get(pos + 1).copied().unwrap_or(b' ');
        if b[pos] == b'<'
            && (next.is_ascii_alphabetic() || next == b'/' || next == b'!' || next == b'?')
        {
            let end = tag_end(b, pos);
            let closing = next == b'/';
            let name_start = pos + 1 + usize::from(closing);
            let name: String = b
                .get(name_start..end)
                .unwrap_or_default()
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric())
                .map(|c| c.to_ascii_lowercase() as char)
                .collect();
            if !closing && matches!(name.as_str(), "script" | "style" | "head" | "title") {
                let close = format!("</{name}");
                let skip_to =
                    find_bytes(b, close.as_bytes(), end).map_or(b.len(), |c| tag_end(b, c));
                toks.push(Token {
                    kind: TokKind::Other,
                    start,
                    end: skip_to,
                });
                pos = skip_to;
                continue;
            }
            let kind = if next == b'!' || next == b'?' {
                TokKind::Other
            } else {
                TokKind::Tag { name, closing }
            };
            toks.push(Token { kind, start, end });
            pos = end;
            continue;
        }
        let end = b
            .get(pos + 1..)
            .and_then(|r| r.iter().position(|&c| c == b'<'))
            .map_or(b.len(), |p| p + pos + 1);
        toks.push(Token {
            kind: TokKind::Text,
            start,
            end,
        });
        pos = end;
    }
    (toks, false)
}

fn is_block_tag(name: &str) -> bool {
    matches!(
        name,
        "p" | "div"
            | "br"
            | "li"
            | "ul"
            | "ol"
            | "tr"
            | "td"
            | "th"
            | "table"
            | "tbody"
            | "blockquote"
            | "pre"
            | "hr"
            | "body"
            | "html"
            | "section"
            | "article"
            | "header"
            | "footer"
            | "center"
            | "dl"
            | "dt"
            | "dd"
            | "h1"
            | "h2"
            | "h3"
            | "h4"
            | "h5"
            | "h6"
    )
}

fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = s.to_string();
    for (ent, rep) in [
        ("&nbsp;", " "),
        ("&#160;", " "),
        ("&#xa0;", " "),
        ("&#35;", "#"),
        ("&#x23;", "#"),
        ("&lt;", "<"),
        ("&gt;", ">"),
        ("&quot;", "\""),
        ("&#39;", "'"),
        ("&apos;", "'"),
        ("&amp;", "&"),
    ] {
        if out.contains(ent) {
            out = out.replace(ent, rep);
        }
    }
    out
}

/// A visible line of HTML: its text and the token range it covers.
struct HtmlLine {
    text: String,
    first_text_tok: Option<usize>,
    quoted: bool,
}

fn html_lines(html: &str, toks: &[Token]) -> Vec<HtmlLine> {
    let mut lines = Vec::new();
    let mut cur = HtmlLine {
        text: String::new(),
        first_text_tok: None,
        quoted: false,
    };
    let mut depth = 0usize;
    for (i, t) in toks.iter().enumerate() {
        match &t.kind {
            TokKind::Text => {
                let raw = html.get(t.start..t.end).unwrap_or_default();
                let text = decode_entities(raw).replace(['\r', '\n', '\t'], " ");
                if !text.trim().is_empty() {
                    cur.first_text_tok.get_or_insert(i);
                    cur.quoted |= depth > 0;
                }
                cur.text.push_str(&text);
            }
            TokKind::Tag { name, closing } if is_block_tag(name) => {
                lines.push(std::mem::replace(
                    &mut cur,
                    HtmlLine {
                        text: String::new(),
                        first_text_tok: None,
                        quoted: false,
                    },
                ));
                if name == "blockquote" {
                    depth = if *closing {
                        depth.saturating_sub(1)
                    } else {
                        depth + 1
                    };
                }
            }
            _ => {}
        }
    }
    lines.push(cur);
    lines
}

/// Commands at the top of an HTML body: (commands, html without them, rest-is-empty).
fn html_commands(html: &str) -> Result<(Vec<Command>, String, bool), ComposeError> {
    let (toks, truncated) = html_tokens(html);
    let lines = html_lines(html, &toks);
    let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
    let (commands, end) = command_block(&texts)?;
    if commands.is_empty() {
        return Ok((commands, html.to_string(), false));
    }
    let first_tok = lines
        .iter()
        .find_map(|l| l.first_text_tok)
        .unwrap_or(toks.len());
    let body_tok = lines
        .get(end..)
        .unwrap_or_default()
        .iter()
        .find_map(|l| l.first_text_tok)
        .unwrap_or(toks.len());
    // Drop the text and <br> of the block; keep every other tag so the markup stays
    // balanced.
    let mut out = String::with_capacity(html.len());
    let mut cursor = 0;
    for t in toks.get(first_tok..body_tok).unwrap_or_default() {
        let drop = match &t.kind {
            TokKind::Text => true,
            TokKind::Tag { name, .. } => name == "br",
            TokKind::Other => false,
        };
        if drop {
            out.push_str(html.get(cursor..t.start).unwrap_or_default());
            cursor = t.end;
        }
    }
    out.push_str(html.get(cursor..).unwrap_or_default());
    let rest: Vec<RestLine<'_>> = lines
        .get(end..)
        .unwrap_or_default()
        .iter()
        .map(|l| RestLine {
            text: l.text.as_str(),
            quoted: l.quoted,
        })
        .collect();
    let empty = !truncated && rest_is_empty(&rest);
    Ok((commands, out, empty))
}

// ---------------------------------------------------------------------------------------
// Transfer encodings (writing only; mail-parser did the reading)

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cte {
    SevenBit,
    EightBit,
    QuotedPrintable,
    Base64,
}

impl Cte {
    fn name(self) -> &'static str {
        match self {
            Cte::SevenBit => "7bit",
            Cte::EightBit => "8bit",
            Cte::QuotedPrintable => "quoted-printable",
            Cte::Base64 => "base64",
        }
    }
}

/// Lines of a text (LF or CRLF) without their line ends, and whether it ended with one.
fn text_lines(text: &str) -> (Vec<&str>, bool) {
    let ends = text.ends_with('\n');
    let body = if ends { &text[..text.len() - 1] } else { text };
    let lines = body
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    (lines, ends)
}

/// Needs an encoding even in 8bit: over-long lines, bare CR, NUL.
fn needs_encoding(text: &str) -> bool {
    let (lines, _) = text_lines(text);
    lines
        .iter()
        .any(|l| l.len() > 998 || l.bytes().any(|b| b == b'\r' || b == 0))
}

fn join_lines(text: &str, eol: &str) -> String {
    let (lines, ends) = text_lines(text);
    let mut out = lines.join(eol);
    if ends {
        out.push_str(eol);
    }
    out
}

fn encode_qp(text: &str, eol: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let (lines, ends) = text_lines(text);
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for (k, line) in lines.iter().enumerate() {
        if k > 0 {
            out.push_str(eol);
        }
        let bytes = line.as_bytes();
        let mut col = 0;
        for (j, &b) in bytes.iter().enumerate() {
            let last = j + 1 == bytes.len();
            let literal =
                (b == b' ' || b == b'\t') && !last || (33..=126).contains(&b) && b != b'=';
            let piece_len = if literal { 1 } else { 3 };
            // Leave room for the soft break "=" (76 columns at most).
            let limit = if last { 76 } else { 75 };
            if col + piece_len > limit {
                out.push('=');
                out.push_str(eol);
                col = 0;
            }
            if literal {
                out.push(b as char);
            } else {
                out.push('=');
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 15)] as char);
            }
            col += piece_len;
        }
    }
    if ends {
        out.push_str(eol);
    }
    out
}

fn encode_base64(text: &str, eol: &str, trailing_eol: bool) -> String {
    // Canonical form of text is CRLF.
    let canonical = join_lines(text, "\r\n");
    let b64 = base64::engine::general_purpose::STANDARD.encode(canonical.as_bytes());
    let mut out = String::with_capacity(b64.len() + b64.len() / 76 * 2 + 2);
    for (k, chunk) in b64.as_bytes().chunks(76).enumerate() {
        if k > 0 {
            out.push_str(eol);
        }
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
    }
    if trailing_eol {
        out.push_str(eol);
    }
    out
}

/// Charsets whose ASCII bytes mean ASCII.
fn ascii_compatible(charset: &str) -> bool {
    let c = charset.to_ascii_lowercase();
    !(c.contains("utf-16")
        || c.contains("utf16")
        || c.contains("utf-32")
        || c.contains("utf32")
        || c.contains("ucs")
        || c.contains("utf-7")
        || c.contains("utf7"))
}

// ---------------------------------------------------------------------------------------
// Raw edits

struct Edit {
    start: usize,
    end: usize,
    bytes: Vec<u8>,
}

fn apply_edits(raw: &[u8], mut edits: Vec<Edit>) -> Result<Vec<u8>, ComposeError> {
    // Stable: insertions at one offset keep their order.
    edits.sort_by_key(|e| (e.start, e.end));
    let extra: usize = edits.iter().map(|e| e.bytes.len()).sum();
    let mut out = Vec::with_capacity(raw.len() + extra);
    let mut cursor = 0;
    for e in edits {
        if e.start < cursor || e.end < e.start || e.end > raw.len() {
            return Err(ComposeError::Unparseable("overlapping rewrites".into()));
        }
        out.extend_from_slice(raw.get(cursor..e.start).unwrap_or_default());
        out.extend_from_slice(&e.bytes);
        cursor = e.end;
    }
    out.extend_from_slice(raw.get(cursor..).unwrap_or_default());
    Ok(out)
}

fn with_eol(header_crlf: Vec<u8>, eol: &str) -> Vec<u8> {
    if eol == "\r\n" {
        return header_crlf;
    }
    String::from_utf8_lossy(&header_crlf)
        .replace("\r\n", eol)
        .into_bytes()
}

/// Fields of `part` named `name`, as (field start, field end) raw ranges.
fn field_ranges(part: &MessagePart<'_>, name: &str) -> Vec<(usize, usize)> {
    part.headers
        .iter()
        .filter(|h| h.name.as_str().eq_ignore_ascii_case(name))
        .map(|h| (h.offset_field as usize, h.offset_end as usize))
        .collect()
}

/// Edits that replace all `name` fields by `field` (at the first one's place), or insert
/// `field` at `insert_at` when there is none. `None` field: delete them all.
fn set_field(
    part: &MessagePart<'_>,
    name: &str,
    field: Option<Vec<u8>>,
    insert_at: usize,
    edits: &mut Vec<Edit>,
) {
    let ranges = field_ranges(part, name);
    let mut field = field;
    if ranges.is_empty() {
        if let Some(f) = field {
            edits.push(Edit {
                start: insert_at,
                end: insert_at,
                bytes: f,
            });
        }
        return;
    }
    for (start, end) in ranges {
        edits.push(Edit {
            start,
            end,
            bytes: field.take().unwrap_or_default(),
        });
    }
}

/// Where new fields of a header go: after its last field. True when the last field
/// lacks its line end (header at the end of the input): the caller inserts one EOL first.
fn header_insert_point(raw: &[u8], part: &MessagePart<'_>) -> (usize, bool) {
    let at = part
        .headers
        .iter()
        .map(|h| h.offset_end as usize)
        .max()
        .unwrap_or(part.offset_header as usize)
        .min(raw.len());
    (at, at > 0 && raw.get(at - 1) != Some(&b'\n'))
}

fn simple_field(name: &str, value: &str, eol: &str) -> Vec<u8> {
    format!("{name}: {}{eol}", one_line(value).trim()).into_bytes()
}

// ---------------------------------------------------------------------------------------
// Body parts

fn is_body_text(part: &MessagePart<'_>) -> Option<bool /* html */> {
    let html = match &part.body {
        PartType::Text(_) => false,
        PartType::Html(_) => true,
        _ => return None,
    };
    match part.content_type() {
        Some(ct) => {
            let sub = ct.subtype().unwrap_or_default();
            let ok = ct.ctype().eq_ignore_ascii_case("text")
                && (sub.eq_ignore_ascii_case("plain") || sub.eq_ignore_ascii_case("html"));
            if !ok || sub.eq_ignore_ascii_case("html") != html {
                return None;
            }
        }
        None if html => return None,
        None => {}
    }
    if part
        .content_disposition()
        .is_some_and(|d| d.ctype().eq_ignore_ascii_case("attachment"))
        || part.attachment_name().is_some()
    {
        return None;
    }
    Some(html)
}

fn part_text<'m>(part: &'m MessagePart<'_>) -> &'m str {
    match &part.body {
        PartType::Text(t) | PartType::Html(t) => t,
        _ => "",
    }
}

/// Edits rewriting part `part` (index `idx`) to carry `text`.
fn rewrite_part(
    raw: &[u8],
    msg: &Message<'_>,
    idx: usize,
    text: &str,
    eol: &str,
    edits: &mut Vec<Edit>,
) -> Result<(), ComposeError> {
    let part = msg
        .parts
        .get(idx)
        .ok_or_else(|| ComposeError::Unparseable("part index".into()))?;
    if part.is_encoding_problem && part.offset_body < part.offset_end {
        return Err(ComposeError::Unparseable(format!(
            "text part {idx} has a broken transfer encoding and would need rewriting"
        )));
    }
    let (body_start, body_end) = (part.offset_body as usize, part.offset_end as usize);
    if body_start > body_end || body_end > raw.len() {
        return Err(ComposeError::Unparseable(format!(
            "text part {idx} offsets"
        )));
    }
    let declared = part
        .content_transfer_encoding()
        .map(|c| c.trim().to_ascii_lowercase());
    let original = match part.encoding {
        Encoding::Base64 => Cte::Base64,
        Encoding::QuotedPrintable => Cte::QuotedPrintable,
        Encoding::None => match declared.as_deref() {
            Some("8bit" | "binary") => Cte::EightBit,
            _ => Cte::SevenBit,
        },
    };
    let target = match original {
        Cte::Base64 | Cte::QuotedPrintable => original,
        Cte::EightBit if needs_encoding(text) => Cte::QuotedPrintable,
        Cte::EightBit => Cte::EightBit,
        Cte::SevenBit if text.is_ascii() && !needs_encoding(text) => Cte::SevenBit,
        Cte::SevenBit => Cte::QuotedPrintable,
    };
    let raw_body = raw.get(body_start..body_end).unwrap_or_default();
    let body = match target {
        Cte::SevenBit | Cte::EightBit => join_lines(text, eol),
        Cte::QuotedPrintable => encode_qp(text, eol),
        Cte::Base64 => encode_base64(text, eol, raw_body.ends_with(b"\n")),
    };
    edits.push(Edit {
        start: body_start,
        end: body_end,
        bytes: body.into_bytes(),
    });

    // Header fields of the part.
    let top = idx == 0;
    let (insert_at, needs_eol) = header_insert_point(raw, part);
    if needs_eol && !top {
        // The root's missing EOL is added once by `prepare`.
        edits.push(Edit {
            start: insert_at,
            end: insert_at,
            bytes: eol.as_bytes().to_vec(),
        });
    }
    let mut added_mime = false;
    let cte_ok = match declared.as_deref() {
        None => target == Cte::SevenBit,
        Some(d) => d == target.name() || (d == "binary" && target == Cte::EightBit),
    };
    if !cte_ok {
        let f = simple_field("Content-Transfer-Encoding", target.name(), eol);
        set_field(part, "Content-Transfer-Encoding", Some(f), insert_at, edits);
        added_mime = true;
    }
    let ct = part.content_type();
    let charset = ct.and_then(|c| c.attribute("charset"));
    let keep_ct = if text.is_ascii() {
        charset.is_none_or(ascii_compatible)
    } else {
        charset.is_some_and(|c| c.eq_ignore_ascii_case("utf-8") || c.eq_ignore_ascii_case("utf8"))
    };
    if !keep_ct {
        let (ctype, subtype) = ct.map_or(("text".to_string(), "plain".to_string()), |c| {
            (
                c.ctype().to_ascii_lowercase(),
                c.subtype().unwrap_or("plain").to_ascii_lowercase(),
            )
        });
        let mut builder =
            mail_builder::headers::content_type::ContentType::new(format!("{ctype}/{subtype}"));
        for a in ct.and_then(|c| c.attributes()).unwrap_or_default() {
            if !a.name.eq_ignore_ascii_case("charset") {
                builder = builder.attribute(one_line(&a.name), one_line(&a.value));
            }
        }
        builder = builder.attribute("charset", "utf-8");
        let mut v = b"Content-Type: ".to_vec();
        builder.write_header(&mut v, "Content-Type: ".len());
        let f = with_eol(v, eol);
        set_field(part, "Content-Type", Some(f), insert_at, edits);
        added_mime = true;
    }
    if top && added_mime && field_ranges(part, "MIME-Version").is_empty() {
        edits.push(Edit {
            start: insert_at,
            end: insert_at,
            bytes: simple_field("MIME-Version", "1.0", eol),
        });
    }
    Ok(())
}

/// A real attachment: anything but multiparts, body text parts and inline images.
fn has_attachment(msg: &Message<'_>) -> bool {
    msg.parts.iter().any(|p| match &p.body {
        PartType::Multipart(_) | PartType::InlineBinary(_) => false,
        PartType::Binary(_) | PartType::Message(_) => true,
        PartType::Text(_) | PartType::Html(_) => is_body_text(p).is_none(),
    })
}

// ---------------------------------------------------------------------------------------
// Header plan

/// Byte ranges of our `[#n]` tags in `subject` (each candidate is checked on its own
/// short slice, so the work stays linear).
fn own_tags(subject: &str) -> Vec<(usize, usize)> {
    subject
        .match_indices("[#")
        .filter_map(|(i, _)| {
            let tail = subject.get(i..)?;
            let close = tail.char_indices().take(24).find(|(_, c)| *c == ']')?.0;
            let candidate = tail.get(..=close)?;
            let n = subject_tag(candidate)?;
            (candidate == format!("[#{n}]")).then_some((i, i + candidate.len()))
        })
        .collect()
}

/// The subject with exactly one `[#n]`, right after the reply/forward prefixes.
pub(crate) fn tag_subject(subject: &str, n: u64) -> String {
    let tags = own_tags(subject);
    let tag = format!("[#{n}]");
    if tags.len() == 1 && subject_tag(subject) == Some(n) {
        return subject.to_string();
    }
    // Remove every own tag (and one blank after it).
    let mut s = String::with_capacity(subject.len() + tag.len() + 1);
    let mut cursor = 0;
    for (a, b) in tags {
        if a < cursor {
            continue;
        }
        s.push_str(subject.get(cursor..a).unwrap_or_default());
        cursor = b;
        if subject.get(cursor..).is_some_and(|r| r.starts_with(' ')) {
            cursor += 1;
        }
    }
    s.push_str(subject.get(cursor..).unwrap_or_default());
    // Skip reply/forward prefixes, as threading classifies them.
    let mut pos = 0;
    for _ in 0..32 {
        let rest = s.get(pos..).unwrap_or_default();
        let Some((c, colon)) = rest
            .char_indices()
            .take(40)
            .find(|(_, ch)| *ch == ':' || *ch == '：')
        else {
            break;
        };
        let piece = rest.get(..c + colon.len_utf8()).unwrap_or_default();
        let p = subject_prefixes(piece);
        if !(p.reply || p.forward) || piece.trim().is_empty() {
            break;
        }
        pos += piece.len();
    }
    let (head, tail) = (
        s.get(..pos).unwrap_or_default().trim_end(),
        s.get(pos..).unwrap_or_default().trim(),
    );
    let mut out = String::new();
    if !head.is_empty() {
        out.push_str(head);
        out.push(' ');
    }
    out.push_str(&tag);
    if !tail.is_empty() {
        out.push(' ');
        out.push_str(tail);
    }
    out
}

/// A message id without brackets, blanks or controls.
fn clean_id(id: &str) -> String {
    id.chars()
        .filter(|c| !c.is_whitespace() && !c.is_control() && *c != '<' && *c != '>')
        .take(250)
        .collect()
}

fn filetime_40(unix: i64) -> u64 {
    let ft = (i128::from(unix) + i128::from(FILETIME_UNIX_OFFSET)) * 10_000_000;
    let ft = u64::try_from(ft.max(0)).unwrap_or(u64::MAX);
    ft >> 24
}

fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Unix time of a Thread-Index header block.
fn thread_index_unix(bytes: &[u8]) -> Option<i64> {
    let t = bytes.get(1..6)?;
    let ft = t.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)) << 24;
    i64::try_from(ft / 10_000_000)
        .ok()
        .map(|s| s - FILETIME_UNIX_OFFSET)
}

/// Outlook Thread-Index (MS-OXOMSG 2.2.1.3): base64 of a 22-byte header block (0x01,
/// the 40 high bits of a FILETIME, a GUID) and 5-byte child blocks. Given the
/// conversation's existing bytes, returns them with one child block appended for
/// `now_unix` (delta to the header time: code 0 with bits 18–48 when it fits, else code
/// 1 with bits 23–53; then a byte derived from the input in place of a random one).
/// Without usable bytes (shorter than 22), starts a new index whose GUID is derived from
/// `now_unix` (deterministic: callers should keep the conversation's key). Trailing bytes
/// that are not a whole child block are dropped; at 100 child blocks nothing is appended.
pub fn extend_thread_index(existing: Option<&[u8]>, now_unix: i64) -> String {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let Some(ex) = existing.filter(|e| e.len() >= THREAD_KEY_LEN) else {
        let mut out = Vec::with_capacity(THREAD_KEY_LEN);
        out.push(1u8);
        out.extend_from_slice(&filetime_40(now_unix).to_be_bytes()[3..]);
        let a = mix64(now_unix as u64);
        let b = mix64(a ^ 0x5443_4741_5445);
        out.extend_from_slice(&a.to_be_bytes());
        out.extend_from_slice(&b.to_be_bytes());
        return b64(&out);
    };
    let children = ((ex.len() - THREAD_KEY_LEN) / 5).min(MAX_THREAD_CHILDREN);
    let mut out = ex
        .get(..THREAD_KEY_LEN + 5 * children)
        .unwrap_or(ex)
        .to_vec();
    if children >= MAX_THREAD_CHILDREN {
        return b64(&out);
    }
    let head_ft = ex
        .get(1..6)
        .unwrap_or_default()
        .iter()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
        << 24;
    let now_ft = filetime_40(now_unix) << 24;
    let delta = now_ft.saturating_sub(head_ft);
    let word: u32 = if delta >> 49 == 0 {
        ((delta >> 18) & 0x7FFF_FFFF) as u32
    } else {
        0x8000_0000 | ((delta >> 23) & 0x7FFF_FFFF) as u32
    };
    let seed = out
        .iter()
        .fold(now_unix as u64, |acc, &b| mix64(acc ^ u64::from(b)));
    out.extend_from_slice(&word.to_be_bytes());
    out.push((seed & 0xFF) as u8);
    b64(&out)
}

fn plan_edits(
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
            .map(|v| {
                v.chars()
                    .filter(|c| !c.is_whitespace())
                    .take(4096)
                    .collect::<String>()
            })
            .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok());
        if client.as_deref().and_then(|c| c.get(..THREAD_KEY_LEN)) != Some(key) {
            let now = msg
                .date()
                .map(|d| d.to_timestamp())
                .or_else(|| thread_index_unix(key))
                .unwrap_or(0);
            let f = simple_field("Thread-Index", &extend_thread_index(Some(key), now), eol);
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
        let irt = clean_id(irt);
        if !has && !irt.is_empty() {
            insert(simple_field("In-Reply-To", &format!("<{irt}>"), eol), edits);
            let mut ids: Vec<String> = refs
                .iter()
                .map(|r| clean_id(r))
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

// ---------------------------------------------------------------------------------------
// prepare

fn detect_eol(raw: &[u8]) -> &'static str {
    match raw.iter().position(|&b| b == b'\n') {
        Some(i) if i > 0 && raw.get(i - 1) == Some(&b'\r') => "\r\n",
        Some(_) => "\n",
        None => "\r\n",
    }
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
mod tests {
    use super::*;
    use mail_parser::{HeaderName, MimeHeaders};

    fn snippets(name: &str) -> Option<String> {
        match name {
            "greeting" => Some("Hello {{contact.name}},\nthanks for writing.\n".into()),
            "sig" => Some("-- \r\n{{ agent.name }} <support@example.com>\r\n".into()),
            "nested" => Some("see {{snippet:greeting}}".into()),
            "bad" => Some("{{contact.phone}}".into()),
            _ => None,
        }
    }

    fn ctx() -> Context<'static> {
        Context {
            contact_name: Some("José Müller"),
            contact_email: Some("jose@example.org"),
            agent_name: "Alice",
            conversation: Some(123),
            snippets: &snippets,
        }
    }

    fn ctx_named(name: &'static str) -> Context<'static> {
        Context {
            contact_name: Some(name),
            ..ctx()
        }
    }

    fn no_plan() -> HeaderPlan<'static> {
        HeaderPlan {
            subject_tag: None,
            thread_index: None,
            x_loop: "",
            references: None,
        }
    }

    fn parse(raw: &[u8]) -> Message<'_> {
        MessageParser::default().parse(raw).expect("re-parses")
    }

    /// Decoded text of every text/html body part, LF line ends.
    fn texts(raw: &[u8]) -> Vec<String> {
        let m = parse(raw);
        m.parts
            .iter()
            .filter(|p| is_body_text(p).is_some())
            .map(|p| part_text(p).replace("\r\n", "\n"))
            .collect()
    }

    fn header_block(raw: &[u8]) -> String {
        let m = parse(raw);
        String::from_utf8_lossy(&raw[..m.parts[0].offset_body as usize]).into_owned()
    }

    fn plain(body: &str) -> Vec<u8> {
        format!(
            "From: Alice <alice@support.example>\r\nTo: jose@example.org\r\nSubject: Re: Printer\r\n\
             Date: Tue, 02 Jan 2024 10:00:00 +0000\r\nMessage-ID: <r1@support.example>\r\n\
             MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{body}"
        )
        .into_bytes()
    }

    // ----- commands -------------------------------------------------------------------

    #[test]
    fn command_table() {
        use Command::*;
        // (body, commands, remaining text, only_commands)
        let ok: &[(&str, &[Command], &str, bool)] = &[
            (
                "#assign bob\r\n#close\r\n\r\nHello\r\n",
                &[Assign("bob".into()), Close],
                "Hello\n",
                false,
            ),
            (
                "  #Assign Bob\r\n\r\nHi\r\n",
                &[Assign("Bob".into())],
                "Hi\n",
                false,
            ),
            ("\r\n\r\n#close\r\n", &[Close], "", true),
            (
                "#CLOSE\r\n#unassign\r\n#note\r\n\r\n\r\n",
                &[Close, Unassign, Note],
                "",
                true,
            ),
            (
                "#assign @bob\r\nok\r\n",
                &[Assign("bob".into())],
                "ok\n",
                false,
            ),
            ("Hello\r\n#close\r\n", &[], "Hello\n#close\n", false),
            ("#1 priority is you\r\n", &[], "#1 priority is you\n", false),
            ("#!/bin/sh\r\n", &[], "#!/bin/sh\n", false),
            (
                "#close\r\nThanks!\r\n> old\r\n",
                &[Close],
                "Thanks!\n> old\n",
                false,
            ),
            // Quoted history / signature only: commands-only.
            (
                "#close\r\n\r\nOn Mon, 1 Jan 2024, Jose <jose@example.org> wrote:\r\n> hi\r\n> there\r\n",
                &[Close],
                "On Mon, 1 Jan 2024, Jose <jose@example.org> wrote:\n> hi\n> there\n",
                true,
            ),
            (
                "#close\r\nOn Mon, 1 Jan 2024 at 10:00, Jose Customer <\r\njose@example.org> wrote:\r\n\r\n> hi\r\n",
                &[Close],
                "On Mon, 1 Jan 2024 at 10:00, Jose Customer <\njose@example.org> wrote:\n\n> hi\n",
                true,
            ),
            (
                "#close\r\n\r\n-- \r\nAlice\r\nACME support\r\n",
                &[Close],
                "-- \nAlice\nACME support\n",
                true,
            ),
            (
                "#note\r\n-----Original Message-----\r\nFrom: x\r\nSent: y\r\n\r\nold text\r\n",
                &[Note],
                "-----Original Message-----\nFrom: x\nSent: y\n\nold text\n",
                true,
            ),
            (
                "#close\r\n> hi\r\nmy answer below\r\n",
                &[Close],
                "> hi\nmy answer below\n",
                false,
            ),
        ];
        for (body, cmds, rest, only) in ok {
            let p = prepare(&plain(body), &ctx(), &no_plan())
                .unwrap_or_else(|e| panic!("{body:?}: {e}"));
            assert_eq!(p.commands, *cmds, "{body:?}");
            assert_eq!(p.only_commands, *only, "{body:?}");
            assert_eq!(texts(&p.raw), vec![rest.to_string()], "{body:?}");
        }
        let bad: &[(&str, &str)] = &[
            ("#frobnicate\r\nHi\r\n", "#frobnicate"),
            ("#assign\r\nHi\r\n", "#assign"),
            ("#assign bob alice\r\n", "#assign bob alice"),
            ("#close now\r\n", "#close now"),
            ("#close\r\n\r\n#frobnicate x\r\n", "#frobnicate x"),
        ];
        for (body, named) in bad {
            match prepare(&plain(body), &ctx(), &no_plan()) {
                Err(ComposeError::UnknownCommand(c)) => assert_eq!(c, *named),
                other => panic!("{body:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn commands_only_with_attachment_still_sends() {
        let raw = b"From: a@b\r\nSubject: x\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
Content-Type: text/plain\r\n\r\n#close\r\n--b\r\nContent-Type: application/pdf\r\n\
Content-Disposition: attachment; filename=a.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--b--\r\n";
        let p = prepare(raw, &ctx(), &no_plan()).unwrap();
        assert_eq!(p.commands, vec![Command::Close]);
        assert!(!p.only_commands);
    }

    #[test]
    fn commands_in_html_alternative_and_html_only() {
        let raw = "From: a@b\r\nSubject: x\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\n\
Content-Type: text/plain; charset=utf-8\r\n\r\n#assign bob\r\n\r\nHi {{contact.name}}\r\n--b\r\n\
Content-Type: text/html; charset=utf-8\r\n\r\n<html><head><title>#x</title><style>p{}</style></head>\
<body><div>#assign&nbsp;bob<br></div><div><br></div><div>Hi {{contact.name}}</div></body></html>\r\n--b--\r\n";
        let p = prepare(raw.as_bytes(), &ctx_named("<b>Bob</b>"), &no_plan()).unwrap();
        assert_eq!(p.commands, vec![Command::Assign("bob".into())]);
        let t = texts(&p.raw);
        assert_eq!(t[0], "Hi <b>Bob</b>");
        assert!(!t[1].contains("#assign"), "{}", t[1]);
        assert!(
            t[1].contains("<div>Hi &lt;b&gt;Bob&lt;/b&gt;</div>"),
            "{}",
            t[1]
        );
        assert!(t[1].contains("<title>#x</title>"));

        // HTML only: commands come from its visible lines; blockquote history is empty.
        let raw = "From: a@b\r\nSubject: x\r\nContent-Type: text/html\r\n\r\n<p>#close</p>\
<div class=q>On Monday Jose wrote:</div><blockquote><p>help</p></blockquote>\r\n";
        let p = prepare(raw.as_bytes(), &ctx(), &no_plan()).unwrap();
        assert_eq!(p.commands, vec![Command::Close]);
        assert!(p.only_commands);
        assert!(!texts(&p.raw)[0].contains("#close"));
        let raw =
            "From: a@b\r\nContent-Type: text/html\r\n\r\n<p>#close</p><p>Done, thanks.</p>\r\n";
        let p = prepare(raw.as_bytes(), &ctx(), &no_plan()).unwrap();
        assert!(!p.only_commands);
    }

    // ----- placeholders ---------------------------------------------------------------

    #[test]
    fn expand_table() {
        let c = ctx();
        let cases: &[(&str, &str)] = &[
            ("Hi {{contact.name}}!", "Hi José Müller!"),
            (
                "{{ contact.email }} / {{Agent.Name}} / #{{conversation.id}}",
                "jose@example.org / Alice / #123",
            ),
            (
                "{{snippet:greeting}}",
                "Hello José Müller,\nthanks for writing.",
            ),
            ("{{ snippet : sig }}", "-- \nAlice <support@example.com>"),
            ("{{{contact.name}}}", "{José Müller}"),
            (
                "if (a) {{ 1 + 2 }} {{}} {{ }} a {{ b",
                "if (a) {{ 1 + 2 }} {{}} {{ }} a {{ b",
            ),
            ("{{contact.name}", "{{contact.name}"),
            ("no braces at all", "no braces at all"),
        ];
        for (i, o) in cases {
            assert_eq!(expand(i, &c, false).unwrap(), *o, "{i}");
        }
        // Fallbacks.
        let c = Context {
            contact_name: Some("  "),
            conversation: None,
            ..ctx()
        };
        assert_eq!(
            expand("{{contact.name}}|{{conversation.id}}", &c, false).unwrap(),
            "jose|"
        );
        let c = Context {
            contact_name: None,
            contact_email: None,
            ..ctx()
        };
        assert_eq!(
            expand("[{{contact.name}}][{{contact.email}}]", &c, false).unwrap(),
            "[][]"
        );
        // HTML.
        let c = ctx_named("<script>alert('x')</script> & co");
        assert_eq!(
            expand("<p>{{contact.name}}</p>", &c, true).unwrap(),
            "<p>&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; co</p>"
        );
        assert_eq!(
            expand("{{snippet:greeting}}", &c, true).unwrap(),
            "Hello &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; co,<br>thanks for writing."
        );
        // Errors.
        let c = ctx();
        for (i, want) in [
            ("{{contact.phone}}", "unknown placeholder {{contact.phone}}"),
            ("{{ foo }}", "unknown placeholder {{foo}}"),
            ("{{snippet:missing}}", "unknown snippet missing"),
            ("{{snippet:../etc/passwd}}", "unknown snippet ../etc/passwd"),
            ("{{snippet:bad}}", "unknown placeholder {{contact.phone}}"),
        ] {
            assert_eq!(expand(i, &c, false).unwrap_err().to_string(), want, "{i}");
        }
        assert!(matches!(
            expand("{{snippet:nested}}", &c, false),
            Err(ComposeError::UnknownSnippet(s)) if s.starts_with("greeting")
        ));
        // Bounded.
        let many = "{{agent.name}}".repeat(MAX_PLACEHOLDERS + 1);
        assert!(matches!(
            expand(&many, &c, false),
            Err(ComposeError::Unparseable(_))
        ));
    }

    #[test]
    fn all_or_nothing() {
        let raw = plain("Hi {{contact.name}}\r\n{{snippet:missing}}\r\n");
        assert!(matches!(
            prepare(&raw, &ctx(), &no_plan()),
            Err(ComposeError::UnknownSnippet(s)) if s == "missing"
        ));
    }

    // ----- MIME re-encoding -------------------------------------------------------------

    #[test]
    fn plain_7bit_stays_7bit_when_ascii_and_switches_to_qp() {
        let raw = plain("Dear {{contact.email}},\r\nbye\r\n");
        let p = prepare(&raw, &ctx(), &no_plan()).unwrap();
        assert_eq!(texts(&p.raw), vec!["Dear jose@example.org,\nbye\n"]);
        let h = header_block(&p.raw);
        assert!(
            h.contains("Content-Type: text/plain; charset=us-ascii\r\n"),
            "{h}"
        );
        assert!(!h.contains("Content-Transfer-Encoding"));

        let raw = plain("Dear {{contact.name}},\r\nbye\r\n");
        let p = prepare(&raw, &ctx(), &no_plan()).unwrap();
        let m = parse(&p.raw);
        assert_eq!(m.body_text(0).unwrap(), "Dear José Müller,\r\nbye\r\n");
        let h = header_block(&p.raw);
        assert!(
            h.contains("Content-Transfer-Encoding: quoted-printable\r\n"),
            "{h}"
        );
        assert!(h.contains("charset=\"utf-8\""), "{h}");
        assert!(!h.contains("us-ascii"));
        assert!(p.raw.is_ascii());
        // The rest of the header is untouched.
        assert!(h.starts_with("From: Alice <alice@support.example>\r\nTo: jose@example.org\r\nSubject: Re: Printer\r\n"));
    }

    #[test]
    fn bare_rfc5322_message_gains_mime_fields() {
        let raw = b"From: a@b\nSubject: hi\n\nHello {{contact.name}}\n";
        let p = prepare(raw, &ctx(), &no_plan()).unwrap();
        let h = header_block(&p.raw);
        assert!(
            h.contains("MIME-Version: 1.0\n") && h.contains("charset=\"utf-8\""),
            "{h}"
        );
        assert!(
            !p.raw.windows(2).any(|w| w == b"\r\n"),
            "LF message stays LF"
        );
        assert_eq!(texts(&p.raw), vec!["Hello José Müller\n"]);
    }

    #[test]
    fn quoted_printable_base64_and_latin1_sources() {
        let long = "x".repeat(100);
        let raw = format!(
            "From: a@b\r\nSubject: x\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
Gr=C3=BC=C3=9Fe {{{{contact.name}}}} =\r\n{long}\r\n--b\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--b\r\n\
Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
            base64::engine::general_purpose::STANDARD
                .encode("Hallo {{agent.name}} \u{2013} {{snippet:greeting}}\r\n"),
        );
        let mut raw = raw.into_bytes();
        raw.extend_from_slice(b"Caf\xe9 for {{contact.name}}\r\n--b--\r\n");
        let p = prepare(&raw, &ctx(), &no_plan()).unwrap();
        assert_eq!(
            texts(&p.raw),
            vec![
                format!("Grüße José Müller {long}"),
                "Hallo Alice \u{2013} Hello José Müller,\nthanks for writing.\n".to_string(),
                "Café for José Müller".to_string(),
            ]
        );
        let out = String::from_utf8_lossy(&p.raw);
        assert!(out.lines().all(|l| l.len() <= 78), "{out}");
        let m = parse(&p.raw);
        let cte: Vec<_> = m.parts[1..]
            .iter()
            .map(|p| {
                p.content_transfer_encoding()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        assert_eq!(cte, ["quoted-printable", "base64", "8bit"]);
        assert_eq!(
            m.parts[3].content_type().unwrap().attribute("charset"),
            Some("utf-8")
        );
    }

    #[test]
    fn alternative_html_escaped_attachment_and_nested_message_untouched() {
        let attachment = "Content-Type: application/octet-stream; name=\"t {{x}}.bin\"\r\n\
Content-Disposition: attachment; filename=\"t {{x}}.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n\
AAECAwQFBgcICQ==\r\n";
        let nested = "Content-Type: message/rfc822\r\n\r\nFrom: jose@example.org\r\nSubject: {{contact.phone}}\r\n\
Content-Type: text/plain\r\n\r\n#frobnicate {{contact.phone}}\r\n";
        let raw = format!(
            "From: a@b\r\nSubject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=outer\r\n\r\n\
--outer\r\nContent-Type: multipart/alternative; boundary=alt\r\n\r\n\
--alt\r\nContent-Type: text/plain\r\n\r\nHi {{{{contact.name}}}}\r\n\
--alt\r\nContent-Type: text/html\r\n\r\n<p>Hi {{{{contact.name}}}}</p>\r\n--alt--\r\n\
--outer\r\n{attachment}--outer\r\n{nested}--outer--\r\n"
        );
        let raw = raw.into_bytes();
        let p = prepare(&raw, &ctx_named("<script>x</script>"), &no_plan()).unwrap();
        assert_eq!(
            texts(&p.raw),
            vec![
                "Hi <script>x</script>",
                "<p>Hi &lt;script&gt;x&lt;/script&gt;</p>"
            ]
        );
        let (a, b) = (parse(&raw), parse(&p.raw));
        assert_eq!(a.parts.len(), b.parts.len());
        for i in 0..a.parts.len() {
            let (pa, pb) = (&a.parts[i], &b.parts[i]);
            if matches!(pa.body, PartType::Binary(_) | PartType::Message(_)) {
                let ra = &raw[pa.offset_header as usize..pa.offset_end as usize];
                let rb = &p.raw[pb.offset_header as usize..pb.offset_end as usize];
                assert_eq!(ra, rb, "part {i} byte-identical");
            }
        }
        assert_eq!(b.attachments().count(), 2);
        let inner = b
            .attachment(1)
            .and_then(|p| p.message())
            .expect("nested message");
        assert_eq!(inner.subject(), Some("{{contact.phone}}"));
    }

    #[test]
    fn header_injection_is_impossible() {
        let evil = ctx_named("Bob\r\nBcc: evil@x");
        let raw = plain("Hi {{contact.name}}\r\n");
        let mut h = b"From: a@b\r\nSubject: For {{contact.name}}\r\nContent-Type: text/plain\r\n\r\nHi {{contact.name}}\r\n".to_vec();
        for r in [raw.as_slice(), h.as_mut_slice()] {
            let p = prepare(
                r,
                &evil,
                &HeaderPlan {
                    subject_tag: Some(9),
                    thread_index: None,
                    x_loop: "host\r\nBcc: evil@x",
                    references: Some(("id\r\nBcc: evil@x", vec!["a\r\nBcc: b".into()])),
                },
            )
            .unwrap();
            let m = parse(&p.raw);
            assert!(m.header(HeaderName::Bcc).is_none());
            assert!(!header_block(&p.raw).lines().any(|l| l.starts_with("Bcc")));
            assert_eq!(m.body_text(0).unwrap().trim_end(), "Hi Bob  Bcc: evil@x");
        }
        let p = prepare(&h, &evil, &no_plan()).unwrap();
        assert_eq!(parse(&p.raw).subject(), Some("For Bob  Bcc: evil@x"));
    }

    // ----- header plan --------------------------------------------------------------------

    #[test]
    fn subject_tagging() {
        for (s, want) in [
            ("Re: Printer", "Re: [#12] Printer"),
            ("Printer", "[#12] Printer"),
            ("RE: AW: Fwd: Printer", "RE: AW: Fwd: [#12] Printer"),
            ("Re: [#12] Printer", "Re: [#12] Printer"),
            ("Printer [#12]", "Printer [#12]"),
            ("Re: [#5] Printer", "Re: [#12] Printer"),
            ("Invoice: 42", "[#12] Invoice: 42"),
            ("", "[#12]"),
            ("Re:", "Re: [#12]"),
        ] {
            assert_eq!(tag_subject(s, 12), want, "{s}");
        }
    }

    #[test]
    fn header_plan_applied() {
        let key: Vec<u8> = (0u8..22).map(|i| if i == 0 { 1 } else { i }).collect();
        let plan = HeaderPlan {
            subject_tag: Some(123),
            thread_index: Some(&key),
            x_loop: "gw.example.com",
            references: Some(("m2@x", vec!["<m1@x>".into()])),
        };
        let raw = plain("Hello\r\n");
        let p = prepare(&raw, &ctx(), &plan).unwrap();
        let m = parse(&p.raw);
        assert_eq!(m.subject(), Some("Re: [#123] Printer"));
        assert_eq!(
            m.header_raw("X-Loop").map(str::trim),
            Some("gw.example.com")
        );
        assert_eq!(m.in_reply_to().as_text(), Some("m2@x"));
        assert_eq!(
            m.references()
                .as_text_list()
                .map(|l| l.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
            Some(vec!["m1@x".to_string(), "m2@x".to_string()])
        );
        let ti = base64::engine::general_purpose::STANDARD
            .decode(m.header_raw("Thread-Index").unwrap().trim())
            .unwrap();
        assert_eq!(ti.len(), 27);
        assert_eq!(&ti[..22], key.as_slice());
        assert_eq!(m.body_text(0).unwrap(), "Hello\r\n");
        // Idempotent where it must be: a second pass adds nothing twice.
        let again = prepare(&p.raw, &ctx(), &plan).unwrap();
        let m2 = parse(&again.raw);
        assert_eq!(m2.subject(), Some("Re: [#123] Printer"));
        assert_eq!(header_block(&again.raw).matches("X-Loop").count(), 1);
        assert_eq!(header_block(&again.raw).matches("In-Reply-To").count(), 1);
        assert_eq!(header_block(&again.raw).matches("Thread-Index").count(), 1);
        assert_eq!(again.raw, p.raw);

        // The client's own references are kept.
        let raw = plain("x\r\n");
        let with_irt = [&b"In-Reply-To: <own@x>\r\n"[..], &raw].concat();
        let p = prepare(&with_irt, &ctx(), &plan).unwrap();
        let m = parse(&p.raw);
        assert_eq!(m.in_reply_to().as_text(), Some("own@x"));
        assert!(m.header_raw("References").is_none());
    }

    #[test]
    fn thread_index_round_trip() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.decode(s).unwrap();
        let start = b64(&extend_thread_index(None, 1_700_000_000));
        assert_eq!(start.len(), 22);
        assert_eq!(start[0], 1);
        assert_eq!(
            thread_index_unix(&start).map(|t| (t - 1_700_000_000).abs() <= 2),
            Some(true)
        );
        let one = b64(&extend_thread_index(Some(&start), 1_700_000_000 + 3600));
        assert_eq!((one.len(), &one[..22]), (27, &start[..]));
        // Delta code 0, one hour = 36e9 100ns units >> 18.
        let word = u32::from_be_bytes(one[22..26].try_into().unwrap());
        assert_eq!(word >> 31, 0);
        // (Both times keep only their 40 high bits, hence ±1 in the 2^24 unit.)
        let got = u64::from(word) << 18 >> 24;
        assert!(got.abs_diff(36_000_000_000u64 >> 24) <= 1, "{got}");
        let two = b64(&extend_thread_index(Some(&one), 1_700_000_000 + 7200));
        assert_eq!((two.len(), &two[..27]), (32, &one[..]));
        // Years later: delta code 1.
        let far = b64(&extend_thread_index(
            Some(&start),
            1_700_000_000 + 5 * 365 * 86400,
        ));
        assert_eq!(far[22] >> 7, 1);
        // Garbage: short → new; ragged tail dropped.
        assert_eq!(b64(&extend_thread_index(Some(&[1, 2, 3]), 0)).len(), 22);
        let ragged = [&two[..], &[9, 9]].concat();
        assert_eq!(
            b64(&extend_thread_index(Some(&ragged), 1_700_000_000)).len(),
            37
        );
        // Capped.
        let big = [&start[..], &[0u8; 5 * MAX_THREAD_CHILDREN + 3][..]].concat();
        assert_eq!(
            b64(&extend_thread_index(Some(&big), 1)).len(),
            22 + 5 * MAX_THREAD_CHILDREN
        );
        assert_eq!(b64(&extend_thread_index(None, i64::MIN)).len(), 22);
        assert_eq!(b64(&extend_thread_index(Some(&start), i64::MAX)).len(), 27);
    }

    #[test]
    fn headerless_part_gets_content_type() {
        let raw = b"From: a@b\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n\
Hi {{contact.name}}\r\n--b--\r\n";
        let p = prepare(raw, &ctx(), &no_plan()).unwrap();
        let m = parse(&p.raw);
        assert_eq!(
            m.parts[1].content_type().unwrap().attribute("charset"),
            Some("utf-8")
        );
        assert_eq!(texts(&p.raw), vec!["Hi José Müller"]);
        // A hostile subject stays cheap.
        let subject = "[#".repeat(100_000);
        assert_eq!(tag_subject(&subject, 3).len(), subject.len() + 5);
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        let plan = HeaderPlan {
            subject_tag: Some(1),
            thread_index: Some(&[1u8; 22]),
            x_loop: "h",
            references: Some(("a@b", vec![])),
        };
        for raw in [
            &b""[..],
            b"no headers at all",
            b"Subject: {{contact.name}}",
            b"Subject: x\r\n\r\n",
            b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\n{{agent.name}}",
            b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!{{agent.name}}",
            b"Content-Type: text/html\r\n\r\n<body<p <!-- #close <script>",
            b"\r\n\r\n\r\n",
            b"Content-Type: text/plain; charset=utf-16\r\n\r\nhi",
        ] {
            if let Ok(p) = prepare(raw, &ctx(), &plan) {
                let _ = parse(&p.raw);
            }
        }
        // The header without a line end gets one, then the plan.
        let p = prepare(b"Subject: {{contact.name}}", &ctx(), &plan).unwrap();
        let m = parse(&p.raw);
        assert_eq!(m.subject(), Some("[#1] José Müller"));
        assert!(m.header_raw("X-Loop").is_some());
    }

    // ----- corpus ---------------------------------------------------------------------

    fn everything(name: &str) -> Option<String> {
        Some(format!("snippet {name} for {{{{contact.name}}}}\nline two"))
    }

    #[test]
    fn corpus_never_panics_and_reparses() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpus");
        let mut files = Vec::new();
        let mut stack = vec![std::path::PathBuf::from(dir)];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "eml") {
                    files.push(p);
                }
            }
        }
        files.sort();
        assert!(files.len() > 300, "corpus at {dir}: {}", files.len());
        let ctx = Context {
            contact_name: Some("Zoë <Customer> & Co"),
            contact_email: Some("zoe@example.org"),
            agent_name: "Ågent",
            conversation: Some(77),
            snippets: &everything,
        };
        let key = [1u8; 22];
        let plan = HeaderPlan {
            subject_tag: Some(77),
            thread_index: Some(&key),
            x_loop: "gw.example.com",
            references: Some(("parent@x", vec!["root@x".into()])),
        };
        let (mut ok, mut errs) = (0, Vec::new());
        for f in &files {
            let raw = std::fs::read(f).unwrap();
            // Also a variant with commands and placeholders injected at the top of the text.
            let injected = inject(&raw);
            for (variant, input) in [("as is", raw.as_slice()), ("injected", injected.as_slice())] {
                match prepare(input, &ctx, &plan) {
                    Ok(p) => {
                        ok += 1;
                        check_output(f, variant, input, &p, &ctx);
                    }
                    Err(e) => errs.push(format!("{} ({variant}): {e}", f.display())),
                }
            }
        }
        eprintln!("corpus: {ok} prepared, {} refused", errs.len());
        for e in errs.iter().take(40) {
            eprintln!("  {e}");
        }
        assert!(ok >= files.len(), "too many refusals: {}", errs.len());
    }

    /// Puts "#close" and a placeholder at the top of the first text/plain body part.
    fn inject(raw: &[u8]) -> Vec<u8> {
        let Some(m) = MessageParser::default().parse(raw) else {
            return raw.to_vec();
        };
        match m
            .parts
            .iter()
            .find(|p| is_body_text(p) == Some(false) && p.encoding == Encoding::None)
        {
            Some(p) => {
                let at = p.offset_body as usize;
                [
                    &raw[..at],
                    b"#close\r\nDear {{contact.name}},\r\n",
                    &raw[at..],
                ]
                .concat()
            }
            None => raw.to_vec(),
        }
    }

    fn check_output(
        f: &std::path::Path,
        variant: &str,
        input: &[u8],
        p: &Prepared,
        ctx: &Context<'_>,
    ) {
        let what = format!("{} ({variant})", f.display());
        let (a, b) = (
            parse(input),
            MessageParser::default()
                .parse(&p.raw)
                .unwrap_or_else(|| panic!("{what}: no re-parse")),
        );
        assert_eq!(a.parts.len(), b.parts.len(), "{what}: part count");
        assert_eq!(b.subject().and_then(subject_tag), Some(77), "{what}: tag");
        for (i, (pa, pb)) in a.parts.iter().zip(&b.parts).enumerate() {
            match is_body_text(pa) {
                Some(html) if i == 0 || !matches!(pa.body, PartType::Multipart(_)) => {
                    let want = expand(part_text(pa), ctx, html).map(|t| t.replace("\r\n", "\n"));
                    let got = part_text(pb).replace("\r\n", "\n");
                    // Command stripping changes the first text part; compare only the others.
                    if !p.commands.is_empty() && got != want.as_deref().unwrap_or_default() {
                        continue;
                    }
                    assert_eq!(got, want.unwrap(), "{what}: part {i}");
                }
                _ => {
                    if matches!(
                        pa.body,
                        PartType::Binary(_) | PartType::InlineBinary(_) | PartType::Message(_)
                    ) {
                        // Part 0's header is the message header (the plan edits it).
                        let (ha, hb) = if i == 0 {
                            (pa.offset_body, pb.offset_body)
                        } else {
                            (pa.offset_header, pb.offset_header)
                        };
                        let ra = &input[ha as usize..pa.offset_end as usize];
                        let rb = &p.raw[hb as usize..pb.offset_end as usize];
                        assert_eq!(ra, rb, "{what}: part {i} must be byte-identical");
                    }
                }
            }
        }
        if variant == "injected" && !p.commands.is_empty() {
            let t = b
                .parts
                .iter()
                .find(|q| is_body_text(q) == Some(false))
                .map(part_text)
                .unwrap_or_default();
            assert!(t.starts_with("Dear Zoë <Customer> & Co,"), "{what}: {t:?}");
        }
    }
}
