//! IMAP extensions clients rely on, against the real daemon with the command lines those
//! clients send: LIST-EXTENDED with SPECIAL-USE and LIST-STATUS, ESEARCH, SORT, THREAD,
//! BINARY and MULTIAPPEND. Expected answers come from the daemon's own base-form answers
//! (plain LIST, STATUS, SEARCH, FETCH) or from the RFC's rules applied to the messages the
//! test made.

use crate::harness::{ImapConn, TestDaemon, simple_message};

async fn deliver(d: &TestDaemon, subject: &str, id: &str) {
    let mut c = d.smtp().await;
    c.cmd("EHLO client.example", 250).await;
    let from = format!("{id}@customer.example");
    let msg = simple_message(&from, subject, &format!("{id}@customer.example"));
    let (code, text) = c.send_mail(&from, &["support@example.test"], &msg).await;
    assert_eq!(code, 250, "{text:?}");
}

/// `* LIST (attrs) "/" name` → (attrs, name).
fn list_entry(line: &str) -> Option<(Vec<String>, String)> {
    let rest = line.strip_prefix("* LIST (")?;
    let (attrs, rest) = rest.split_once(") \"/\" ")?;
    let name = rest.split(" (\"CHILDINFO\"").next()?.trim_matches('"');
    Some((
        attrs
            .split(' ')
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect(),
        name.to_string(),
    ))
}

fn names(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| list_entry(l))
        .map(|(_, n)| n)
        .collect()
}

const SPECIAL: [&str; 5] = ["\\Archive", "\\Sent", "\\Junk", "\\Drafts", "\\Trash"];

#[tokio::test]
async fn list_extended_special_use_and_status() {
    let d = TestDaemon::start().await;
    deliver(&d, "First", "l1").await;
    deliver(&d, "Second", "l2").await;
    let mut c = d.imap_as("alice", "alice-password").await;
    let caps = c.ok("CAPABILITY").await;
    for cap in ["LIST-EXTENDED", "LIST-STATUS", "SPECIAL-USE"] {
        assert!(
            caps[0].split(' ').any(|w| w == cap),
            "missing {cap}: {caps:?}"
        );
    }
    c.ok("CREATE Personal/Notes").await;
    let plain = c.ok("LIST \"\" \"*\"").await;
    let special: Vec<String> = plain
        .iter()
        .filter_map(|l| list_entry(l))
        .filter(|(attrs, _)| attrs.iter().any(|a| SPECIAL.contains(&a.as_str())))
        .map(|(_, n)| n)
        .collect();
    assert!(special.len() >= 5, "{plain:#?}");

    // Thunderbird (lower case) and K-9: only the special-use mailboxes (RFC 6154 §3).
    for command in [
        "list (special-use) \"\" \"*\"",
        "LIST (SPECIAL-USE) \"\" \"*\"",
    ] {
        let only = c.ok(command).await;
        assert_eq!(names(&only), special, "{command}: {only:#?}");
    }
    // Apple Mail / mbsync: every mailbox, with the special-use attributes.
    let ret = c.ok("LIST \"\" \"*\" RETURN (SPECIAL-USE)").await;
    assert_eq!(ret, plain);

    // Thunderbird with LIST-EXTENDED asks this instead of LSUB. CREATE does not subscribe
    // (RFC 3501 §6.3.3): Personal/Notes is listed once it is subscribed.
    let before = c.ok("list (subscribed) \"\" \"*\"").await;
    let mut expected = names(&plain);
    expected.retain(|n| n != "Personal/Notes");
    assert_eq!(names(&before), expected, "{before:#?}");
    c.ok("SUBSCRIBE Personal/Notes").await;
    let subscribed = c.ok("list (subscribed) \"\" \"*\"").await;
    assert_eq!(names(&subscribed), names(&plain));
    for line in &subscribed {
        let (attrs, _) = list_entry(line).unwrap();
        assert!(attrs.contains(&"\\Subscribed".to_string()), "{line}");
    }
    let children = c.ok("LIST \"\" \"*\" RETURN (SUBSCRIBED CHILDREN)").await;
    assert_eq!(children, subscribed);
    // RECURSIVEMATCH reports the subscribed children of a parent (RFC 5258 §3.5).
    let recursive = c.ok("LIST (SUBSCRIBED RECURSIVEMATCH) \"\" \"%\"").await;
    let personal = recursive
        .iter()
        .find(|l| l.ends_with("Personal (\"CHILDINFO\" (\"SUBSCRIBED\"))"));
    assert!(personal.is_some(), "{recursive:#?}");
    assert!(
        !recursive.iter().any(|l| l.contains("Personal/Notes")),
        "{recursive:#?}"
    );

    // No CHILDINFO when the children are listed themselves.
    let listed = c
        .ok("LIST (SUBSCRIBED RECURSIVEMATCH) \"\" (Personal \"Personal/*\")")
        .await;
    assert_eq!(names(&listed), ["Personal", "Personal/Notes"]);
    assert!(
        !listed.iter().any(|l| l.contains("CHILDINFO")),
        "{listed:#?}"
    );
    // Several patterns at once (RFC 5258 §3).
    let two = c.ok("LIST \"\" (INBOX \"Personal/*\")").await;
    assert_eq!(names(&two), ["INBOX", "Personal/Notes"]);

    // LIST-STATUS (RFC 5819): each selectable mailbox's STATUS right after its LIST line,
    // the same as a STATUS command answers; none for \Noselect parents.
    let with_status = c
        .ok("LIST \"\" \"*\" RETURN (STATUS (MESSAGES UNSEEN))")
        .await;
    let mut statuses = 0;
    for (i, line) in with_status.iter().enumerate() {
        let Some((attrs, name)) = list_entry(line) else {
            continue;
        };
        let next = with_status.get(i + 1).cloned().unwrap_or_default();
        if attrs.contains(&"\\Noselect".to_string()) {
            assert!(!next.starts_with("* STATUS"), "{line} then {next}");
            continue;
        }
        let expected = c.ok(&format!("STATUS \"{name}\" (MESSAGES UNSEEN)")).await;
        assert_eq!(next, expected[0], "after {line}");
        statuses += 1;
    }
    assert!(statuses >= 10, "{with_status:#?}");
    let inbox = c.ok("STATUS INBOX (MESSAGES)").await;
    assert!(inbox[0].contains("MESSAGES 2"), "{inbox:?}");

    // The delimiter query keeps its base meaning.
    let root = c.ok("LIST (SUBSCRIBED) \"\" \"\"").await;
    assert_eq!(root, c.ok("LIST \"\" \"\"").await);

    // Bad options get a tagged BAD that says which.
    let tagged = c.refused("LIST (BOGUS) \"\" \"*\"", "BAD").await;
    assert!(tagged.contains("BOGUS"), "{tagged}");
    let tagged = c.refused("LIST (RECURSIVEMATCH) \"\" \"*\"", "BAD").await;
    assert!(tagged.contains("RECURSIVEMATCH"), "{tagged}");
    let tagged = c
        .refused("LIST \"\" \"*\" RETURN (STATUS (NOPE))", "BAD")
        .await;
    assert!(tagged.contains("STATUS"), "{tagged}");
    // Before login: refused, not answered.
    let mut anon = ImapConn::connect(d.imap_addr()).await;
    anon.refused("LIST (SPECIAL-USE) \"\" \"*\"", "BAD").await;
    // Malformed extended commands count towards the bad-command limit like any other.
    let mut spam = d.imap_as("alice", "alice-password").await;
    for _ in 0..20 {
        spam.refused("LIST (BOGUS) \"\" \"*\"", "BAD").await;
    }
    spam.send_raw(b"last LIST (BOGUS) \"\" \"*\"\r\n").await;
    let mut rest = Vec::new();
    while let Some(line) = spam.read_line().await {
        rest.push(String::from_utf8_lossy(&line).into_owned());
    }
    assert!(rest.iter().any(|l| l.starts_with("* BYE")), "{rest:?}");
    d.stop().await;
}

/// The numbers of a plain `* SEARCH` answer.
fn search_hits(lines: &[String]) -> Vec<u32> {
    let line = lines.iter().find(|l| l.starts_with("* SEARCH")).unwrap();
    line.split(' ')
        .skip(2)
        .map(|n| n.parse().unwrap())
        .collect()
}

/// `n`, `a:b` and `,` of a sequence set, expanded.
fn expand(set: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for part in set.split(',') {
        match part.split_once(':') {
            Some((a, b)) => out.extend(a.parse::<u32>().unwrap()..=b.parse().unwrap()),
            None => out.push(part.parse().unwrap()),
        }
    }
    out
}

/// The value after `key` in an ESEARCH line.
fn item<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let mut words = line.split(' ');
    words.find(|w| *w == key)?;
    words.next()
}

#[tokio::test]
async fn esearch_answers_what_search_finds() {
    let d = TestDaemon::start().await;
    for (i, subject) in ["alpha", "beta", "alpha again", "gamma", "alpha third"]
        .iter()
        .enumerate()
    {
        deliver(&d, subject, &format!("e{i}")).await;
    }
    let mut c = d.imap_as("alice", "alice-password").await;
    let caps = c.ok("CAPABILITY").await;
    assert!(caps[0].split(' ').any(|w| w == "ESEARCH"), "{caps:?}");
    c.ok("SELECT INBOX").await;
    c.ok("STORE 2 +FLAGS (\\Seen)").await;
    // Roundcube's forms (RFC 4731 §3.1): compared with the base SEARCH of the same keys.
    for (prefix, keys) in [
        ("UID SEARCH", "ALL"),
        ("UID SEARCH", "UNSEEN"),
        ("SEARCH", "SUBJECT alpha"),
        ("SEARCH", "NOT SUBJECT alpha"),
    ] {
        let hits = search_hits(&c.ok(&format!("{prefix} {keys}")).await);
        assert!(!hits.is_empty(), "{prefix} {keys}");
        let (lines, tagged) = c
            .run(&format!("{prefix} RETURN (MIN MAX COUNT ALL) {keys}"))
            .await;
        assert!(tagged.contains(" OK "), "{tagged}");
        let tag = tagged.split(' ').next().unwrap();
        let [line] = lines.as_slice() else {
            panic!("{lines:?}")
        };
        assert!(
            line.starts_with(&format!("* ESEARCH (TAG \"{tag}\")")),
            "{line}"
        );
        assert_eq!(line.contains(" UID "), prefix.starts_with("UID"), "{line}");
        assert_eq!(item(line, "MIN"), Some(hits[0].to_string().as_str()));
        assert_eq!(
            item(line, "MAX"),
            Some(hits[hits.len() - 1].to_string().as_str())
        );
        assert_eq!(item(line, "COUNT"), Some(hits.len().to_string().as_str()));
        assert_eq!(expand(item(line, "ALL").unwrap()), hits, "{line}");
        // `RETURN ()` means ALL.
        let empty = c.ok(&format!("{prefix} RETURN () {keys}")).await;
        assert_eq!(expand(item(&empty[0], "ALL").unwrap()), hits, "{empty:?}");
    }
    // Only what was asked; no hits: COUNT 0 and nothing else.
    let count = c.ok("SEARCH RETURN (COUNT) SUBJECT alpha").await;
    assert!(count[0].ends_with(" COUNT 3"), "{count:?}");
    let none = c
        .ok("UID SEARCH RETURN (MIN MAX COUNT ALL) SUBJECT nowhere")
        .await;
    assert!(none[0].ends_with(" UID COUNT 0"), "{none:?}");
    // A search key as a literal, as clients send non-ASCII text.
    c.send_raw(b"L1 SEARCH RETURN (COUNT) CHARSET UTF-8 SUBJECT {5}\r\n")
        .await;
    let cont = c.read_line().await.unwrap();
    assert!(cont.starts_with(b"+"), "{}", String::from_utf8_lossy(&cont));
    c.send_raw(b"alpha\r\n").await;
    let (lines, tagged) = c.until_tagged("L1").await;
    assert!(tagged.starts_with("L1 OK"), "{tagged}");
    assert!(lines[0].ends_with(" COUNT 3"), "{lines:?}");
    let tagged = c.refused("SEARCH RETURN (SAVE) ALL", "BAD").await;
    assert!(tagged.contains("SAVE"), "{tagged}");
    let tagged = c.refused("SEARCH RETURN (MIN) NOSUCHKEY", "BAD").await;
    assert!(tagged.contains("criteria"), "{tagged}");
    c.ok("UNSELECT").await;
    c.refused("SEARCH RETURN (MIN) ALL", "BAD").await;
    d.stop().await;
}

/// Appends `raw` to `mailbox` with a LITERAL+ literal and internal date `date`; its UID.
async fn append(c: &mut ImapConn, mailbox: &str, date: &str, raw: &str) -> u32 {
    c.send_raw(
        format!(
            "ap APPEND {mailbox} \"{date}\" {{{}+}}\r\n{raw}\r\n",
            raw.len()
        )
        .as_bytes(),
    )
    .await;
    let (_, tagged) = c.until_tagged("ap").await;
    let code = tagged.split("[APPENDUID ").nth(1).expect(&tagged);
    code.split([' ', ']']).nth(1).unwrap().parse().unwrap()
}

/// Numbers of a `* SORT` answer.
fn sorted(lines: &[String]) -> Vec<u32> {
    let line = lines
        .iter()
        .find(|l| l.starts_with("* SORT"))
        .expect("SORT");
    line.split(' ')
        .skip(2)
        .map(|n| n.parse().unwrap())
        .collect()
}

fn thread_line(lines: &[String]) -> String {
    let line = lines
        .iter()
        .find(|l| l.starts_with("* THREAD"))
        .expect("THREAD");
    line.trim_start_matches("* THREAD").trim().to_string()
}

/// The top-level `(...)` groups of a THREAD answer.
fn top_level(threads: &str) -> Vec<String> {
    let (mut out, mut depth, mut current) = (Vec::new(), 0, String::new());
    for ch in threads.chars() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ => {}
        }
        current.push(ch);
        if depth == 0 && !current.trim().is_empty() {
            out.push(std::mem::take(&mut current));
        }
    }
    out
}

/// A message for the SORT/THREAD tests.
struct Msg {
    subject: &'static str,
    from: &'static str,
    /// Day of November 2026: the Date header.
    day: u32,
    /// Day of October 2026: the internal date.
    arrived: u32,
    padding: usize,
    id: &'static str,
    refs: &'static str,
}

const MSGS: [Msg; 5] = [
    Msg {
        subject: "Printer",
        from: "zed",
        day: 3,
        arrived: 5,
        padding: 10,
        id: "a",
        refs: "",
    },
    Msg {
        subject: "Re: Printer",
        from: "amy",
        day: 4,
        arrived: 1,
        padding: 300,
        id: "b",
        refs: "<a@x>",
    },
    Msg {
        subject: "Budget",
        from: "bob",
        day: 1,
        arrived: 3,
        padding: 50,
        id: "c",
        refs: "",
    },
    Msg {
        subject: "RE: [ops] Printer",
        from: "Cat",
        day: 5,
        arrived: 4,
        padding: 0,
        id: "d",
        refs: "<a@x> <b@x>",
    },
    Msg {
        subject: "Fwd: Budget (fwd)",
        from: "dan",
        day: 2,
        arrived: 2,
        padding: 120,
        id: "e",
        refs: "<c@x>",
    },
];

fn raw(m: &Msg) -> String {
    let refs = if m.refs.is_empty() {
        String::new()
    } else {
        format!("References: {}\r\n", m.refs)
    };
    format!(
        "From: {0} <{0}@customer.example>\r\nTo: support@example.test\r\nSubject: {1}\r\nDate: {2:02} Nov 2026 10:00:00 +0000\r\nMessage-ID: <{3}@x>\r\n{refs}\r\n{4}\r\n",
        m.from,
        m.subject,
        m.day,
        m.id,
        "x".repeat(m.padding)
    )
}

#[tokio::test]
async fn sort_and_thread_on_a_personal_folder() {
    let d = TestDaemon::start().await;
    let mut c = d.imap_as("alice", "alice-password").await;
    let caps = c.ok("CAPABILITY").await;
    for cap in ["SORT", "THREAD=REFERENCES", "THREAD=ORDEREDSUBJECT"] {
        assert!(
            caps[0].split(' ').any(|w| w == cap),
            "missing {cap}: {caps:?}"
        );
    }
    c.ok("CREATE Personal/T").await;
    let mut uids = Vec::new();
    for m in &MSGS {
        let date = format!("{:02}-Oct-2026 09:00:00 +0000", m.arrived);
        uids.push(append(&mut c, "Personal/T", &date, &raw(m)).await);
    }
    c.ok("SELECT Personal/T").await;
    let by = |key: &dyn Fn(&Msg) -> u64| {
        let mut order: Vec<usize> = (0..MSGS.len()).collect();
        order.sort_by_key(|&i| (key(&MSGS[i]), i));
        order.into_iter().map(|i| uids[i]).collect::<Vec<u32>>()
    };
    // Roundcube's forms.
    let date = sorted(&c.ok("UID SORT (DATE) UTF-8 ALL").await);
    assert_eq!(date, by(&|m| m.day as u64));
    let arrival = sorted(&c.ok("UID SORT (REVERSE ARRIVAL) US-ASCII ALL").await);
    let mut expected = by(&|m| m.arrived as u64);
    expected.reverse();
    assert_eq!(arrival, expected);
    // SIZE against the daemon's own RFC822.SIZE.
    let sizes = c.ok("UID FETCH 1:* (RFC822.SIZE)").await;
    let size_of = |uid: u32| -> u64 {
        let line = sizes
            .iter()
            .find(|l| l.contains(&format!("UID {uid} ")))
            .unwrap();
        line.split("RFC822.SIZE ")
            .nth(1)
            .unwrap()
            .trim_end_matches(')')
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let size = sorted(&c.ok("UID SORT (SIZE) UTF-8 ALL").await);
    let mut expected = uids.clone();
    expected.sort_by_key(|&u| (size_of(u), u));
    assert_eq!(size, expected);
    // FROM is the mailbox part, case-insensitively: amy bob Cat dan zed.
    let from = sorted(&c.ok("UID SORT (FROM) UTF-8 ALL").await);
    assert_eq!(from, [uids[1], uids[2], uids[3], uids[4], uids[0]]);
    // SUBJECT is the base subject (RFC 5256 §2.1): the Budgets, then the Printers, each
    // by sequence; a second key breaks the ties.
    let subject = sorted(&c.ok("UID SORT (SUBJECT) UTF-8 ALL").await);
    assert_eq!(subject, [uids[2], uids[4], uids[0], uids[1], uids[3]]);
    let two = sorted(&c.ok("UID SORT (SUBJECT REVERSE DATE) UTF-8 ALL").await);
    assert_eq!(two, [uids[4], uids[2], uids[3], uids[1], uids[0]]);
    // Sequence numbers without UID, and search criteria narrow the set.
    let seqs = sorted(&c.ok("SORT (DATE) UTF-8 SUBJECT printer").await);
    assert_eq!(seqs, [1, 2, 4]);

    // THREAD=REFERENCES (RFC 5256 §2.2): b and c answer a; d answers b; e answers c;
    // the roots by date.
    let refs = thread_line(&c.ok("UID THREAD REFERENCES UTF-8 ALL").await);
    let u = |i: usize| uids[i];
    assert_eq!(
        refs,
        format!("({} {})({} {} {})", u(2), u(4), u(0), u(1), u(3))
    );
    // ORDEREDSUBJECT: groups by base subject, the first is the parent of the rest.
    let ordered = thread_line(&c.ok("THREAD ORDEREDSUBJECT UTF-8 ALL").await);
    assert_eq!(ordered, "(3 5)(1 (2)(4))");
    let tagged = c.refused("THREAD NOSUCH UTF-8 ALL", "BAD").await;
    assert!(tagged.contains("NOSUCH"), "{tagged}");
    let tagged = c.refused("SORT (DATE) KOI8-R ALL", "NO").await;
    assert!(tagged.contains("BADCHARSET"), "{tagged}");
    c.ok("UNSELECT").await;
    c.refused("SORT (DATE) UTF-8 ALL", "BAD").await;
    d.stop().await;
}

#[tokio::test]
async fn thread_on_a_team_view_is_the_conversations() {
    let d = TestDaemon::start().await;
    let mut smtp = d.smtp().await;
    smtp.cmd("EHLO client.example", 250).await;
    // Two conversations: a question and its follow-up, and an unrelated one.
    for m in [&MSGS[0], &MSGS[2], &MSGS[1]] {
        let from = format!("{}@customer.example", m.from);
        let (code, text) = smtp
            .send_mail(&from, &["support@example.test"], raw(m).as_bytes())
            .await;
        assert_eq!(code, 250, "{text:?}");
    }
    // A colleague writes with the conversation's [#n] tag and nothing in common by the
    // RFC's rules (no references, another subject): teamgate joins it, so THREAD must.
    let printer = d.handle.store().list_conversations().unwrap();
    let printer = printer
        .iter()
        .find(|c| c.subject.contains("Printer"))
        .unwrap()
        .id
        .0;
    let tagged = format!(
        "From: Kim <kim@customer.example>\r\nTo: support@example.test\r\nSubject: [#{printer}] Toner is low too\r\nDate: 06 Nov 2026 10:00:00 +0000\r\nMessage-ID: <k@x>\r\n\r\nsame here\r\n"
    );
    let (code, text) = smtp
        .send_mail(
            "kim@customer.example",
            &["support@example.test"],
            tagged.as_bytes(),
        )
        .await;
    assert_eq!(code, 250, "{text:?}");
    let conversations = d.handle.store().list_conversations().unwrap();
    let mut c = d.imap_as("alice", "alice-password").await;
    c.ok("SELECT INBOX").await;
    let ids = c
        .ok("UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        .await;
    let id_of = |uid: &str| -> String {
        let line = ids
            .iter()
            .find(|l| l.contains(&format!("UID {uid} ")))
            .unwrap();
        line.split('<')
            .nth(1)
            .unwrap()
            .split('>')
            .next()
            .unwrap()
            .to_string()
    };
    let threads = thread_line(&c.ok("UID THREAD REFERENCES UTF-8 ALL").await);
    let mut groups: Vec<Vec<String>> = top_level(&threads)
        .iter()
        .map(|t| {
            let mut g: Vec<String> = t
                .split([' ', '(', ')'])
                .filter(|s| !s.is_empty())
                .map(id_of)
                .collect();
            g.sort();
            g
        })
        .collect();
    groups.sort();
    let mut expected: Vec<Vec<String>> = conversations
        .iter()
        .map(|c| {
            let mut g = c.message_ids.clone();
            g.sort();
            g
        })
        .collect();
    expected.sort();
    assert_eq!(groups, expected, "{threads}");
    assert_eq!(expected.len(), 2, "{conversations:?}");
    d.stop().await;
}

const ATTACHED: &str = "From: a@customer.example\r\nSubject: bin\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9 =\r\nau lait\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECA/8=\r\n--b\r\nContent-Type: application/x-odd\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\n--b--\r\n";

/// The bytes of the literal that ends a FETCH response line (after its `{n}\r\n`).
fn literal_of(line: &[u8]) -> Vec<u8> {
    let start = line
        .windows(3)
        .position(|w| w == b"}\r\n")
        .expect("literal")
        + 3;
    // Then the closing ")" of the FETCH and CRLF.
    let end = line.len() - 3;
    line[start..end].to_vec()
}

#[tokio::test]
async fn binary_fetch_and_literal8_append() {
    use base64::Engine as _;
    let d = TestDaemon::start().await;
    let mut c = d.imap_as("alice", "alice-password").await;
    let caps = c.ok("CAPABILITY").await;
    assert!(caps[0].split(' ').any(|w| w == "BINARY"), "{caps:?}");
    c.ok("CREATE Personal/Bin").await;
    let uid = append(
        &mut c,
        "Personal/Bin",
        "01-Oct-2026 09:00:00 +0000",
        ATTACHED,
    )
    .await;
    c.ok("SELECT Personal/Bin").await;
    // Part 2 decoded is base64 of what BODY[2] sends; BINARY.SIZE is its length.
    c.send_raw(format!("b1 UID FETCH {uid} (BINARY.PEEK[2])\r\n").as_bytes())
        .await;
    let line = c.read_line().await.unwrap();
    let decoded = literal_of(&line);
    c.until_tagged("b1").await;
    c.send_raw(format!("b2 UID FETCH {uid} (BODY.PEEK[2])\r\n").as_bytes())
        .await;
    let encoded = literal_of(&c.read_line().await.unwrap());
    c.until_tagged("b2").await;
    let expected = base64::engine::general_purpose::STANDARD
        .decode(String::from_utf8(encoded).unwrap().trim())
        .unwrap();
    assert_eq!(decoded, expected);
    let size = c
        .ok(&format!("UID FETCH {uid} (BINARY.SIZE[2] BINARY.SIZE[1])"))
        .await;
    assert!(
        size[0].contains(&format!("BINARY.SIZE[2] {}", expected.len())),
        "{size:?}"
    );
    assert!(
        size[0].contains(&format!("BINARY.SIZE[1] {}", "café au lait".len())),
        "{size:?}"
    );
    assert!(
        !has_seen(&c.ok("FETCH 1 (FLAGS)").await),
        "PEEK and SIZE leave \\Seen"
    );
    // Quoted-printable undone, with a partial range; no PEEK sets \Seen.
    c.send_raw(b"b3 FETCH 1 (BINARY[1]<0.5>)\r\n").await;
    let line = c.read_line().await.unwrap();
    assert!(
        line.windows(5).any(|w| w == "café".as_bytes()),
        "{}",
        String::from_utf8_lossy(&line)
    );
    // RFC 3516 §4.2: a partial answer names its origin.
    let text = String::from_utf8_lossy(&line);
    assert!(text.contains("BINARY[1]<0> {5}"), "{text}");
    let (rest, _) = c.until_tagged("b3").await;
    let flags = c.ok("FETCH 1 (FLAGS)").await;
    assert!(
        has_seen(&flags) || rest.iter().any(|l| l.contains("\\Seen")),
        "{flags:?}"
    );
    // An encoding we cannot undo: NO [UNKNOWN-CTE] (RFC 3516 §4.3).
    let tagged = c.refused("FETCH 1 (BINARY.PEEK[3])", "NO").await;
    assert!(tagged.contains("[UNKNOWN-CTE]"), "{tagged}");

    // APPEND with a literal8 carrying NUL, read back with BINARY[] as a literal8.
    let with_nul = b"From: a@customer.example\r\nSubject: nul\r\n\r\nbefore\0after\r\n";
    c.send_raw(format!("b4 APPEND Personal/Bin ~{{{}}}\r\n", with_nul.len()).as_bytes())
        .await;
    let cont = c.read_line().await.unwrap();
    assert!(cont.starts_with(b"+"), "{}", String::from_utf8_lossy(&cont));
    c.send_raw(with_nul).await;
    c.send_raw(b"\r\n").await;
    let (_, tagged) = c.until_tagged("b4").await;
    assert!(tagged.contains("OK [APPENDUID "), "{tagged}");
    let new_uid: u32 = tagged
        .split(' ')
        .nth(4)
        .unwrap()
        .trim_end_matches(']')
        .parse()
        .unwrap();
    c.send_raw(format!("b5 UID FETCH {new_uid} (BINARY.PEEK[])\r\n").as_bytes())
        .await;
    let line = c.read_line().await.unwrap();
    assert!(
        line.windows(2).any(|w| w == b"~{"),
        "{}",
        String::from_utf8_lossy(&line)
    );
    assert_eq!(literal_of(&line), with_nul);
    c.until_tagged("b5").await;
    d.stop().await;
}

fn has_seen(lines: &[String]) -> bool {
    lines.iter().any(|l| l.contains("\\Seen"))
}

/// Sends `tag APPEND mailbox` with `parts` (each `(arguments before the literal, message)`)
/// as synchronizing literals, waiting for each `+`; returns the tagged line.
async fn multi_append(
    c: &mut ImapConn,
    tag: &str,
    mailbox: &str,
    parts: &[(&str, &str)],
) -> String {
    let mut line = format!("{tag} APPEND {mailbox}");
    for (args, msg) in parts {
        line.push_str(&format!(" {args}{{{}}}\r\n", msg.len()));
        c.send_raw(line.as_bytes()).await;
        let cont = c.read_line().await.unwrap();
        assert!(cont.starts_with(b"+"), "{}", String::from_utf8_lossy(&cont));
        line = msg.to_string();
    }
    line.push_str("\r\n");
    c.send_raw(line.as_bytes()).await;
    c.until_tagged(tag).await.1
}

#[tokio::test]
async fn multiappend_is_all_or_none() {
    let d = TestDaemon::start().await;
    let mut c = d.imap_as("alice", "alice-password").await;
    let caps = c.ok("CAPABILITY").await;
    assert!(caps[0].split(' ').any(|w| w == "MULTIAPPEND"), "{caps:?}");
    c.ok("CREATE Personal/M").await;
    let one = "From: a@customer.example\r\nSubject: one\r\n\r\nfirst\r\n";
    let two = "From: a@customer.example\r\nSubject: two\r\n\r\nsecond\r\n";
    let three = "From: a@customer.example\r\nSubject: three\r\n\r\nthird\r\n";
    let tagged = multi_append(
        &mut c,
        "m1",
        "Personal/M",
        &[
            ("(\\Seen) ", one),
            ("", two),
            ("\"01-Oct-2026 09:00:00 +0000\" ", three),
        ],
    )
    .await;
    assert!(tagged.starts_with("m1 OK [APPENDUID "), "{tagged}");
    // The APPENDUID set names exactly the messages now in the folder, in order.
    let set = tagged.split(' ').nth(4).unwrap().trim_end_matches(']');
    let uids = expand(set);
    let fetched = c.ok("EXAMINE Personal/M").await;
    assert!(fetched.iter().any(|l| l == "* 3 EXISTS"), "{fetched:?}");
    let subjects = c
        .ok("UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        .await;
    for (i, (uid, subject)) in uids.iter().zip(["one", "two", "three"]).enumerate() {
        let line = &subjects[i];
        assert!(
            line.contains(&format!("UID {uid} ")) && line.contains(subject),
            "{line}"
        );
        assert_eq!(line.contains("\\Seen"), i == 0, "{line}");
    }
    let dated = c.ok("FETCH 3 (INTERNALDATE)").await;
    assert!(dated[0].contains("01-Oct-2026 09:00:00 +0000"), "{dated:?}");
    c.ok("UNSELECT").await;

    // None stored when one is refused: too big, a bad argument, or a team mailbox.
    let d = {
        d.stop().await;
        TestDaemon::start_with(|c| c.smtp.max_message_size = 100).await
    };
    let mut c = d.imap_as("alice", "alice-password").await;
    c.ok("CREATE Personal/M").await;
    // A second message over the size limit: its literal is refused (RFC 7888 §4), and with
    // it the whole command.
    c.send_raw(format!("m2 APPEND Personal/M {{{}}}\r\n", one.len()).as_bytes())
        .await;
    assert!(c.read_line().await.unwrap().starts_with(b"+"));
    c.send_raw(format!("{one} {{200}}\r\n").as_bytes()).await;
    let (_, tagged) = c.until_tagged("m2").await;
    assert!(tagged.starts_with("m2 BAD"), "{tagged}");
    let tagged = multi_append(&mut c, "m3", "Personal/M", &[("", one), ("(\\Bogus ", two)]).await;
    assert!(tagged.starts_with("m3 BAD"), "{tagged}");
    let tagged = multi_append(&mut c, "m4", "INBOX", &[("", one), ("", two)]).await;
    assert!(tagged.starts_with("m4 NO [CANNOT]"), "{tagged}");
    let status = c.ok("STATUS Personal/M (MESSAGES)").await;
    assert!(status[0].contains("MESSAGES 0"), "{status:?}");
    assert!(d.handle.store().list_conversations().unwrap().is_empty());
    d.stop().await;
}
