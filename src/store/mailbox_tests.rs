//! IMAP mailbox tests on real disk: team view UID spaces, flags, folders, change
//! notifications, and that all of it survives close + reopen.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::counters::FlagLog;
use super::tests::{
    T0, TestResult, join, message, new_conv, open, raw_for, simple, stored, summary,
};
use super::*;

fn open_view(inboxes: &[&str]) -> TeamView {
    TeamView::Open {
        inboxes: inboxes.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn inboxes(i: &[&str]) -> Vec<String> {
    i.iter().map(|s| (*s).to_owned()).collect()
}

/// `(uid, message)` pairs of a snapshot.
fn uids(s: &MailboxSnapshot) -> Vec<(u32, MessageKey)> {
    s.entries.iter().map(|(u, e)| (*u, e.message)).collect()
}

fn key(o: &IngestOutcome) -> Result<MessageKey, StoreError> {
    o.message
        .ok_or_else(|| StoreError::Internal("no message key".into()))
}

fn folder(owner: &str, name: &str) -> FolderId {
    FolderId {
        owner: owner.into(),
        name: name.into(),
    }
}

fn flags(seen: bool, flagged: bool, answered: bool, kw: &[&str]) -> Flags {
    Flags {
        seen,
        flagged,
        answered,
        keywords: kw.iter().map(|s| (*s).to_owned()).collect(),
        ..Flags::default()
    }
}

#[tokio::test]
async fn reopened_conversation_reenters_with_new_uids() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, _) = open(dir.path())?;
    let o1 = store
        .ingest(simple("a", "m1@x", T0, "c@x", new_conv()))
        .await?;
    let c1 = stored(&o1, 0).0;
    let o2 = store
        .ingest(simple("a", "m2@x", T0 + 1, "d@x", new_conv()))
        .await?;
    let c2 = stored(&o2, 0).0;
    let o3 = store
        .ingest(simple("a", "m3@x", T0 + 2, "c@x", join(c1)))
        .await?;
    let (k1, k2, k3) = (key(&o1)?, key(&o2)?, key(&o3)?);

    let inbox = open_view(&["a"]);
    let closed = TeamView::Closed {
        inboxes: inboxes(&["a"]),
        year: None,
    };
    let s = store.sync_view(&inbox).await?;
    assert_ne!(s.uid_validity, 0);
    assert_eq!(uids(&s), vec![(1, k1), (2, k2), (3, k3)]);
    assert_eq!(s.uid_next, 4);
    assert_eq!(s.entries[0].1.conversation, Some(c1));
    assert_eq!(s.entries[1].1.conversation, Some(c2));
    assert!(store.sync_view(&closed).await?.entries.is_empty());

    store
        .conversation_action(c1, ConversationAction::SetStatus(Status::Closed))
        .await?;
    let s2 = store.sync_view(&inbox).await?;
    assert_eq!(s2.uid_validity, s.uid_validity);
    assert_eq!(uids(&s2), vec![(2, k2)]);
    assert_eq!(s2.uid_next, 4);
    let cl = store.sync_view(&closed).await?;
    assert_eq!(uids(&cl), vec![(1, k1), (2, k3)]);

    store
        .conversation_action(c1, ConversationAction::SetStatus(Status::Open))
        .await?;
    let s3 = store.sync_view(&inbox).await?;
    assert_eq!(uids(&s3), vec![(2, k2), (4, k1), (5, k3)]);
    assert_eq!(s3.uid_next, 6);
    let cl2 = store.sync_view(&closed).await?;
    assert!(cl2.entries.is_empty());
    assert_eq!((cl2.uid_validity, cl2.uid_next), (cl.uid_validity, 3));

    // A new message of an open conversation gets the next uid, after the old ones.
    let o4 = store
        .ingest(simple("a", "m4@x", T0 + 3, "d@x", join(c2)))
        .await?;
    let s4 = store.sync_view(&inbox).await?;
    assert_eq!(uids(&s4), vec![(2, k2), (4, k1), (5, k3), (6, key(&o4)?)]);
    assert!(s4.highest_change > s3.highest_change);
    store.close().await?;
    Ok(())
}

#[tokio::test]
async fn spaces_are_per_view_value() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, _) = open(dir.path())?;
    let k = key(&store
        .ingest(simple("a", "m1@x", T0, "c@x", new_conv()))
        .await?)?;
    let open_a = open_view(&["a"]);
    let unassigned_a = TeamView::Unassigned {
        inboxes: inboxes(&["a"]),
    };
    // Same content, different values: separate spaces (and UIDVALIDITYs).
    let s1 = store.sync_view(&open_a).await?;
    let s2 = store.sync_view(&unassigned_a).await?;
    assert_eq!(uids(&s1), vec![(1, k)]);
    assert_eq!(uids(&s2), vec![(1, k)]);
    assert!(s2.uid_validity > s1.uid_validity);
    // Identical values (two agents with the same memberships): one space.
    let again = store.sync_view(&open_view(&["a"])).await?;
    assert_eq!(again, s1);

    // An up-to-date space is answered without a barrier.
    let barriers = store.stats()?.barriers;
    store.sync_view(&open_a).await?;
    store.sync_view(&unassigned_a).await?;
    assert_eq!(store.stats()?.barriers, barriers);

    // A UID in one space does not move the other.
    let c = stored(
        &store
            .ingest(simple("a", "m2@x", T0 + 1, "d@x", new_conv()))
            .await?,
        0,
    )
    .0;
    store
        .conversation_action(c, ConversationAction::Assign(Some("bob".into())))
        .await?;
    assert_eq!(store.sync_view(&open_a).await?.uid_next, 3);
    assert_eq!(store.sync_view(&unassigned_a).await?.uid_next, 2);
    store.close().await?;
    Ok(())
}

#[tokio::test]
async fn assigned_unassigned_trash_sent_and_closed_years() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, _) = open(dir.path())?;
    let o_in = store
        .ingest(simple("a", "in@x", T0, "c@x", new_conv()))
        .await?;
    let c = stored(&o_in, 0).0;
    let mut out = simple("a", "out@x", T0 + 1, "agent@team", join(c));
    out.summary.direction = Direction::Out;
    let k_out = key(&store.ingest(out).await?)?;
    let mut note = simple("a", "note@x", T0 + 2, "agent@team", join(c));
    note.summary.direction = Direction::Comment;
    let k_note = key(&store.ingest(note).await?)?;
    let k_in = key(&o_in)?;
    // Another inbox's outgoing mail is not in this Sent.
    let mut other = simple("b", "other@x", T0 + 3, "agent@team", new_conv());
    other.summary.direction = Direction::Out;
    store.ingest(other).await?;

    let ab = inboxes(&["a"]);
    let bob = TeamView::Assigned {
        inboxes: ab.clone(),
        assignee: "bob".into(),
    };
    let unassigned = TeamView::Unassigned {
        inboxes: ab.clone(),
    };
    let trash = TeamView::Trash {
        inboxes: ab.clone(),
        agent: "alice".into(),
    };
    let sent = TeamView::Sent {
        inboxes: ab.clone(),
    };
    let msgs = |s: &MailboxSnapshot| -> Vec<MessageKey> {
        s.entries.iter().map(|(_, e)| e.message).collect()
    };
    let all = vec![k_in, k_out, k_note];

    assert!(store.sync_view(&bob).await?.entries.is_empty());
    assert_eq!(msgs(&store.sync_view(&unassigned).await?), all);
    assert_eq!(msgs(&store.sync_view(&sent).await?), vec![k_out]);

    store
        .conversation_action(c, ConversationAction::Assign(Some("bob".into())))
        .await?;
    assert_eq!(msgs(&store.sync_view(&bob).await?), all);
    assert!(store.sync_view(&unassigned).await?.entries.is_empty());
    assert_eq!(
        store
            .conversation_info(c)?
            .ok_or("info")?
            .assignee
            .as_deref(),
        Some("bob")
    );

    // Closed/<year>: the UTC year it was closed in (now).
    store
        .conversation_action(c, ConversationAction::SetStatus(Status::Closed))
        .await?;
    let this_year = membership::utc_year(i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
    )?)
    .ok_or("year")?;
    let closed_in = |year| TeamView::Closed {
        inboxes: ab.clone(),
        year: Some(year),
    };
    assert_eq!(msgs(&store.sync_view(&closed_in(this_year)).await?), all);
    assert!(store.sync_view(&closed_in(2001)).await?.entries.is_empty());
    assert!(store.sync_view(&bob).await?.entries.is_empty());
    assert_eq!(msgs(&store.sync_view(&sent).await?), vec![k_out]);

    store
        .conversation_action(c, ConversationAction::SetStatus(Status::Trash))
        .await?;
    assert_eq!(msgs(&store.sync_view(&trash).await?), all);
    assert!(store.sync_view(&sent).await?.entries.is_empty());
    assert!(
        store
            .sync_view(&closed_in(this_year))
            .await?
            .entries
            .is_empty()
    );
    assert!(
        store
            .sync_view(&open_view(&["a"]))
            .await?
            .entries
            .is_empty()
    );

    let meta = store.message_meta(k_out)?.ok_or("meta")?;
    assert_eq!(meta.direction, Direction::Out);
    assert_eq!(meta.conversation, Some(c));
    assert_eq!(meta.message_id, "out@x");
    assert_eq!(meta.size, raw_for("out@x").len() as u64);
    assert_eq!(meta.received_at, T0 + 1);
    assert_eq!(store.message_meta(MessageKey(999_999))?, None);
    store.close().await?;
    Ok(())
}

#[tokio::test]
async fn transfer_moves_views_and_threading() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, _) = open(dir.path())?;
    let mut first = simple("a", "<P@x>", T0, "c@x", new_conv());
    first.summary.references = vec!["root@x".into()];
    first.deliveries[0].keys = ThreadKeys {
        subject_base: Some("printer".into()),
        thread_index: Some(vec![7u8; 22]),
        ..ThreadKeys::default()
    };
    let o = store.ingest(first).await?;
    let c = stored(&o, 0).0;
    let k = key(&o)?;
    let (va, vb) = (open_view(&["a"]), open_view(&["b"]));
    assert_eq!(uids(&store.sync_view(&va).await?), vec![(1, k)]);
    assert!(store.sync_view(&vb).await?.entries.is_empty());

    store
        .conversation_action(c, ConversationAction::Transfer { inbox: "b".into() })
        .await?;
    assert!(store.sync_view(&va).await?.entries.is_empty());
    assert_eq!(uids(&store.sync_view(&vb).await?), vec![(1, k)]);
    assert_eq!(store.conversation_info(c)?.ok_or("info")?.inbox, "b");

    type Seen = Vec<Option<ConversationId>>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    type SubjectHits = Vec<Option<(ConversationId, i64)>>;
    let subj: Arc<Mutex<SubjectHits>> = Arc::default();
    let (seen2, subj2) = (seen.clone(), subj.clone());
    let decide: Decide = Box::new(move |l| {
        if let Ok(mut s) = seen2.lock() {
            s.extend([
                l.by_message_id("b", "p@x"),
                l.by_message_id("a", "p@x"),
                l.referencing("b", "root@x"),
                l.referencing("a", "root@x"),
                l.by_thread_index("b", &[7u8; 22]),
                l.by_thread_index("a", &[7u8; 22]),
            ]);
        }
        if let Ok(mut s) = subj2.lock() {
            s.push(l.by_subject("b", "printer", "c@x"));
            s.push(l.by_subject("a", "printer", "c@x"));
        }
        match l.by_message_id("b", "p@x") {
            Some(c) => Threading::join(c, ThreadRule::InReplyTo, "test"),
            None => Threading::new_conversation(None, "test"),
        }
    });
    let mut reply = simple("b", "r@x", T0 + 5, "c@x", decide);
    reply.summary.references = vec!["<P@x>".into()];
    assert_eq!(stored(&store.ingest(reply).await?, 0).0, c);
    let seen = seen.lock().map_err(|_| "poisoned")?.clone();
    // The old inbox keeps its entries: mail to its address still follows the conversation.
    assert_eq!(seen, vec![Some(c); 6]);
    let subj = subj.lock().map_err(|_| "poisoned")?.clone();
    assert_eq!(subj, vec![Some((c, T0)), Some((c, T0))]);
    assert_eq!(store.sync_view(&vb).await?.entries.len(), 2);
    store.close().await?;
    Ok(())
}

#[tokio::test]
async fn flags_are_per_agent_or_shared() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, _) = open(dir.path())?;
    let k1 = key(&store
        .ingest(simple("a", "m1@x", T0, "c@x", new_conv()))
        .await?)?;
    let k2 = key(&store
        .ingest(simple("a", "m2@x", T0 + 1, "c@x", new_conv()))
        .await?)?;
    assert_eq!(store.flags("alice", k1)?, Flags::default());

    let set = flags(true, true, true, &["$Comment", "todo"]);
    let r = store
        .store_flags("alice", vec![k1, k2], FlagOp::Add, set.clone())
        .await?;
    assert_eq!(r, vec![set.clone(), set.clone()]);
    assert_eq!(store.flags("alice", k1)?, set);
    // Bob shares \Answered and keywords, not \Seen or \Flagged.
    let bob_view = flags(false, false, true, &["$Comment", "todo"]);
    assert_eq!(store.flags("bob", k1)?, bob_view);
    assert_eq!(
        store.flags_many("bob", &[k1, k2])?,
        vec![bob_view.clone(), bob_view]
    );

    let r = store
        .store_flags(
            "bob",
            vec![k1],
            FlagOp::Add,
            Flags {
                seen: true,
                deleted: true,
                ..Flags::default()
            },
        )
        .await?;
    assert!(r[0].seen && r[0].deleted && r[0].answered && !r[0].flagged);
    assert!(store.flags("alice", k1)?.deleted);

    let r = store
        .store_flags(
            "alice",
            vec![k1],
            FlagOp::Remove,
            flags(true, false, false, &["todo"]),
        )
        .await?;
    let mut want = flags(false, true, true, &["$Comment"]);
    want.deleted = true;
    assert_eq!(r, vec![want]);
    assert!(store.flags("bob", k1)?.seen);

    let r = store
        .store_flags(
            "alice",
            vec![k2],
            FlagOp::Replace,
            flags(false, false, false, &["x"]),
        )
        .await?;
    assert_eq!(r, vec![flags(false, false, false, &["x"])]);
    assert_eq!(store.flags("bob", k2)?, flags(false, false, false, &["x"]));

    // The same key twice sees its own first change.
    let r = store
        .store_flags(
            "carol",
            vec![k2, k2],
            FlagOp::Add,
            flags(true, false, false, &[]),
        )
        .await?;
    assert_eq!(r[0], r[1]);

    let before = store.change_counter();
    let err = store
        .store_flags(
            "alice",
            vec![k1, MessageKey(999_999)],
            FlagOp::Add,
            flags(false, true, false, &["zz"]),
        )
        .await;
    assert!(matches!(err, Err(StoreError::NotFound(_))), "{err:?}");
    assert!(!store.flags("alice", k1)?.keywords.contains("zz"));
    // A STORE that changes nothing is not a change.
    store
        .store_flags(
            "alice",
            vec![k1],
            FlagOp::Add,
            flags(false, true, false, &[]),
        )
        .await?;
    assert_eq!(store.change_counter(), before);

    store.close().await?;
    let (store, _) = open(dir.path())?;
    assert!(store.flags("alice", k1)?.flagged);
    assert!(!store.flags("alice", k1)?.seen);
    assert!(store.flags("bob", k1)?.seen);
    store.close().await?;
    Ok(())
}

/// `flags_many` over a dense run of keys reads by range scans (`flags::read_many`): the
/// same flags as a point read of each message, for both agents, whatever subset is asked.
#[tokio::test]
async fn flags_of_many_messages_equal_each_read_alone() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, _) = open(dir.path())?;
    let mut keys = Vec::new();
    for i in 0..150 {
        let id = format!("many{i}@x");
        keys.push(key(&store
            .ingest(simple("a", &id, T0 + i, "c@x", new_conv()))
            .await?)?);
    }
    let every = |n: usize| keys.iter().copied().step_by(n).collect::<Vec<_>>();
    store
        .store_flags(
            "alice",
            every(3),
            FlagOp::Add,
            flags(true, false, false, &[]),
        )
        .await?;
    store
        .store_flags(
            "bob",
            every(5),
            FlagOp::Add,
            flags(false, true, true, &["todo"]),
        )
        .await?;
    store
        .store_flags(
            "alice",
            every(7),
            FlagOp::Add,
            flags(false, false, false, &["$Junk"]),
        )
        .await?;
    let mut asked = keys.clone();
    asked.reverse();
    for agent in ["alice", "bob", "carol"] {
        for subset in [keys.clone(), asked.clone(), every(2), keys[10..20].to_vec()] {
            let one_by_one: Vec<Flags> = subset
                .iter()
                .map(|k| store.flags(agent, *k))
                .collect::<Result<_, _>>()?;
            assert_eq!(store.flags_many(agent, &subset)?, one_by_one, "{agent}");
        }
    }
    store.close().await?;
    Ok(())
}

#[tokio::test]
async fn folders_keep_uids_across_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, _) = open(dir.path())?;
    let team = key(&store
        .ingest(simple("a", "m1@x", T0, "c@x", new_conv()))
        .await?)?;
    store
        .store_flags(
            "bob",
            vec![team],
            FlagOp::Add,
            flags(true, false, true, &["t"]),
        )
        .await?;
    let drafts = folder("bob", "Drafts");
    let personal = folder("bob", "Personal/x");
    assert!(matches!(
        store.sync_folder(&drafts).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store
            .folder_append(
                &drafts,
                b"x".to_vec(),
                folder_summary("x"),
                Flags::default(),
                T0
            )
            .await,
        Err(StoreError::NotFound(_))
    ));
    store.folder_create(&drafts).await?;
    store.folder_create(&personal).await?;
    store.folder_create(&folder("alice", "Drafts")).await?;
    assert!(matches!(
        store.folder_create(&drafts).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert_eq!(store.folder_list("bob")?, vec!["Drafts", "Personal/x"]);
    assert_eq!(store.folder_list("bo")?, Vec::<String>::new());

    let raw = b"Message-ID: <d1@x>\r\nSubject: draft\r\n\r\nhello\r\n".to_vec();
    let draft_flags = Flags {
        draft: true,
        seen: true,
        ..Flags::default()
    };
    let (v, u1) = store
        .folder_append(
            &drafts,
            raw.clone(),
            folder_summary("d1@x"),
            draft_flags.clone(),
            T0 + 9,
        )
        .await?;
    assert_eq!(u1, 1);
    let (v2, u2) = store
        .folder_append(
            &drafts,
            b"Subject: 2\r\n\r\n".to_vec(),
            folder_summary(""),
            Flags::default(),
            T0,
        )
        .await?;
    assert_eq!((v2, u2), (v, 2));
    let (v3, copied) = store.folder_copy(&drafts, vec![team]).await?;
    assert_eq!((v3, copied), (v, vec![3]));

    let snap = store.sync_folder(&drafts).await?;
    assert_eq!(snap.uid_validity, v);
    assert_eq!(snap.uid_next, 4);
    assert_eq!(
        snap.entries.iter().map(|(u, _)| *u).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!(snap.entries.iter().all(|(_, e)| e.conversation.is_none()));
    let appended = snap.entries[0].1.message;
    assert_eq!(store.read_message(appended)?, raw);
    assert_eq!(store.flags("bob", appended)?, draft_flags);
    let meta = store.message_meta(appended)?.ok_or("meta")?;
    assert_eq!(
        (meta.received_at, meta.message_id.as_str()),
        (T0 + 9, "d1@x")
    );
    assert_eq!(meta.conversation, None);
    // The copy shares the bytes, starts with the source's flags, then has its own.
    let copy = snap.entries[2].1.message;
    assert_ne!(copy, team);
    assert_eq!(store.read_message(copy)?, store.read_message(team)?);
    assert_eq!(store.flags("bob", copy)?, flags(true, false, true, &["t"]));
    store
        .store_flags(
            "bob",
            vec![copy],
            FlagOp::Add,
            Flags {
                deleted: true,
                ..Flags::default()
            },
        )
        .await?;
    assert!(!store.flags("bob", team)?.deleted);

    store.folder_expunge(&drafts, vec![1, 3, 77]).await?;
    let snap = store.sync_folder(&drafts).await?;
    assert_eq!(
        snap.entries.iter().map(|(u, _)| *u).collect::<Vec<_>>(),
        vec![2]
    );
    let (_, u4) = store
        .folder_append(
            &drafts,
            b"Subject: 4\r\n\r\n".to_vec(),
            folder_summary(""),
            Flags::default(),
            T0,
        )
        .await?;
    assert_eq!(u4, 4);
    let before_close = store.sync_folder(&drafts).await?;
    store.close().await?;

    let (store, _) = open(dir.path())?;
    let after = store.sync_folder(&drafts).await?;
    assert_eq!(after, before_close);

    let renamed = folder("bob", "Personal/Old drafts");
    assert!(matches!(
        store.folder_rename(&drafts, &personal).await,
        Err(StoreError::AlreadyExists(_))
    ));
    store.folder_rename(&drafts, &renamed).await?;
    assert!(matches!(
        store.sync_folder(&drafts).await,
        Err(StoreError::NotFound(_))
    ));
    let r = store.sync_folder(&renamed).await?;
    assert_eq!((r.uid_validity, r.uid_next), (v, 5));
    assert_eq!(r.entries, after.entries);
    assert_eq!(
        store.folder_list("bob")?,
        vec!["Personal/Old drafts", "Personal/x"]
    );

    store.folder_delete(&renamed).await?;
    assert!(matches!(
        store.folder_delete(&renamed).await,
        Err(StoreError::NotFound(_))
    ));
    store.folder_create(&renamed).await?;
    let fresh = store.sync_folder(&renamed).await?;
    assert!(fresh.uid_validity > v);
    assert_eq!((fresh.uid_next, fresh.entries.len()), (1, 0));
    // The bytes of deleted folder messages stay readable by key (segments are append-only).
    assert_eq!(store.read_message(appended)?, raw);
    store.close().await?;
    Ok(())
}

async fn next_change(
    rx: &mut tokio::sync::watch::Receiver<u64>,
) -> Result<u64, Box<dyn std::error::Error>> {
    tokio::time::timeout(Duration::from_secs(5), rx.changed()).await??;
    Ok(*rx.borrow_and_update())
}

#[tokio::test]
async fn subscribers_hear_every_durable_change() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, _) = open(dir.path())?;
    let mut rx = store.subscribe();
    let start = *rx.borrow_and_update();
    assert_eq!(start, store.change_counter());

    let c = stored(
        &store
            .ingest(simple("a", "m1@x", T0, "c@x", new_conv()))
            .await?,
        0,
    )
    .0;
    let mut last = next_change(&mut rx).await?;
    assert!(last > start);
    assert_eq!(store.change_counter(), last);

    let actions = [
        ConversationAction::Assign(Some("bob".into())),
        ConversationAction::SetStatus(Status::Closed),
        ConversationAction::SetStatus(Status::Open),
        ConversationAction::Transfer { inbox: "b".into() },
    ];
    for a in actions {
        store.conversation_action(c, a.clone()).await?;
        let now = next_change(&mut rx).await?;
        assert!(now > last, "{a:?}");
        last = now;
    }
    // A no-op action and a sync are not changes.
    store
        .conversation_action(c, ConversationAction::Transfer { inbox: "b".into() })
        .await?;
    store.sync_view(&open_view(&["b"])).await?;
    assert!(!rx.has_changed()?);
    assert!(matches!(
        store
            .conversation_action(ConversationId(999), ConversationAction::Assign(None))
            .await,
        Err(StoreError::NotFound(_))
    ));

    let f = folder("bob", "Drafts");
    store.folder_create(&f).await?;
    last = {
        let now = next_change(&mut rx).await?;
        assert!(now > last);
        now
    };
    store
        .folder_append(
            &f,
            b"Subject: x\r\n\r\n".to_vec(),
            folder_summary(""),
            Flags::default(),
            T0,
        )
        .await?;
    assert!(next_change(&mut rx).await? > last);
    store.close().await?;

    // The counter never goes back across a reopen (usable as a MODSEQ).
    let (store, _) = open(dir.path())?;
    assert!(store.change_counter() > last);
    assert_eq!(*store.subscribe().borrow(), store.change_counter());
    store.close().await?;
    Ok(())
}

#[tokio::test]
async fn view_uids_survive_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, _) = open(dir.path())?;
    let both = message(
        T0,
        summary("x@x", "Hi", "c@x", &[], &[]),
        vec![
            super::tests::delivery("a", new_conv()),
            super::tests::delivery("b", new_conv()),
        ],
    );
    let o = store.ingest(both).await?;
    store
        .ingest(simple("a", "m2@x", T0 + 1, "d@x", new_conv()))
        .await?;
    // One message in two inboxes' conversations: two entries of the union view.
    let all = open_view(&["a", "b"]);
    let views = [
        all.clone(),
        open_view(&["a"]),
        TeamView::Closed {
            inboxes: inboxes(&["a", "b"]),
            year: None,
        },
    ];
    let mut before = Vec::new();
    for v in &views {
        before.push(store.sync_view(v).await?);
    }
    assert_eq!(before[0].entries.len(), 3);
    let k = key(&o)?;
    assert_eq!(
        before[0]
            .entries
            .iter()
            .filter(|(_, e)| e.message == k)
            .count(),
        2
    );
    store.close().await?;

    let (store, _) = open(dir.path())?;
    for (v, b) in views.iter().zip(&before) {
        assert_eq!(&store.sync_view(v).await?, b, "{v:?}");
    }
    // Data written before message_convs existed is indexed on open.
    let t = &store.inner.trees;
    t.get(TreeId::MessageConvs).clear()?;
    t.get(TreeId::Meta)
        .remove(keys::meta::MESSAGE_CONVS_BUILT)?;
    store.close().await?;
    let (store, _) = open(dir.path())?;
    assert!(store.message_meta(k)?.ok_or("meta")?.conversation.is_some());
    store.close().await?;
    Ok(())
}

/// The summary IMAP would hand the store for an appended message.
fn folder_summary(message_id: &str) -> MessageSummary {
    super::tests::summary(message_id, "s", "me@x", &[], &[])
}

/// Team views synced incrementally (only the conversations each change touched) hold
/// exactly what a full recomputation finds, with the same UIDs, whatever mix of
/// ingests, status changes, assignments and transfers came in between and however many
/// generations a view lagged behind.
#[tokio::test]
async fn incremental_view_syncs_match_a_full_recompute() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, _) = open(dir.path())?;
    let views = vec![
        open_view(&["a"]),
        open_view(&["a", "b"]),
        TeamView::Assigned {
            inboxes: inboxes(&["a", "b"]),
            assignee: "x".into(),
        },
        TeamView::Unassigned {
            inboxes: inboxes(&["a"]),
        },
        TeamView::Closed {
            inboxes: inboxes(&["a", "b"]),
            year: None,
        },
        TeamView::Trash {
            inboxes: inboxes(&["b"]),
            agent: "alice".into(),
        },
        TeamView::Sent {
            inboxes: inboxes(&["a"]),
        },
    ];
    // xorshift64: a fixed, reproducible sequence without a dependency.
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut convs: Vec<ConversationId> = Vec::new();
    for step in 0..400u64 {
        let pick = |i: u64| convs.get(i as usize % convs.len().max(1)).copied();
        match next(6) {
            0 | 1 if !convs.is_empty() => {
                let c = pick(next(1000)).ok_or("no conversation")?;
                let mut m = simple("a", &format!("m{step}@x"), T0 + step as i64, "c@x", join(c));
                if next(3) == 0 {
                    m.summary.direction = Direction::Out;
                }
                store.ingest(m).await?;
            }
            2 if !convs.is_empty() => {
                let c = pick(next(1000)).ok_or("no conversation")?;
                let status = [Status::Open, Status::Closed, Status::Trash][next(3) as usize];
                store
                    .conversation_action(c, ConversationAction::SetStatus(status))
                    .await?;
            }
            3 if !convs.is_empty() => {
                let c = pick(next(1000)).ok_or("no conversation")?;
                let who = [Some("x"), Some("y"), None][next(3) as usize];
                store
                    .conversation_action(c, ConversationAction::Assign(who.map(Into::into)))
                    .await?;
            }
            4 if !convs.is_empty() => {
                let c = pick(next(1000)).ok_or("no conversation")?;
                let inbox = ["a", "b"][next(2) as usize];
                store
                    .conversation_action(
                        c,
                        ConversationAction::Transfer {
                            inbox: inbox.into(),
                        },
                    )
                    .await?;
            }
            _ => {
                let inbox = ["a", "b"][next(2) as usize];
                let m = simple(
                    inbox,
                    &format!("n{step}@x"),
                    T0 + step as i64,
                    "c@x",
                    new_conv(),
                );
                convs.push(stored(&store.ingest(m).await?, 0).0);
            }
        }
        // Some views are synced often, others lag many generations behind.
        for view in &views {
            if next(4) == 0 {
                store.sync_view(view).await?;
            }
        }
    }
    let mut incremental = Vec::new();
    for view in &views {
        incremental.push(store.sync_view(view).await?);
    }
    store.close().await?;

    // After a restart the change log is empty: a change elsewhere makes every view
    // recompute in full, which must find nothing to add or remove.
    let (store, _) = open(dir.path())?;
    store
        .ingest(simple("z", "elsewhere@x", T0, "c@x", new_conv()))
        .await?;
    for (view, before) in views.iter().zip(&incremental) {
        let full = store.sync_view(view).await?;
        assert_eq!(full.entries, before.entries, "{view:?}");
        assert_eq!(full.uid_next, before.uid_next, "{view:?}");
        assert_eq!(full.uid_validity, before.uid_validity, "{view:?}");
    }
    assert!(
        incremental.iter().all(|s| s.uid_next > 1),
        "every view held something at some point"
    );
    store.close().await?;
    Ok(())
}

/// The flag log tells a session which flags to re-read: exactly the messages a STORE
/// wrote; nothing for ingests and conversation actions; "all" once it no longer
/// reaches back far enough or a change did not say.
#[tokio::test]
async fn flag_log_names_the_messages_whose_flags_changed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (store, _) = open(dir.path())?;
    let o1 = store
        .ingest(simple("a", "m1@x", T0, "c@x", new_conv()))
        .await?;
    let o2 = store
        .ingest(simple("a", "m2@x", T0 + 1, "d@x", new_conv()))
        .await?;
    let (k1, k2) = (key(&o1)?, key(&o2)?);
    let start = store.change_counter();
    assert_eq!(store.flags_changed_since(start), Some(HashSet::new()));

    store
        .store_flags(
            "alice",
            vec![k2],
            FlagOp::Add,
            flags(true, false, false, &[]),
        )
        .await?;
    store
        .conversation_action(
            stored(&o1, 0).0,
            ConversationAction::Assign(Some("x".into())),
        )
        .await?;
    store
        .ingest(simple("a", "m3@x", T0 + 2, "c@x", new_conv()))
        .await?;
    assert_eq!(store.flags_changed_since(start), Some(HashSet::from([k2])));
    // A STORE that changes nothing writes nothing.
    let before = store.change_counter();
    store
        .store_flags(
            "alice",
            vec![k1],
            FlagOp::Remove,
            flags(true, false, false, &[]),
        )
        .await?;
    assert_eq!(store.flags_changed_since(before), Some(HashSet::new()));
    // Folder operations do not say which flags they wrote: not narrowed.
    let f = folder("alice", "Keep");
    store.folder_create(&f).await?;
    store.folder_copy(&f, vec![k1]).await?;
    assert_eq!(store.flags_changed_since(start), None);
    store.close().await?;

    let mut log = FlagLog::default();
    assert_eq!(log.since(7), Some(HashSet::new()));
    for c in 1..=(FlagLog::LEN as u64 + 1) {
        log.push(c, Some(vec![MessageKey(c)]));
    }
    assert_eq!(log.since(0), None, "older than the log");
    let last = FlagLog::LEN as u64 + 1;
    assert_eq!(log.since(last - 1), Some(HashSet::from([MessageKey(last)])));
    assert_eq!(log.since(last), Some(HashSet::new()));
    // A bulk change naming more than MAX_KEYS messages stays unnamed (bounded memory).
    log.push(last + 1, None);
    log.narrow(
        last + 1,
        (0..=FlagLog::MAX_KEYS as u64).map(MessageKey).collect(),
    );
    assert_eq!(log.since(last), None);
    Ok(())
}

/// A large sync writes its entries ahead of its transaction; what a crash leaves of such a
/// write-ahead (entries at or above `uid_next`) is in no mailbox and is overwritten later.
#[tokio::test]
async fn a_large_sync_writes_ahead_and_an_uncommitted_write_ahead_is_ignored() -> TestResult {
    let dir = tempfile::tempdir()?;
    let opts = || StoreOptions {
        view_write_ahead: 2,
        ..StoreOptions::default()
    };
    let (store, _) = Store::open(dir.path(), opts())?;
    let mut keys = Vec::new();
    for i in 0..5 {
        let o = store
            .ingest(simple("a", &format!("w{i}@x"), T0 + i, "c@x", new_conv()))
            .await?;
        keys.push(key(&o)?);
    }
    let view = open_view(&["a"]);
    let first = store.sync_view(&view).await?;
    let expected: Vec<(u32, MessageKey)> = (1..=5).zip(keys.iter().copied()).collect();
    assert_eq!(uids(&first), expected);
    assert_eq!(first.uid_next, 6);
    // A crash between the write-ahead and its transaction: entries past uid_next.
    let stray = first.entries[0].1;
    for uid in [6, 7] {
        store.inner.trees.get(TreeId::UidMap).insert(
            keys::uid_map(first.space, uid),
            &keys::entry_value(&stray)[..],
        )?;
    }
    store.close().await?;
    let (store, _) = Store::open(dir.path(), opts())?;
    let reopened = store.sync_view(&view).await?;
    assert_eq!(
        uids(&reopened),
        expected,
        "nothing past uid_next is in the view"
    );
    let o = store
        .ingest(simple("a", "w5@x", T0 + 9, "c@x", new_conv()))
        .await?;
    let next = store.sync_view(&view).await?;
    let mut with_new = expected.clone();
    with_new.push((6, key(&o)?));
    assert_eq!(uids(&next), with_new, "uid 6 reassigned, 7 still ignored");
    Ok(())
}
