//! Tests of `render.rs` (and the ENVELOPE of `envelope.rs`) on crafted and corpus messages.

use std::num::NonZeroU32;

use imap_codec::{
    CommandCodec, ResponseCodec,
    decode::Decoder,
    encode::Encoder,
    imap_types::{
        command::CommandBody,
        fetch::{MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName},
        response::{Data, Response},
        search::SearchKey,
    },
};

use super::*;
use crate::imap::search::{Candidate, matches};

/// multipart/mixed: 1 = alternative (1.1 text/plain, 1.2 text/html), 2 = attachment,
/// 3 = message/rfc822 with a single-part body.
const MIXED: &str = "From: =?utf-8?q?J=C3=B6rg?= Doe <jorg@example.com>
To: Support <support@example.org>, \"Smith, Ann\" <ann@example.net>
Cc: team: bob@example.org, carol@example.org;
Date: Tue, 03 Mar 2026 10:15:00 +0100
Subject: =?utf-8?q?Caf=C3=A9?= order
 #42
Message-ID: <m1@example.com>
In-Reply-To: <m0@example.com>
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
Content-Disposition: attachment; filename=\"invoice.pdf\"
Content-Transfer-Encoding: base64
Content-ID: <att1@example.com>
Content-Description: The invoice
Content-Language: en, de

JVBERi0xLjQK
--outer
Content-Type: message/rfc822

From: Bob <bob@example.org>
To: jorg@example.com
Subject: Inner note
Date: Mon, 02 Mar 2026 09:00:00 +0000
Message-ID: <inner@example.org>

Inner body line 1
Inner body line 2
--outer--
";

fn crlf(s: &str) -> Vec<u8> {
    s.replace('\n', "\r\n").into_bytes()
}

fn fetch_line(item: MessageDataItem<'static>) -> Vec<u8> {
    let response = Response::Data(Data::Fetch {
        seq: NonZeroU32::MIN,
        items: Vec1::from(item),
    });
    ResponseCodec::default().encode(&response).dump()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Decodes `line` as a response and returns its single FETCH item.
fn reparse(line: &[u8]) -> Result<MessageDataItem<'static>, String> {
    match ResponseCodec::default().decode_static(line) {
        Ok(([], Response::Data(Data::Fetch { items, .. }))) => items
            .into_iter()
            .next()
            .ok_or_else(|| "no item".to_string()),
        Ok(other) => Err(format!("unexpected {other:?}")),
        Err(e) => Err(format!("{e:?}")),
    }
}

/// `BODY[<spec>]` as imap-codec decodes it from a command.
fn sec(spec: &str) -> Option<Section<'static>> {
    let line = format!("a FETCH 1 BODY[{spec}]\r\n");
    let (_, cmd) = CommandCodec::default()
        .decode_static(line.as_bytes())
        .expect(spec);
    match cmd.body {
        CommandBody::Fetch {
            macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(names),
            ..
        } => match names.into_iter().next() {
            Some(MessageDataItemName::BodyExt { section, .. }) => section,
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

fn section(r: &Rendered<'_>, spec: &str) -> String {
    text(&r.section(sec(spec).as_ref()))
}

const INNER_ENVELOPE: &str = "(\"Mon, 02 Mar 2026 09:00:00 +0000\" \"Inner note\" \
        ((\"Bob\" NIL \"bob\" \"example.org\")) ((\"Bob\" NIL \"bob\" \"example.org\")) \
        ((\"Bob\" NIL \"bob\" \"example.org\")) ((NIL NIL \"jorg\" \"example.com\")) \
        NIL NIL NIL \"<inner@example.org>\")";

#[test]
fn envelope_of_mixed_message() {
    let raw = crlf(MIXED);
    let r = Rendered::new(&raw);
    let line = fetch_line(MessageDataItem::Envelope(r.envelope()));
    let from = "((\"=?utf-8?b?SsO2cmcgRG9l?=\" NIL \"jorg\" \"example.com\"))";
    let expected = format!(
        "* 1 FETCH (ENVELOPE (\"Tue, 03 Mar 2026 10:15:00 +0100\" \
             \"=?utf-8?q?Caf=C3=A9?= order #42\" {from} {from} {from} \
             ((\"Support\" NIL \"support\" \"example.org\")(\"Smith, Ann\" NIL \"ann\" \"example.net\")) \
             ((NIL NIL \"team\" NIL)(NIL NIL \"bob\" \"example.org\")(NIL NIL \"carol\" \"example.org\")(NIL NIL NIL NIL)) \
             NIL \"<m0@example.com>\" \"<m1@example.com>\"))\r\n"
    );
    assert_eq!(text(&line), expected);
    assert_eq!(reparse(&line), Ok(MessageDataItem::Envelope(r.envelope())));
}

#[test]
fn bodystructure_of_mixed_message() {
    let raw = crlf(MIXED);
    let r = Rendered::new(&raw);
    let line = fetch_line(MessageDataItem::BodyStructure(r.body_structure(true)));
    let expected = format!(
        "* 1 FETCH (BODYSTRUCTURE (\
             ((\"TEXT\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"quoted-printable\" 33 2 NIL NIL NIL NIL)\
             (\"TEXT\" \"html\" (\"charset\" \"utf-8\") NIL NIL \"7bit\" 31 1 NIL NIL NIL NIL) \
             \"alternative\" (\"boundary\" \"alt\") NIL NIL NIL)\
             (\"application\" \"pdf\" (\"name\" \"invoice.pdf\") \"<att1@example.com>\" \"The invoice\" \
             \"base64\" 12 NIL (\"attachment\" (\"filename\" \"invoice.pdf\")) (\"en\" \"de\") NIL)\
             (\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7bit\" 182 {INNER_ENVELOPE} \
             (\"TEXT\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 36 2 NIL NIL NIL NIL) 8 \
             NIL NIL NIL NIL) \
             \"mixed\" (\"boundary\" \"outer\") NIL NIL NIL))\r\n"
    );
    assert_eq!(text(&line), expected);
    assert_eq!(
        reparse(&line),
        Ok(MessageDataItem::BodyStructure(r.body_structure(true)))
    );
}

#[test]
fn body_of_mixed_message_has_no_extension_data() {
    let raw = crlf(MIXED);
    let r = Rendered::new(&raw);
    let line = fetch_line(MessageDataItem::Body(r.body_structure(false)));
    let expected = format!(
        "* 1 FETCH (BODY (\
             ((\"TEXT\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"quoted-printable\" 33 2)\
             (\"TEXT\" \"html\" (\"charset\" \"utf-8\") NIL NIL \"7bit\" 31 1) \"alternative\")\
             (\"application\" \"pdf\" (\"name\" \"invoice.pdf\") \"<att1@example.com>\" \"The invoice\" \
             \"base64\" 12)\
             (\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7bit\" 182 {INNER_ENVELOPE} \
             (\"TEXT\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 36 2) 8) \
             \"mixed\"))\r\n"
    );
    assert_eq!(text(&line), expected);
    assert_eq!(
        reparse(&line),
        Ok(MessageDataItem::Body(r.body_structure(false)))
    );
}

#[test]
fn sections_of_mixed_message() {
    let raw = crlf(MIXED);
    let r = Rendered::new(&raw);
    let all = text(&raw);
    let (header, body) = all.split_once("\r\n\r\n").expect("blank line");
    assert_eq!(text(&r.section(None)), all);
    assert_eq!(section(&r, ""), all);
    assert_eq!(section(&r, "HEADER"), format!("{header}\r\n\r\n"));
    assert_eq!(section(&r, "TEXT"), body);
    assert!(section(&r, "1").starts_with("--alt\r\nContent-Type: text/plain"));
    assert!(section(&r, "1").ends_with("lovers</p>\r\n--alt--\r\n"));
    assert_eq!(section(&r, "1.1"), "Hello caf=C3=A9,\r\nsee attachment.");
    assert_eq!(section(&r, "1.2"), "<p>Hello <b>cafe</b> lovers</p>");
    assert_eq!(
        section(&r, "1.2.MIME"),
        "Content-Type: text/html; charset=utf-8\r\n\r\n"
    );
    assert_eq!(section(&r, "2"), "JVBERi0xLjQK");
    assert_eq!(
        section(&r, "2.MIME"),
        "Content-Type: application/pdf; name=\"invoice.pdf\"\r\n\
             Content-Disposition: attachment; filename=\"invoice.pdf\"\r\n\
             Content-Transfer-Encoding: base64\r\n\
             Content-ID: <att1@example.com>\r\n\
             Content-Description: The invoice\r\n\
             Content-Language: en, de\r\n\r\n"
    );
    let inner_header = "From: Bob <bob@example.org>\r\nTo: jorg@example.com\r\n\
             Subject: Inner note\r\nDate: Mon, 02 Mar 2026 09:00:00 +0000\r\n\
             Message-ID: <inner@example.org>\r\n\r\n";
    let inner_body = "Inner body line 1\r\nInner body line 2";
    assert_eq!(section(&r, "3"), format!("{inner_header}{inner_body}"));
    assert_eq!(
        section(&r, "3.MIME"),
        "Content-Type: message/rfc822\r\n\r\n"
    );
    assert_eq!(section(&r, "3.HEADER"), inner_header);
    assert_eq!(section(&r, "3.TEXT"), inner_body);
    assert_eq!(section(&r, "3.1"), inner_body);
    assert_eq!(
        section(&r, "3.HEADER.FIELDS (SUBJECT)"),
        "Subject: Inner note\r\n\r\n"
    );
    // Parts that do not exist, and HEADER/TEXT of parts that are not message/rfc822.
    for missing in [
        "4", "1.3", "2.1", "2.HEADER", "1.TEXT", "3.2", "3.1.1", "9.9.MIME",
    ] {
        assert_eq!(section(&r, missing), "", "{missing}");
    }
}

#[test]
fn header_fields_keep_original_lines_and_folding() {
    let raw = crlf(MIXED);
    let r = Rendered::new(&raw);
    assert_eq!(
        section(&r, "HEADER.FIELDS (From Subject)"),
        "From: =?utf-8?q?J=C3=B6rg?= Doe <jorg@example.com>\r\n\
             Subject: =?utf-8?q?Caf=C3=A9?= order\r\n #42\r\n\r\n"
    );
    assert_eq!(
        section(
            &r,
            "HEADER.FIELDS.NOT (from subject to cc date message-id in-reply-to)"
        ),
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n"
    );
    assert_eq!(section(&r, "HEADER.FIELDS (X-None)"), "\r\n");
}

#[test]
fn partial_fetch_is_clamped() {
    assert_eq!(partial(b"0123456789", 0, 4), b"0123");
    assert_eq!(partial(b"0123456789", 8, 4), b"89");
    assert_eq!(partial(b"0123456789", 10, 4), b"");
    assert_eq!(partial(b"0123456789", u32::MAX, u32::MAX), b"");
    assert_eq!(partial(b"0123456789", 3, u32::MAX), b"3456789");
    let raw = crlf(MIXED);
    let r = Rendered::new(&raw);
    assert_eq!(partial(&r.section(sec("1.1").as_ref()), 6, 9), b"caf=C3=A9");
    assert_eq!(r.size(), 1187);
}

#[test]
fn single_part_message_numbers_its_body_as_part_one() {
    let raw = crlf("Subject: hi\nX-Thing: a\n\nline one\nline two\n");
    let r = Rendered::new(&raw);
    assert_eq!(section(&r, "1"), "line one\r\nline two\r\n");
    assert_eq!(section(&r, "TEXT"), "line one\r\nline two\r\n");
    assert_eq!(section(&r, "1.MIME"), "Subject: hi\r\nX-Thing: a\r\n\r\n");
    assert_eq!(section(&r, "2"), "");
    assert_eq!(section(&r, "1.1"), "");
    assert_eq!(
        text(&fetch_line(MessageDataItem::BodyStructure(
            r.body_structure(true)
        ))),
        "* 1 FETCH (BODYSTRUCTURE (\"TEXT\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \
             \"7bit\" 20 2 NIL NIL NIL NIL))\r\n"
    );
}

#[test]
fn input_without_header_is_a_plain_body() {
    let r = Rendered::new(b"");
    assert_eq!(r.size(), 0);
    assert_eq!(section(&r, "HEADER"), "");
    assert_eq!(section(&r, "HEADER.FIELDS (From)"), "\r\n");
    let line = fetch_line(MessageDataItem::Envelope(r.envelope()));
    assert_eq!(
        text(&line),
        "* 1 FETCH (ENVELOPE (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL))\r\n"
    );
    let line = fetch_line(MessageDataItem::Body(r.body_structure(false)));
    assert_eq!(
        text(&line),
        "* 1 FETCH (BODY (\"TEXT\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0))\r\n"
    );
}

/// RFC 3501 §7.4.2 group syntax for RFC 5322 groups, as imaptest's `fetch-envelope`
/// script expects it (its messages 4 and 6): members between a `(NIL NIL "name" NIL)`
/// start and a `(NIL NIL NIL NIL)` end, a comment-only group empty, a source route in adl.
#[test]
fn envelope_groups_and_routes() {
    let raw = crlf(
        "Date: Thu, 15 Feb 2007 01:02:03 +0200\nFrom: user@domain (Real Name)\n\
             To: group: g1@d1.org, g2@d2.org;, group2: g3@d3.org;\n\
             Cc: group:;, group2: (foo) ;\n\nbody\n",
    );
    let line = text(&fetch_line(MessageDataItem::Envelope(
        Rendered::new(&raw).envelope(),
    )));
    assert!(
            line.contains(
                "((NIL NIL \"group\" NIL)(NIL NIL \"g1\" \"d1.org\")(NIL NIL \"g2\" \"d2.org\")\
                 (NIL NIL NIL NIL)(NIL NIL \"group2\" NIL)(NIL NIL \"g3\" \"d3.org\")(NIL NIL NIL NIL)) \
                 ((NIL NIL \"group\" NIL)(NIL NIL NIL NIL)(NIL NIL \"group2\" NIL)(NIL NIL NIL NIL))"
            ),
            "{line}"
        );
    let raw = crlf("From: <@route:user@domain>\n\nbody\n");
    let line = text(&fetch_line(MessageDataItem::Envelope(
        Rendered::new(&raw).envelope(),
    )));
    assert!(
        line.contains("((NIL \"@route\" \"user\" \"domain\"))"),
        "{line}"
    );
}

#[test]
fn hostile_header_values_still_render() {
    let mut raw = b"From: \"A\x00B\" <a@b.c>\r\nSender: \r\nSubject: bad \x00\x01\x7f \xff\xfe caf\xc3\xa9\r\n\
            Date: \"quoted\\\\\"\r\nTo: undisclosed-recipients:;\r\nCc: nodomain\r\n\
            Message-ID: {5}\r\n\r\nbody"
            .to_vec();
    raw.extend_from_slice(&[0, 0xff, b'\n']);
    let r = Rendered::new(&raw);
    let envelope = r.envelope();
    let line = fetch_line(MessageDataItem::Envelope(envelope.clone()));
    assert_eq!(
        reparse(&line),
        Ok(MessageDataItem::Envelope(envelope.clone()))
    );
    // Sender present but empty defaults to From; the empty group keeps its markers.
    assert_eq!(envelope.sender, envelope.from);
    assert_eq!(envelope.to.len(), 2);
    assert_eq!(envelope.to[1].mailbox, NString::NIL);
    assert!(
        text(&line).contains("{15}\r\nbad \x01\x7f"),
        "{}",
        text(&line)
    );
    let bs = fetch_line(MessageDataItem::BodyStructure(r.body_structure(true)));
    assert!(reparse(&bs).is_ok());
}

#[test]
fn digest_parts_default_to_message_rfc822() {
    let raw = crlf(
        "Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: one\n\nfirst\n--d\n\
             Content-Type: text/plain\n\nsecond\n--d--\n",
    );
    let r = Rendered::new(&raw);
    let line = text(&fetch_line(MessageDataItem::Body(r.body_structure(false))));
    assert_eq!(
        line,
        "* 1 FETCH (BODY ((\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7bit\" 21 \
             (NIL \"one\" NIL NIL NIL NIL NIL NIL NIL NIL) \
             (\"TEXT\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 5 1) 3)\
             (\"TEXT\" \"plain\" NIL NIL NIL \"7bit\" 6 1) \"digest\"))\r\n"
    );
    assert_eq!(section(&r, "1.HEADER"), "Subject: one\r\n\r\n");
    assert_eq!(section(&r, "1.1"), "first");
}

#[test]
fn base64_message_rfc822_is_described_from_its_decoded_body() {
    let raw = crlf(
        "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: message/rfc822\n\
             Content-Transfer-Encoding: base64\n\nU3ViamVjdDogZW5jCgpoaWRkZW4K\n--b--\n",
    );
    let r = Rendered::new(&raw);
    assert_eq!(section(&r, "1"), "U3ViamVjdDogZW5jCgpoaWRkZW4K");
    assert_eq!(section(&r, "1.HEADER"), "Subject: enc\n\n");
    assert_eq!(section(&r, "1.TEXT"), "hidden\n");
    let line = fetch_line(MessageDataItem::BodyStructure(r.body_structure(true)));
    assert!(
        text(&line).contains("\"base64\" 28 (NIL \"enc\" "),
        "{}",
        text(&line)
    );
    assert!(reparse(&line).is_ok());
}

#[test]
fn multipart_without_boundary_is_text() {
    let raw = crlf("Content-Type: multipart/mixed\n\nno parts here\n");
    let r = Rendered::new(&raw);
    let line = text(&fetch_line(MessageDataItem::Body(r.body_structure(false))));
    assert_eq!(
        line,
        "* 1 FETCH (BODY (\"TEXT\" \"plain\" NIL NIL NIL \"7bit\" 15 1))\r\n"
    );
}

fn depth(bs: &BodyStructure<'_>) -> usize {
    match bs {
        BodyStructure::Multi { bodies, .. } => {
            1 + bodies.as_ref().iter().map(depth).max().unwrap_or(0)
        }
        BodyStructure::Single {
            body:
                Body {
                    specific: SpecificFields::Message { body_structure, .. },
                    ..
                },
            ..
        } => 1 + depth(body_structure),
        BodyStructure::Single { .. } => 1,
    }
}

#[test]
fn deep_nesting_is_capped() {
    let mut multi = String::new();
    let mut message = String::new();
    for i in 0..200 {
        multi.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n"
        ));
        message.push_str("Content-Type: message/rfc822\n\n");
    }
    multi.push_str("\nleaf\n");
    message.push_str("Subject: deepest\n\nleaf\n");
    for raw in [crlf(&multi), crlf(&message)] {
        let r = Rendered::new(&raw);
        let bs = r.body_structure(true);
        assert!(depth(&bs) <= MAX_DEPTH + 1, "{}", depth(&bs));
        let _ = fetch_line(MessageDataItem::BodyStructure(bs));
        let deep = vec!["1"; 300].join(".");
        let _ = r.section(sec(&deep).as_ref());
        let _ = r.section(sec(&format!("{deep}.MIME")).as_ref());
    }
}

#[test]
fn reparsing_embedded_messages_is_budgeted() {
    let mut raw = "Content-Type: message/rfc822\n\n".repeat(40);
    raw.push_str("Subject: big\n\n");
    raw.push_str(&"x".repeat(200_000));
    let r = Rendered::new(raw.as_bytes());
    let bs = r.body_structure(true);
    assert!((3..10).contains(&depth(&bs)), "{}", depth(&bs));
    let deepest = vec!["1"; depth(&bs) - 1].join(".");
    let line = fetch_line(MessageDataItem::BodyStructure(bs));
    assert!(text(&line).contains("\"application\" \"octet-stream\""));
    assert!(r.section(sec(&deepest).as_ref()).ends_with(b"xxx"));
}

/// The part paths a structure names: (path, is message/rfc822, octets or MAX for multipart).
fn paths(bs: &BodyStructure<'_>, prefix: &[u32], out: &mut Vec<(Vec<u32>, bool, u32)>) {
    match bs {
        BodyStructure::Multi { bodies, .. } => {
            for (i, child) in bodies.as_ref().iter().enumerate() {
                let mut path = prefix.to_vec();
                path.push(u32::try_from(i + 1).expect("few parts"));
                match child {
                    BodyStructure::Multi { .. } => {
                        out.push((path.clone(), false, u32::MAX));
                        paths(child, &path, out);
                    }
                    BodyStructure::Single { .. } => single_paths(child, path, out),
                }
            }
        }
        BodyStructure::Single { .. } => {
            let mut path = prefix.to_vec();
            path.push(1);
            single_paths(bs, path, out);
        }
    }
}

fn single_paths(bs: &BodyStructure<'_>, path: Vec<u32>, out: &mut Vec<(Vec<u32>, bool, u32)>) {
    if let BodyStructure::Single { body, .. } = bs {
        let is_message = matches!(body.specific, SpecificFields::Message { .. });
        out.push((path.clone(), is_message, body.basic.size));
        if let SpecificFields::Message { body_structure, .. } = &body.specific {
            paths(body_structure, &path, out);
        }
    }
}

#[test]
fn corpus_renders_and_reparses() {
    let files = crate::test_corpus::eml_files();
    assert!(files.len() > 300, "{}", files.len());
    let mut too_deep_for_decoder = 0;
    for path in &files {
        let raw = std::fs::read(path).expect("read");
        let name = path.display();
        let r = Rendered::new(&raw);

        let envelope = r.envelope();
        let line = fetch_line(MessageDataItem::Envelope(envelope.clone()));
        assert_eq!(
            reparse(&line),
            Ok(MessageDataItem::Envelope(envelope)),
            "{name}"
        );

        for extended in [true, false] {
            let bs = r.body_structure(extended);
            let item = if extended {
                MessageDataItem::BodyStructure(bs.clone())
            } else {
                MessageDataItem::Body(bs.clone())
            };
            let line = fetch_line(item.clone());
            // imap-codec's decoder stops at 8 levels of body recursion.
            if depth(&bs) > 6 {
                too_deep_for_decoder += 1;
                continue;
            }
            assert_eq!(reparse(&line), Ok(item), "{name}: {}", text(&line));
        }

        let bs = r.body_structure(true);
        let mut named = Vec::new();
        paths(&bs, &[], &mut named);
        for (path, is_message, size) in named {
            let spec = path
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(".");
            let body = r.section(sec(&spec).as_ref());
            if size != u32::MAX {
                assert_eq!(len_u32(&body), size, "{name} part {spec}");
            }
            let _ = r.section(sec(&format!("{spec}.MIME")).as_ref());
            if is_message {
                let header = r.section(sec(&format!("{spec}.HEADER")).as_ref());
                let text = r.section(sec(&format!("{spec}.TEXT")).as_ref());
                assert!([header, text].concat() == body, "{name} part {spec}");
                let _ = r.section(sec(&format!("{spec}.HEADER.FIELDS (From)")).as_ref());
            }
        }
        let header = r.section(sec("HEADER").as_ref());
        let body = r.section(sec("TEXT").as_ref());
        assert!([header, body].concat() == raw, "{name}");
        let _ = r.section(sec("HEADER.FIELDS (From Subject)").as_ref());
        let _ = r.section(sec("HEADER.FIELDS.NOT (Received)").as_ref());

        let word = MessageParser::default()
            .parse(&raw)
            .and_then(|m| {
                m.subject()?
                    .split_whitespace()
                    .find(|w| w.len() >= 3 && w.chars().all(char::is_alphanumeric))
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "zzzz".into());
        let key = SearchKey::Text(AString::try_from(word.as_str()).expect("astring"));
        let c = Candidate {
            recent: false,
            seq: 1,
            uid: 1,
            flags: &[],
            internal_date: 0,
            size: raw.len() as u64,
            raw: &raw,
        };
        let hit = matches(&key, &c, 1, 1);
        if word != "zzzz" {
            assert!(hit, "{name}: TEXT {word}");
        }
    }
    assert!(too_deep_for_decoder < 10, "{too_deep_for_decoder}");
}
