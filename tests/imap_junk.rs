//! Junk-filter keywords are per agent (SPEC §5), replayed as Thunderbird 153 sends them
//! (`j` key and its adaptive filter, shared/clients/thunderbird-153/imap.log).

use teamgate::store::{ConversationId, Status};

use super::{deliver, has, team};
use crate::harness::{ImapConn, TestDaemon};

/// The first line pushed after `IDLE`'s continuation.
async fn first_push_after_idle(c: &mut ImapConn, tag: &str) -> String {
    c.send_raw(format!("{tag} IDLE\r\n").as_bytes()).await;
    let cont = c.read_line().await.expect("continuation");
    assert!(
        cont.starts_with(b"+ "),
        "{}",
        String::from_utf8_lossy(&cont)
    );
    // A keyword this session was not told of is announced in FLAGS first (RFC 3501
    // §7.2.6); the FETCH that shows it comes next.
    for _ in 0..2 {
        let line = c.read_line().await.expect("a pushed line");
        let line = String::from_utf8_lossy(&line).trim_end().to_string();
        if !line.starts_with("* FLAGS ") {
            return line;
        }
    }
    panic!("FLAGS twice without a FETCH");
}

async fn done_idle(c: &mut ImapConn, tag: &str) {
    c.send_raw(b"DONE\r\n").await;
    let (_, tagged) = c.until_tagged(tag).await;
    assert!(tagged.contains("OK"), "{tagged}");
}

#[tokio::test]
async fn thunderbird_junk_keywords_stay_with_the_agent_who_set_them() {
    let d = TestDaemon::start_with(team).await;
    let conv = ConversationId(deliver(&d, "support@example.test", "Cheap pills", "j1").await);
    let mut alice = d.imap_as("alice", "alice-password").await;
    let mut alice_too = d.imap_as("alice", "alice-password").await;
    let mut bob = d.imap_as("bob", "alice-password").await;
    for c in [&mut alice, &mut alice_too, &mut bob] {
        let select = c.ok("SELECT INBOX").await;
        assert!(has(&select, "* 1 EXISTS"), "{select:?}");
    }

    // What Thunderbird sends for `j` (imap.log, tags 180-183).
    alice.ok("uid store 1 +Flags (\\Seen)").await;
    let stored = alice.ok("uid store 1 +FLAGS (Junk)").await;
    assert!(has(&stored, "FLAGS (\\Seen Junk \\Recent)"), "{stored:?}");
    let stored = alice.ok("uid store 1 -FLAGS (NonJunk)").await;
    assert!(has(&stored, "FLAGS (\\Seen Junk \\Recent)"), "{stored:?}");
    alice.ok("uid store 1 +Flags (\\Seen)").await;

    // Alice's other connection is told, like for \Seen...
    let pushed = first_push_after_idle(&mut alice_too, "a1").await;
    assert_eq!(pushed, "* 1 FETCH (UID 1 FLAGS (\\Seen Junk))");
    done_idle(&mut alice_too, "a1").await;
    // ...bob's is not: the first thing he hears of is the next mail.
    bob.send_raw(b"b1 IDLE\r\n").await;
    let cont = bob.read_line().await.expect("continuation");
    assert!(
        cont.starts_with(b"+ "),
        "{}",
        String::from_utf8_lossy(&cont)
    );
    deliver(&d, "support@example.test", "Real question", "j2").await;
    let pushed = bob.read_line().await.expect("a pushed line");
    assert_eq!(String::from_utf8_lossy(&pushed).trim_end(), "* 2 EXISTS");
    done_idle(&mut bob, "b1").await;
    let fetched = bob.ok("UID fetch 1:* (FLAGS)").await;
    assert!(has(&fetched, "* 1 FETCH (UID 1 FLAGS ())"), "{fetched:?}");

    // Bob's own filter says the opposite; alice does not hear of it either.
    bob.ok("uid store 1 +FLAGS (NonJunk)").await;
    bob.ok("uid store 1 -FLAGS (Junk)").await;
    let fetched = alice.ok("UID fetch 1:* (FLAGS)").await;
    assert!(
        has(&fetched, "* 1 FETCH (UID 1 FLAGS (\\Seen Junk \\Recent))"),
        "{fetched:?}"
    );
    let fetched = bob.ok("UID fetch 1 (FLAGS)").await;
    assert!(has(&fetched, "FLAGS (NonJunk)"), "{fetched:?}");
    // Every junk keyword a client may set is per agent; other keywords stay shared.
    alice
        .ok("uid store 2 +FLAGS ($Junk $NotJunk $Phishing $label1)")
        .await;
    let fetched = bob.ok("UID fetch 2 (FLAGS)").await;
    let line = fetched
        .iter()
        .find(|l| l.contains("FETCH (UID 2 "))
        .unwrap_or_else(|| panic!("{fetched:?}"));
    // Bob's session saw message 2 first, so it is \Recent there (RFC 3501 §2.3.2).
    assert!(
        line.contains("$label1")
            && !["$Junk", "$NotJunk", "$Phishing"]
                .iter()
                .any(|k| line.contains(k)),
        "{fetched:?}"
    );

    // The keyword is no spam verdict: only moving to Junk is.
    assert_eq!(
        d.handle
            .store()
            .conversation_info(conv)
            .unwrap()
            .unwrap()
            .status,
        Status::Open
    );
    let status = bob.ok("STATUS Junk (MESSAGES)").await;
    assert!(has(&status, "MESSAGES 0"), "{status:?}");
    let select = alice.ok("SELECT INBOX").await;
    assert!(has(&select, "* 2 EXISTS"), "{select:?}");
    d.stop().await;
}
