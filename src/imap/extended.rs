//! Command forms imap-codec 2.0.0-alpha.10 does not parse: LIST-EXTENDED (RFC 5258, with
//! RFC 6154 SPECIAL-USE and RFC 5819 LIST-STATUS), SEARCH RETURN (RFC 4731 ESEARCH) and
//! several messages in one APPEND (RFC 3502 MULTIAPPEND).
//! The driver hands us a command imap-codec rejected (already framed by imap-next, literals included); we recognise the
//! extended part and give the rest back to imap-codec as a base command, so mailbox names,
//! search keys, STATUS items and APPEND arguments keep one parser.

use imap_codec::{
    CommandCodec, ResponseCodec,
    decode::Decoder,
    encode::Encoder,
    imap_types::{
        IntoStatic,
        command::{Command, CommandBody},
        core::Tag,
        mailbox::{ListMailbox, Mailbox},
        response::{Response, Status},
        status::StatusDataItemName,
    },
};

/// An extended command, its base-syntax parts already decoded by imap-codec.
#[derive(Debug)]
pub struct Extended {
    pub tag: Tag<'static>,
    pub command: ExtCommand,
}

#[derive(Debug)]
pub enum ExtCommand {
    List(ListExtended),
    Search {
        uid: bool,
        returns: SearchReturn,
        /// The same command without `RETURN (...)`: a base SEARCH for imap-codec.
        base: CommandBody<'static>,
    },
    /// Two or more base APPENDs (one message each), to run all or none.
    MultiAppend(Vec<CommandBody<'static>>),
    /// One APPEND whose message came as `UTF8 (~{n})` (RFC 6855 §4), as a base APPEND
    /// with that literal8.
    Append(CommandBody<'static>),
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct ListSelection {
    pub subscribed: bool,
    pub special_use: bool,
    pub recursive_match: bool,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct ListReturn {
    pub subscribed: bool,
    pub children: bool,
    pub special_use: bool,
    /// RFC 5819: STATUS items to send after each selectable mailbox.
    pub status: Option<Vec<StatusDataItemName>>,
}

#[derive(Debug)]
pub struct ListExtended {
    pub selection: ListSelection,
    pub reference: Mailbox<'static>,
    pub patterns: Vec<ListMailbox<'static>>,
    pub returns: ListReturn,
}

/// RFC 4731 §3.1 return options; none named means ALL.
#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
pub struct SearchReturn {
    pub min: bool,
    pub max: bool,
    pub count: bool,
    pub all: bool,
}

/// Why an extended command was refused: a tagged BAD with this text.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed {
    pub tag: Tag<'static>,
    pub reason: String,
}

/// `None` when `bytes` is not one of our extended forms (the caller answers it as a
/// syntax error); otherwise the command, or the reason it is malformed.
pub fn parse(bytes: &[u8]) -> Option<Result<Extended, Malformed>> {
    let tokens = tokenize(bytes)?;
    let (Token::Atom(tag), rest) = tokens.split_first()? else {
        return None;
    };
    let tag = Tag::try_from(String::from_utf8(tag.clone()).ok()?).ok()?;
    let (name, rest) = rest.split_first()?;
    let (uid, name, rest) = match name.atom().as_deref() {
        Some("UID") => {
            let (name, rest) = rest.split_first()?;
            (true, name.atom()?, rest)
        }
        Some(_) => (false, name.atom()?, rest),
        None => return None,
    };
    let command = match (uid, name.as_str()) {
        (false, "LIST") => list(rest),
        (_, "SEARCH") => search(uid, rest),
        (false, "APPEND") => multi_append(rest),
        _ => return None,
    }?;
    Some(
        command
            .map(|command| Extended {
                tag: tag.clone(),
                command,
            })
            .map_err(|reason| Malformed { tag, reason }),
    )
}

/// The tagged BAD for a malformed extended command, encoded.
pub fn refusal(malformed: Malformed) -> Vec<u8> {
    let status = Status::bad(Some(malformed.tag.clone()), None, malformed.reason)
        .or_else(|_| Status::bad(Some(malformed.tag), None, "malformed extended command"));
    match status {
        Ok(status) => ResponseCodec::default()
            .encode(&Response::Status(status))
            .dump(),
        Err(_) => b"* BAD malformed extended command\r\n".to_vec(),
    }
}

/// `LIST [SP "(" selection ")"] SP mailbox SP (pattern / "(" patterns ")")
/// [SP "RETURN" SP "(" return-options ")"]` (RFC 5258 §6).
fn list(args: &[Token]) -> Option<Result<ExtCommand, String>> {
    let mut args = args;
    let mut selection = ListSelection::default();
    if let Some((Token::List(options), rest)) = args.split_first() {
        for o in options {
            match o.atom().as_deref() {
                Some("SUBSCRIBED") => selection.subscribed = true,
                // RFC 5258 §3.1: we have no remote mailboxes, so REMOTE selects nothing more.
                Some("REMOTE") => {}
                Some("RECURSIVEMATCH") => selection.recursive_match = true,
                // RFC 6154 §3.
                Some("SPECIAL-USE") => selection.special_use = true,
                _ => return Some(Err(format!("unknown LIST selection option {o}"))),
            }
        }
        // RFC 5258 §3.1: RECURSIVEMATCH alone (or with REMOTE) is an error.
        if selection.recursive_match && !selection.subscribed {
            return Some(Err(
                "RECURSIVEMATCH needs the SUBSCRIBED selection option".into()
            ));
        }
        args = rest;
    }
    let (reference, rest) = args.split_first()?;
    let (patterns, rest) = rest.split_first()?;
    let patterns: Vec<&Token> = match patterns {
        Token::List(items) if !items.is_empty() => items.iter().collect(),
        Token::List(_) => return Some(Err("empty LIST pattern list".into())),
        one => vec![one],
    };
    let mut returns = ListReturn::default();
    match rest {
        [] => {}
        [keyword, Token::List(options)] if keyword.atom().as_deref() == Some("RETURN") => {
            let mut options = options.iter();
            while let Some(o) = options.next() {
                match o.atom().as_deref() {
                    Some("SUBSCRIBED") => returns.subscribed = true,
                    Some("CHILDREN") => returns.children = true,
                    Some("SPECIAL-USE") => returns.special_use = true,
                    // RFC 5819 §2.
                    Some("STATUS") => match options.next() {
                        Some(Token::List(items)) => match status_items(items) {
                            Some(items) => returns.status = Some(items),
                            None => return Some(Err("bad STATUS items in LIST RETURN".into())),
                        },
                        _ => return Some(Err("STATUS needs a list of items".into())),
                    },
                    _ => return Some(Err(format!("unknown LIST return option {o}"))),
                }
            }
        }
        _ => return None,
    }
    // The base form with a plain pattern is imap-codec's; we only see it when the rest is
    // extended, so a base parse of "LIST ref pattern" decodes the names.
    let mut decoded = Vec::new();
    let mut reference_out = None;
    for p in patterns {
        let mut line = b"x LIST ".to_vec();
        reference.encode(&mut line);
        line.push(b' ');
        p.encode(&mut line);
        line.extend_from_slice(b"\r\n");
        match base(&line)? {
            CommandBody::List {
                reference,
                mailbox_wildcard,
            } => {
                reference_out = Some(reference);
                decoded.push(mailbox_wildcard);
            }
            _ => return None,
        }
    }
    Some(Ok(ExtCommand::List(ListExtended {
        selection,
        reference: reference_out?,
        patterns: decoded,
        returns,
    })))
}

fn status_items(items: &[Token]) -> Option<Vec<StatusDataItemName>> {
    let mut line = b"x STATUS INBOX ".to_vec();
    Token::List(items.to_vec()).encode(&mut line);
    line.extend_from_slice(b"\r\n");
    match base(&line)? {
        CommandBody::Status { item_names, .. } => Some(item_names.into_owned()),
        _ => None,
    }
}

/// `[UID] SEARCH SP "RETURN" SP "(" [option *(SP option)] ")" SP search-criteria`
/// (RFC 4731 §3.1); anything else is not ours.
fn search(uid: bool, args: &[Token]) -> Option<Result<ExtCommand, String>> {
    let (keyword, rest) = args.split_first()?;
    if keyword.atom().as_deref() != Some("RETURN") {
        return None;
    }
    let (Token::List(options), criteria) = rest.split_first()? else {
        return Some(Err("RETURN needs a list of options".into()));
    };
    let mut returns = SearchReturn::default();
    for o in options {
        match o.atom().as_deref() {
            Some("MIN") => returns.min = true,
            Some("MAX") => returns.max = true,
            Some("COUNT") => returns.count = true,
            Some("ALL") => returns.all = true,
            _ => return Some(Err(format!("unknown SEARCH return option {o}"))),
        }
    }
    // RFC 4731 §3.1: "RETURN ()" is the same as "RETURN (ALL)".
    if returns == SearchReturn::default() {
        returns.all = true;
    }
    if criteria.is_empty() {
        return Some(Err("SEARCH needs criteria".into()));
    }
    let mut line = if uid {
        b"x UID SEARCH".to_vec()
    } else {
        b"x SEARCH".to_vec()
    };
    for t in criteria {
        line.push(b' ');
        t.encode(&mut line);
    }
    line.extend_from_slice(b"\r\n");
    match base(&line) {
        Some(base @ CommandBody::Search { .. }) => {
            Some(Ok(ExtCommand::Search { uid, returns, base }))
        }
        _ => Some(Err("bad SEARCH criteria".into())),
    }
}

/// `APPEND mailbox 1*(SP [flag-list SP] [date-time SP] literal)` (RFC 3502 §6.3.11); one
/// message is imap-codec's, so we answer two or more.
fn multi_append(args: &[Token]) -> Option<Result<ExtCommand, String>> {
    let (mailbox, rest) = args.split_first()?;
    // RFC 6855 §4: `append-data =/ "UTF8" SP "(" literal8 ")"` is the message as a
    // literal8; imap-codec knows the literal8, not this wrapper.
    let mut utf8 = false;
    let mut unwrapped = Vec::with_capacity(rest.len());
    let mut i = 0;
    while i < rest.len() {
        if rest[i].atom().as_deref() == Some("UTF8")
            && let Some(Token::List(items)) = rest.get(i + 1)
            && let [Token::Literal(bytes, true)] = items.as_slice()
        {
            unwrapped.push(Token::Literal(bytes.clone(), true));
            utf8 = true;
            i += 2;
            continue;
        }
        unwrapped.push(rest[i].clone());
        i += 1;
    }
    let mut rest = unwrapped.as_slice();
    let mut messages = Vec::new();
    while !rest.is_empty() {
        let Some(end) = rest.iter().position(|t| matches!(t, Token::Literal(..))) else {
            return Some(Err("APPEND arguments without a message literal".into()));
        };
        let mut line = b"x APPEND ".to_vec();
        mailbox.encode(&mut line);
        for t in &rest[..=end] {
            line.push(b' ');
            t.encode(&mut line);
        }
        line.extend_from_slice(b"\r\n");
        match base(&line) {
            Some(append @ CommandBody::Append { .. }) => messages.push(append),
            _ => return Some(Err("bad APPEND arguments".into())),
        }
        rest = &rest[end + 1..];
    }
    if messages.len() == 1 && utf8 {
        return messages.pop().map(|m| Ok(ExtCommand::Append(m)));
    }
    if messages.len() < 2 {
        return None;
    }
    Some(Ok(ExtCommand::MultiAppend(messages)))
}

fn base(line: &[u8]) -> Option<CommandBody<'static>> {
    let (rest, Command { body, .. }) = CommandCodec::default().decode(line).ok()?;
    rest.is_empty().then(|| body.into_static())
}

/// The lexical pieces of a command: enough structure to find the extended parts, with
/// strings and literals kept verbatim so imap-codec sees what the client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Atom(Vec<u8>),
    Quoted(Vec<u8>),
    /// The bytes, and whether it was a literal8 (`~{n}`, RFC 3516).
    Literal(Vec<u8>, bool),
    List(Vec<Token>),
}

impl Token {
    /// The atom, upper-cased (keywords are case-insensitive).
    fn atom(&self) -> Option<String> {
        match self {
            Token::Atom(a) => Some(String::from_utf8_lossy(a).to_ascii_uppercase()),
            _ => None,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Token::Atom(a) => out.extend_from_slice(a),
            Token::Quoted(q) => {
                out.push(b'"');
                for b in q {
                    if *b == b'"' || *b == b'\\' {
                        out.push(b'\\');
                    }
                    out.push(*b);
                }
                out.push(b'"');
            }
            Token::Literal(bytes, eight) => {
                if *eight {
                    out.push(b'~');
                }
                out.extend_from_slice(format!("{{{}}}\r\n", bytes.len()).as_bytes());
                out.extend_from_slice(bytes);
            }
            Token::List(items) => {
                out.push(b'(');
                for (i, t) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b' ');
                    }
                    t.encode(out);
                }
                out.push(b')');
            }
        }
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = Vec::new();
        self.encode(&mut out);
        // Bounded: a reason names one option, not a message.
        out.truncate(64);
        f.write_str(&String::from_utf8_lossy(&out))
    }
}

/// Splits a whole command (ending in CRLF) into tokens; `None` if it is not lexically
/// IMAP (unbalanced parentheses, a short literal, no CRLF).
fn tokenize(bytes: &[u8]) -> Option<Vec<Token>> {
    let body = bytes.strip_suffix(b"\r\n")?;
    let mut pos = 0;
    let mut stack: Vec<Vec<Token>> = vec![Vec::new()];
    while pos < body.len() {
        match body[pos] {
            b' ' => pos += 1,
            b'(' => {
                stack.push(Vec::new());
                pos += 1;
            }
            b')' => {
                let list = stack.pop()?;
                stack.last_mut()?.push(Token::List(list));
                pos += 1;
            }
            b'"' => {
                let mut q = Vec::new();
                pos += 1;
                loop {
                    match *body.get(pos)? {
                        b'"' => break,
                        b'\\' => {
                            q.push(*body.get(pos + 1)?);
                            pos += 2;
                        }
                        b => {
                            q.push(b);
                            pos += 1;
                        }
                    }
                }
                pos += 1;
                stack.last_mut()?.push(Token::Quoted(q));
            }
            b'{' | b'~' => {
                let eight = body[pos] == b'~';
                let open = if eight { pos + 1 } else { pos };
                if body.get(open) != Some(&b'{') {
                    let (atom, next) = atom(body, pos);
                    stack.last_mut()?.push(Token::Atom(atom));
                    pos = next;
                    continue;
                }
                let close = open + body[open..].iter().position(|b| *b == b'}')?;
                let digits = std::str::from_utf8(&body[open + 1..close]).ok()?;
                let len: usize = digits.strip_suffix('+').unwrap_or(digits).parse().ok()?;
                let start = close + 1;
                if body.get(start..start + 2)? != b"\r\n" {
                    return None;
                }
                // Checked: the length is the peer's.
                let end = start.checked_add(2)?.checked_add(len)?;
                let data = body.get(start + 2..end)?;
                stack.last_mut()?.push(Token::Literal(data.to_vec(), eight));
                pos = end;
            }
            _ => {
                let (atom, next) = atom(body, pos);
                stack.last_mut()?.push(Token::Atom(atom));
                pos = next;
            }
        }
    }
    if stack.len() != 1 {
        return None;
    }
    stack.pop()
}

/// An atom runs to a space or parenthesis, except inside `[...]` (`BODY[HEADER]`).
fn atom(body: &[u8], start: usize) -> (Vec<u8>, usize) {
    let mut pos = start;
    let mut depth = 0usize;
    while let Some(&b) = body.get(pos) {
        match b {
            b'[' => depth += 1,
            b']' => depth = depth.saturating_sub(1),
            b' ' | b'(' | b')' if depth == 0 => break,
            b'\r' | b'\n' => break,
            _ => {}
        }
        pos += 1;
    }
    // At least one byte, so the tokenizer always advances.
    let end = pos.max(start + 1);
    (body[start..end].to_vec(), end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_codec::imap_types::extensions::binary::LiteralOrLiteral8;

    fn ok(line: &str) -> Extended {
        match parse(line.as_bytes()) {
            Some(Ok(e)) => e,
            other => panic!("{line:?}: {other:?}"),
        }
    }

    fn bad(line: &str) -> String {
        match parse(line.as_bytes()) {
            Some(Err(m)) => m.reason,
            other => panic!("{line:?}: {other:?}"),
        }
    }

    fn list(line: &str) -> ListExtended {
        match ok(line).command {
            ExtCommand::List(l) => l,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn list_selection_and_return_options() {
        let l = list("a LIST (SPECIAL-USE) \"\" \"*\"\r\n");
        assert!(l.selection.special_use && !l.selection.subscribed);
        assert_eq!(l.patterns.len(), 1);
        let l = list("a list \"\" \"*\" return (special-use subscribed children)\r\n");
        assert!(l.returns.special_use && l.returns.subscribed && l.returns.children);
        let l = list("a LIST (SUBSCRIBED RECURSIVEMATCH) \"\" (INBOX \"Personal/%\")\r\n");
        assert!(l.selection.subscribed && l.selection.recursive_match);
        assert_eq!(l.patterns.len(), 2);
        let l = list("a LIST \"\" {1}\r\n*\r\n");
        assert!(l.selection == ListSelection::default());
    }

    #[test]
    fn list_status_items_are_decoded_by_imap_codec() {
        let l = list("a LIST \"\" \"*\" RETURN (STATUS (MESSAGES UNSEEN))\r\n");
        assert_eq!(
            l.returns.status,
            Some(vec![
                StatusDataItemName::Messages,
                StatusDataItemName::Unseen
            ])
        );
        assert!(bad("a LIST \"\" * RETURN (STATUS (BOGUS))\r\n").contains("STATUS"));
        assert!(bad("a LIST \"\" * RETURN (STATUS)\r\n").contains("STATUS"));
    }

    #[test]
    fn list_errors_name_the_problem() {
        assert!(bad("a LIST (BOGUS) \"\" *\r\n").contains("BOGUS"));
        assert!(bad("a LIST (RECURSIVEMATCH) \"\" *\r\n").contains("RECURSIVEMATCH"));
        assert!(bad("a LIST \"\" * RETURN (BOGUS)\r\n").contains("BOGUS"));
        assert!(bad("a LIST \"\" ()\r\n").contains("empty"));
    }

    #[test]
    fn search_return_options() {
        let e = ok("t UID SEARCH RETURN () 1:* UNSEEN\r\n");
        let ExtCommand::Search { uid, returns, base } = e.command else {
            panic!()
        };
        assert!(uid && returns.all && !returns.min);
        assert!(matches!(base, CommandBody::Search { uid: true, .. }));
        let e = ok("t SEARCH RETURN (MIN MAX COUNT) SUBJECT {3}\r\nfoo\r\n");
        let ExtCommand::Search { returns, .. } = e.command else {
            panic!()
        };
        assert!(returns.min && returns.max && returns.count && !returns.all);
        assert!(bad("t SEARCH RETURN (SAVEALL) ALL\r\n").contains("SAVEALL"));
        assert!(bad("t SEARCH RETURN (MIN)\r\n").contains("criteria"));
        assert!(bad("t SEARCH RETURN (MIN) BOGUS\r\n").contains("criteria"));
    }

    #[test]
    fn multiappend_splits_into_base_appends() {
        let e = ok(
            "t APPEND Personal/x (\\Seen) {4}\r\nHi\r\n ~{3}\r\na\0b \"01-Jan-2024 10:00:00 +0000\" {2+}\r\nok\r\n",
        );
        let ExtCommand::MultiAppend(messages) = e.command else {
            panic!()
        };
        assert_eq!(messages.len(), 3);
        assert!(bad("t APPEND x {1}\r\na BOGUS {1}\r\nb\r\n").contains("APPEND"));
        assert!(bad("t APPEND x {1}\r\na (\\Seen)\r\n").contains("literal"));
    }

    #[test]
    fn utf8_append_data_is_a_literal8() {
        let e = ok("t APPEND INBOX (\\Seen) UTF8 (~{5}\r\nSü\r\n)\r\n");
        let ExtCommand::Append(CommandBody::Append { message, .. }) = e.command else {
            panic!("{e:?}");
        };
        let LiteralOrLiteral8::Literal8(message) = message else {
            panic!("{message:?}");
        };
        assert_eq!(message.data.as_ref(), "Sü\r\n".as_bytes());
        // Several, some UTF8: still one MULTIAPPEND.
        let e = ok("t APPEND Personal/x UTF8 (~{1}\r\na) {1}\r\nb\r\n");
        assert!(matches!(e.command, ExtCommand::MultiAppend(ref m) if m.len() == 2));
    }

    #[test]
    fn base_forms_and_garbage_are_not_ours() {
        for line in [
            "a SEARCH ALL\r\n",
            "a APPEND x {1}\r\na\r\n",
            "a FETCH 1 BODY[]\r\n",
            "a LIST (\r\n",
            "a SEARCH RETURN (ALL) SUBJECT {9}\r\nshort\r\n",
            "\r\n",
            "no-crlf",
            "a SEARCH RETURN () SUBJECT {18446744073709551615}\r\nx\r\n",
            "a LIST \"\" \"unterminated\r\n",
            "a LIST ) (\r\n",
            "a SEARCH RETURN () SUBJECT {5x}\r\nx\r\n",
        ] {
            assert!(parse(line.as_bytes()).is_none(), "{line:?}");
        }
    }
}
