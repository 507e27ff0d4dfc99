//! Subject vocabulary: reply/forward prefixes in many languages (the one prefix table),
//! our own `[#n]` conversation tag, and the base subject that threading compares.
//! Pure string work, bounded by `MAX_PREFIXES` and `MAX_TAG_LEN`.

/// Most prefixes/tags stripped from the front of one subject (bounds the work).
const MAX_PREFIXES: usize = 32;
/// Longest bracket tag kept or stripped, in bytes.
const MAX_TAG_LEN: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PrefixKind {
    Reply,
    Forward,
    /// Means reply in one language and forward in another (VS: Finnish reply, Danish forward).
    Either,
}

/// Reply/forward subject prefixes, lower-case, without the colon. Plain words that are
/// often followed by a colon in ordinary subjects ("Ref:", "Invoice:", "Info:") are
/// deliberately absent.
const PREFIXES: &[(&str, PrefixKind)] = &[
    ("re", PrefixKind::Reply),
    ("aw", PrefixKind::Reply),   // de: Antwort
    ("antw", PrefixKind::Reply), // nl/de
    ("sv", PrefixKind::Reply),   // sv/da/no: svar
    ("rif", PrefixKind::Reply),  // it: riferimento
    ("r", PrefixKind::Reply),    // it: risposta
    ("ynt", PrefixKind::Reply),  // tr: yanıt
    ("odp", PrefixKind::Reply),  // pl: odpowiedź
    ("res", PrefixKind::Reply),  // pt: resposta
    ("réf", PrefixKind::Reply),  // fr: référence
    ("atb", PrefixKind::Reply),  // lv: atbilde
    ("vá", PrefixKind::Reply),   // hu: válasz
    ("απ", PrefixKind::Reply),   // el
    ("σχετ", PrefixKind::Reply), // el
    ("回复", PrefixKind::Reply), // zh-Hans
    ("答复", PrefixKind::Reply), // zh-Hans
    ("回覆", PrefixKind::Reply), // zh-Hant
    ("返信", PrefixKind::Reply), // ja
    ("vs", PrefixKind::Either),  // fi: vastaus (reply), da/no: videresendt (forward)
    ("fwd", PrefixKind::Forward),
    ("fw", PrefixKind::Forward),
    ("wg", PrefixKind::Forward),         // de: weitergeleitet
    ("tr", PrefixKind::Forward),         // fr: transféré
    ("i", PrefixKind::Forward),          // it: inoltrato
    ("rv", PrefixKind::Forward),         // es: reenviado
    ("enc", PrefixKind::Forward),        // pt: encaminhado
    ("doorst", PrefixKind::Forward),     // nl: doorgestuurd
    ("vb", PrefixKind::Forward),         // sv: vidarebefordrat
    ("pd", PrefixKind::Forward),         // pl: przekazanie dalej
    ("továbbítás", PrefixKind::Forward), // hu
    ("転送", PrefixKind::Forward),       // ja
    ("转发", PrefixKind::Forward),       // zh-Hans
    ("轉寄", PrefixKind::Forward),       // zh-Hant
];

/// One reply/forward prefix at the start of `s` (after leading whitespace): a table word
/// in any case, an optional counter (`[2]`, `(2)`, `^2`), optional blanks, then `:` or
/// the full-width `：`. Returns the kind and the rest after the colon.
fn parse_prefix(s: &str) -> Option<(PrefixKind, &str)> {
    let s = s.trim_start();
    let word_end = s
        .char_indices()
        .find(|(_, c)| !c.is_alphabetic())
        .map_or(s.len(), |(i, _)| i);
    let word = s.get(..word_end)?;
    if word.is_empty() || word.chars().count() > 12 {
        return None;
    }
    let lower = word.to_lowercase();
    let kind = PREFIXES
        .iter()
        .find(|(p, _)| *p == lower)
        .map(|(_, k)| *k)?;
    let mut rest = s.get(word_end..)?;
    // Counter: RE[2]:, Re(2):, Re^2:
    for (open, close) in [("[", Some(']')), ("(", Some(')')), ("^", None)] {
        if let Some(after) = rest.strip_prefix(open) {
            let digits = after.chars().take_while(char::is_ascii_digit).count();
            if digits == 0 || digits > 6 {
                return None;
            }
            let after = after.get(digits..)?;
            rest = match close {
                Some(c) => after.strip_prefix(c)?,
                None => after,
            };
            break;
        }
    }
    let rest = rest.trim_start_matches([' ', '\t']);
    let rest = rest.strip_prefix(':').or_else(|| rest.strip_prefix('：'))?;
    Some((kind, rest))
}

/// `[#123]` at the start of `s`: the number and the rest.
fn parse_own_tag(s: &str) -> Option<(u64, &str)> {
    let after = s.strip_prefix("[#")?;
    let digits = after.chars().take_while(char::is_ascii_digit).count();
    if digits == 0 || digits > 18 {
        return None;
    }
    let n = after.get(..digits)?.parse().ok()?;
    let rest = after.get(digits..)?.strip_prefix(']')?;
    Some((n, rest))
}

/// The conversation number of the first `[#123]` tag anywhere in the subject.
pub fn subject_tag(subject: &str) -> Option<u64> {
    subject
        .match_indices("[#")
        .find_map(|(i, _)| subject.get(i..).and_then(parse_own_tag).map(|(n, _)| n))
}

/// What the prefixes of a subject say about the message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubjectPrefixes {
    /// The first prefix is a reply prefix (Re:, AW:, SV:, 回复:, …).
    pub reply: bool,
    /// The first prefix is a forward prefix (Fwd:, FW:, WG:, TR:, I:, RV:, …), or the
    /// subject ends in `(fwd)` or is wrapped as `[fwd: …]`.
    pub forward: bool,
}

/// Leading list tags and prefixes split off the subject.
struct Leading<'a> {
    tags: Vec<&'a str>,
    first: Option<PrefixKind>,
    rest: &'a str,
}

fn split_leading(s: &str) -> Leading<'_> {
    let mut out = Leading {
        tags: Vec::new(),
        first: None,
        rest: s,
    };
    let mut t = s;
    for _ in 0..MAX_PREFIXES {
        t = t.trim_start();
        if let Some((kind, rest)) = parse_prefix(t) {
            out.first.get_or_insert(kind);
            t = rest;
            continue;
        }
        if let Some((_, rest)) = parse_own_tag(t) {
            t = rest;
            continue;
        }
        if t.starts_with('[')
            && let Some(end) = t.find(']').filter(|e| *e <= MAX_TAG_LEN)
            && let Some(inner) = t.get(1..end)
        {
            let after = t.get(end + 1..).unwrap_or_default();
            // exmh style "[fwd: Original subject]" wrapping the whole subject.
            if after.trim().is_empty()
                && let Some((kind, inner_rest)) = parse_prefix(inner)
            {
                out.first.get_or_insert(kind);
                t = inner_rest;
                continue;
            }
            if !inner.trim().is_empty() && !inner.contains('[') {
                out.tags.push(t.get(..=end).unwrap_or_default());
                t = after;
                continue;
            }
        }
        break;
    }
    out.rest = t;
    out
}

/// Strips trailing "(fwd)" markers (Pine); true when one was found.
fn strip_fwd_suffix(s: &str) -> (&str, bool) {
    let mut t = s.trim_end();
    let mut found = false;
    for _ in 0..MAX_PREFIXES {
        let n = t.len();
        match n
            .checked_sub(5)
            .and_then(|i| t.get(i..).map(|tail| (i, tail)))
        {
            Some((i, tail)) if tail.eq_ignore_ascii_case("(fwd)") => {
                t = t.get(..i).unwrap_or_default().trim_end();
                found = true;
            }
            _ => break,
        }
    }
    (t, found)
}

/// Reply/forward classification of a subject by its prefixes.
pub fn subject_prefixes(subject: &str) -> SubjectPrefixes {
    let lead = split_leading(subject);
    let (_, fwd_suffix) = strip_fwd_suffix(lead.rest);
    SubjectPrefixes {
        reply: matches!(lead.first, Some(PrefixKind::Reply | PrefixKind::Either)),
        forward: matches!(lead.first, Some(PrefixKind::Forward | PrefixKind::Either)) || fwd_suffix,
    }
}

/// The base subject used for threading: stacked and localised reply/forward prefixes,
/// our own `[#123]` tags (anywhere) and trailing `(fwd)` removed; other bracket tags such
/// as mailing-list names kept (in front); whitespace collapsed; lower-cased.
pub fn normalize_subject(s: &str) -> String {
    let lead = split_leading(s);
    let (rest, _) = strip_fwd_suffix(lead.rest);
    let mut text = String::with_capacity(s.len());
    for tag in &lead.tags {
        text.push_str(tag);
        text.push(' ');
    }
    // Our own tags anywhere else ("Printer broken [#12]").
    let mut r = rest;
    while let Some(i) = r.find("[#") {
        text.push_str(r.get(..i).unwrap_or_default());
        let tail = r.get(i..).unwrap_or_default();
        match parse_own_tag(tail) {
            Some((_, after)) => r = after,
            None => {
                text.push_str("[#");
                r = tail.get(2..).unwrap_or_default();
            }
        }
    }
    text.push_str(r);
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Base subjects (as [`normalize_subject`] gives them) that say nothing about what a
/// message is about: unrelated threads share them, so the subject rule never joins on
/// them. Placeholders of mail clients and greetings, in the languages of the prefix table.
const GENERIC_SUBJECTS: &[&str] = &[
    "(no subject)",
    "no subject",
    "(kein betreff)",
    "kein betreff",
    "(sans objet)",
    "sans objet",
    "(sin asunto)",
    "sin asunto",
    "(nessun oggetto)",
    "untitled",
    "your mail",
    "your email",
    "your e-mail",
    "your message",
    "your request",
    "your inquiry",
    "your enquiry",
    "your order",
    "ihre nachricht",
    "ihre anfrage",
    "ihre e-mail",
    "ihre mail",
    "votre message",
    "votre demande",
    "votre mail",
    "su mensaje",
    "su solicitud",
    "tu mensaje",
    "question",
    "questions",
    "quick question",
    "a question",
    "frage",
    "anfrage",
    "demande",
    "pregunta",
    "domanda",
    "vraag",
    "hello",
    "hi",
    "hi there",
    "hey",
    "hallo",
    "bonjour",
    "hola",
    "ciao",
    "hej",
    "greetings",
    "help",
    "help needed",
    "need help",
    "hilfe",
    "aide",
    "ayuda",
    "aiuto",
    "urgent",
    "dringend",
    "important",
    "info",
    "information",
    "inquiry",
    "enquiry",
    "request",
    "support",
    "problem",
    "issue",
    "thanks",
    "thank you",
    "danke",
    "merci",
    "gracias",
    "grazie",
    "fyi",
    "update",
    "follow up",
    "follow-up",
    "followup",
    "meeting",
    "contact",
    "message",
    "test",
    "testing",
    "test message",
    "document",
    "documents",
    "scan",
    "photo",
    "photos",
    "attachment",
    "attachments",
    "invoice",
    "(none)",
    "none",
];

/// Whether a base subject is too generic for the subject rule: empty, in
/// [`GENERIC_SUBJECTS`], or without a single letter (ticket numbers alone, "...", "?").
pub fn is_generic_subject(base: &str) -> bool {
    let base = base.trim_end_matches(['.', '!', '?', ':', ' ']);
    base.chars().filter(|c| c.is_alphabetic()).count() < 2 || GENERIC_SUBJECTS.contains(&base)
}

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
pub fn tag_subject(subject: &str, n: u64) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_subjects() {
        for generic in [
            "",
            "your mail",
            "your mail.",
            "question",
            "hello!",
            "hi",
            "(no subject)",
            "ihre nachricht",
            "12345",
            "...",
            "?",
            "a",
        ] {
            assert!(is_generic_subject(generic), "{generic:?} should be generic");
        }
        for specific in [
            "printer broken",
            "your mail server is down",
            "invoice 2026-114",
            "hello world app",
        ] {
            assert!(
                !is_generic_subject(specific),
                "{specific:?} should be specific"
            );
        }
        // Through normalisation, as threading sees it.
        assert!(is_generic_subject(&normalize_subject("Re: AW: Your mail")));
    }

    #[test]
    fn normalize_table() {
        let cases: &[(&str, &str)] = &[
            ("Printer broken", "printer broken"),
            ("Re: Printer broken", "printer broken"),
            ("RE: re: Re:Printer   broken ", "printer broken"),
            ("RE[2]: Printer broken", "printer broken"),
            ("Re^2: Printer broken", "printer broken"),
            ("Re(3): Printer broken", "printer broken"),
            ("Re : Printer broken", "printer broken"),
            ("Fwd: Fw: FW: Printer broken", "printer broken"),
            ("AW: WG: Printer broken", "printer broken"),
            ("SV: VS: Printer broken", "printer broken"),
            ("Antw: Printer broken", "printer broken"),
            ("R: R: R: I: Printer broken", "printer broken"),
            ("Rif: Printer broken", "printer broken"),
            ("TR: RV: Printer broken", "printer broken"),
            ("Ynt: Printer broken", "printer broken"),
            ("Réf : Printer broken", "printer broken"),
            ("回复：打印机坏了", "打印机坏了"),
            ("答复: 打印机坏了", "打印机坏了"),
            ("転送: プリンター", "プリンター"),
            ("Re: [#123] Printer broken", "printer broken"),
            ("Printer broken [#123]", "printer broken"),
            ("[#123] Re: Printer broken", "printer broken"),
            ("[SAtalk] Re: Printer broken", "[satalk] printer broken"),
            ("Re: [SAtalk] Printer broken", "[satalk] printer broken"),
            ("Printer broken (fwd)", "printer broken"),
            ("[fwd: Printer broken]", "printer broken"),
            ("Invoice: March", "invoice: march"),
            ("Ref: order 12", "ref: order 12"),
            ("Info: maintenance", "info: maintenance"),
            ("Reminder: meeting", "reminder: meeting"),
            ("Re: ", ""),
            ("", ""),
            (
                "Re: Re: Re: Re: Re: Re: Re: Re: Re: Re: Re: Re: Re: Re: Re: Re: Re: Re: Re: Re: x",
                "x",
            ),
            ("[not closed Re: x", "[not closed re: x"),
            ("Price [#abc] list", "price [#abc] list"),
            ("Re: 2 + 2 = 4", "2 + 2 = 4"),
            ("Über: Straße", "über: straße"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_subject(raw), *want, "{raw:?}");
        }
    }

    #[test]
    fn prefixes_and_tags() {
        let p = subject_prefixes("Fwd: Re: x");
        assert!(p.forward && !p.reply);
        let p = subject_prefixes("Re: Fwd: x");
        assert!(p.reply && !p.forward);
        assert!(subject_prefixes("x (fwd)").forward);
        assert!(subject_prefixes("[ILUG] FW: x").forward);
        assert_eq!(subject_prefixes("Invoice: x"), SubjectPrefixes::default());
        assert_eq!(subject_tag("Re: [#123] x"), Some(123));
        assert_eq!(subject_tag("x [#12] y [#13]"), Some(12));
        assert_eq!(
            subject_tag("x [#] [#99999999999999999999999] [#7]"),
            Some(7)
        );
        assert_eq!(subject_tag("x [#12"), None);
    }

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
}
