//! Issue 13 against the real daemon with real spamd and clamd: every path a message takes
//! into a conversation meets the attachment policy (SMTP into Junk, both releases, APPEND
//! intake, an old Junk record kept whole); reports on the team's own mail are never
//! judged as spam; agents' Junk gestures teach spamd's Bayes; a display name claiming the
//! team is scored.

use std::time::{Duration, Instant};

use teamgate::{
    config::{ClamdAddr, FilterConfig},
    filter::{AgentIdentity, FilterInput, Filters, Verdict},
    store::{ConversationId, NewJunk, Store},
};

use crate::filter_services::{
    Dns, TEAM, b64, eicar, start_clamd, start_spamd, start_spamd_learning, with_message_id,
};
use crate::harness::{ImapConn, TestDaemon, teamgate};

/// SpamAssassin's test string: 1000 points, whatever else the message says.
const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";
/// The start of a Windows executable (DOS header) and some body.
const EXE: &[u8] =
    b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xffPE\x00\x00teamgate test program";
/// Bound on waiting for the learner to drain its queue.
const LEARN_WAIT: Duration = Duration::from_secs(120);

/// A multipart/mixed message with one attachment, its text saying `text`.
fn mail_with(id: &str, text: &str, name: &str, ctype: &str, data: &[u8]) -> Vec<u8> {
    format!(
        "From: Customer <customer@sender.test>\r\nTo: <{TEAM}>\r\nSubject: invoice {id}\r\n\
         Message-ID: <{id}@sender.test>\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n\
         --b1\r\nContent-Type: {ctype}; name=\"{name}\"\r\n\
         Content-Disposition: attachment; filename=\"{name}\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--b1--\r\n",
        b64(data)
    )
    .into_bytes()
}

/// A `teamgate` CLI config for the daemon's data dir (it talks to the control socket).
fn cli_config(d: &TestDaemon) -> String {
    let path = d.data_dir.path().join("cli.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nhostname = \"mx.example.test\"\ndata_dir = \"{}\"\n[submission]\nlisten = []\n\
             [imap]\nlisten = []\n[filter]\ndns_server = \"none\"\n[[inbox]]\nname = \"Support\"\n\
             addresses = [\"{TEAM}\"]\nmembers = []\n",
            d.data_dir.path().display()
        ),
    )
    .expect("cli config");
    path.display().to_string()
}

/// Whether any stored form of the conversation's messages still holds `payload` (as
/// sent: base64 in the message).
fn conversation_holds(store: &Store, conv: ConversationId, payload: &[u8]) -> bool {
    let encoded = b64(payload);
    store
        .message_keys(conv)
        .expect("keys")
        .into_iter()
        .any(|k| String::from_utf8_lossy(&store.read_message(k).expect("read")).contains(&encoded))
}

/// The conversation holding Message-ID `<id@sender.test>`, once released.
fn conversation_of(store: &Store, id: &str) -> ConversationId {
    store
        .conversation_for_message("Support", &format!("{id}@sender.test"))
        .expect("lookup")
        .unwrap_or_else(|| panic!("{id} is in no conversation"))
}

/// The attachment `name` of the conversation's first message is marked quarantined, and
/// its original is in the quarantine list for that conversation.
fn assert_quarantined(store: &Store, conv: ConversationId, name: &str, payload: &[u8]) {
    let detail = store.conversation(conv).expect("read").expect("exists");
    let attachment = detail.messages[0]
        .attachments
        .iter()
        .find(|a| a.name == name)
        .unwrap_or_else(|| panic!("no {name}: {:?}", detail.messages[0]));
    assert!(attachment.quarantined, "{attachment:?}");
    assert!(
        !conversation_holds(store, conv, payload),
        "{name} reached the conversation"
    );
    let quarantine = store.quarantine_list().expect("list");
    assert!(
        quarantine
            .iter()
            .any(|q| q.filename == name && q.conversation == Some(conv)),
        "{quarantine:?}"
    );
}

async fn append(imap: &mut ImapConn, tag: &str, raw: &[u8]) -> String {
    let raw = String::from_utf8_lossy(raw);
    imap.send_raw(
        format!(
            "{tag} APPEND \"Inboxes/Support\" {{{}+}}\r\n{raw}\r\n",
            raw.len()
        )
        .as_bytes(),
    )
    .await;
    imap.until_tagged(tag).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_path_delivers_a_blocked_or_infected_part_unquarantined() {
    let spamd = start_spamd().await;
    let clamd = start_clamd().await;
    let (spamd_addr, clamd_addr) = (spamd.addr.clone(), clamd.addr.to_string());
    let d = TestDaemon::start_with(move |c| {
        c.filter.spamd = Some(spamd_addr);
        c.filter.clamd = Some(ClamdAddr::Tcp(clamd_addr));
        c.inboxes.push(teamgate::config::InboxConfig {
            name: "Sales".into(),
            addresses: vec!["sales@example.test".into()],
            members: vec!["alice".into()],
        });
    })
    .await;
    let store = d.handle.store().clone();
    let mut smtp = d.smtp().await;
    smtp.cmd("EHLO sender.test", 250).await;

    // Spam with a blocked .exe and spam with EICAR: both go to Junk, with the dangerous
    // part already replaced in the copy agents can open there.
    let cases: [(&str, &str, &str, &[u8]); 4] = [
        ("exe-cli", "setup.exe", "application/x-msdownload", EXE),
        ("eicar-cli", "report.txt", "text/plain", &eicar()),
        ("exe-imap", "installer.msi", "application/x-msi", EXE),
        ("eicar-imap", "notes.txt", "text/plain", &eicar()),
    ];
    for (id, name, ctype, data) in &cases {
        let mail = mail_with(id, GTUBE, name, ctype, data);
        let (code, text) = smtp.send_mail("spammer@sender.test", &[TEAM], &mail).await;
        assert_eq!(code, 250, "{text:?}");
        assert!(text[0].contains("junk"), "{id}: {text:?}");
    }
    let junk = store.junk_list().expect("junk list");
    assert_eq!(junk.len(), 4, "{junk:?}");
    for (record, (id, name, _, data)) in junk.iter().zip(&cases) {
        assert!(record.reason.contains("GTUBE"), "{record:?}");
        let item = store.junk_item(record.id).expect("read").expect("exists");
        let copy =
            String::from_utf8_lossy(&store.read_message(item.message).expect("read")).into_owned();
        assert!(
            !copy.contains(&b64(data)),
            "{id}: the Junk copy holds {name}"
        );
        assert!(copy.contains(name), "{id}: the notice names {name}");
        let original = item.original.expect("the original is kept for release");
        assert!(
            String::from_utf8_lossy(&store.read_message(original).expect("read"))
                .contains(&b64(data)),
            "{id}: original kept whole"
        );
    }
    // What an agent downloads from Junk over IMAP: no executable, no virus.
    let mut imap = d.imap_as("alice", "alice-password").await;
    imap.ok("SELECT Junk").await;
    let fetched = imap.ok("FETCH 1:* BODY.PEEK[]").await.join("\n");
    for (_, name, _, data) in &cases {
        assert!(!fetched.contains(&b64(data)), "{name} served from Junk");
    }

    // Release by the CLI: the original meets the policy again on its way in.
    let cfg = cli_config(&d);
    for record in &junk[..2] {
        let (code, out, err) = teamgate(&[
            "junk",
            "release",
            &record.id.0.to_string(),
            "--config",
            &cfg,
        ]);
        assert_eq!(code, 0, "{out}{err}");
    }
    assert_quarantined(&store, conversation_of(&store, "exe-cli"), "setup.exe", EXE);
    assert_quarantined(
        &store,
        conversation_of(&store, "eicar-cli"),
        "report.txt",
        &eicar(),
    );

    // Release by an IMAP move out of Junk ("not spam"), both at once.
    imap.ok("SELECT Junk").await;
    let moved = imap.ok("MOVE 1:2 INBOX").await;
    assert!(moved.iter().any(|l| l.contains("COPYUID")), "{moved:?}");
    assert_quarantined(
        &store,
        conversation_of(&store, "exe-imap"),
        "installer.msi",
        EXE,
    );
    assert_quarantined(
        &store,
        conversation_of(&store, "eicar-imap"),
        "notes.txt",
        &eicar(),
    );
    assert!(store.junk_list().expect("list").is_empty());

    // APPEND into a team inbox is intake: the same policy.
    for (id, name, ctype, data) in [
        ("exe-append", "tool.exe", "application/octet-stream", EXE),
        ("eicar-append", "scan.txt", "text/plain", &eicar()[..]),
    ] {
        let tagged = append(
            &mut imap,
            id,
            &mail_with(id, "from my own mailbox", name, ctype, data),
        )
        .await;
        assert!(tagged.contains("OK"), "{id}: {tagged}");
        assert_quarantined(&store, conversation_of(&store, id), name, data);
    }

    // An agent passes mail on to another team: it arrives there as inbound mail, checked.
    let mut alice = d.submission_as("alice", "alice-password").await;
    let handover = String::from_utf8(mail_with(
        "handover",
        "for you",
        "patch.exe",
        "application/x-msdownload",
        EXE,
    ))
    .expect("ascii")
    .replace(
        "From: Customer <customer@sender.test>",
        "From: Support <support@example.test>",
    )
    .replace(&format!("To: <{TEAM}>"), "To: <sales@example.test>");
    let (code, text) = alice
        .send_mail(TEAM, &["sales@example.test"], handover.as_bytes())
        .await;
    assert_eq!(code, 250, "{text:?}");
    let sales = store
        .conversation_for_message("Sales", "handover@sender.test")
        .expect("lookup")
        .expect("in Sales");
    assert_quarantined(&store, sales, "patch.exe", EXE);

    // Junk kept whole before the policy held there (an old record): its release is
    // checked too.
    let legacy = with_message_id(
        mail_with(
            "legacy",
            "old spam",
            "old.exe",
            "application/x-msdownload",
            EXE,
        ),
        "legacy@sender.test",
    );
    let summary = teamgate::message::summary(
        &teamgate::message::analyze(&legacy, "old@sender.test").expect("parse"),
        teamgate::store::Direction::In,
        "unused@x",
    );
    let id = store
        .junk(NewJunk {
            raw: legacy.clone(),
            received_at: 1_790_000_000,
            mail_from: "old@sender.test".into(),
            rcpts: vec![TEAM.into()],
            inbox: "Support".into(),
            summary,
            score: 12.0,
            reason: "SPAMD (old)".into(),
            original: None,
        })
        .await
        .expect("junk");
    let (code, out, err) = teamgate(&["junk", "release", &id.0.to_string(), "--config", &cfg]);
    assert_eq!(code, 0, "{out}{err}");
    assert_quarantined(&store, conversation_of(&store, "legacy"), "old.exe", EXE);

    // clamd down: a release cannot be checked, so it does not happen (nothing is lost).
    let mail = mail_with("later", GTUBE, "later.txt", "text/plain", &eicar());
    assert_eq!(
        smtp.send_mail("spammer@sender.test", &[TEAM], &mail)
            .await
            .0,
        250
    );
    let mut clamd = clamd;
    clamd.service.stop();
    let later = store.junk_list().expect("list");
    assert_eq!(later.len(), 1, "{later:?}");
    let (code, _, err) = teamgate(&[
        "junk",
        "release",
        &later[0].id.0.to_string(),
        "--config",
        &cfg,
    ]);
    assert_ne!(code, 0, "released unchecked: {err}");
    assert_eq!(store.junk_list().expect("list").len(), 1, "still in Junk");
    imap.ok("SELECT Junk").await;
    imap.refused("MOVE 1 INBOX", "NO").await;
    assert_eq!(store.junk_list().expect("list").len(), 1, "still in Junk");
    drop(spamd);
    d.stop().await;
}

/// A delivery-status report from the recipient's MX about `reported` (its headers
/// enclosed); the human-readable part quotes the bounced text, here GTUBE, so that spamd
/// would junk it if it were asked.
fn dsn(id: &str, reported: &str) -> Vec<u8> {
    format!(
        "From: Mail Delivery System <MAILER-DAEMON@mx.customer.test>\r\nTo: <{TEAM}>\r\n\
         Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <{id}@mx.customer.test>\r\n\
         Date: Tue, 24 Nov 2026 11:00:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"r1\"\r\n\r\n\
         --r1\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n{GTUBE}\r\n\
         --r1\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.customer.test\r\n\r\n\
         Final-Recipient: rfc822; gone@customer.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n\
         --r1\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: support@example.test\r\n\
         To: gone@customer.test\r\nSubject: Re: help\r\nMessage-ID: <{reported}>\r\n\r\n--r1--\r\n"
    )
    .into_bytes()
}

/// An ARF abuse report (RFC 5965) enclosing `reported`.
fn arf(id: &str, reported: &str) -> Vec<u8> {
    format!(
        "From: <abuse@isp.test>\r\nTo: <{TEAM}>\r\nSubject: FW: Re: help\r\n\
         Message-ID: <{id}@isp.test>\r\nDate: Tue, 24 Nov 2026 11:05:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=feedback-report; boundary=\"f1\"\r\n\r\n\
         --f1\r\nContent-Type: text/plain\r\n\r\nThis is an abuse report.\r\n{GTUBE}\r\n\
         --f1\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\n\
         User-Agent: isp-fbl/1.0\r\nVersion: 1\r\n\r\n\
         --f1\r\nContent-Type: message/rfc822\r\n\r\nFrom: support@example.test\r\n\
         To: user@isp.test\r\nSubject: Re: help\r\nMessage-ID: <{reported}>\r\n\r\nWe are on it.\r\n--f1--\r\n"
    )
    .into_bytes()
}

fn auto_reply(id: &str, in_reply_to: &str) -> Vec<u8> {
    format!(
        "From: Jane <jane@customer.test>\r\nTo: <{TEAM}>\r\nSubject: Automatic reply: Re: help\r\n\
         Message-ID: <{id}@customer.test>\r\nIn-Reply-To: <{in_reply_to}>\r\n\
         Auto-Submitted: auto-replied\r\nDate: Tue, 24 Nov 2026 11:10:00 +0000\r\n\r\n\
         I am out of the office.\r\n{GTUBE}\r\n"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_on_the_teams_own_mail_land_in_their_conversation_with_spamd_running() {
    let spamd = start_spamd().await;
    let spamd_addr = spamd.addr.clone();
    let d = TestDaemon::start_with(move |c| c.filter.spamd = Some(spamd_addr)).await;
    let store = d.handle.store().clone();
    let mut smtp = d.smtp().await;
    smtp.cmd("EHLO customer.test", 250).await;
    let question = b"From: Jane <jane@customer.test>\r\nTo: <support@example.test>\r\n\
        Subject: help with my order\r\nMessage-ID: <q1@customer.test>\r\n\
        Date: Tue, 24 Nov 2026 10:00:00 +0000\r\n\r\nMy order never arrived.\r\n";
    assert_eq!(
        smtp.send_mail("jane@customer.test", &[TEAM], question)
            .await
            .0,
        250
    );
    let conv = store.list_conversations().expect("list")[0].id;

    let mut alice = d.submission_as("alice", "alice-password").await;
    let reply = b"From: Support <support@example.test>\r\nTo: Jane <jane@customer.test>\r\n\
        Subject: Re: help with my order\r\nMessage-ID: <reply-1@example.test>\r\n\
        In-Reply-To: <q1@customer.test>\r\nReferences: <q1@customer.test>\r\n\
        Date: Tue, 24 Nov 2026 10:30:00 +0000\r\n\r\nWe are on it.\r\n";
    let (code, text) = alice
        .send_mail("support@example.test", &["jane@customer.test"], reply)
        .await;
    assert_eq!(code, 250, "{text:?}");

    // A bounce, an abuse report and an auto-reply about the reply: in the conversation,
    // though each carries GTUBE.
    for (from, mail) in [
        ("", dsn("bounce-1", "reply-1@example.test")),
        ("abuse@isp.test", arf("arf-1", "reply-1@example.test")),
        (
            "jane@customer.test",
            auto_reply("ooo-1", "reply-1@example.test"),
        ),
    ] {
        let (code, text) = smtp.send_mail(from, &[TEAM], &mail).await;
        assert_eq!(code, 250, "{text:?}");
        assert!(!text[0].contains("junk"), "{text:?}");
    }
    assert!(store.junk_list().expect("list").is_empty());
    let detail = store.conversation(conv).expect("read").expect("exists");
    assert_eq!(detail.messages.len(), 5, "{:?}", detail.messages);
    assert_eq!(
        d.handle
            .metrics()
            .snapshot()
            .sum("teamgate_reports_not_judged_total", &[]),
        3.0
    );

    // The same reports about mail the team never sent are scored as usual.
    for (from, mail) in [
        ("", dsn("bounce-2", "never-sent@example.test")),
        (
            "abuse@isp.test",
            arf("arf-2", "someone-else@elsewhere.test"),
        ),
        (
            "jane@customer.test",
            auto_reply("ooo-2", "q1@customer.test"),
        ),
    ] {
        let (code, text) = smtp.send_mail(from, &[TEAM], &mail).await;
        assert_eq!(code, 250, "{text:?}");
        assert!(text[0].contains("junk"), "{text:?}");
    }
    assert_eq!(store.junk_list().expect("list").len(), 3);
    drop(spamd);
    d.stop().await;
}

/// A member of a bitcoin-doubling family: the same pitch in varying words, from varying
/// senders, mild enough that SpamAssassin's local rules let it through.
fn scam(n: u32) -> Vec<u8> {
    let openers = [
        "Hello friend",
        "Dear partner",
        "Good day",
        "Greetings",
        "Hi there",
    ];
    let coins = ["bitcoin", "BTC", "ethereum", "crypto", "USDT"];
    let opener = openers[n as usize % openers.len()];
    let coin = coins[(n as usize / 5) % coins.len()];
    format!(
        "From: Wallet Desk {n} <desk{n}@wallet{n}.test>\r\nTo: <{TEAM}>\r\n\
         Subject: wallet doubling window {n}\r\nMessage-ID: <scam{n}@wallet{n}.test>\r\n\
         Date: Tue, 24 Nov 2026 12:{:02}:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n{opener},\r\n\
         our {coin} wallet doubling window is open again this week. Send any amount of {coin}\r\n\
         to the wallet address below and the doubling desk returns twice the amount within\r\n\
         the hour. The doubling window closes soon, so act quickly. Wallet ref {n}.\r\n\
         Regards, the wallet doubling desk\r\n",
        n % 60
    )
    .into_bytes()
}

/// A customer's order question: the team's everyday ham.
fn order_question(n: u32) -> Vec<u8> {
    let items = ["printer", "keyboard", "monitor", "router", "laptop stand"];
    let item = items[n as usize % items.len()];
    format!(
        "From: Customer {n} <buyer{n}@shop{n}.test>\r\nTo: <{TEAM}>\r\n\
         Subject: order {n} {item} delivery\r\nMessage-ID: <order{n}@shop{n}.test>\r\n\
         Date: Tue, 24 Nov 2026 09:{:02}:00 +0000\r\nX-Spam-Flag: YES\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nHello,\r\n\
         I ordered a {item} last week (order {n}) and the tracking page still says the parcel\r\n\
         is at the depot. Could you check the delivery date, or send a replacement invoice?\r\n\
         Thanks, customer {n}\r\n",
        n % 60
    )
    .into_bytes()
}

/// spamd's score for `raw`, asked directly.
async fn spamd_score(addr: &str, raw: &[u8]) -> (f64, String) {
    let filters = Filters::from_config(&FilterConfig {
        spamd: Some(addr.to_string()),
        dns: teamgate::config::DnsSource::Off,
        spam_threshold: 1000.0,
        ..FilterConfig::default()
    })
    .expect("filters");
    let input = FilterInput {
        raw,
        peer_ip: "192.0.2.7".parse().expect("ip"),
        helo: "mail.wallet.test",
        mail_from: "desk@wallet.test",
        team_addresses: &[],
        hostname: "mx.example.test",
        agents: &[],
        own_mail_report: false,
    };
    let outcome = filters.check(&input).await.expect("spamd answers");
    let spamd = outcome
        .findings
        .iter()
        .find(|f| f.rule == "SPAMD")
        .expect("spamd scored it");
    (spamd.score, spamd.detail.clone())
}

async fn wait_until_learned(d: &TestDaemon, expected: f64) {
    let deadline = Instant::now() + LEARN_WAIT;
    loop {
        let learned = d
            .handle
            .metrics()
            .snapshot()
            .sum("teamgate_spam_learn_total", &[("result", "learned")]);
        if learned >= expected && d.handle.store().learn_pending() == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "learned {learned} of {expected}, {} pending",
            d.handle.store().learn_pending()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_gestures_teach_spamd_and_the_next_of_a_spam_family_scores_higher() {
    let mut spamd = start_spamd_learning().await;
    let spamd_addr = spamd.addr.clone();
    let d = TestDaemon::start_with(move |c| {
        c.filter.spamd = Some(spamd_addr);
        // An upstream relay flags the team's ham: agents will say "not spam".
        c.filter.trust_upstream_spam_headers = true;
        c.filter.learn_retry = vec![Duration::from_secs(1); 60];
    })
    .await;
    let store = d.handle.store().clone();
    let newcomer = scam(99);
    let (before, before_rules) = spamd_score(&spamd.addr, &newcomer).await;

    let mut smtp = d.smtp().await;
    smtp.cmd("EHLO relay.test", 250).await;
    for n in 0..20 {
        let (code, text) = smtp
            .send_mail("buyer@shop.test", &[TEAM], &order_question(n))
            .await;
        assert!(code == 250 && text[0].contains("junk"), "{text:?}");
        let (code, text) = smtp.send_mail("desk@wallet.test", &[TEAM], &scam(n)).await;
        assert!(
            code == 250 && !text[0].contains("junk"),
            "local rules already catch the family, so it teaches nothing: {text:?}"
        );
    }
    // Agents: 20 false positives out of Junk, 20 scams into it.
    let mut imap = d.imap_as("alice", "alice-password").await;
    imap.ok("SELECT Junk").await;
    imap.ok("MOVE 1:* INBOX").await;
    imap.ok("SELECT INBOX").await;
    let found = imap.ok("UID SEARCH SUBJECT \"wallet doubling\"").await;
    let uids: Vec<&str> = found
        .iter()
        .find_map(|l| l.strip_prefix("* SEARCH "))
        .expect("search answer")
        .split(' ')
        .collect();
    assert_eq!(uids.len(), 20, "{found:?}");
    imap.ok(&format!("UID MOVE {} Junk", uids.join(","))).await;
    wait_until_learned(&d, 40.0).await;
    let (after, after_rules) = spamd_score(&spamd.addr, &newcomer).await;
    println!(
        "a new member of the spam family: spamd score {before:.1} before, {after:.1} after \
         agents' 20 spam + 20 ham gestures\n  before: {before_rules}\n  after: {after_rules}"
    );
    assert!(
        after > before && after_rules.contains("BAYES_"),
        "before {before} ({before_rules}), after {after} ({after_rules})"
    );
    let snapshot = d.handle.metrics().snapshot();
    assert_eq!(
        snapshot.sum(
            "teamgate_spam_learn_total",
            &[("class", "spam"), ("result", "learned")]
        ),
        20.0
    );
    assert_eq!(
        snapshot.sum(
            "teamgate_spam_learn_total",
            &[("class", "ham"), ("result", "learned")]
        ),
        20.0
    );

    // spamd down: the gesture still answers at once; the lesson waits in the queue,
    // survives a restart of teamgate, and is taught once spamd is back.
    assert_eq!(
        smtp.send_mail("desk@wallet.test", &[TEAM], &scam(50))
            .await
            .0,
        250
    );
    spamd.service.stop();
    imap.ok("SELECT INBOX").await;
    let found = imap.ok("UID SEARCH SUBJECT \"window 50\"").await;
    let uid = found
        .iter()
        .find_map(|l| l.strip_prefix("* SEARCH "))
        .expect("search answer")
        .to_string();
    imap.ok(&format!("UID MOVE {uid} Junk")).await;
    let deadline = Instant::now() + LEARN_WAIT;
    while d
        .handle
        .metrics()
        .snapshot()
        .sum("teamgate_spam_learn_total", &[("result", "retried")])
        < 1.0
    {
        assert!(Instant::now() < deadline, "no retry counted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(store.learn_pending(), 1);
    drop((imap, store));
    let data_dir = d.stop().await;
    let spamd_addr = spamd.addr.clone();
    let d = TestDaemon::start_in(data_dir, move |c| {
        c.filter.spamd = Some(spamd_addr);
        c.filter.learn_retry = vec![Duration::from_secs(1); 60];
    })
    .await;
    assert_eq!(
        d.handle.store().learn_pending(),
        1,
        "the lesson survived the restart"
    );
    spamd.service.restart();
    spamd
        .service
        .wait_tcp(spamd.addr.parse().expect("addr"))
        .await;
    wait_until_learned(&d, 1.0).await;
    d.stop().await;
}

#[tokio::test]
async fn a_display_name_claiming_the_team_without_dmarc_is_scored() {
    // phish.test publishes no DMARC record; example.test's DMARC would pass only for mail
    // that really is from it.
    let dns = Dns::start(&[]).await;
    let config = FilterConfig {
        dns: teamgate::config::DnsSource::Off,
        display_name_spoof_score: 6.0,
        ..FilterConfig::default()
    };
    let filters = Filters::new(&config, dns.resolver());
    let team = vec![TEAM.to_string()];
    let agents = vec![AgentIdentity {
        name: "Alice Example".into(),
        email: "alice@example.test".into(),
    }];
    let judge = async |from: &str| {
        let raw = format!(
            "From: {from}\r\nTo: <{TEAM}>\r\nSubject: wire transfer today\r\n\
             Message-ID: <p1@phish.test>\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\n\r\n\
             Please pay the attached invoice today.\r\n"
        );
        let input = FilterInput {
            raw: raw.as_bytes(),
            peer_ip: "192.0.2.66".parse().expect("ip"),
            helo: "mail.phish.test",
            mail_from: "x@phish.test",
            team_addresses: &team,
            hostname: "mx.example.test",
            agents: &agents,
            own_mail_report: false,
        };
        filters.check(&input).await.expect("filters answer")
    };
    for from in [
        "\"Alice Example\" <alice.example@phish.test>",
        "\"support@example.test\" <x@phish.test>",
    ] {
        let outcome = judge(from).await;
        let Verdict::Junk {
            reason, findings, ..
        } = &outcome.verdict
        else {
            panic!("{from}: not junk: {outcome:?}")
        };
        assert!(reason.contains("DISPLAY_NAME_SPOOF"), "{reason}");
        assert!(
            findings
                .iter()
                .any(|f| f.rule == "DISPLAY_NAME_SPOOF" && f.score == 6.0),
            "{findings:?}"
        );
    }
    assert_eq!(
        judge("\"Jane Customer\" <jane@phish.test>").await.verdict,
        Verdict::Accept
    );
}
