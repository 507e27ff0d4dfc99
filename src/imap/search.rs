//! SEARCH key evaluation for one message (RFC 3501 §6.4.4). Pure. Flags, UIDs, sequence
//! numbers, sizes and internal dates come from the candidate's metadata; the message bytes are
//! parsed only when a key needs their content, and then once per evaluation. Fed
//! attacker-controlled bytes: never panics, recursion bounded.

use std::cell::OnceCell;

use chrono::{DateTime, NaiveDate};
use imap_codec::imap_types::{
    core::AString,
    flag::Flag,
    search::SearchKey,
    sequence::{SeqOrUid, Sequence, SequenceSet},
};
use mail_parser::Message;

use crate::mail::search_text;
/// NOT / OR / parenthesis nesting evaluated; a key nested deeper matches nothing.
pub const MAX_KEY_DEPTH: usize = 64;

/// What a search needs about one message.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub seq: u32,
    pub uid: u32,
    pub flags: &'a [Flag<'static>],
    /// `\Recent` in the searching session (RFC 3501 §2.3.2).
    pub recent: bool,
    /// Unix seconds.
    pub internal_date: i64,
    /// RFC822.SIZE.
    pub size: u64,
    pub raw: &'a [u8],
}

/// Evaluates `key` for one message. `max_seq`/`max_uid` resolve `*` in sequence sets.
pub fn matches(key: &SearchKey<'_>, c: &Candidate<'_>, max_seq: u32, max_uid: u32) -> bool {
    Eval {
        c,
        max_seq,
        max_uid,
        msg: OnceCell::new(),
    }
    .key(key, 0)
    .unwrap_or(false)
}

struct Eval<'c, 'a> {
    c: &'c Candidate<'a>,
    max_seq: u32,
    max_uid: u32,
    /// Parsed on first use; `None` inside when the bytes have no header at all.
    msg: OnceCell<Option<Message<'a>>>,
}

impl<'a> Eval<'_, 'a> {
    /// `None` when the key nests deeper than [`MAX_KEY_DEPTH`].
    fn key(&self, key: &SearchKey<'_>, depth: usize) -> Option<bool> {
        let depth = depth.checked_add(1).filter(|&d| d <= MAX_KEY_DEPTH)?;
        let c = self.c;
        Some(match key {
            SearchKey::And(keys) => {
                for k in keys.as_ref() {
                    if !self.key(k, depth)? {
                        return Some(false);
                    }
                }
                true
            }
            SearchKey::Or(a, b) => self.key(a, depth)? || self.key(b, depth)?,
            SearchKey::Not(k) => !self.key(k, depth)?,
            SearchKey::SequenceSet(set) => in_set(set, c.seq, self.max_seq),
            SearchKey::Uid(set) => in_set(set, c.uid, self.max_uid),
            SearchKey::All => true,
            // RFC 3501 §6.4.4: NEW is RECENT UNSEEN, OLD is NOT RECENT.
            SearchKey::Recent => c.recent,
            SearchKey::New => c.recent && !self.has(&Flag::Seen),
            SearchKey::Old => !c.recent,
            SearchKey::Answered => self.has(&Flag::Answered),
            SearchKey::Deleted => self.has(&Flag::Deleted),
            SearchKey::Draft => self.has(&Flag::Draft),
            SearchKey::Flagged => self.has(&Flag::Flagged),
            SearchKey::Seen => self.has(&Flag::Seen),
            SearchKey::Unanswered => !self.has(&Flag::Answered),
            SearchKey::Undeleted => !self.has(&Flag::Deleted),
            SearchKey::Undraft => !self.has(&Flag::Draft),
            SearchKey::Unflagged => !self.has(&Flag::Flagged),
            SearchKey::Unseen => !self.has(&Flag::Seen),
            SearchKey::Keyword(k) => self.has_keyword(k.as_ref()),
            SearchKey::Unkeyword(k) => !self.has_keyword(k.as_ref()),
            SearchKey::Larger(n) => c.size > u64::from(*n),
            SearchKey::Smaller(n) => c.size < u64::from(*n),
            SearchKey::Before(d) => self.internal_date().is_some_and(|x| x < *d.as_ref()),
            SearchKey::On(d) => self.internal_date().is_some_and(|x| x == *d.as_ref()),
            SearchKey::Since(d) => self.internal_date().is_some_and(|x| x >= *d.as_ref()),
            SearchKey::SentBefore(d) => self.sent_date().is_some_and(|x| x < *d.as_ref()),
            SearchKey::SentOn(d) => self.sent_date().is_some_and(|x| x == *d.as_ref()),
            SearchKey::SentSince(d) => self.sent_date().is_some_and(|x| x >= *d.as_ref()),
            SearchKey::From(s) => self.field_contains("From", s),
            SearchKey::To(s) => self.field_contains("To", s),
            SearchKey::Cc(s) => self.field_contains("Cc", s),
            SearchKey::Bcc(s) => self.field_contains("Bcc", s),
            SearchKey::Subject(s) => self.field_contains("Subject", s),
            SearchKey::Header(name, s) => {
                self.field_contains(&String::from_utf8_lossy(name.as_ref()), s)
            }
            SearchKey::Body(s) => contains(&self.body_text(), s),
            SearchKey::Text(s) => search_text::text_contains(self.message(), c.raw, &needle(s)),
            // `cmd/search.rs` replaces MODSEQ by the UIDs it matches before evaluating.
            SearchKey::ModSequence { .. } => false,
        })
    }

    fn message(&self) -> Option<&Message<'a>> {
        let raw = self.c.raw;
        self.msg.get_or_init(|| search_text::parse(raw)).as_ref()
    }

    fn has(&self, flag: &Flag<'static>) -> bool {
        self.c.flags.contains(flag)
    }

    fn has_keyword(&self, keyword: &str) -> bool {
        self.c
            .flags
            .iter()
            .any(|f| matches!(f, Flag::Keyword(k) if k.as_ref().eq_ignore_ascii_case(keyword)))
    }

    /// The calendar date (UTC) of the internal date.
    fn internal_date(&self) -> Option<NaiveDate> {
        DateTime::from_timestamp(self.c.internal_date, 0).map(|d| d.date_naive())
    }

    /// The calendar date written in the Date header, time and zone disregarded.
    fn sent_date(&self) -> Option<NaiveDate> {
        let date = self.message()?.date()?;
        NaiveDate::from_ymd_opt(
            i32::from(date.year),
            u32::from(date.month),
            u32::from(date.day),
        )
    }

    /// Whether a top-level header called `name` contains `s` (decoded). An empty `s` matches
    /// any message that has such a header.
    fn field_contains(&self, name: &str, s: &AString<'_>) -> bool {
        let Some(msg) = self.message() else {
            return false;
        };
        let needle = needle(s);
        search_text::field_values(msg, name).any(|v| search_text::contains_folded(&v, &needle))
    }

    /// Decoded text of every text part and attachment name (`search_text::body_text`).
    fn body_text(&self) -> String {
        search_text::body_text(self.message(), self.c.raw)
    }
}

/// Whether `n` is in `set`, `*` standing for `max` (RFC 3501 §9 seq-range: either order).
fn in_set(set: &SequenceSet, n: u32, max: u32) -> bool {
    let resolve = |s: &SeqOrUid| match s {
        SeqOrUid::Value(v) => v.get(),
        SeqOrUid::Asterisk => max,
    };
    set.0.as_ref().iter().any(|seq| match seq {
        Sequence::Single(s) => resolve(s) == n,
        Sequence::Range(a, b) => {
            let (a, b) = (resolve(a), resolve(b));
            a.min(b) <= n && n <= a.max(b)
        }
    })
}

fn needle(s: &AString<'_>) -> String {
    search_text::fold(&String::from_utf8_lossy(s.as_ref()))
}

/// Case-insensitive substring test (RFC 3501 §6.4.4).
fn contains(haystack: &str, s: &AString<'_>) -> bool {
    search_text::contains_folded(haystack, &needle(s))
}

#[cfg(test)]
mod tests {
    use imap_codec::{
        CommandCodec,
        decode::Decoder,
        imap_types::{command::CommandBody, core::Vec1},
    };

    use super::*;

    const MESSAGE: &str = "From: =?utf-8?q?J=C3=B6rg?= Doe <jorg@example.com>
To: Support <support@example.org>, \"Smith, Ann\" <ann@example.net>
Cc: team: bob@example.org, carol@example.org;
Date: Tue, 03 Mar 2026 10:15:00 +0100
Subject: =?utf-8?q?Caf=C3=A9?= order
 #42
Message-ID: <m1@example.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=\"outer\"

This is a MIME preamble.
--outer
Content-Type: multipart/alternative; boundary=alt

--alt
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

Hello caf=C3=A9,
see attachment.
--alt
Content-Type: text/html; charset=utf-8

<p>Hello <b>cafe</b> lovers</p>
--alt--

--outer
Content-Type: application/pdf; name=\"invoice.pdf\"
Content-Transfer-Encoding: base64

JVBERi0xLjQK
--outer
Content-Type: message/rfc822

From: Bob <bob@example.org>
Subject: Inner note

Inner body line 2
--outer--
";

    /// 2026-03-03T23:30:00Z: a day later in UTC than in the Date header's zone it is not.
    const INTERNAL_DATE: i64 = 1_772_580_600;

    /// The criteria of `a SEARCH <criteria>` as imap-codec decodes them (several are ANDed).
    fn key(criteria: &str) -> SearchKey<'static> {
        let line = format!("a SEARCH {criteria}\r\n");
        let (_, cmd) = CommandCodec::default()
            .decode_static(line.as_bytes())
            .expect(criteria);
        match cmd.body {
            CommandBody::Search { criteria, .. } => {
                let mut keys = criteria.into_inner();
                if keys.len() == 1 {
                    keys.remove(0)
                } else {
                    SearchKey::And(Vec1::try_from(keys).expect("keys"))
                }
            }
            other => panic!("{other:?}"),
        }
    }

    fn astring(s: &str) -> AString<'static> {
        AString::try_from(s.to_string()).expect("astring")
    }

    fn check(raw: &[u8], flags: &[Flag<'static>], cases: &[(&str, bool)]) {
        let c = Candidate {
            recent: false,
            seq: 5,
            uid: 42,
            flags,
            internal_date: INTERNAL_DATE,
            size: raw.len() as u64,
            raw,
        };
        for (criteria, expected) in cases {
            assert_eq!(
                matches(&key(criteria), &c, 10, 100),
                *expected,
                "{criteria}"
            );
        }
    }

    fn flags() -> Vec<Flag<'static>> {
        vec![Flag::Seen, Flag::try_from("$Comment").expect("keyword")]
    }

    #[test]
    fn flag_keys() {
        let raw = MESSAGE.replace('\n', "\r\n");
        check(
            raw.as_bytes(),
            &flags(),
            &[
                ("ALL", true),
                ("ANSWERED", false),
                ("UNANSWERED", true),
                ("DELETED", false),
                ("UNDELETED", true),
                ("DRAFT", false),
                ("UNDRAFT", true),
                ("FLAGGED", false),
                ("UNFLAGGED", true),
                ("SEEN", true),
                ("UNSEEN", false),
                ("KEYWORD $Comment", true),
                ("KEYWORD $comment", true),
                ("KEYWORD $Replying", false),
                ("UNKEYWORD $Comment", false),
                ("UNKEYWORD $Replying", true),
                ("RECENT", false),
                ("NEW", false),
                ("OLD", true),
                ("NOT SEEN", false),
                ("OR ANSWERED SEEN", true),
                ("OR ANSWERED DELETED", false),
                ("(SEEN KEYWORD $Comment)", true),
                ("(SEEN FLAGGED)", false),
                ("SEEN UNDELETED", true),
                ("NOT (SEEN DELETED)", true),
            ],
        );
    }

    #[test]
    fn sequence_and_uid_sets() {
        let raw = MESSAGE.replace('\n', "\r\n");
        check(
            raw.as_bytes(),
            &[],
            &[
                ("5", true),
                ("2,5", true),
                ("4:6", true),
                ("6:4", true),
                ("1:4,6:*", false),
                ("*", false),
                ("UID 42", true),
                ("UID 1:41", false),
                ("UID 40:*", true),
                ("UID 43:30", true),
                ("UID *", false),
                ("UID 200:*", false),
                ("NOT UID 42", false),
            ],
        );
        // `*` is the largest number in use, even when a range starts above it.
        let c = Candidate {
            recent: false,
            seq: 10,
            uid: 100,
            flags: &[],
            internal_date: 0,
            size: 0,
            raw: b"",
        };
        assert!(matches(&key("*"), &c, 10, 100));
        assert!(matches(&key("UID 200:*"), &c, 10, 100));
    }

    #[test]
    fn size_and_date_keys() {
        let raw = MESSAGE.replace('\n', "\r\n");
        let size = raw.len();
        check(
            raw.as_bytes(),
            &[],
            &[
                (&format!("LARGER {}", size - 1), true),
                (&format!("LARGER {size}"), false),
                (&format!("SMALLER {}", size + 1), true),
                (&format!("SMALLER {size}"), false),
                ("BEFORE 4-Mar-2026", true),
                ("BEFORE 3-Mar-2026", false),
                ("ON 3-Mar-2026", true),
                ("ON 4-Mar-2026", false),
                ("SINCE 3-Mar-2026", true),
                ("SINCE 4-Mar-2026", false),
                ("SENTBEFORE 3-Mar-2026", false),
                ("SENTBEFORE 4-Mar-2026", true),
                ("SENTON 3-Mar-2026", true),
                ("SENTON 2-Mar-2026", false),
                ("SENTSINCE 3-Mar-2026", true),
                ("SENTSINCE 4-Mar-2026", false),
            ],
        );
        // SENT* use the calendar date written in the header, not UTC.
        check(
            b"Date: Tue, 03 Mar 2026 00:30:00 +0200\r\n\r\nx",
            &[],
            &[("SENTON 3-Mar-2026", true), ("ON 3-Mar-2026", true)],
        );
        // Without a parseable Date header no SENT* key matches.
        for raw in [&b"Subject: x\r\n\r\nbody"[..], b"Date: someday\r\n\r\nbody"] {
            check(
                raw,
                &[],
                &[
                    ("SENTBEFORE 1-Jan-2100", false),
                    ("SENTON 3-Mar-2026", false),
                    ("SENTSINCE 1-Jan-1970", false),
                ],
            );
        }
    }

    #[test]
    fn header_and_text_keys() {
        let raw = MESSAGE.replace('\n', "\r\n");
        check(
            raw.as_bytes(),
            &[],
            &[
                ("FROM jorg@example.com", true),
                ("FROM \"JORG@\"", true),
                ("FROM bob", false),
                ("TO \"smith, ann\"", true),
                ("TO support@example.org", true),
                ("TO bob", false),
                ("CC carol", true),
                ("CC team", true),
                ("CC ann", false),
                ("BCC x", false),
                ("BCC \"\"", false),
                ("SUBJECT \"order #42\"", true),
                ("SUBJECT inner", false),
                ("HEADER Message-ID m1@", true),
                ("HEADER message-id \"\"", true),
                ("HEADER X-Missing \"\"", false),
                ("HEADER Subject \"order #42\"", true),
                ("BODY \"see ATTACHMENT\"", true),
                ("BODY \"cafe lovers\"", true),
                ("BODY \"Inner body line 2\"", true),
                ("BODY preamble", false),
                ("BODY JVBERi0", false),
                ("BODY support@example.org", false),
                ("TEXT support@example.org", true),
                ("TEXT \"Inner note\"", true),
                ("TEXT lovers", true),
                ("TEXT nowhere", false),
                ("OR FROM nobody TEXT lovers", true),
            ],
        );
        // Keys on decoded (RFC 2047 / quoted-printable, UTF-8) text.
        let c = Candidate {
            recent: false,
            seq: 5,
            uid: 42,
            flags: &[],
            internal_date: INTERNAL_DATE,
            size: raw.len() as u64,
            raw: raw.as_bytes(),
        };
        for (key, expected) in [
            (SearchKey::From(astring("jörg doe")), true),
            (SearchKey::Subject(astring("CAFÉ ORDER")), true),
            (SearchKey::Body(astring("hello café,")), true),
            (SearchKey::Text(astring("café")), true),
            (SearchKey::Body(astring("jörg")), false),
        ] {
            assert_eq!(matches(&key, &c, 10, 100), expected, "{key:?}");
        }
    }

    #[test]
    fn content_keys_on_input_without_header() {
        check(
            b"",
            &[],
            &[("TEXT x", false), ("BODY \"\"", true), ("FROM \"\"", false)],
        );
        check(
            b"\r\njust words",
            &[],
            &[("BODY words", true), ("SUBJECT words", false)],
        );
    }

    #[test]
    fn flag_keys_do_not_parse_the_message() {
        let raw = MESSAGE.replace('\n', "\r\n");
        let flags = flags();
        let c = Candidate {
            recent: false,
            seq: 5,
            uid: 42,
            flags: &flags,
            internal_date: INTERNAL_DATE,
            size: raw.len() as u64,
            raw: raw.as_bytes(),
        };
        let eval = Eval {
            c: &c,
            max_seq: 10,
            max_uid: 100,
            msg: OnceCell::new(),
        };
        let key = key("SEEN UID 1:* LARGER 10 SINCE 1-Jan-2000 NOT DELETED OR 1 KEYWORD $Comment");
        assert_eq!(eval.key(&key, 0), Some(true));
        assert!(eval.msg.get().is_none());
        assert_eq!(
            eval.key(&SearchKey::Subject(astring("order")), 0),
            Some(true)
        );
        assert!(eval.msg.get().is_some());
    }

    #[test]
    fn deep_keys_are_bounded() {
        let mut key = SearchKey::All;
        for _ in 0..10_000 {
            key = SearchKey::Not(Box::new(key));
        }
        let c = Candidate {
            recent: false,
            seq: 1,
            uid: 1,
            flags: &[],
            internal_date: 0,
            size: 0,
            raw: b"",
        };
        assert!(!matches(&key, &c, 1, 1));
        key = SearchKey::Not(Box::new(key));
        assert!(!matches(&key, &c, 1, 1));
        // Dropping 10 000 nested boxes recursively is the test's own affair.
        std::mem::forget(key);
    }
}
