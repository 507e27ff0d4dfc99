//! Email commands (`#assign LOGIN`, `#unassign`, `#close`, `#note`, `#merge N`, `#split`) at the top of a
//! reply: the command block of a text/plain body or of an HTML body's visible lines, the
//! body without it, and whether what is left is only blank lines, quoted history or a
//! signature (the commands-only check).

use super::html::{TokKind, html_lines, html_tokens};
use super::placeholders::printable;
use super::{Command, ComposeError};

/// Most command lines in the block.
const MAX_COMMAND_LINES: usize = 32;

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
        ("merge", [n]) => match n.trim_start_matches('#').parse::<u64>() {
            Ok(n) if n > 0 => Ok(Command::Merge(n)),
            _ => bad(),
        },
        ("split", []) => Ok(Command::Split),
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
pub(super) fn text_commands(text: &str) -> Result<(Vec<Command>, String, bool), ComposeError> {
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

/// Commands at the top of an HTML body: (commands, html without them, rest-is-empty).
pub(super) fn html_commands(html: &str) -> Result<(Vec<Command>, String, bool), ComposeError> {
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
