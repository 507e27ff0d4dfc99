//! RFC 3501 base-protocol rules that Dovecot's imaptest checks (tests/imaptest.rs runs the
//! whole suite), one focused test per rule, in private folders below `Personal/` (plain
//! mailboxes). Kept apart from tests/imap.rs, which covers the team views, to keep both
//! files small.

use teamgate::store::{FolderId, Store, StoreOptions};

use crate::harness::{ImapConn, TestDaemon, simple_message, with_bob};

/// APPENDs one message (LITERAL+) to `mailbox`.
async fn append(c: &mut ImapConn, mailbox: &str, raw: &str) {
    c.ok(&format!("APPEND {mailbox} {{{}+}}\r\n{raw}", raw.len()))
        .await;
}

fn message(id: &str) -> String {
    String::from_utf8(simple_message(
        "customer@example.com",
        &format!("subject {id}"),
        &format!("{id}@example.com"),
    ))
    .expect("ASCII message")
}

fn has(lines: &[String], needle: &str) -> bool {
    lines.iter().any(|l| l.contains(needle))
}

/// The untagged FETCH line of message `seq`.
fn fetch_of(lines: &[String], seq: u32) -> String {
    let prefix = format!("* {seq} FETCH ");
    lines
        .iter()
        .find(|l| l.starts_with(&prefix))
        .cloned()
        .unwrap_or_else(|| panic!("no FETCH for {seq}: {lines:?}"))
}

/// RFC 3501 §2.3.2, §6.3.1, §6.3.2, §6.3.10, §6.4.4: the first session to SELECT a mailbox
/// gets its new messages as \Recent (RECENT count, FETCH FLAGS, SEARCH NEW/OLD/RECENT);
/// EXAMINE and STATUS report them without taking them; a later session sees none; mail
/// arriving while selected is recent to the selected session, announced with RECENT.
#[tokio::test]
async fn recent_belongs_to_the_first_session_and_examine_keeps_it() {
    let d = TestDaemon::start().await;
    let mut a = d.imap_as("alice", "alice-password").await;
    a.ok("CREATE Personal/r").await;
    append(&mut a, "Personal/r", &message("r1")).await;
    append(&mut a, "Personal/r", &message("r2")).await;

    let mut b = d.imap_as("alice", "alice-password").await;
    let status = b.ok("STATUS Personal/r (MESSAGES RECENT)").await;
    assert!(has(&status, "(MESSAGES 2 RECENT 2)"), "{status:?}");
    let examined = b.ok("EXAMINE Personal/r").await;
    assert!(has(&examined, "* 2 RECENT"), "{examined:?}");
    let flags = b.ok("FETCH 1:* (FLAGS)").await;
    assert!(fetch_of(&flags, 1).contains("\\Recent"), "{flags:?}");
    assert!(has(&b.ok("SEARCH NEW").await, "* SEARCH 1 2"));
    b.ok("CLOSE").await;
    let selected = b.ok("SELECT Personal/r").await;
    assert!(
        has(&selected, "* 2 RECENT"),
        "EXAMINE kept them: {selected:?}"
    );
    assert!(has(&b.ok("SEARCH RECENT").await, "* SEARCH 1 2"));

    let mut c = d.imap_as("alice", "alice-password").await;
    let status = c.ok("STATUS Personal/r (RECENT)").await;
    assert!(has(&status, "(RECENT 0)"), "{status:?}");
    let selected = c.ok("SELECT Personal/r").await;
    assert!(has(&selected, "* 0 RECENT"), "{selected:?}");
    assert!(has(&c.ok("SEARCH OLD").await, "* SEARCH 1 2"));
    let flags = c.ok("FETCH 1 (FLAGS)").await;
    assert!(!fetch_of(&flags, 1).contains("\\Recent"), "{flags:?}");

    // New mail while both are selected: the first to be told takes it.
    append(&mut a, "Personal/r", &message("r3")).await;
    let update = b.ok("NOOP").await;
    // RECENT is the session's total (RFC 3501 §7.3.2): its two and the new one.
    assert!(
        has(&update, "* 3 EXISTS") && has(&update, "* 3 RECENT"),
        "{update:?}"
    );
    let flags = b.ok("FETCH 3 (FLAGS)").await;
    assert!(fetch_of(&flags, 3).contains("\\Recent"), "{flags:?}");
    let update = c.ok("NOOP").await;
    assert!(has(&update, "* 0 RECENT"), "{update:?}");
    d.stop().await;
}

/// RFC 3501 §6.4.7: COPY's copies are new messages of the target, so they are \Recent
/// (in the same mailbox to the copying session, elsewhere to the next one to select it).
#[tokio::test]
async fn copies_are_recent() {
    let d = TestDaemon::start().await;
    let mut a = d.imap_as("alice", "alice-password").await;
    a.ok("CREATE Personal/c").await;
    a.ok("CREATE Personal/d").await;
    append(&mut a, "Personal/c", &message("c1")).await;
    a.ok("SELECT Personal/c").await;
    a.ok("STORE 1 +FLAGS (\\Flagged)").await;
    let copied = a.ok("COPY 1 Personal/c").await;
    let update = [copied, a.ok("NOOP").await].concat();
    assert!(has(&update, "* 2 EXISTS"), "{update:?}");
    let flags = a.ok("FETCH 1:2 (FLAGS)").await;
    let copy = fetch_of(&flags, 2);
    assert!(
        copy.contains("\\Recent") && copy.contains("\\Flagged"),
        "{flags:?}"
    );
    a.ok("COPY 1 Personal/d").await;
    let mut b = d.imap_as("alice", "alice-password").await;
    let selected = b.ok("SELECT Personal/d").await;
    assert!(has(&selected, "* 1 RECENT"), "{selected:?}");
    d.stop().await;
}

/// RFC 3501 §7.2.6: a keyword the session was not told of in FLAGS (set by itself or by
/// another session) gets a new untagged FLAGS before the FETCH that shows it.
#[tokio::test]
async fn a_new_keyword_is_announced_in_flags_before_the_fetch() {
    let d = TestDaemon::start().await;
    let mut a = d.imap_as("alice", "alice-password").await;
    a.ok("CREATE Personal/k").await;
    append(&mut a, "Personal/k", &message("k1")).await;
    a.ok("SELECT Personal/k").await;
    let mut b = d.imap_as("alice", "alice-password").await;
    let selected = b.ok("SELECT Personal/k").await;
    assert!(!has(&selected, "$hello"), "{selected:?}");

    let stored = a.ok("STORE 1 +FLAGS ($hello)").await;
    let flags_at = stored
        .iter()
        .position(|l| l.starts_with("* FLAGS ") && l.contains("$hello"));
    let fetch_at = stored
        .iter()
        .position(|l| l.contains("FETCH") && l.contains("$hello"));
    assert!(
        matches!((flags_at, fetch_at), (Some(f), Some(x)) if f < x),
        "{stored:?}"
    );
    let update = b.ok("NOOP").await;
    let flags_at = update
        .iter()
        .position(|l| l.starts_with("* FLAGS ") && l.contains("$hello"));
    let fetch_at = update
        .iter()
        .position(|l| l.contains("FETCH") && l.contains("$hello"));
    assert!(
        matches!((flags_at, fetch_at), (Some(f), Some(x)) if f < x),
        "{update:?}"
    );
    // Told once: the next change of that keyword comes without a new FLAGS.
    let again = a.ok("STORE 1 -FLAGS ($hello)").await;
    let again = [again, a.ok("STORE 1 +FLAGS ($hello)").await].concat();
    assert!(!has(&again, "* FLAGS "), "{again:?}");
    let mut c = d.imap_as("alice", "alice-password").await;
    let selected = c.ok("SELECT Personal/k").await;
    assert!(
        selected
            .iter()
            .any(|l| l.starts_with("* FLAGS ") && l.contains("$hello")),
        "{selected:?}"
    );
    d.stop().await;
}

/// RFC 3501 §7.4.2 ENVELOPE group syntax for RFC 5322 §3.4 groups: a `(NIL NIL "name"
/// NIL)` start, the members, a `(NIL NIL NIL NIL)` end; a comment is no member.
#[tokio::test]
async fn envelope_renders_rfc5322_groups() {
    let d = TestDaemon::start().await;
    let mut a = d.imap_as("alice", "alice-password").await;
    a.ok("CREATE Personal/e").await;
    let raw = "From: Customer <customer@example.com>\r\nTo: undisclosed-recipients:;\r\n\
               Cc: Group: a@x.example, b@y.example;, Other: (just a comment) ;\r\n\
               Subject: groups\r\n\r\nbody\r\n";
    append(&mut a, "Personal/e", raw).await;
    a.ok("SELECT Personal/e").await;
    let envelope = fetch_of(&a.ok("FETCH 1 (ENVELOPE)").await, 1);
    assert!(
        envelope.contains(
            "((NIL NIL \"undisclosed-recipients\" NIL)(NIL NIL NIL NIL)) \
             ((NIL NIL \"Group\" NIL)(NIL NIL \"a\" \"x.example\")(NIL NIL \"b\" \"y.example\")\
             (NIL NIL NIL NIL)(NIL NIL \"Other\" NIL)(NIL NIL NIL NIL))"
        ),
        "{envelope}"
    );
    d.stop().await;
}

/// RFC 3501 §6.3.6-§6.3.9 with Thunderbird's own lines (imap.log): CREATE does not
/// subscribe, SUBSCRIBE does; with `%`, LSUB shows an unsubscribed parent of a subscribed
/// folder as \Noselect; team mailboxes are subscribed until UNSUBSCRIBE; a deleted folder
/// stays subscribed; all of it survives a restart.
#[tokio::test]
async fn subscriptions_are_kept_per_agent_and_lsub_shows_noselect_parents() {
    let d = TestDaemon::start_with(with_bob).await;
    let mut a = d.imap_as("alice", "alice-password").await;
    a.ok("create \"Personal/Projects\"").await;
    a.ok("create \"Personal/Projects/Old\"").await;
    let lsub = a.ok("lsub \"\" \"*\"").await;
    assert!(
        has(&lsub, "\"/\" INBOX") && !has(&lsub, "Personal/Projects"),
        "{lsub:?}"
    );
    a.ok("subscribe \"Personal/Projects/Old\"").await;
    let lsub = a.ok("lsub \"\" \"Personal/%\"").await;
    assert_eq!(lsub, vec!["* LSUB (\\Noselect) \"/\" Personal/Projects"]);
    let lsub = a.ok("lsub \"\" \"*\"").await;
    assert!(has(&lsub, "\"/\" Personal/Projects/Old"), "{lsub:?}");
    assert!(!has(&lsub, "\"/\" Personal/Projects\""), "{lsub:?}");
    a.ok("UNSUBSCRIBE INBOX").await;
    a.ok("DELETE Personal/Projects/Old").await;
    a.refused("SUBSCRIBE Personal/Nothing", "NO").await;
    drop(a);

    let dir = d.stop().await;
    let d = TestDaemon::start_in(dir, with_bob).await;
    let mut a = d.imap_as("alice", "alice-password").await;
    let lsub = a.ok("lsub \"\" \"*\"").await;
    assert!(has(&lsub, "\"/\" Personal/Projects/Old"), "{lsub:?}");
    assert!(!has(&lsub, "\"/\" INBOX"), "{lsub:?}");
    assert!(has(&lsub, "\"/\" Drafts"), "{lsub:?}");
    // Another agent's subscriptions are its own.
    let mut bob = d.imap_as("bob", "alice-password").await;
    assert!(has(&bob.ok("LSUB \"\" INBOX").await, "\"/\" INBOX"));
    bob.ok("SUBSCRIBE Drafts").await;
    assert!(!has(&a.ok("LSUB \"\" INBOX").await, "\"/\" INBOX"));
    d.stop().await;
}

/// Private folders from before subscriptions were kept (every folder counted as
/// subscribed then) stay visible to Thunderbird's `lsub "" "*"` after the upgrade; a folder
/// created afterwards is subscribed only when the client says so.
#[tokio::test]
async fn folders_from_before_subscriptions_stay_subscribed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, _) = Store::open(dir.path(), StoreOptions::default()).expect("open store");
    let old = FolderId {
        owner: "alice".into(),
        name: "Personal/Old".into(),
    };
    store.folder_create(&old).await.expect("create folder");
    store.close().await.expect("close store");

    let d = TestDaemon::start_in(dir, |_| {}).await;
    let mut a = d.imap_as("alice", "alice-password").await;
    a.ok("create \"Personal/New\"").await;
    let lsub = a.ok("lsub \"\" \"*\"").await;
    assert!(has(&lsub, "\"/\" Personal/Old"), "{lsub:?}");
    assert!(!has(&lsub, "\"/\" Personal/New"), "{lsub:?}");
    drop(a);
    // Adopted once: a restart does not subscribe what was created since.
    let dir = d.stop().await;
    let d = TestDaemon::start_in(dir, |_| {}).await;
    let mut a = d.imap_as("alice", "alice-password").await;
    let lsub = a.ok("lsub \"\" \"*\"").await;
    assert!(has(&lsub, "\"/\" Personal/Old"), "{lsub:?}");
    assert!(!has(&lsub, "\"/\" Personal/New"), "{lsub:?}");
    d.stop().await;
}

/// A FETCH of a whole large mailbox goes out in chunks (`cmd/fetch.rs`): every message
/// once, in sequence order, a keyword first seen in a later chunk announced in FLAGS
/// before it, and another session's EXPUNGE held back until the last FETCH is out (an
/// EXPUNGE in between would renumber what is still to come).
#[tokio::test]
async fn a_fetch_of_a_large_mailbox_is_whole_and_in_order() {
    const MESSAGES: u32 = 1_234;
    let d = TestDaemon::start().await;
    let mut a = d.imap_as("alice", "alice-password").await;
    a.ok("CREATE Personal/big").await;
    // MULTIAPPEND (RFC 3502), 100 messages a command.
    let ids: Vec<u32> = (1..=MESSAGES).collect();
    for batch in ids.chunks(100) {
        let mut command = String::from("APPEND Personal/big");
        for id in batch {
            let raw = message(&format!("big{id}"));
            command.push_str(&format!(" {{{}+}}\r\n{raw}", raw.len()));
        }
        a.ok(&command).await;
    }
    a.ok("SELECT Personal/big").await;
    let mut b = d.imap_as("alice", "alice-password").await;
    b.ok("SELECT Personal/big").await;
    b.ok(&format!("STORE {MESSAGES} +FLAGS ($late)")).await;
    b.ok("STORE 3 +FLAGS (\\Deleted)").await;
    b.ok("EXPUNGE").await;

    let lines = a.ok("UID FETCH 1:* (UID FLAGS RFC822.SIZE)").await;
    let fetches: Vec<(usize, u32)> = lines
        .iter()
        .enumerate()
        .filter_map(|(i, l)| {
            let rest = l.strip_prefix("* ")?;
            let (seq, tail) = rest.split_once(' ')?;
            tail.starts_with("FETCH (UID")
                .then(|| seq.parse().ok())
                .flatten()
                .map(|s| (i, s))
        })
        .collect();
    let seqs: Vec<u32> = fetches.iter().map(|(_, s)| *s).collect();
    assert_eq!(
        seqs,
        (1..=MESSAGES).collect::<Vec<_>>(),
        "every message once, in order"
    );
    let last_fetch = fetches.last().map(|(i, _)| *i).unwrap_or_default();
    let expunge_at = lines
        .iter()
        .position(|l| l == "* 3 EXPUNGE")
        .unwrap_or_else(|| panic!("no EXPUNGE reported: {:?}", &lines[last_fetch..]));
    assert!(expunge_at > last_fetch, "EXPUNGE only after the last FETCH");
    let flags_at = lines
        .iter()
        .position(|l| l.starts_with("* FLAGS ") && l.contains("$late"));
    let late_at = lines
        .iter()
        .position(|l| l.contains(&format!("* {MESSAGES} FETCH")) && l.contains("$late"));
    assert!(
        matches!((flags_at, late_at), (Some(f), Some(x)) if f < x),
        "{flags_at:?} {late_at:?}"
    );
    // The session goes on with the new numbering.
    let after = a.ok("FETCH 3 (UID)").await;
    assert_eq!(after, vec!["* 3 FETCH (UID 4)".to_string()]);
    let count = a.ok("SEARCH ALL").await;
    assert_eq!(
        count.first().map(|l| l.split_whitespace().count() - 2),
        Some(MESSAGES as usize - 1)
    );
    d.stop().await;
}
