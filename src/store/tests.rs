//! Store tests on real disk (tempfile dirs, real fsync).

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::*;

pub(super) type TestResult = Result<(), Box<dyn std::error::Error>>;

pub(super) const T0: i64 = 1_700_000_000;

fn addr(email: &str, name: Option<&str>) -> Address {
    Address {
        email: email.into(),
        name: name.map(Into::into),
    }
}

pub(super) fn summary(
    mid: &str,
    subject: &str,
    from: &str,
    to: &[&str],
    refs: &[&str],
) -> MessageSummary {
    MessageSummary {
        message_id: mid.into(),
        subject: subject.into(),
        from: Some(addr(from, None)),
        to: to.iter().map(|t| addr(t, None)).collect(),
        cc: Vec::new(),
        date: None,
        attachments: Vec::new(),
        direction: Direction::In,
        automatic: false,
        references: refs.iter().map(|r| (*r).to_owned()).collect(),
        author: None,
        digest: None,
    }
}

pub(super) fn raw_for(mid: &str) -> Vec<u8> {
    let mut raw =
        format!("Message-ID: <{mid}>\r\nSubject: test\r\n\r\nbody of {mid}\r\n").into_bytes();
    raw.extend_from_slice(&[0x00, 0xff, 0xfe]);
    raw
}

pub(super) fn new_conv() -> Decide {
    Box::new(|_| Threading::new_conversation(None, "test"))
}

pub(super) fn join(id: ConversationId) -> Decide {
    Box::new(move |_| Threading::join(id, ThreadRule::Tag, "test"))
}

fn customer(email: &str, name: Option<&str>) -> ContactTouch {
    ContactTouch {
        email: email.into(),
        name: name.map(Into::into),
        is_customer: true,
        events: vec![(TimelineKind::Inbound, "inbound".into())],
    }
}

pub(super) fn delivery(inbox: &str, decide: Decide) -> Delivery {
    Delivery {
        inbox: inbox.into(),
        decide,
        keys: ThreadKeys::default(),
        contacts: Vec::new(),
    }
}

pub(super) fn message(
    at: i64,
    summary: MessageSummary,
    deliveries: Vec<Delivery>,
) -> IncomingMessage {
    IncomingMessage {
        raw: raw_for(&summary.message_id),
        received_at: at,
        mail_from: "sender@example.com".into(),
        rcpts: vec!["support@team.example".into()],
        summary,
        deliveries,
        quarantined: None,
    }
}

/// A simple message from `from` to support, one delivery to `inbox`.
pub(super) fn simple(
    inbox: &str,
    mid: &str,
    at: i64,
    from: &str,
    decide: Decide,
) -> IncomingMessage {
    let mut d = delivery(inbox, decide);
    d.contacts = vec![customer(from, None)];
    message(
        at,
        summary(mid, "Help", from, &["support@team.example"], &[]),
        vec![d],
    )
}

pub(super) fn open(dir: &Path) -> Result<(Store, RecoveryReport), StoreError> {
    Store::open(dir, StoreOptions::default())
}

pub(super) fn stored(o: &IngestOutcome, i: usize) -> (ConversationId, bool, bool) {
    match &o.deliveries[i].1 {
        DeliveryOutcome::Stored {
            conversation,
            created,
            reopened,
        } => (*conversation, *created, *reopened),
        other => panic!("expected Stored, got {other:?}"),
    }
}

pub(super) fn loc_of(store: &Store, key: MessageKey) -> Result<blobs::BlobLoc, StoreError> {
    let rec = views::message_record(&store.inner.trees, key)?
        .ok_or_else(|| StoreError::NotFound("record".into()))?;
    Ok(rec.loc)
}

#[tokio::test]
async fn ingest_survives_reopen_byte_exact_with_views() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, report) = open(dir.path())?;
    assert_eq!(report, RecoveryReport::default());

    let mut first = simple(
        "support",
        "<a1@example.com>",
        T0,
        "Alice@Example.com",
        new_conv(),
    );
    first.summary.date = Some(T0 - 60);
    first.summary.cc = vec![addr("Carol@Example.com", Some("Carol"))];
    let o1 = store.ingest(first).await?;
    let (c1, created, _) = stored(&o1, 0);
    assert!(created);
    assert_eq!(c1, ConversationId(1));

    let o2 = store
        .ingest(simple(
            "support",
            "a2@example.com",
            T0 + 10,
            "alice@example.com",
            join(c1),
        ))
        .await?;
    assert_eq!(stored(&o2, 0), (c1, false, false));
    let o3 = store
        .ingest(simple(
            "support",
            "b1@example.com",
            T0 + 20,
            "bob@example.com",
            new_conv(),
        ))
        .await?;
    assert_eq!(stored(&o3, 0).0, ConversationId(2));
    let keys_before = [o1.message, o2.message, o3.message];
    store.close().await?;

    let (store, report) = open(dir.path())?;
    assert_eq!(report.messages_checked, 3);
    assert!(report.bad_records.is_empty(), "{:?}", report.bad_records);
    assert_eq!(report.truncated_tail_bytes, 0);
    let mids = ["<a1@example.com>", "a2@example.com", "b1@example.com"];
    for (k, mid) in keys_before.iter().zip(mids) {
        assert_eq!(
            store.read_message(k.ok_or("no message key")?)?,
            raw_for(mid)
        );
    }

    let list = store.list_conversations()?;
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].id, c1);
    assert_eq!(list[0].inbox, "support");
    assert_eq!(list[0].status, Status::Open);
    assert_eq!(list[0].subject, "Help");
    assert_eq!(list[0].contact.as_deref(), Some("alice@example.com"));
    assert_eq!(
        list[0].message_ids,
        vec!["<a1@example.com>", "a2@example.com"]
    );
    assert_eq!(list[0].updated, "2023-11-14T22:13:30Z"); // T0 + 10
    assert_eq!(list[1].message_ids, vec!["b1@example.com"]);

    let detail = store.conversation(c1)?.ok_or("no detail")?;
    assert_eq!(detail.linked_to, None);
    assert_eq!(detail.messages.len(), 2);
    assert_eq!(detail.messages[0].date, "2023-11-14T22:12:20Z"); // the Date header
    assert_eq!(detail.messages[1].date, "2023-11-14T22:13:30Z"); // received
    assert_eq!(
        detail.messages[0].from.as_deref(),
        Some("Alice@Example.com")
    );
    assert_eq!(
        detail.messages[0].size,
        raw_for("<a1@example.com>").len() as u64
    );

    let info = store.conversation_info(c1)?.ok_or("no info")?;
    assert_eq!(
        info.participants,
        vec![
            "alice@example.com",
            "carol@example.com",
            "support@team.example"
        ]
    );
    assert_eq!(info.customer.as_deref(), Some("alice@example.com"));
    assert_eq!(
        store.message_keys(c1)?,
        vec![keys_before[0].ok_or("k")?, keys_before[1].ok_or("k")?]
    );

    let contacts = store.list_contacts()?;
    let emails: Vec<_> = contacts.iter().map(|c| c.email.as_str()).collect();
    assert_eq!(emails, vec!["alice@example.com", "bob@example.com"]);
    assert_eq!(contacts[0].conversations, vec![c1]);
    assert_eq!(contacts[0].first_seen, "2023-11-14T22:13:20Z");
    assert_eq!(contacts[0].last_seen, "2023-11-14T22:13:30Z");

    let stats = store.stats()?;
    assert_eq!(
        (stats.conversations, stats.messages, stats.contacts),
        (2, 3, 2)
    );
    assert_eq!(stats.segments, 1);
    store.close().await?;
    Ok(())
}

#[tokio::test]
async fn duplicates_are_stored_once_and_inboxes_share_bytes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, _) = open(dir.path())?;
    let both = |at| {
        message(
            at,
            summary("x@example.com", "Hi", "a@example.com", &[], &[]),
            vec![
                delivery("sales", new_conv()),
                delivery("support", new_conv()),
            ],
        )
    };
    let o = store.ingest(both(T0)).await?;
    let key = o.message.ok_or("no key")?;
    let (sales, _, _) = stored(&o, 0);
    let (support, _, _) = stored(&o, 1);
    assert_ne!(sales, support);
    assert_eq!(store.message_keys(sales)?, vec![key]);
    assert_eq!(store.message_keys(support)?, vec![key]);
    assert_eq!(
        store.conversation_info(support)?.ok_or("info")?.inbox,
        "support"
    );
    let bytes = store.stats()?.segment_bytes;

    // Retried delivery, Message-ID spelled with brackets and other case: both duplicates,
    // nothing appended.
    let mut again = both(T0 + 5);
    again.summary.message_id = "<X@Example.com>".into();
    let o = store.ingest(again).await?;
    assert_eq!(o.message, None);
    assert_eq!(
        o.deliveries,
        vec![
            (
                "sales".to_owned(),
                DeliveryOutcome::Duplicate {
                    conversation: sales
                }
            ),
            (
                "support".to_owned(),
                DeliveryOutcome::Duplicate {
                    conversation: support
                }
            ),
        ]
    );
    let stats = store.stats()?;
    assert_eq!((stats.messages, stats.conversations), (1, 2));
    assert_eq!(stats.segment_bytes, bytes);

    // A third inbox is new for the same Message-ID: stored there only.
    let o = store
        .ingest(message(
            T0 + 6,
            summary("x@example.com", "Hi", "a@example.com", &[], &[]),
            vec![
                delivery("sales", new_conv()),
                delivery("billing", new_conv()),
                delivery("billing", new_conv()),
            ],
        ))
        .await?;
    assert!(o.message.is_some());
    assert_eq!(
        o.deliveries[0].1,
        DeliveryOutcome::Duplicate {
            conversation: sales
        }
    );
    let (billing, created, _) = stored(&o, 1);
    assert!(created);
    assert_eq!(
        o.deliveries[2].1,
        DeliveryOutcome::Duplicate {
            conversation: billing
        }
    );
    assert_eq!(store.list_conversations()?.len(), 3);
    store.close().await?;
    Ok(())
}

#[tokio::test]
async fn new_with_link_and_join_and_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, _) = open(dir.path())?;
    let c1 = stored(
        &store
            .ingest(simple("s", "m1@x", T0, "a@x", new_conv()))
            .await?,
        0,
    )
    .0;
    let linked: Decide = Box::new(move |_| Threading::new_conversation(Some(c1), "test"));
    let c2 = stored(
        &store
            .ingest(simple("s", "m2@x", T0 + 1, "b@x", linked))
            .await?,
        0,
    )
    .0;
    assert_eq!(c2, ConversationId(2));
    assert_eq!(store.conversation(c2)?.ok_or("c2")?.linked_to, Some(c1));
    assert_eq!(store.conversation(c1)?.ok_or("c1")?.linked_to, None);

    store.set_status(c1, Status::Closed).await?;
    assert_eq!(
        store.conversation_info(c1)?.ok_or("c1")?.status,
        Status::Closed
    );
    // The team's own reply and note are filed without reopening it.
    for (mid, direction) in [("out@x", Direction::Out), ("note@x", Direction::Comment)] {
        let mut m = simple("s", mid, T0 + 2, "agent@team", join(c1));
        m.summary.direction = direction;
        assert_eq!(stored(&store.ingest(m).await?, 0), (c1, false, false));
    }
    assert_eq!(
        store.conversation_info(c1)?.ok_or("c1")?.status,
        Status::Closed
    );
    let o = store
        .ingest(simple("s", "m3@x", T0 + 2, "a@x", join(c1)))
        .await?;
    assert_eq!(stored(&o, 0), (c1, false, true));
    assert_eq!(
        store.conversation_info(c1)?.ok_or("c1")?.status,
        Status::Open
    );

    store.set_status(c2, Status::Trash).await?;
    let o = store
        .ingest(simple("s", "m4@x", T0 + 3, "b@x", join(c2)))
        .await?;
    assert_eq!(stored(&o, 0), (c2, false, false));
    assert_eq!(
        store.conversation_info(c2)?.ok_or("c2")?.status,
        Status::Trash
    );

    // A Join into another inbox's conversation is refused: a new conversation instead.
    let o = store
        .ingest(simple("other", "m5@x", T0 + 4, "b@x", join(c2)))
        .await?;
    assert_eq!(stored(&o, 0), (ConversationId(3), true, false));

    assert!(matches!(
        store.set_status(ConversationId(99), Status::Closed).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.message_keys(ConversationId(99)),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.read_message(MessageKey(9999)),
        Err(StoreError::NotFound(_))
    ));
    assert!(store.conversation(ConversationId(99))?.is_none());
    store.close().await?;
    Ok(())
}

#[tokio::test]
async fn lookups_see_earlier_ingests() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, _) = open(dir.path())?;

    // The reply arrives first; it names its parent p@x.
    let mut reply = simple("s", "r@x", T0, "alice@x", new_conv());
    reply.summary.references = vec!["<P@x>".into(), "older@x".into()];
    reply.deliveries[0].keys = ThreadKeys {
        subject_base: Some("printer broken".into()),
        thread_index: Some(vec![7u8; 22]),
        ..ThreadKeys::default()
    };
    let c1 = stored(&store.ingest(reply).await?, 0).0;

    type Seen = Vec<(String, Option<ConversationId>)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    type SubjectHits = Vec<Option<(ConversationId, i64)>>;
    let subj: Arc<Mutex<SubjectHits>> = Arc::default();
    let (seen2, subj2) = (seen.clone(), subj.clone());
    let decide: Decide = Box::new(move |l| {
        let found = l.referencing("s", "p@x");
        if let Ok(mut s) = seen2.lock() {
            s.push(("referencing".into(), found));
            s.push(("referencing other inbox".into(), l.referencing("t", "p@x")));
            s.push(("by_message_id".into(), l.by_message_id("s", "<R@X>")));
            s.push((
                "by_message_id unknown".into(),
                l.by_message_id("s", "nope@x"),
            ));
            s.push(("thread_index".into(), l.by_thread_index("s", &[7u8; 22])));
            s.push((
                "thread_index other".into(),
                l.by_thread_index("s", &[8u8; 22]),
            ));
        }
        if let Ok(mut s) = subj2.lock() {
            s.push(l.by_subject("s", "printer broken", "Alice@X"));
            s.push(l.by_subject("s", "printer broken", "bob@x"));
            s.push(l.by_subject("s", "other", "alice@x"));
        }
        match (found, l.conversation(ConversationId(1))) {
            (Some(c), Some(info)) if info.participants.contains(&"alice@x".to_owned()) => {
                Threading::join(c, ThreadRule::References, "test")
            }
            _ => Threading::new_conversation(None, "test"),
        }
    });
    let parent = simple("s", "p@x", T0 + 30, "support@team", decide);
    assert_eq!(stored(&store.ingest(parent).await?, 0), (c1, false, false));

    let seen = seen.lock().map_err(|_| "poisoned")?.clone();
    let expect: Seen = vec![
        ("referencing".into(), Some(c1)),
        ("referencing other inbox".into(), None),
        ("by_message_id".into(), Some(c1)),
        ("by_message_id unknown".into(), None),
        ("thread_index".into(), Some(c1)),
        ("thread_index other".into(), None),
    ];
    assert_eq!(seen, expect);
    let subj = subj.lock().map_err(|_| "poisoned")?.clone();
    assert_eq!(subj, vec![Some((c1, T0)), None, None]);
    store.close().await?;
    Ok(())
}

/// Two conversations on one subject touched within the same second: the later write
/// is the newest, whatever order their customers' keys sort in.
#[tokio::test]
async fn subject_candidates_tie_break_by_arrival_not_key_order() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, _) = open(dir.path())?;
    let with_subject = |mid: &str, from: &str| {
        let mut m = simple("s", mid, T0, from, new_conv());
        m.deliveries[0].keys.subject_base = Some("printer broken".into());
        m
    };
    // "a@x" sorts before "longer@example.com" in the key (length-prefixed).
    let first = stored(
        &store
            .ingest(with_subject("1@x", "longer@example.com"))
            .await?,
        0,
    )
    .0;
    let from_a = stored(&store.ingest(with_subject("2@x", "a@x")).await?, 0).0;
    let newest = stored(
        &store
            .ingest(with_subject("3@x", "longer@example.com"))
            .await?,
        0,
    )
    .0;
    assert_ne!(first, newest, "each message started its own conversation");

    type Candidates = Vec<(ConversationId, i64)>;
    let seen: Arc<Mutex<Vec<Candidates>>> = Arc::default();
    let seen2 = seen.clone();
    let probe = simple(
        "s",
        "4@x",
        T0,
        "c@x",
        Box::new(move |l| {
            if let Ok(mut s) = seen2.lock() {
                s.push(l.by_subject_any("s", "printer broken"));
            }
            Threading::new_conversation(None, "test")
        }),
    );
    store.ingest(probe).await?;
    let seen = seen.lock().map_err(|_| "poisoned")?.clone();
    // longer@'s entry was rewritten last (by `newest`), so it leads a@x's.
    assert_eq!(seen, vec![vec![(newest, T0), (from_a, T0)]]);
    store.close().await?;
    Ok(())
}

#[test]
fn group_commit_batches_concurrent_ingests() -> TestResult {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(8)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let dir = tempfile::tempdir()?;
        let (store, _) = open(dir.path())?;
        let mut tasks = Vec::new();
        for i in 0..50 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .ingest(simple(
                        "s",
                        &format!("m{i}@x"),
                        T0 + i,
                        &format!("c{i}@x"),
                        new_conv(),
                    ))
                    .await
            }));
        }
        let mut ids = BTreeSet::new();
        for t in tasks {
            ids.insert(stored(&t.await??, 0).0);
        }
        let stats = store.stats()?;
        println!("50 concurrent ingests: {} barriers", stats.barriers);
        assert!(
            stats.barriers < 50,
            "{} barriers for 50 ingests",
            stats.barriers
        );
        assert_eq!(stats.requests, 50);
        // Dense, never reused numbers.
        assert_eq!(ids, (1..=50).map(ConversationId).collect::<BTreeSet<_>>());
        store.close().await?;
        Ok(())
    })
}

#[tokio::test]
async fn recovery_reports_damage_and_cuts_torn_tail() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, _) = open(dir.path())?;
    let mut keys = Vec::new();
    for i in 0..3 {
        let o = store
            .ingest(simple("s", &format!("m{i}@x"), T0 + i, "a@x", new_conv()))
            .await?;
        keys.push(o.message.ok_or("key")?);
    }
    let locs = keys
        .iter()
        .map(|k| loc_of(&store, *k))
        .collect::<Result<Vec<_>, _>>()?;
    store.close().await?;

    let seg = dir.path().join("segments").join(blobs::segment_name(0));
    let f = OpenOptions::new().read(true).write(true).open(&seg)?;
    let good_len = f.metadata()?.len();
    // Garbage after the last record, and a flipped byte in the middle record's body.
    f.write_all_at(&[0xAB; 100], good_len)?;
    f.write_all_at(b"#", locs[1].offset + blobs::HEADER_LEN + 3)?;
    drop(f);

    let (store, report) = open(dir.path())?;
    assert_eq!(report.messages_checked, 3);
    assert!(report.bad_records.is_empty(), "{:?}", report.bad_records);
    assert_eq!(report.truncated_tail_bytes, 100);
    assert_eq!(std::fs::metadata(&seg)?.len(), good_len);
    assert!(matches!(
        store.read_message(keys[1]),
        Err(StoreError::Corrupt { .. })
    ));
    assert_eq!(store.read_message(keys[0])?, raw_for("m0@x"));
    assert_eq!(store.read_message(keys[2])?, raw_for("m2@x"));
    // Appends continue right after the good data.
    let k3 = store
        .ingest(simple("s", "m3@x", T0 + 3, "a@x", new_conv()))
        .await?;
    let k3 = k3.message.ok_or("key")?;
    assert_eq!(loc_of(&store, k3)?.offset, good_len);
    assert_eq!(store.read_message(k3)?, raw_for("m3@x"));
    store.close().await?;

    // Lose the second half of the last record and smash the first record's header.
    let f = OpenOptions::new().read(true).write(true).open(&seg)?;
    let full = f.metadata()?.len();
    f.set_len(full - 10)?;
    f.write_all_at(b"JUNK", locs[0].offset)?;
    drop(f);
    let (store, report) = open(dir.path())?;
    assert_eq!(report.messages_checked, 4);
    assert_eq!(report.bad_records.len(), 2, "{:?}", report.bad_records);
    let all = report.bad_records.join("\n");
    assert!(
        all.contains(&format!("message {}: no record header", keys[0].0)),
        "{all}"
    );
    assert!(
        all.contains(&format!("message {}: points past the end", k3.0)),
        "{all}"
    );
    assert_eq!(report.truncated_tail_bytes, full - 10 - good_len);
    assert!(store.read_message(k3).is_err());
    assert!(store.read_message(keys[0]).is_err());
    let k4 = store
        .ingest(simple("s", "m4@x", T0 + 4, "a@x", new_conv()))
        .await?;
    let k4 = k4.message.ok_or("key")?;
    assert_eq!(loc_of(&store, k4)?.offset, good_len);
    assert_eq!(store.read_message(k4)?, raw_for("m4@x"));
    assert_eq!(store.read_message(keys[2])?, raw_for("m2@x"));
    store.close().await?;
    Ok(())
}

#[tokio::test]
async fn segments_rotate_and_stay_readable() -> TestResult {
    let dir = tempfile::tempdir()?;
    let opts = StoreOptions {
        segment_max_bytes: 200,
        ..StoreOptions::default()
    };
    let (store, _) = Store::open(dir.path(), opts.clone())?;
    let mut keys = Vec::new();
    for i in 0..5 {
        let o = store
            .ingest(simple("s", &format!("m{i}@x"), T0 + i, "a@x", new_conv()))
            .await?;
        keys.push(o.message.ok_or("key")?);
    }
    assert!(store.stats()?.segments >= 3, "{:?}", store.stats()?);
    store.close().await?;
    let (store, report) = Store::open(dir.path(), opts)?;
    assert!(report.bad_records.is_empty());
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(store.read_message(*k)?, raw_for(&format!("m{i}@x")));
    }
    store.close().await?;
    Ok(())
}

#[tokio::test]
async fn newer_schema_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, _) = open(dir.path())?;
    store.close().await?;
    {
        let db = sled::open(dir.path().join("meta"))?;
        db.open_tree("meta")?
            .insert(keys::meta::SCHEMA_VERSION, &2u32.to_be_bytes())?;
        db.flush()?;
    }
    match open(dir.path()) {
        Err(
            e @ StoreError::SchemaTooNew {
                found: 2,
                supported: 1,
            },
        ) => {
            assert!(e.to_string().contains("upgrade teamgate"), "{e}");
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn second_open_is_locked_until_closed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, _) = open(dir.path())?;
    match open(dir.path()) {
        Err(StoreError::Locked(msg)) => assert!(msg.contains("meta"), "{msg}"),
        other => panic!("expected Locked, got {other:?}"),
    }
    let clone = store.clone();
    store.close().await?;
    assert!(matches!(
        clone
            .ingest(simple("s", "late@x", T0, "a@x", new_conv()))
            .await,
        Err(StoreError::Closed)
    ));
    drop(clone);
    let (store, _) = open(dir.path())?;
    store.close().await?;
    Ok(())
}

#[tokio::test]
async fn contact_names_upgrade_and_timeline_records_events() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, _) = open(dir.path())?;
    let touch = |name: Option<&str>, events: Vec<(TimelineKind, String)>| ContactTouch {
        email: "Bob@Example.com".into(),
        name: name.map(Into::into),
        is_customer: true,
        events,
    };
    let names = [
        None,
        Some("bob@example.com"),
        Some("  "),
        Some("Bob Smith"),
        Some("Robert"),
    ];
    let mut expect_names = Vec::new();
    let mut convs = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let mut d = delivery("s", new_conv());
        let mut events = vec![(TimelineKind::Inbound, format!("subject {i}"))];
        if i == 2 {
            events.push((TimelineKind::Attachment, "a.pdf application/pdf 10".into()));
        }
        d.contacts = vec![touch(*name, events)];
        let at = T0 + 100 * i as i64;
        let o = store
            .ingest(message(
                at,
                summary(&format!("m{i}@x"), "S", "bob@example.com", &[], &[]),
                vec![d],
            ))
            .await?;
        convs.push(stored(&o, 0).0);
        expect_names.push(
            store
                .contact("bob@example.com")?
                .ok_or("contact")?
                .contact
                .name,
        );
    }
    assert_eq!(
        expect_names,
        vec![
            None,
            None,
            None,
            Some("Bob Smith".to_owned()),
            Some("Bob Smith".to_owned())
        ]
    );

    let c = store.contact(" BOB@example.COM ")?.ok_or("contact")?;
    assert_eq!(c.contact.email, "bob@example.com");
    assert_eq!(c.contact.first_seen, "2023-11-14T22:13:20Z");
    assert_eq!(c.contact.last_seen, "2023-11-14T22:20:00Z");
    assert_eq!(c.contact.conversations, convs);
    let kinds: Vec<_> = c
        .timeline
        .iter()
        .map(|t| (t.kind, t.detail.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (TimelineKind::Inbound, "subject 0"),
            (TimelineKind::Inbound, "subject 1"),
            (TimelineKind::Inbound, "subject 2"),
            (TimelineKind::Attachment, "a.pdf application/pdf 10"),
            (TimelineKind::Inbound, "subject 3"),
            (TimelineKind::Inbound, "subject 4"),
        ]
    );
    assert_eq!(c.timeline[3].conversation, Some(convs[2]));
    assert_eq!(c.timeline[3].message_id.as_deref(), Some("m2@x"));
    assert_eq!(c.timeline[3].at, "2023-11-14T22:16:40Z");
    assert!(store.contact("nobody@example.com")?.is_none());

    // The JSON shape of SPEC §8.
    let json = serde_json::to_value(&c)?;
    assert_eq!(json["email"], "bob@example.com");
    assert_eq!(json["timeline"][3]["kind"], "attachment");
    store.close().await?;
    Ok(())
}

#[tokio::test]
async fn panicking_decision_fails_only_its_request() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, _) = open(dir.path())?;
    let boom: Decide = Box::new(|_| panic!("threading bug"));
    let r = store.ingest(simple("s", "boom@x", T0, "a@x", boom)).await;
    assert!(matches!(r, Err(StoreError::Internal(_))), "{r:?}");
    let o = store
        .ingest(simple("s", "ok@x", T0, "a@x", new_conv()))
        .await?;
    assert_eq!(stored(&o, 0).0, ConversationId(1));
    // The failed one was not indexed: a retry is stored, not a duplicate.
    let o = store
        .ingest(simple("s", "boom@x", T0, "a@x", new_conv()))
        .await?;
    assert_eq!(stored(&o, 0).0, ConversationId(2));
    store.close().await?;
    Ok(())
}

/// sled's background threads keep its lock a moment after the last handle drops; `close`
/// waits for it, so a reopen right after never sees `Locked`.
#[tokio::test]
async fn reopen_right_after_close_is_not_locked() -> TestResult {
    let dir = tempfile::tempdir()?;
    for i in 0..200 {
        let (store, _) = match open(dir.path()) {
            Ok(s) => s,
            Err(e) => panic!("iteration {i}: {e:?}"),
        };
        store
            .ingest(simple("s", &format!("m{i}@x"), T0, "a@x", new_conv()))
            .await?;
        store.close().await?;
    }
    Ok(())
}

#[test]
fn store_handle_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Store>();
}
