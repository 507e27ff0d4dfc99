//! Minimal HTML lexing for the command block of an HTML body: tokens (text, tags, and
//! comments, declarations and `script`/`style`/`head`/`title` elements skipped whole),
//! entity decoding, and the visible lines with their first text token and whether they
//! are inside a `<blockquote>`. Never a full parser; bounded in tokens.

/// Most HTML tokens looked at for commands.
const MAX_HTML_TOKENS: usize = 20_000;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum TokKind {
    Text,
    Tag { name: String, closing: bool },
    Other,
}

#[derive(Debug, Clone)]
pub(super) struct Token {
    pub(super) kind: TokKind,
    pub(super) start: usize,
    pub(super) end: usize,
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

pub(super) fn html_tokens(html: &str) -> (Vec<Token>, bool) {
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
pub(super) struct HtmlLine {
    pub(super) text: String,
    pub(super) first_text_tok: Option<usize>,
    pub(super) quoted: bool,
}

pub(super) fn html_lines(html: &str, toks: &[Token]) -> Vec<HtmlLine> {
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
