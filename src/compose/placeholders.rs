//! Placeholders (`{{contact.name}}`, `{{snippet:NAME}}`): parsing the one after a `{{`,
//! the values of the known variables, expansion of a text (plain or HTML-escaped) with
//! snippets one level deep, and the per-message [`Budget`] that bounds the work. Which
//! parts get expanded is decided by `prepare`, not here.

use super::{ComposeError, Context};

/// Most bytes all expansions of one message may produce (and most bytes of one text).
const MAX_EXPANDED_BYTES: usize = 96 << 20;
/// Most placeholders in one message (snippet contents included).
pub(super) const MAX_PLACEHOLDERS: usize = 20_000;
/// Longest placeholder body between the braces.
const MAX_PLACEHOLDER_BODY: usize = 128;
/// Biggest snippet text used.
const MAX_SNIPPET_BYTES: usize = 1 << 20;

pub(super) struct Budget {
    placeholders: usize,
    bytes: usize,
}

impl Budget {
    pub(super) fn new() -> Self {
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
pub(super) fn one_line(s: &str) -> String {
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

pub(super) fn expand_inner(
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

/// Text safe for an SMTP reply line: printable, at most 80 characters.
pub(super) fn printable(s: &str) -> String {
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
