//! CONDSTORE and QRESYNC (RFC 7162) against the real daemon, in raw IMAP: mod-sequences
//! per message and view, CHANGEDSINCE, UNCHANGEDSINCE races between two agents,
//! HIGHESTMODSEQ across a restart, VANISHED, and the reconnect figure: a QRESYNC reselect
//! after 50 changes by others against a full resync of a 500-message mailbox. The command
//! lines are RFC 7162's (§3.1.4, §3.1.3, §3.2.5 examples); Thunderbird's recording
//! predates these capabilities.

use std::collections::BTreeSet;

use crate::harness::{ImapConn, SmtpConn, TestDaemon, simple_message, with_bob};

/// Delivers `n` messages to Support over one SMTP session, each its own conversation.
async fn deliver_many(d: &TestDaemon, prefix: &str, n: usize) {
    let mut c: SmtpConn<_> = d.smtp().await;
    c.cmd("EHLO client.example", 250).await;
    for i in 0..n {
        let from = format!("{prefix}{i}@customer.example");
        let msg = simple_message(
            &from,
            &format!("{prefix} question {i}"),
            &format!("{prefix}{i}@customer.example"),
        );
        let (code, text) = c.send_mail(&from, &["support@example.test"], &msg).await;
        assert_eq!(code, 250, "{text:?}");
    }
}

/// The number after `word` in `line` (e.g. `MODSEQ (17)` or `HIGHESTMODSEQ 17`).
/// The first FETCH line of a command's untagged answer: a `* FLAGS` announcing a new
/// keyword may come before it (RFC 3501 §7.2.6).
fn first_fetch(lines: &[String]) -> &str {
    lines
        .iter()
        .find(|l| l.contains(" FETCH ("))
        .map_or("", String::as_str)
}

fn number_after(line: &str, word: &str) -> Option<u64> {
    let rest = &line[line.find(word)? + word.len()..];
    let digits: String = rest
        .trim_start_matches([' ', '('])
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn highest_modseq(lines: &[String]) -> u64 {
    lines
        .iter()
        .find_map(|l| number_after(l, "[HIGHESTMODSEQ"))
        .unwrap_or_else(|| panic!("no HIGHESTMODSEQ in {lines:?}"))
}

fn uid_validity(lines: &[String]) -> u64 {
    lines
        .iter()
        .find_map(|l| number_after(l, "[UIDVALIDITY"))
        .unwrap_or_else(|| panic!("no UIDVALIDITY in {lines:?}"))
}

/// The UIDs of the FETCH responses among `lines`.
fn fetched_uids(lines: &[String]) -> BTreeSet<u32> {
    lines
        .iter()
        .filter(|l| l.contains(" FETCH "))
        .filter_map(|l| number_after(l, "UID "))
        .map(|u| u32::try_from(u).unwrap())
        .collect()
}

/// Expands an IMAP uid set (`3:5,9`).
fn expand(set: &str) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    for part in set.split(',') {
        match part.split_once(':') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().unwrap(), b.parse().unwrap());
                out.extend(a.min(b)..=a.max(b));
            }
            None => {
                out.insert(part.parse().unwrap());
            }
        }
    }
    out
}

/// The uids of `* VANISHED [(EARLIER)] set` lines.
fn vanished(lines: &[String], earlier: bool) -> BTreeSet<u32> {
    let prefix = if earlier {
        "* VANISHED (EARLIER) "
    } else {
        "* VANISHED "
    };
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(prefix))
        .filter(|rest| earlier || !rest.starts_with('('))
        .flat_map(expand)
        .collect()
}

fn search_uids(lines: &[String]) -> BTreeSet<u32> {
    lines
        .iter()
        .find_map(|l| l.strip_prefix("* SEARCH"))
        .unwrap_or_else(|| panic!("no SEARCH in {lines:?}"))
        .split(' ')
        .take_while(|w| !w.starts_with('('))
        .filter_map(|w| w.parse().ok())
        .collect()
}

/// Every UID of the selected mailbox, by `UID SEARCH ALL`.
async fn all_uids(c: &mut ImapConn) -> BTreeSet<u32> {
    search_uids(&c.ok("UID SEARCH ALL").await)
}

#[tokio::test]
async fn enable_and_capabilities() {
    let d = TestDaemon::start_with(with_bob).await;
    let mut c = d.imap_as("alice", "alice-password").await;
    let caps = c.ok("CAPABILITY").await;
    for cap in ["CONDSTORE", "QRESYNC"] {
        assert!(caps[0].split(' ').any(|w| w == cap), "{caps:?}");
    }
    // RFC 7162 §3.2.5: QRESYNC before ENABLE QRESYNC is a client error.
    let bad = c.refused("SELECT INBOX (QRESYNC (1 1))", "BAD").await;
    assert!(bad.contains("ENABLE QRESYNC"), "{bad}");
    assert!(has(&c.ok("ENABLE CONDSTORE").await, "* ENABLED CONDSTORE"));
    assert!(has(&c.ok("ENABLE QRESYNC").await, "* ENABLED QRESYNC"));
    c.ok("SELECT INBOX").await;
    // RFC 7162 §3.2.6: VANISHED only with UID FETCH and CHANGEDSINCE.
    c.refused("FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)", "BAD")
        .await;
    c.refused("UID FETCH 1:* (FLAGS) (VANISHED)", "BAD").await;
    // RFC 7162 §3.2.11: reselecting closes the previous mailbox with [CLOSED].
    assert!(has(&c.ok("SELECT INBOX").await, "[CLOSED]"));
}

fn has(lines: &[String], needle: &str) -> bool {
    lines.iter().any(|l| l.contains(needle))
}

#[tokio::test]
async fn changedsince_names_only_what_changed_for_this_agent() {
    let d = TestDaemon::start_with(with_bob).await;
    deliver_many(&d, "cs", 4).await;
    let mut alice = d.imap_as("alice", "alice-password").await;
    let mut bob = d.imap_as("bob", "alice-password").await;
    // Thunderbird's forms: a quoted name, lower-case `fetch`.
    let selected = alice.ok("SELECT \"INBOX\" (CONDSTORE)").await;
    let h0 = highest_modseq(&selected);
    let uids: Vec<u32> = all_uids(&mut alice).await.into_iter().collect();
    assert_eq!(uids.len(), 4);
    let none = alice
        .ok(&format!("UID fetch 1:* (FLAGS) (CHANGEDSINCE {h0})"))
        .await;
    assert!(fetched_uids(&none).is_empty(), "{none:?}");

    bob.ok("SELECT INBOX").await;
    // A shared keyword: alice's view of it changes.
    bob.ok(&format!("UID STORE {} +FLAGS ($Label1)", uids[1]))
        .await;
    // Bob's \Seen is his own: alice's mod-sequences stay.
    bob.ok(&format!("UID STORE {} +FLAGS (\\Seen)", uids[2]))
        .await;
    // Pushed to alice with its MODSEQ (RFC 7162 §3.1); bob's \Seen is not hers.
    let pushed = alice.ok("NOOP").await;
    assert_eq!(
        fetched_uids(&pushed),
        BTreeSet::from([uids[1]]),
        "{pushed:?}"
    );
    assert!(has(&pushed, "MODSEQ ("), "{pushed:?}");
    let changed = alice
        .ok(&format!("UID FETCH 1:* (FLAGS) (CHANGEDSINCE {h0})"))
        .await;
    assert_eq!(
        fetched_uids(&changed),
        BTreeSet::from([uids[1]]),
        "{changed:?}"
    );
    let line = changed.iter().find(|l| l.contains(" FETCH ")).unwrap();
    assert!(line.contains("$Label1"), "{line}");
    let m = number_after(line, "MODSEQ").expect("MODSEQ item");
    assert!(m > h0, "{line}");
    // The MODSEQ item and SEARCH MODSEQ agree with CHANGEDSINCE.
    let fetched = alice.ok(&format!("UID FETCH {} (MODSEQ)", uids[1])).await;
    assert_eq!(
        number_after(first_fetch(&fetched), "MODSEQ"),
        Some(m),
        "{fetched:?}"
    );
    let found = alice.ok(&format!("UID SEARCH MODSEQ {}", h0 + 1)).await;
    assert_eq!(search_uids(&found), BTreeSet::from([uids[1]]), "{found:?}");
    assert!(has(&found, &format!("(MODSEQ {m})")), "{found:?}");
    // Bob sees his own \Seen as a change.
    let bobs = bob
        .ok(&format!("UID FETCH 1:* (FLAGS) (CHANGEDSINCE {h0})"))
        .await;
    assert_eq!(
        fetched_uids(&bobs),
        BTreeSet::from([uids[1], uids[2]]),
        "{bobs:?}"
    );
    // HIGHESTMODSEQ covers the change.
    let again = alice.ok("SELECT INBOX (CONDSTORE)").await;
    assert!(highest_modseq(&again) >= m, "{again:?}");
    let status = alice.ok("STATUS INBOX (HIGHESTMODSEQ)").await;
    assert_eq!(
        number_after(&status[0], "HIGHESTMODSEQ"),
        Some(highest_modseq(&again)),
        "{status:?}"
    );
    // A new message is a change too.
    deliver_many(&d, "late", 1).await;
    assert!(has(&alice.ok("NOOP").await, "EXISTS"));
    let after = alice
        .ok(&format!("UID FETCH 1:* (FLAGS) (CHANGEDSINCE {m})"))
        .await;
    let new: BTreeSet<u32> = all_uids(&mut alice)
        .await
        .into_iter()
        .filter(|u| !uids.contains(u))
        .collect();
    assert_eq!(new.len(), 1);
    assert_eq!(fetched_uids(&after), new, "{after:?}");
}

#[tokio::test]
async fn unchangedsince_race_between_two_agents_has_one_winner() {
    let d = TestDaemon::start_with(with_bob).await;
    deliver_many(&d, "race", 1).await;
    let mut alice = d.imap_as("alice", "alice-password").await;
    let mut bob = d.imap_as("bob", "alice-password").await;
    alice.ok("SELECT INBOX (CONDSTORE)").await;
    bob.ok("SELECT INBOX (CONDSTORE)").await;
    let uid = *all_uids(&mut alice).await.first().unwrap();
    let seen = alice.ok(&format!("UID FETCH {uid} (MODSEQ)")).await;
    let m = number_after(first_fetch(&seen), "MODSEQ").unwrap();
    let claim = format!("UID STORE {uid} (UNCHANGEDSINCE {m}) +FLAGS ($Claimed)");
    // Both claim at once; the store checks and writes in one writer request.
    let ((a_lines, a_tag), (b_lines, b_tag)) = tokio::join!(alice.run(&claim), bob.run(&claim));
    let lost: Vec<&String> = [&a_tag, &b_tag]
        .into_iter()
        .filter(|t| t.contains(&format!("[MODIFIED {uid}]")))
        .collect();
    assert_eq!(
        lost.len(),
        1,
        "alice: {a_tag} {a_lines:?}; bob: {b_tag} {b_lines:?}"
    );
    for tag in [&a_tag, &b_tag] {
        assert!(tag.split(' ').nth(1) == Some("OK"), "{tag}");
    }
    let (winner, loser) = if a_tag.contains("MODIFIED") {
        (&b_lines, &a_lines)
    } else {
        (&a_lines, &b_lines)
    };
    assert!(has(winner, "$Claimed"), "{winner:?}");
    assert!(
        !loser.iter().any(|l| l.contains(" FETCH ")
            && l.contains("MODSEQ")
            && number_after(l, "MODSEQ") > Some(m)
            && !l.contains("$Claimed")),
        "{loser:?}"
    );
    // An UNCHANGEDSINCE at the current mod-sequence wins (RFC 7162 §3.1.3).
    let now = alice.ok(&format!("UID FETCH {uid} (MODSEQ)")).await;
    let m2 = number_after(first_fetch(&now), "MODSEQ").unwrap();
    assert!(m2 > m);
    let (lines, tag) = alice
        .run(&format!(
            "UID STORE {uid} (UNCHANGEDSINCE {m2}) -FLAGS.SILENT ($Claimed)"
        ))
        .await;
    assert!(!tag.contains("MODIFIED") && tag.contains(" OK "), "{tag}");
    // .SILENT with CONDSTORE still reports the new MODSEQ, without FLAGS.
    assert!(
        lines
            .iter()
            .any(|l| number_after(l, "MODSEQ") > Some(m2) && !l.contains("FLAGS")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn highestmodseq_never_goes_back_across_a_restart() {
    let d = TestDaemon::start_with(with_bob).await;
    deliver_many(&d, "keep", 3).await;
    let mut alice = d.imap_as("alice", "alice-password").await;
    alice.ok("SELECT INBOX (CONDSTORE)").await;
    alice.ok("UID STORE 1:* +FLAGS ($Kept)").await;
    let before = highest_modseq(&alice.ok("SELECT INBOX (CONDSTORE)").await);
    drop(alice);
    let dir = d.stop().await;
    let d = TestDaemon::start_in(dir, with_bob).await;
    let mut alice = d.imap_as("alice", "alice-password").await;
    let selected = alice.ok("SELECT INBOX (CONDSTORE)").await;
    assert_eq!(highest_modseq(&selected), before, "{selected:?}");
    let stored = alice.ok("UID STORE 1 +FLAGS ($Again)").await;
    let m = number_after(first_fetch(&stored), "MODSEQ").expect("MODSEQ after STORE");
    assert!(m > before, "{stored:?}");
    let none = alice
        .ok(&format!("UID FETCH 1:* (FLAGS) (CHANGEDSINCE {m})"))
        .await;
    assert!(fetched_uids(&none).is_empty(), "{none:?}");
}

#[tokio::test]
async fn vanished_replaces_expunge_once_qresync_is_enabled() {
    let d = TestDaemon::start_with(with_bob).await;
    deliver_many(&d, "gone", 3).await;
    let mut alice = d.imap_as("alice", "alice-password").await;
    let mut bob = d.imap_as("bob", "alice-password").await;
    alice.ok("ENABLE QRESYNC").await;
    let h = highest_modseq(&alice.ok("SELECT INBOX").await);
    bob.ok("SELECT INBOX").await;
    let uids: Vec<u32> = all_uids(&mut bob).await.into_iter().collect();
    bob.ok(&format!("UID MOVE {} Closed", uids[0])).await;
    let noop = alice.ok("NOOP").await;
    assert_eq!(
        vanished(&noop, false),
        BTreeSet::from([uids[0]]),
        "{noop:?}"
    );
    assert!(!has(&noop, "EXPUNGE"), "{noop:?}");
    // UID FETCH (CHANGEDSINCE VANISHED) names it too (RFC 7162 §3.2.6).
    let fetched = alice
        .ok(&format!(
            "UID FETCH 1:* (FLAGS) (CHANGEDSINCE {h} VANISHED)"
        ))
        .await;
    assert_eq!(
        vanished(&fetched, true),
        BTreeSet::from([uids[0]]),
        "{fetched:?}"
    );
    // Alice's own UID EXPUNGE in a team view trashes the conversation: VANISHED as well.
    alice
        .ok(&format!("UID STORE {} +FLAGS.SILENT (\\Deleted)", uids[1]))
        .await;
    let expunged = alice.ok(&format!("UID EXPUNGE {}", uids[1])).await;
    assert_eq!(
        vanished(&expunged, false),
        BTreeSet::from([uids[1]]),
        "{expunged:?}"
    );
}

/// Bytes of a command and its answer as they crossed the wire (lines plus CRLF).
fn wire_bytes(command: &str, lines: &[String], tagged: &str) -> usize {
    command.len() + 2 + lines.iter().map(|l| l.len() + 2).sum::<usize>() + tagged.len() + 2
}

#[tokio::test]
async fn issue_11_qresync_reselect_transfers_only_the_changes() {
    let d = TestDaemon::start_with(with_bob).await;
    deliver_many(&d, "bulk", 500).await;
    let mut alice = d.imap_as("alice", "alice-password").await;
    alice.ok("ENABLE QRESYNC").await;
    let selected = alice.ok("SELECT INBOX").await;
    let (validity, h) = (uid_validity(&selected), highest_modseq(&selected));
    let before: Vec<u32> = all_uids(&mut alice).await.into_iter().collect();
    assert_eq!(before.len(), 500);
    alice.ok("LOGOUT").await;
    drop(alice);

    // 50 changes by others while alice is away: 20 flag changes, 15 new mails, 15 moves.
    let mut bob = d.imap_as("bob", "alice-password").await;
    bob.ok("SELECT INBOX").await;
    let flagged: BTreeSet<u32> = before.iter().step_by(25).copied().collect();
    for uid in &flagged {
        bob.ok(&format!("UID STORE {uid} +FLAGS ($Label2)")).await;
    }
    let moved: BTreeSet<u32> = before
        .iter()
        .filter(|u| !flagged.contains(u))
        .skip(3)
        .step_by(31)
        .take(15)
        .copied()
        .collect();
    for uid in &moved {
        bob.ok(&format!("UID MOVE {uid} Closed")).await;
    }
    deliver_many(&d, "fresh", 15).await;
    bob.ok("NOOP").await;
    let now = all_uids(&mut bob).await;
    let new: BTreeSet<u32> = now
        .iter()
        .filter(|u| !before.contains(u))
        .copied()
        .collect();
    assert_eq!((flagged.len(), moved.len(), new.len()), (20, 15, 15));

    // QRESYNC reselect.
    let mut alice = d.imap_as("alice", "alice-password").await;
    let enable = "ENABLE QRESYNC";
    let (el, et) = alice.run(enable).await;
    let select = format!("SELECT INBOX (QRESYNC ({validity} {h} 1:{}))", before[499]);
    let (ql, qt) = alice.run(&select).await;
    assert!(qt.contains(" OK "), "{qt}");
    assert_eq!(
        vanished(&ql, true),
        moved,
        "VANISHED names exactly the moved uids"
    );
    let changed: BTreeSet<u32> = flagged.union(&new).copied().collect();
    let known_changed: BTreeSet<u32> = flagged.clone();
    // known-uids bounds the FETCHes to what the client knew; new mail arrives by EXISTS.
    assert_eq!(
        fetched_uids(&ql),
        known_changed,
        "FETCH names exactly the flag changes"
    );
    let qresync_bytes = wire_bytes(enable, &el, &et) + wire_bytes(&select, &ql, &qt);
    // Without known-uids the new messages are named as well.
    alice.ok("UNSELECT").await;
    let (ql2, _) = alice
        .run(&format!("SELECT INBOX (QRESYNC ({validity} {h}))"))
        .await;
    assert_eq!(fetched_uids(&ql2), changed, "{ql2:?}");
    assert_eq!(vanished(&ql2, true), moved);

    // Full resync for comparison.
    let mut full = d.imap_as("alice", "alice-password").await;
    let (sl, st) = full.run("SELECT INBOX").await;
    let (fl, ft) = full.run("UID FETCH 1:* (FLAGS)").await;
    assert_eq!(fetched_uids(&fl), now);
    let full_bytes =
        wire_bytes("SELECT INBOX", &sl, &st) + wire_bytes("UID FETCH 1:* (FLAGS)", &fl, &ft);
    println!(
        "issue 11 resync of a {}-message INBOX after 50 changes (20 flags, 15 new, 15 moved): \
         QRESYNC {} bytes in 2 round trips (ENABLE, SELECT; {} FETCH + 1 VANISHED line); \
         full {} bytes in 2 round trips (SELECT, UID FETCH 1:* (FLAGS); {} FETCH lines); \
         {:.1}x less",
        now.len(),
        qresync_bytes,
        fetched_uids(&ql).len(),
        full_bytes,
        fetched_uids(&fl).len(),
        full_bytes as f64 / qresync_bytes as f64
    );
    assert!(qresync_bytes < full_bytes);
}

#[tokio::test]
async fn a_client_older_than_the_expunge_log_gets_the_full_vanished_answer() {
    let d = TestDaemon::start_with(|c| {
        with_bob(c);
        c.imap.expunge_log_len = 2;
    })
    .await;
    deliver_many(&d, "old", 6).await;
    let mut alice = d.imap_as("alice", "alice-password").await;
    alice.ok("ENABLE QRESYNC").await;
    let selected = alice.ok("SELECT INBOX").await;
    let (validity, h) = (uid_validity(&selected), highest_modseq(&selected));
    let uids: Vec<u32> = all_uids(&mut alice).await.into_iter().collect();
    alice.ok("LOGOUT").await;
    let mut bob = d.imap_as("bob", "alice-password").await;
    bob.ok("SELECT INBOX").await;
    let moved: BTreeSet<u32> = uids.iter().take(4).copied().collect();
    for uid in &moved {
        bob.ok(&format!("UID MOVE {uid} Closed")).await;
    }
    // The log kept only the last two moves; the answer still names all four.
    let mut alice = d.imap_as("alice", "alice-password").await;
    alice.ok("ENABLE QRESYNC").await;
    let reselect = alice
        .ok(&format!("SELECT INBOX (QRESYNC ({validity} {h}))"))
        .await;
    assert_eq!(vanished(&reselect, true), moved, "{reselect:?}");
    // A client within the log's reach gets exactly what left since.
    let h2 = highest_modseq(&reselect);
    bob.ok(&format!("UID MOVE {} Closed", uids[4])).await;
    alice.ok("UNSELECT").await;
    let recent = alice
        .ok(&format!("SELECT INBOX (QRESYNC ({validity} {h2}))"))
        .await;
    assert_eq!(
        vanished(&recent, true),
        BTreeSet::from([uids[4]]),
        "{recent:?}"
    );
    // Another UIDVALIDITY: no VANISHED, no FETCH, a plain SELECT (RFC 7162 §3.2.5).
    alice.ok("UNSELECT").await;
    let other = alice
        .ok(&format!("SELECT INBOX (QRESYNC ({} {h}))", validity + 1))
        .await;
    assert!(
        !has(&other, "VANISHED") && !has(&other, " FETCH "),
        "{other:?}"
    );
}

/// The real binary killed with SIGKILL right after a STORE was answered: the mod-sequence
/// it reported survives, HIGHESTMODSEQ does not go back, and the next change is higher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modseqs_never_go_back_across_kill_9() {
    let sink = crate::sink::Sink::start().await;
    let mut d = crate::faults::Spawned::new(sink.port(), "", "", "");
    tokio::task::block_in_place(|| d.start());
    let mut smtp = SmtpConn::connect(d.smtp).await;
    smtp.cmd("EHLO client.example", 250).await;
    for i in 0..3 {
        let from = format!("k{i}@customer.example");
        let msg = simple_message(&from, &format!("kill {i}"), &from);
        let (code, text) = smtp.send_mail(&from, &["support@example.test"], &msg).await;
        assert_eq!(code, 250, "{text:?}");
    }
    let mut alice = ImapConn::login(d.imap, "alice", "pw").await;
    alice.ok("SELECT INBOX (CONDSTORE)").await;
    let stored = alice.ok("UID STORE 1:* +FLAGS ($Survives)").await;
    let m = stored
        .iter()
        .filter_map(|l| number_after(l, "MODSEQ"))
        .max()
        .expect("MODSEQ after STORE");
    let h = highest_modseq(&alice.ok("SELECT INBOX (CONDSTORE)").await);
    tokio::task::block_in_place(|| d.kill9());
    drop(alice);

    tokio::task::block_in_place(|| d.start());
    let mut alice = ImapConn::login(d.imap, "alice", "pw").await;
    let selected = alice.ok("SELECT INBOX (CONDSTORE)").await;
    assert!(highest_modseq(&selected) >= h, "{selected:?}");
    let fetched = alice.ok("UID FETCH 1:* (MODSEQ FLAGS)").await;
    assert!(
        fetched
            .iter()
            .all(|l| l.contains("$Survives") && number_after(l, "MODSEQ") == Some(m)),
        "{fetched:?}"
    );
    let again = alice.ok("UID STORE 1 +FLAGS ($After)").await;
    assert!(
        number_after(first_fetch(&again), "MODSEQ") > Some(h),
        "{again:?}"
    );
    tokio::task::block_in_place(|| d.kill9());
}

/// imaptest's `esearch-condstore` opening: a FETCH of MODSEQ in a mailbox selected without
/// CONDSTORE enables it and announces HIGHESTMODSEQ (RFC 7162 §3.1); later STOREs answer
/// with MODSEQ.
#[tokio::test]
async fn a_condstore_enabling_fetch_announces_highestmodseq() {
    let d = TestDaemon::start_with(with_bob).await;
    deliver_many(&d, "en", 2).await;
    let mut c = d.imap_as("alice", "alice-password").await;
    let selected = c.ok("SELECT INBOX").await;
    let h = highest_modseq(&selected);
    let fetched = c.ok("fetch 1 modseq").await;
    assert!(
        has(&fetched, &format!("* OK [HIGHESTMODSEQ {h}]")),
        "{fetched:?}"
    );
    assert!(has(&fetched, "* 1 FETCH (MODSEQ ("), "{fetched:?}");
    // Announced once only.
    assert!(!has(&c.ok("fetch 2 modseq").await, "HIGHESTMODSEQ"));
    let stored = c.ok("store 1 +flags \\seen").await;
    let m = number_after(first_fetch(&stored), "MODSEQ").expect("MODSEQ in the STORE answer");
    assert!(m > h, "{stored:?}");
}
