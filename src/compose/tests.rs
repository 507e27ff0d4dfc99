//! Tests of the whole rewrite through [`prepare`] and [`expand`]: commands, placeholders,
//! MIME re-encoding, the header plan and the corpus. Each crosses several submodules, so
//! they live here with their shared fixtures; unit tests of one submodule live in it.

use base64::Engine as _;
use mail_parser::{Encoding, HeaderName, Message, MimeHeaders, PartType};

use crate::mail::subject::{subject_tag, tag_subject};

use super::placeholders::MAX_PLACEHOLDERS;
use super::*;

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
        let p =
            prepare(&plain(body), &ctx(), &no_plan()).unwrap_or_else(|e| panic!("{body:?}: {e}"));
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
    let raw = "From: a@b\r\nContent-Type: text/html\r\n\r\n<p>#close</p><p>Done, thanks.</p>\r\n";
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
    assert!(h.starts_with(
        "From: Alice <alice@support.example>\r\nTo: jose@example.org\r\nSubject: Re: Printer\r\n"
    ));
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

fn check_output(f: &std::path::Path, variant: &str, input: &[u8], p: &Prepared, ctx: &Context<'_>) {
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
