//! Indexed search (issue 14): the full-text index only narrows which messages SEARCH and
//! `conversations search` read, so every answer must equal the scan's. Two daemons get
//! the same mail (every corpus theme and generated mail with Unicode, RFC 2047, HTML,
//! attachments and embedded messages, in Date order): one with the index, one that scans.
//! Queries are drawn from the stored texts from a printed seed (`TEAMGATE_SEARCH_SEED`
//! tries another), and the index must be restartable and rebuildable without changing any.

use std::time::Duration;

use mail_builder::{MessageBuilder, headers::text::Text};
use mail_parser::MimeHeaders;
use teamgate::test_corpus::manifest;

use crate::harness::{ImapConn, Rng, TestDaemon, corpus_for_smtp, teamgate};

const GENERATED: usize = 300;
const QUERIES: usize = 260;
const DEFAULT_SEED: u64 = 0x5eed_1414;

fn seed() -> u64 {
    std::env::var("TEAMGATE_SEARCH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED)
}

/// Words that stress folding: Greek final sigma, German ß, Turkish dotted I, ligatures,
/// CJK, Cyrillic, accents in composed form, an emoji.
const WORDS: &[&str] = &[
    "printer",
    "invoice",
    "refund",
    "shipping",
    "billing",
    "password",
    "reset",
    "urgent",
    "ticket",
    "délai",
    "Größe",
    "STRASSE",
    "straße",
    "ΣΟΦΙΑ",
    "σοφός",
    "ΟΔΥΣΣΕΥΣ",
    "Ærøskøbing",
    "naïve",
    "日本語",
    "テキスト",
    "привет",
    "МИР",
    "İstanbul",
    "café",
    "ﬁnance",
    "KÖLN",
    "smörgåsbord",
    "façade",
    "Ünïcödé",
    "ok🙂",
    "order",
    "delivery",
    "warranty",
    "broken",
    "screen",
    "cable",
    "Rechnung",
    "Überweisung",
];

/// `least` words and up to `spread - 1` more.
fn words(rng: &mut Rng, least: usize, spread: usize) -> String {
    let n = least + rng.index(spread);
    (0..n)
        .map(|_| *rng.pick(WORDS))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One generated message; its kind cycles through the MIME shapes agents receive.
fn generated(rng: &mut Rng, i: usize, seed: u64) -> Vec<u8> {
    let first = *rng.pick(&["Anna", "Zoë", "Σωκράτης", "Jürgen", "李", "Olga", "Noël"]);
    let from_addr = format!("user{}@customer{}.example", i, i % 17);
    let subject = format!("{} #{}", words(rng, 2, 4), 1000 + rng.index(9000));
    let ticket = format!("TCK-{:05}", rng.index(100_000));
    let mut b = MessageBuilder::new()
        .from((first.to_string(), from_addr))
        .to(("Support".to_string(), "support@example.test".to_string()))
        .subject(subject)
        .message_id(format!("gen-{i}-{seed}@search.example"))
        .date(1_790_000_000 + i as i64 * 3_600)
        .header("X-Ticket", Text::new(ticket));
    if i.is_multiple_of(3) {
        b = b.cc((
            "Partner Ops".to_string(),
            format!("ops{}@partner.example", i % 5),
        ));
    }
    if i.is_multiple_of(11) {
        b = b.bcc(format!("audit{}@example.test", i % 3));
    }
    if i.is_multiple_of(7) && i > 0 {
        b = b.in_reply_to(format!("gen-{}-{seed}@search.example", i - 1));
    }
    let text = format!(
        "Hello,\n{}\n\n{}\n-- \n{}\n",
        words(rng, 10, 30),
        words(rng, 5, 20),
        first
    );
    let b = match i % 5 {
        0 => b.text_body(text),
        1 => b.html_body(format!(
            "<html><body><p>{}</p><p>A &amp; B &eacute;t&eacute; <b>{}</b></p></body></html>",
            words(rng, 12, 1),
            words(rng, 3, 1)
        )),
        2 => b
            .text_body(text.clone())
            .html_body(format!("<div>{}</div>", text.replace('\n', "<br>"))),
        3 => {
            let bytes: Vec<u8> = (0..512).map(|_| rng.next() as u8).collect();
            b.text_body(text).attachment(
                "application/pdf",
                format!("invoice-{}.pdf", rng.index(10_000)),
                bytes,
            )
        }
        _ => {
            let inner = MessageBuilder::new()
                .from("forwarded@original.example")
                .to("someone@original.example")
                .subject(format!("Fwd original {}", words(rng, 3, 1)))
                .message_id(format!("inner-{i}-{seed}@search.example"))
                .text_body(words(rng, 15, 1))
                .write_to_vec()
                .expect("inner message");
            b.text_body(text)
                .attachment("message/rfc822", "original.eml", inner)
        }
    };
    let raw = b.write_to_vec().expect("build message");
    // SMTP line ends, as the corpus is sent.
    String::from_utf8_lossy(&raw)
        .replace("\r\n", "\n")
        .replace('\n', "\r\n")
        .into_bytes()
}

/// A message's Date as unix seconds, read with the parser (messages without one last).
fn date_of(raw: &[u8]) -> i64 {
    mail_parser::MessageParser::default()
        .parse(raw)
        .and_then(|m| m.date().map(|d| d.to_timestamp()))
        .unwrap_or(i64::MAX)
}

/// Every corpus message and the generated mail, in Date order.
fn all_mail(seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng(seed);
    let mut mail: Vec<Vec<u8>> = manifest()
        .iter()
        .map(|row| corpus_for_smtp(&row.path))
        .collect();
    let corpus = mail.len();
    assert!(corpus > 100, "corpus too small: {corpus}");
    mail.extend((0..GENERATED).map(|i| generated(&mut rng, i, seed)));
    mail.sort_by_key(|raw| date_of(raw));
    mail
}

/// Delivers `mail` in order; answers each message's SMTP reply code.
async fn deliver(d: &TestDaemon, mail: &[Vec<u8>]) -> Vec<u16> {
    let mut c = d.smtp().await;
    c.cmd("EHLO corpus.example", 250).await;
    let mut codes = Vec::with_capacity(mail.len());
    for raw in mail {
        let (code, _) = c
            .send_mail("sender@corpus.example", &["support@example.test"], raw)
            .await;
        codes.push(code);
    }
    c.cmd("QUIT", 221).await;
    codes
}

fn metric(d: &TestDaemon, name: &str, labels: &[(&str, &str)]) -> f64 {
    d.handle.metrics().snapshot().sum(name, labels)
}

/// Waits (bounded) until the index holds every stored message.
async fn index_caught_up(d: &TestDaemon) {
    let want = d.handle.store().stats().expect("store stats").messages as f64;
    for _ in 0..600 {
        if metric(d, "teamgate_search_index_documents", &[]) >= want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the index holds {} of {want} messages after 60 s",
        metric(d, "teamgate_search_index_documents", &[])
    );
}

/// An IMAP string for any text: a LITERAL+ literal, so Unicode and quotes pass as is.
fn literal(s: &str) -> String {
    format!("{{{}+}}\r\n{s}", s.len())
}

/// The UIDs a `UID SEARCH CHARSET UTF-8 <criteria>` answers, in order.
async fn uid_search(c: &mut ImapConn, criteria: &str) -> Vec<u32> {
    let untagged = c.ok(&format!("UID SEARCH CHARSET UTF-8 {criteria}")).await;
    let mut uids: Vec<u32> = untagged
        .iter()
        .filter_map(|l| l.strip_prefix("* SEARCH"))
        .flat_map(|rest| {
            rest.split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter_map(|n| n.parse().ok())
        .collect();
    uids.sort_unstable();
    uids
}

/// The texts of a message a needle is cut from, per search key.
fn texts(raw: &[u8]) -> Vec<(&'static str, String)> {
    let Some(m) = mail_parser::MessageParser::default().parse(raw) else {
        return Vec::new();
    };
    let addr = |a: Option<&mail_parser::Address<'_>>| {
        a.and_then(|a| a.first())
            .map(|a| {
                format!(
                    "{} <{}>",
                    a.name().unwrap_or_default(),
                    a.address().unwrap_or_default()
                )
            })
            .unwrap_or_default()
    };
    let header = |name: &str| {
        m.header_raw(name)
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    vec![
        ("SUBJECT", m.subject().unwrap_or_default().to_string()),
        ("FROM", addr(m.from())),
        ("TO", addr(m.to())),
        ("CC", addr(m.cc())),
        (
            "BODY",
            m.body_text(0).map(|t| t.into_owned()).unwrap_or_default(),
        ),
        (
            "TEXT",
            m.body_text(0).map(|t| t.into_owned()).unwrap_or_default(),
        ),
        ("HEADER X-Ticket", header("X-Ticket")),
        ("HEADER Message-ID", header("Message-ID")),
        ("TEXT", header("Message-ID")),
        (
            "BODY",
            m.attachment(0)
                .and_then(|p| p.attachment_name())
                .unwrap_or_default()
                .to_string(),
        ),
    ]
}

/// A needle cut from `text`: 1 to 14 characters at a random place, in a random case.
fn needle(rng: &mut Rng, text: &str) -> Option<String> {
    let chars: Vec<char> = text.chars().filter(|c| !c.is_control()).collect();
    if chars.is_empty() {
        return None;
    }
    let len = 1 + rng.index(14).min(chars.len() - 1);
    let start = rng.index(chars.len() - len + 1);
    let cut: String = chars[start..start + len].iter().collect();
    if cut.trim().is_empty() {
        return None;
    }
    Some(match rng.index(3) {
        0 => cut.to_uppercase(),
        1 => cut.to_lowercase(),
        _ => cut,
    })
}

/// Search criteria drawn from the stored mail: single keys, AND, OR, NOT, with flags,
/// and needles no message holds.
fn queries(rng: &mut Rng, mail: &[Vec<u8>]) -> Vec<String> {
    let mut out = Vec::with_capacity(QUERIES);
    let mut attempts = 0;
    let one = |rng: &mut Rng| -> Option<String> {
        let raw = rng.pick(mail);
        let texts = texts(raw);
        if texts.is_empty() {
            return None;
        }
        let (key, text) = rng.pick(&texts);
        let needle = needle(rng, text)?;
        Some(format!("{key} {}", literal(&needle)))
    };
    while out.len() < QUERIES && attempts < QUERIES * 20 {
        attempts += 1;
        let q = match rng.index(10) {
            0 => one(rng).zip(one(rng)).map(|(a, b)| format!("OR {a} {b}")),
            1 => one(rng).map(|a| format!("NOT {a}")),
            2 => one(rng).map(|a| format!("SEEN {a}")),
            3 => one(rng).zip(one(rng)).map(|(a, b)| format!("{a} {b}")),
            4 => Some(format!(
                "{} {}",
                rng.pick(&["SUBJECT", "BODY", "TEXT", "FROM", "HEADER X-Ticket"]),
                literal(&format!("zqxj{}wv", rng.next() % 100_000))
            )),
            _ => one(rng),
        };
        out.extend(q);
    }
    out
}

/// The SEARCH answers of the index equal the scan's over the corpus and generated mail,
/// the index answers them reading a fraction of the messages, and `conversations search`
/// agrees online and offline. The scan runs on the same data directory, restarted with
/// the index off: the stored bytes (our `Received:` line with its time included) are the
/// same for both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn indexed_search_equals_the_scan() {
    let seed = seed();
    eprintln!("search seed {seed} (TEAMGATE_SEARCH_SEED)");
    let mail = all_mail(seed);
    let d = TestDaemon::start().await;
    let codes = deliver(&d, &mail).await;
    let accepted = codes.iter().filter(|c| **c == 250).count();
    assert!(
        accepted > mail.len() * 9 / 10,
        "{accepted} of {}",
        mail.len()
    );
    index_caught_up(&d).await;
    let mut rng = Rng(seed ^ 0xabcd);
    let queries = queries(&mut rng, &mail);
    assert_eq!(queries.len(), QUERIES);
    let needles = cli_needles(&mut rng, &mail);

    let mut c = d.imap_as("alice", "alice-password").await;
    c.ok("SELECT INBOX").await;
    // Some messages seen, for the flag-and-text queries.
    c.ok("UID STORE 1:60 +FLAGS.SILENT (\\Seen)").await;
    let ids = "UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])";
    let inbox = c.ok(ids).await;
    assert!(inbox.len() > accepted / 2, "INBOX holds {}", inbox.len());
    let (indexed, read_indexed) = answers(&d, &mut c, &queries).await;
    assert!(metric(&d, "teamgate_searches_total", &[("path", "index")]) > 0.0);
    // One message by its Message-ID: the index reads that one, where the scan reads all.
    let id = inbox
        .iter()
        .filter(|l| l.contains("@search.example>"))
        .find_map(|l| l.split("<gen-").nth(1))
        .and_then(|v| v.split('>').next())
        .map(|v| format!("gen-{v}"))
        .expect("a generated Message-ID in INBOX");
    let by_id = format!("HEADER Message-ID {}", literal(&id));
    let (found, read) = answers(&d, &mut c, std::slice::from_ref(&by_id)).await;
    assert_eq!(found[0].len(), 1, "{by_id}: {found:?}");
    assert!(read <= 3.0, "a Message-ID search read {read} bodies");
    let cli_indexed = cli_answers(&d, &needles);
    c.ok("LOGOUT").await;
    let dir = d.stop().await;
    let offline_indexed = cli_answers_offline(dir.path(), &needles);

    let d = TestDaemon::start_in(dir, |c| c.search.index = false).await;
    let mut c = d.imap_as("alice", "alice-password").await;
    c.ok("SELECT INBOX").await;
    assert_eq!(c.ok(ids).await, inbox, "the same INBOX after the restart");
    let (scanned, read_scanned) = answers(&d, &mut c, &queries).await;
    let mut found_something = 0;
    for ((q, a), b) in queries.iter().zip(&indexed).zip(&scanned) {
        assert_eq!(a, b, "UID SEARCH {q:?}: index and scan differ");
        found_something += usize::from(!b.is_empty());
    }
    // Most needles are cut from real text: the comparison is not over empty answers.
    assert!(
        found_something > QUERIES / 2,
        "{found_something} of {QUERIES} found anything"
    );
    assert_eq!(
        answers(&d, &mut c, std::slice::from_ref(&by_id)).await.0,
        found
    );
    eprintln!("bodies read: index {read_indexed} scan {read_scanned}");
    assert_eq!(
        metric(&d, "teamgate_searches_total", &[("path", "index")]),
        0.0
    );
    assert!(
        read_indexed * 2.0 < read_scanned,
        "the index read {read_indexed} bodies, the scan {read_scanned}"
    );
    let cli_scanned = cli_answers(&d, &needles);
    compare_cli(&needles, &cli_indexed, &cli_scanned, "online");
    c.ok("LOGOUT").await;
    let dir = d.stop().await;
    // Offline without the index: moved away, so the CLI scans.
    std::fs::rename(dir.path().join("search"), dir.path().join("search-away"))
        .expect("move the index away");
    let offline_scanned = cli_answers_offline(dir.path(), &needles);
    compare_cli(&needles, &offline_indexed, &offline_scanned, "offline");
    compare_cli(
        &needles,
        &cli_indexed,
        &offline_indexed,
        "online and offline",
    );
    let nonempty = cli_scanned.iter().filter(|a| !a.is_empty()).count();
    assert!(
        nonempty > needles.len() / 3,
        "only {nonempty} CLI searches found anything"
    );
}

/// Each query's UIDs, and the message bodies the daemon read for them all.
async fn answers(d: &TestDaemon, c: &mut ImapConn, queries: &[String]) -> (Vec<Vec<u32>>, f64) {
    let before = metric(d, "teamgate_search_messages_read_total", &[]);
    let mut out = Vec::with_capacity(queries.len());
    for q in queries {
        out.push(uid_search(c, q).await);
    }
    let read = metric(d, "teamgate_search_messages_read_total", &[]) - before;
    (out, read)
}

fn compare_cli(needles: &[String], a: &[Vec<u64>], b: &[Vec<u64>], how: &str) {
    for ((n, a), b) in needles.iter().zip(a).zip(b) {
        assert_eq!(a, b, "conversations search {n:?} ({how})");
    }
}

/// A CLI config for a stopped daemon's data directory, beside it (never inside).
fn cli_config(data_dir: &std::path::Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("cli.toml"),
        format!(
            "[server]\nhostname = \"mx.example.test\"\ndata_dir = \"{}\"\n[submission]\nlisten = []\n[imap]\nlisten = []\n[filter]\ndns_server = \"none\"\n[[inbox]]\nname = \"Support\"\naddresses = [\"support@example.test\"]\nmembers = []\n",
            data_dir.display()
        ),
    )
    .expect("write cli config");
    dir
}

/// `teamgate conversations search QUERY --json`: the conversation numbers, in order.
fn conversations_search(cfg: &tempfile::TempDir, query: &str) -> Vec<u64> {
    let path = cfg.path().join("cli.toml");
    // After `--`: a needle such as "-- " is the query, not an option.
    let (code, out, err) = teamgate(&[
        "conversations",
        "search",
        "--json",
        "--config",
        path.to_str().expect("utf-8 path"),
        "--",
        query,
    ]);
    assert_eq!(code, 0, "conversations search {query:?}: {err}");
    let list: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {out}"))
        .iter()
        .filter_map(|c| c["id"].as_u64())
        .collect()
}

/// Needles for `conversations search`: cut from subjects and bodies, and a few fixed ones
/// (Unicode folding, an attachment name, a word no message holds).
fn cli_needles(rng: &mut Rng, mail: &[Vec<u8>]) -> Vec<String> {
    let mut out: Vec<String> = ["printer", "ΣΟΦΌΣ", "Straße", "invoice-", "zqxjnothing"]
        .map(String::from)
        .to_vec();
    let mut attempts = 0;
    while out.len() < 45 && attempts < 1_000 {
        attempts += 1;
        let raw: &Vec<u8> = rng.pick(mail);
        let texts = texts(raw);
        // The subject or the body text.
        let Some((_, text)) = texts.get(rng.index(2) * 4) else {
            continue;
        };
        out.extend(needle(rng, text));
    }
    out
}

/// `conversations search` for each needle, through the running daemon.
fn cli_answers(d: &TestDaemon, needles: &[String]) -> Vec<Vec<u64>> {
    let cfg = cli_config(d.data_dir.path());
    tokio::task::block_in_place(|| {
        needles
            .iter()
            .map(|n| conversations_search(&cfg, n))
            .collect()
    })
}

/// The same with no daemon running: the CLI opens the data directory itself, and an
/// empty query is refused.
fn cli_answers_offline(data_dir: &std::path::Path, needles: &[String]) -> Vec<Vec<u64>> {
    let cfg = cli_config(data_dir);
    let path = cfg.path().join("cli.toml");
    let (code, _, err) = teamgate(&[
        "conversations",
        "search",
        "--config",
        path.to_str().expect("utf-8 path"),
        "  ",
    ]);
    assert_ne!(code, 0, "an empty query is refused");
    assert!(err.contains("empty"), "{err}");
    needles
        .iter()
        .map(|n| conversations_search(&cfg, n))
        .collect()
}

/// A message stored after the last commit is found at once (the index trails the store,
/// and what it does not cover yet is scanned); a restart keeps the index without adding
/// anything twice; a damaged index is rebuilt and answers the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_trails_restarts_and_rebuilds() {
    let seed = seed();
    let mut rng = Rng(seed);
    let first: Vec<Vec<u8>> = (0..40).map(|i| generated(&mut rng, i, seed)).collect();
    let d = TestDaemon::start().await;
    assert!(deliver(&d, &first).await.iter().all(|c| *c == 250));
    index_caught_up(&d).await;
    let documents = metric(&d, "teamgate_search_index_documents", &[]);
    let dir = d.stop().await;

    // No commit for an hour: everything new is beyond what the index covers.
    let hour = |c: &mut teamgate::config::Config| {
        c.search.commit_interval = Duration::from_secs(3_600);
    };
    let d = TestDaemon::start_in(dir, hour).await;
    let later = MessageBuilder::new()
        .from("late@customer.example")
        .to("support@example.test")
        .subject("Quokka habitat question")
        .message_id("late-1@search.example")
        .text_body("Where do quokkas live?")
        .write_to_vec()
        .expect("build");
    assert_eq!(deliver(&d, &[later]).await, vec![250]);
    let mut c = d.imap_as("alice", "alice-password").await;
    c.ok("SELECT INBOX").await;
    let old_word = "zqxj-not-there";
    assert!(
        uid_search(&mut c, &format!("SUBJECT {}", literal(old_word)))
            .await
            .is_empty()
    );
    let quokka = uid_search(&mut c, &format!("SUBJECT {}", literal("QUOKKA"))).await;
    assert_eq!(
        quokka.len(),
        1,
        "the uncommitted message is found: {quokka:?}"
    );
    let body = uid_search(&mut c, &format!("BODY {}", literal("quokkas live"))).await;
    assert_eq!(body, quokka);
    let all_printer = uid_search(&mut c, &format!("TEXT {}", literal("printer"))).await;
    c.ok("LOGOUT").await;
    // The restart added nothing twice: the documents are those of the first run.
    assert_eq!(
        metric(&d, "teamgate_search_index_documents", &[]),
        documents
    );
    let dir = d.stop().await;

    // A damaged index: rebuilt from the store on start, and the same answers.
    let meta = dir.path().join("search").join("meta.json");
    assert!(meta.exists(), "the index lives in <data_dir>/search");
    std::fs::write(&meta, b"{ not json").expect("damage meta.json");
    let d = TestDaemon::start_in(dir, |_| {}).await;
    index_caught_up(&d).await;
    let stored = d.handle.store().stats().expect("store stats").messages as f64;
    assert_eq!(metric(&d, "teamgate_search_index_documents", &[]), stored);
    let mut c = d.imap_as("alice", "alice-password").await;
    c.ok("SELECT INBOX").await;
    let before = metric(&d, "teamgate_search_messages_read_total", &[]);
    assert_eq!(
        uid_search(&mut c, &format!("SUBJECT {}", literal("quokka"))).await,
        quokka
    );
    let read = metric(&d, "teamgate_search_messages_read_total", &[]) - before;
    assert!(read <= 2.0, "the rebuilt index narrows: {read} bodies read");
    assert_eq!(
        uid_search(&mut c, &format!("TEXT {}", literal("printer"))).await,
        all_printer
    );
    c.ok("LOGOUT").await;
    d.stop().await;
}
