//! Junk and quarantine tests on real disk: records, the `Junk` view, "move to Junk",
//! quarantined originals and their release as a new revision, recovery checks, and that
//! all of it survives close + reopen.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use super::tests::{
    T0, TestResult, delivery, join, loc_of, message, new_conv, open, raw_for, simple, stored,
    summary,
};
use super::*;

fn junk_view(inboxes: &[&str]) -> TeamView {
    TeamView::Junk {
        inboxes: inboxes.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn messages(s: &MailboxSnapshot) -> Vec<MessageKey> {
    s.entries.iter().map(|(_, e)| e.message).collect()
}

fn spam(inbox: &str, mid: &str, at: i64, score: f64) -> NewJunk {
    NewJunk {
        raw: raw_for(mid),
        received_at: at,
        mail_from: "spammer@bad.example".into(),
        rcpts: vec![format!("{inbox}@team.example")],
        inbox: inbox.into(),
        summary: summary(
            mid,
            "Cheap pills",
            "Spammer@bad.example",
            &["support@team.example"],
            &[],
        ),
        score,
        reason: "SPAMD 12.5".into(),
        original: None,
    }
}

fn key(o: &IngestOutcome) -> Result<MessageKey, StoreError> {
    o.message
        .ok_or_else(|| StoreError::Internal("no message key".into()))
}

#[tokio::test]
async fn junk_records_view_remove_and_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, _) = open(dir.path())?;
    let change = store.change_counter();
    let id = store.junk(spam("a", "<s1@bad>", T0, 12.5)).await?;
    assert_eq!(id, JunkId(1));
    assert!(
        store.change_counter() > change,
        "junk bumps the change counter"
    );
    // Spam creates no conversation and no contact.
    assert!(store.list_conversations()?.is_empty());
    assert!(store.list_contacts()?.is_empty());

    let list = store.junk_list()?;
    assert_eq!(
        list,
        vec![JunkJson {
            id,
            message_id: "s1@bad".into(),
            inbox: "a".into(),
            from: Some("Spammer@bad.example".into()),
            subject: "Cheap pills".into(),
            score: 12.5,
            reason: "SPAMD 12.5".into(),
            at: "2023-11-14T22:13:20Z".into(),
        }]
    );
    let json = serde_json::to_value(&list[0])?;
    for field in [
        "id",
        "message_id",
        "inbox",
        "from",
        "subject",
        "score",
        "reason",
        "at",
    ] {
        assert!(json.get(field).is_some(), "{field} in {json}");
    }
    let item = store.junk_item(id)?.ok_or("no junk item")?;
    assert_eq!(item.json, list[0]);
    assert_eq!(item.mail_from, "spammer@bad.example");
    assert_eq!(item.rcpts, ["a@team.example"]);
    assert_eq!(item.received_at, T0);
    assert_eq!(store.read_message(item.message)?, raw_for("<s1@bad>"));
    assert_eq!(store.junk_of_message(item.message)?, Some(id));
    assert_eq!(store.junk_item(JunkId(99))?, None);

    // The same spam again for the same inbox is kept once; for another inbox, again.
    let bytes = store.stats()?.segment_bytes;
    assert_eq!(store.junk(spam("a", "s1@BAD", T0 + 5, 3.0)).await?, id);
    assert_eq!(store.stats()?.segment_bytes, bytes, "no bytes for a repeat");
    let id_b = store.junk(spam("b", "s2@bad", T0 + 1, f64::NAN)).await?;
    assert_eq!(id_b, JunkId(2));
    let item_b = store.junk_item(id_b)?.ok_or("no junk item")?;
    assert_eq!(item_b.json.score, 0.0, "a NaN score is stored as 0");

    let junk_a = store.sync_view(&junk_view(&["a"])).await?;
    assert_eq!(messages(&junk_a), vec![item.message]);
    assert_eq!(junk_a.entries[0].1.conversation, None);
    let junk_b = store.sync_view(&junk_view(&["b"])).await?;
    assert_eq!(messages(&junk_b), vec![item_b.message]);
    let junk_ab = store.sync_view(&junk_view(&["a", "b"])).await?;
    assert_eq!(messages(&junk_ab), vec![item.message, item_b.message]);
    assert!(
        store
            .sync_view(&junk_view(&["c"]))
            .await?
            .entries
            .is_empty()
    );
    // Junk is in no conversation view.
    let inbox_a = TeamView::Open {
        inboxes: vec!["a".into()],
    };
    assert!(store.sync_view(&inbox_a).await?.entries.is_empty());
    store.close().await?;

    let (store, report) = open(dir.path())?;
    assert_eq!(report.junk_checked, 2);
    assert!(report.bad_records.is_empty(), "{:?}", report.bad_records);
    assert_eq!(store.junk_list()?.len(), 2);
    assert_eq!(store.read_message(item.message)?, raw_for("<s1@bad>"));
    let again = store.sync_view(&junk_view(&["a"])).await?;
    assert_eq!(again, junk_a, "same UIDs after reopen");

    let change = store.change_counter();
    store.junk_remove(id).await?;
    assert!(
        store.change_counter() > change,
        "removal bumps the change counter"
    );
    assert!(
        store
            .sync_view(&junk_view(&["a"]))
            .await?
            .entries
            .is_empty()
    );
    assert_eq!(
        messages(&store.sync_view(&junk_view(&["a", "b"])).await?),
        vec![item_b.message]
    );
    assert_eq!(store.junk_of_message(item.message)?, None);
    assert!(matches!(
        store.junk_remove(id).await,
        Err(StoreError::NotFound(_))
    ));
    // Once removed, the same Message-ID is junk again as a new record; ids never repeat.
    let id3 = store.junk(spam("a", "s1@bad", T0 + 9, 7.0)).await?;
    assert_eq!(id3, JunkId(3));
    let s = store.sync_view(&junk_view(&["a"])).await?;
    assert_eq!(s.entries.len(), 1);
    assert_eq!(s.entries[0].0, junk_a.uid_next, "a new uid");
    store.close().await?;

    let (store, _) = open(dir.path())?;
    let ids: Vec<JunkId> = store.junk_list()?.iter().map(|j| j.id).collect();
    assert_eq!(ids, vec![id_b, id3]);
    store.close().await?;
    Ok(())
}

#[tokio::test]
async fn mark_junk_takes_inbound_messages_and_hides_the_conversation() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, _) = open(dir.path())?;
    let o1 = store
        .ingest(simple("a", "in1@x", T0, "c@x", new_conv()))
        .await?;
    let c = stored(&o1, 0).0;
    let mut out = simple("a", "out@x", T0 + 1, "agent@team", join(c));
    out.summary.direction = Direction::Out;
    let k_out = key(&store.ingest(out).await?)?;
    let mut note = simple("a", "note@x", T0 + 2, "agent@team", join(c));
    note.summary.direction = Direction::Comment;
    store.ingest(note).await?;
    let k2 = key(&store
        .ingest(simple("a", "in2@x", T0 + 3, "c@x", join(c)))
        .await?)?;
    let k1 = key(&o1)?;
    // Another conversation stays where it is.
    let other = stored(
        &store
            .ingest(simple("a", "o@x", T0 + 4, "d@x", new_conv()))
            .await?,
        0,
    )
    .0;

    let junk_a = junk_view(&["a"]);
    assert!(store.sync_view(&junk_a).await?.entries.is_empty());
    let change = store.change_counter();
    let ids = store.mark_junk(c, "moved to Junk by bob".into()).await?;
    assert_eq!(ids, vec![JunkId(1), JunkId(2)]);
    assert!(store.change_counter() > change);

    // In Junk only: not in the trash, not in `conversations list` (SPEC §3, §8).
    let info = store.conversation_info(c)?.ok_or("no conversation")?;
    assert!(info.junk);
    assert_eq!(
        info.status,
        Status::Open,
        "its status is kept for \"not spam\""
    );
    assert!(store.list_conversations()?.iter().all(|l| l.id != c));
    assert_eq!(
        store.conversation_info(other)?.ok_or("no other")?.status,
        Status::Open
    );
    let list = store.junk_list()?;
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].message_id, "in1@x");
    assert_eq!(list[1].message_id, "in2@x");
    assert!(list.iter().all(|j| j.inbox == "a" && j.score == 0.0));
    assert!(list.iter().all(|j| j.reason == "moved to Junk by bob"));
    let item = store.junk_item(ids[0])?.ok_or("no item")?;
    assert_eq!(item.message, k1, "same message, no copy");
    assert_eq!(store.read_message(item.message)?, raw_for("in1@x"));
    assert_eq!(store.junk_of_message(k1)?, Some(ids[0]));
    assert_eq!(store.junk_of_message(k_out)?, None);

    assert_eq!(messages(&store.sync_view(&junk_a).await?), vec![k1, k2]);
    assert!(
        store
            .sync_view(&junk_view(&["b"]))
            .await?
            .entries
            .is_empty()
    );
    let trash = TeamView::Trash {
        inboxes: vec!["a".into()],
        agent: "alice".into(),
    };
    assert!(store.sync_view(&trash).await?.entries.is_empty());
    let inbox_a = TeamView::Open {
        inboxes: vec!["a".into()],
    };
    assert_eq!(store.sync_view(&inbox_a).await?.entries.len(), 1, "other");

    // Again: the same records, nothing new.
    let change = store.change_counter();
    assert_eq!(store.mark_junk(c, "again".into()).await?, ids);
    assert_eq!(store.change_counter(), change, "nothing changed");
    assert!(matches!(
        store.mark_junk(ConversationId(99), "x".into()).await,
        Err(StoreError::NotFound(_))
    ));
    store.close().await?;

    let (store, report) = open(dir.path())?;
    assert_eq!(report.junk_checked, 2);
    assert!(report.bad_records.is_empty(), "{:?}", report.bad_records);
    assert_eq!(messages(&store.sync_view(&junk_a).await?), vec![k1, k2]);
    store.junk_remove(ids[0]).await?;
    assert_eq!(messages(&store.sync_view(&junk_a).await?), vec![k2]);

    // "Not spam": every record of the conversation goes, and it is open in its views.
    store.unmark_junk(c).await?;
    assert!(store.junk_list()?.is_empty());
    assert_eq!(store.junk_of_message(k2)?, None);
    assert!(store.sync_view(&junk_a).await?.entries.is_empty());
    assert_eq!(store.sync_view(&inbox_a).await?.entries.len(), 5);
    let info = store.conversation_info(c)?.ok_or("no conversation")?;
    assert!(!info.junk);
    assert!(store.list_conversations()?.iter().any(|l| l.id == c));
    assert!(matches!(
        store.unmark_junk(ConversationId(99)).await,
        Err(StoreError::NotFound(_))
    ));
    store.close().await?;
    Ok(())
}

/// Data from before the `junk` mark: "move to Junk" trashed the conversation, and a
/// restore from Trash left its mail in Junk too. Reopening puts each message in one place.
#[tokio::test]
async fn junk_from_before_the_mark_is_made_one_place_on_open() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, _) = open(dir.path())?;
    let trashed = stored(
        &store
            .ingest(simple("a", "in1@x", T0, "c@x", new_conv()))
            .await?,
        0,
    )
    .0;
    let o2 = store
        .ingest(simple("a", "in2@x", T0 + 1, "d@x", new_conv()))
        .await?;
    let (restored, k2) = (stored(&o2, 0).0, key(&o2)?);
    store
        .mark_junk(trashed, "moved to Junk by bob".into())
        .await?;
    store
        .mark_junk(restored, "moved to Junk by bob".into())
        .await?;
    // What the old "move to Junk" wrote, then a restore of the second from Trash.
    let t = &store.inner.trees;
    for (conv, status) in [(trashed, Status::Trash), (restored, Status::Open)] {
        let mut rec = views::conversation_record(t, conv)?.ok_or("no conversation")?;
        rec.junk = false;
        rec.status = status;
        t.get(TreeId::Conversations).insert(
            keys::conversation(conv),
            records::encode(TreeId::Conversations, &rec)?,
        )?;
    }
    t.get(TreeId::Meta).remove(keys::meta::JUNK_MARK_BUILT)?;
    store.close().await?;

    let (store, _) = open(dir.path())?;
    let trash = TeamView::Trash {
        inboxes: vec!["a".into()],
        agent: "alice".into(),
    };
    assert!(store.sync_view(&trash).await?.entries.is_empty());
    let info = store.conversation_info(trashed)?.ok_or("no conversation")?;
    assert!(info.junk, "still in the trash: it was junk");
    let list = store.junk_list()?;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].message_id, "in1@x");
    assert_eq!(store.junk_of_message(k2)?, None, "restored: not junk");
    let inbox = TeamView::Open {
        inboxes: vec!["a".into()],
    };
    assert_eq!(messages(&store.sync_view(&inbox).await?), vec![k2]);
    let listed: Vec<ConversationId> = store.list_conversations()?.iter().map(|c| c.id).collect();
    assert_eq!(listed, vec![restored]);
    store.close().await?;
    Ok(())
}

fn hits() -> Vec<QuarantineHit> {
    vec![
        QuarantineHit {
            filename: "invoice.exe".into(),
            reason: "blocked file type .exe".into(),
        },
        QuarantineHit {
            filename: "eicar.com".into(),
            reason: "infected: Eicar-Signature (clamd)".into(),
        },
    ]
}

fn original_bytes() -> Vec<u8> {
    b"Message-ID: <q1@x>\r\nSubject: files\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
      --b\r\n\r\nhello\r\n--b\r\nContent-Disposition: attachment; filename=invoice.exe\r\n\r\n\
      MZ\x90\x00\x03\r\n--b--\r\n"
        .to_vec()
}

/// A message to inboxes a and b with two quarantined attachments.
fn quarantined_message() -> IncomingMessage {
    let mut s = summary("q1@x", "files", "c@x", &["support@team.example"], &[]);
    s.attachments = vec![AttachmentInfo {
        name: "invoice.exe".into(),
        content_type: "application/octet-stream".into(),
        size: 5,
        quarantined: true,
    }];
    let mut m = message(
        T0,
        s,
        vec![delivery("a", new_conv()), delivery("b", new_conv())],
    );
    m.quarantined = Some(QuarantinedOriginal {
        raw: original_bytes(),
        hits: hits(),
    });
    m
}

#[tokio::test]
async fn quarantine_release_makes_a_new_revision() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, _) = open(dir.path())?;
    let before = store
        .ingest(simple("a", "first@x", T0 - 10, "c@x", new_conv()))
        .await?;
    let o = store.ingest(quarantined_message()).await?;
    let stripped = key(&o)?;
    let (ca, cb) = (stored(&o, 0).0, stored(&o, 1).0);
    let stripped_raw = raw_for("q1@x");
    assert_eq!(store.read_message(stripped)?, stripped_raw);

    // One record per hit per delivery, each with its delivery's conversation.
    let list = store.quarantine_list()?;
    let rows: Vec<(QuarantineId, Option<ConversationId>, &str, bool)> = list
        .iter()
        .map(|q| (q.id, q.conversation, q.filename.as_str(), q.released))
        .collect();
    assert_eq!(
        rows,
        vec![
            (QuarantineId(1), Some(ca), "invoice.exe", false),
            (QuarantineId(2), Some(ca), "eicar.com", false),
            (QuarantineId(3), Some(cb), "invoice.exe", false),
            (QuarantineId(4), Some(cb), "eicar.com", false),
        ]
    );
    assert_eq!(list[1].reason, "infected: Eicar-Signature (clamd)");
    assert_eq!(list[0].message_id, "q1@x");
    assert_eq!(list[0].at, "2023-11-14T22:13:20Z");
    let json = serde_json::to_value(&list[0])?;
    for field in [
        "id",
        "message_id",
        "conversation",
        "filename",
        "reason",
        "at",
    ] {
        assert!(json.get(field).is_some(), "{field} in {json}");
    }
    let item = store
        .quarantine_item(QuarantineId(1))?
        .ok_or("no quarantine item")?;
    assert_eq!(item.stripped, Some(stripped));
    assert_eq!(item.inbox, "a");
    assert_eq!(item.released_as, None);
    assert_eq!(store.read_message(item.original)?, original_bytes());
    assert_eq!(
        store
            .quarantine_item(QuarantineId(3))?
            .ok_or("no item 3")?
            .original,
        item.original,
        "one original per message"
    );
    // The original is in no conversation; the stripped copy is in both.
    assert_eq!(
        store
            .message_meta(item.original)?
            .ok_or("meta")?
            .conversation,
        None
    );
    assert_eq!(store.message_keys(ca)?, vec![stripped]);
    assert_eq!(store.message_keys(cb)?, vec![stripped]);
    store.close().await?;

    let (store, report) = open(dir.path())?;
    assert_eq!(report.quarantine_checked, 4);
    assert!(report.bad_records.is_empty(), "{:?}", report.bad_records);

    // Flags on the stripped copy, and a view that has seen it.
    store
        .store_flags(
            "alice",
            vec![stripped],
            FlagOp::Add,
            Flags {
                seen: true,
                flagged: true,
                keywords: ["$Label1".to_owned()].into(),
                ..Flags::default()
            },
        )
        .await?;
    let inbox_a = TeamView::Open {
        inboxes: vec!["a".into()],
    };
    let s1 = store.sync_view(&inbox_a).await?;
    let k_before = key(&before)?;
    assert_eq!(
        s1.entries
            .iter()
            .map(|(u, e)| (*u, e.message))
            .collect::<Vec<_>>(),
        vec![(1, k_before), (2, stripped)]
    );

    let change = store.change_counter();
    let revision = store.quarantine_release(QuarantineId(1)).await?;
    assert!(
        store.change_counter() > change,
        "release bumps the change counter"
    );
    assert_ne!(revision, stripped);
    assert_ne!(revision, item.original);
    assert_eq!(store.read_message(revision)?, original_bytes());
    assert_eq!(store.message_keys(ca)?, vec![revision]);
    assert_eq!(
        store.message_keys(cb)?,
        vec![revision],
        "every conversation"
    );
    let meta = store.message_meta(revision)?.ok_or("meta")?;
    assert_eq!(meta.conversation, Some(ca));
    assert_eq!(meta.size, original_bytes().len() as u64);
    let detail = store.conversation(ca)?.ok_or("detail")?;
    assert!(
        detail.messages[0]
            .attachments
            .iter()
            .all(|a| !a.quarantined)
    );
    assert_eq!(
        store.message_meta(stripped)?.ok_or("meta")?.conversation,
        None
    );
    // Flags carried over: per agent and shared.
    let f = store.flags("alice", revision)?;
    assert!(f.seen && f.flagged && f.keywords.contains("$Label1"));
    let f = store.flags("bob", revision)?;
    assert!(!f.seen && f.keywords.contains("$Label1"));
    // Threading finds the revision; the same Message-ID again is a duplicate.
    assert_eq!(store.conversation_for_message("a", "q1@x")?, Some(ca));
    let dup = store
        .ingest(simple("a", "q1@x", T0 + 50, "c@x", new_conv()))
        .await?;
    assert_eq!(dup.message, None);

    // The view expunges the old uid and shows the new one.
    let s2 = store.sync_view(&inbox_a).await?;
    assert_eq!(s2.uid_validity, s1.uid_validity);
    assert_eq!(
        s2.entries
            .iter()
            .map(|(u, e)| (*u, e.message))
            .collect::<Vec<_>>(),
        vec![(1, k_before), (3, revision)]
    );

    let list = store.quarantine_list()?;
    assert!(list.iter().all(|q| q.released), "{list:?}");
    let item = store.quarantine_item(QuarantineId(4))?.ok_or("item 4")?;
    assert_eq!(item.released_as, Some(revision));
    for id in [1, 2, 4] {
        assert!(matches!(
            store.quarantine_release(QuarantineId(id)).await,
            Err(StoreError::AlreadyExists(_))
        ));
    }
    assert!(matches!(
        store.quarantine_release(QuarantineId(99)).await,
        Err(StoreError::NotFound(_))
    ));
    store.close().await?;

    let (store, report) = open(dir.path())?;
    assert_eq!(report.quarantine_checked, 4);
    assert!(report.bad_records.is_empty(), "{:?}", report.bad_records);
    assert_eq!(store.read_message(revision)?, original_bytes());
    assert_eq!(store.message_keys(ca)?, vec![revision]);
    assert!(store.quarantine_list()?.iter().all(|q| q.released));
    let s3 = store.sync_view(&inbox_a).await?;
    assert_eq!(s3.entries, s2.entries);
    store.close().await?;
    Ok(())
}

#[tokio::test]
async fn duplicate_delivery_keeps_no_quarantine() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, _) = open(dir.path())?;
    store.ingest(quarantined_message()).await?;
    let bytes = store.stats()?.segment_bytes;
    let again = store.ingest(quarantined_message()).await?;
    assert_eq!(again.message, None);
    assert_eq!(store.stats()?.segment_bytes, bytes, "nothing appended");
    assert_eq!(store.quarantine_list()?.len(), 4);
    // No hits: an ordinary message.
    let mut plain = simple("a", "plain@x", T0, "c@x", new_conv());
    plain.quarantined = Some(QuarantinedOriginal {
        raw: b"unused".to_vec(),
        hits: Vec::new(),
    });
    store.ingest(plain).await?;
    assert_eq!(store.quarantine_list()?.len(), 4);
    assert_eq!(store.stats()?.messages, 3, "stripped, original, plain");
    store.close().await?;
    Ok(())
}

#[tokio::test]
async fn recovery_reports_junk_and_quarantine_on_damaged_bytes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, _) = open(dir.path())?;
    let junk = store.junk(spam("a", "s1@bad", T0, 9.0)).await?;
    let junk_msg = store.junk_item(junk)?.ok_or("junk item")?.message;
    store.ingest(quarantined_message()).await?;
    let original = store
        .quarantine_item(QuarantineId(1))?
        .ok_or("quarantine item")?
        .original;
    let locs = [loc_of(&store, junk_msg)?, loc_of(&store, original)?];
    store.close().await?;

    let seg = dir.path().join("segments").join(blobs::segment_name(0));
    let f = OpenOptions::new().read(true).write(true).open(&seg)?;
    for loc in &locs {
        f.write_all_at(b"JUNK", loc.offset)?;
    }
    drop(f);
    let (store, report) = open(dir.path())?;
    assert_eq!((report.junk_checked, report.quarantine_checked), (1, 4));
    let all = report.bad_records.join("\n");
    assert!(
        all.contains(&format!(
            "junk record 1: its message {} is damaged",
            junk_msg.0
        )),
        "{all}"
    );
    for id in 1..=4 {
        assert!(
            all.contains(&format!(
                "quarantine record {id}: its original (message {}) is damaged",
                original.0
            )),
            "{all}"
        );
    }
    // Listing still works; reading the damaged bytes is an error, not a panic.
    assert_eq!(store.junk_list()?.len(), 1);
    assert!(matches!(
        store.read_message(junk_msg),
        Err(StoreError::Corrupt { .. })
    ));
    store.close().await?;
    Ok(())
}
