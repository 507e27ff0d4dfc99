//! Backup and restore on real disk: round trips keep conversations, UIDs and bytes, a
//! snapshot is consistent while mail arrives, nothing is overwritten, damaged backups are
//! refused and leave nothing behind.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::backup_format::{MANIFEST, META_EXPORT, SEGMENTS};
use super::blobs;
use super::keys::TreeId;
use super::tests::{T0, TestResult, new_conv, open, simple};
use super::{
    MessageKey, Store, StoreError, StoreOptions, TeamView, finish_backup, restore, verify_backup,
};

fn view() -> TeamView {
    TeamView::Open {
        inboxes: vec!["support".into()],
    }
}

/// Small segments, so a backup spans several.
fn small_segments() -> StoreOptions {
    StoreOptions {
        segment_max_bytes: 300,
        ..StoreOptions::default()
    }
}

async fn ingest(store: &Store, n: usize, tag: &str) -> Result<(), StoreError> {
    for i in 0..n {
        let from = format!("c{i}@{tag}.example");
        let mid = format!("{tag}-{i}@example.com");
        store
            .ingest(simple("support", &mid, T0 + i as i64, &from, new_conv()))
            .await?;
    }
    Ok(())
}

async fn backup(store: &Store, data_dir: &Path, dir: &Path) -> Result<(), StoreError> {
    let snap = store.backup_snapshot(dir).await?;
    finish_backup(data_dir, dir, &snap).map(|_| ())
}

/// Everything a client sees: conversations, the view's UIDVALIDITY and uids, bytes.
async fn state(
    store: &Store,
) -> Result<(String, u32, Vec<(u32, MessageKey)>, Vec<Vec<u8>>), StoreError> {
    let convs = serde_json::to_string(&store.list_conversations()?)
        .map_err(|e| StoreError::Internal(e.to_string()))?;
    let snap = store.sync_view(&view()).await?;
    let uids: Vec<(u32, MessageKey)> = snap.entries.iter().map(|(u, e)| (*u, e.message)).collect();
    let bodies = uids
        .iter()
        .map(|(_, k)| store.read_message(*k))
        .collect::<Result<_, _>>()?;
    Ok((convs, snap.uid_validity, uids, bodies))
}

#[tokio::test]
async fn round_trip_keeps_conversations_uids_and_bytes() -> TestResult {
    let data = tempfile::tempdir()?;
    let out = tempfile::tempdir()?;
    let dir = out.path().join("backup");
    let (store, _) = Store::open(data.path(), small_segments())?;
    ingest(&store, 6, "before").await?;
    let before = state(&store).await?;
    backup(&store, data.path(), &dir).await?;
    // Later mail is not in the backup.
    ingest(&store, 2, "after").await?;
    store.close().await?;

    let manifest = verify_backup(&dir)?;
    assert!(manifest.segments.len() > 1, "{manifest:?}");
    assert_eq!(manifest.conversations, 6);
    let target = out.path().join("restored");
    let report = restore(&dir, &target).await?;
    assert_eq!((report.conversations, report.messages), (6, 6));
    assert!(report.recovery.bad_records.is_empty());

    let (store, recovery) = Store::open(&target, small_segments())?;
    assert!(recovery.bad_records.is_empty(), "{recovery:?}");
    assert_eq!(state(&store).await?, before);
    // The restored store goes on from there: new mail gets the next uid.
    ingest(&store, 1, "later").await?;
    let next = state(&store).await?;
    assert_eq!(next.1, before.1);
    assert_eq!(next.2.len(), 7);
    assert!(next.2[6].0 > before.2[5].0);
    store.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_is_consistent_while_mail_arrives() -> TestResult {
    let data = tempfile::tempdir()?;
    let out = tempfile::tempdir()?;
    let dir = out.path().join("backup");
    let (store, _) = Store::open(data.path(), small_segments())?;
    ingest(&store, 3, "first").await?;
    let mut senders = Vec::new();
    for t in 0..4 {
        let s = store.clone();
        senders.push(tokio::spawn(async move {
            ingest(&s, 10, &format!("racer{t}")).await
        }));
    }
    let snap = store.backup_snapshot(&dir).await?;
    for s in senders {
        s.await??;
    }
    let manifest = finish_backup(data.path(), &dir, &snap)?;
    store.close().await?;
    let report = restore(&dir, &out.path().join("restored")).await?;
    // Exactly the messages committed before the snapshot, each with intact bytes.
    assert_eq!(report.messages, manifest.messages);
    assert_eq!(report.conversations, manifest.conversations);
    assert!(report.recovery.bad_records.is_empty());
    assert_eq!(report.recovery.truncated_tail_bytes, 0);
    Ok(())
}

#[tokio::test]
async fn refuses_to_overwrite() -> TestResult {
    let data = tempfile::tempdir()?;
    let out = tempfile::tempdir()?;
    let (store, _) = open(data.path())?;
    ingest(&store, 1, "x").await?;
    // A backup into a non-empty directory.
    let busy = out.path().join("busy");
    std::fs::create_dir(&busy)?;
    std::fs::write(busy.join("keep"), b"mine")?;
    let refused = store.backup_snapshot(&busy).await;
    assert!(
        matches!(refused, Err(StoreError::AlreadyExists(_))),
        "{refused:?}"
    );
    assert_eq!(std::fs::read_dir(&busy)?.count(), 1);
    // An empty directory is fine.
    let dir = out.path().join("empty");
    std::fs::create_dir(&dir)?;
    backup(&store, data.path(), &dir).await?;
    // Restore into the live data directory: locked.
    let live = restore(&dir, data.path()).await;
    assert!(matches!(live, Err(StoreError::Locked(_))), "{live:?}");
    store.close().await?;
    // Stopped but not empty: refused, untouched.
    let stopped = restore(&dir, data.path()).await;
    assert!(
        matches!(stopped, Err(StoreError::AlreadyExists(_))),
        "{stopped:?}"
    );
    let (store, report) = open(data.path())?;
    assert!(report.bad_records.is_empty());
    assert_eq!(store.stats()?.messages, 1);
    store.close().await?;
    Ok(())
}

#[tokio::test]
async fn damaged_backups_are_refused_and_leave_nothing() -> TestResult {
    let data = tempfile::tempdir()?;
    let out = tempfile::tempdir()?;
    let dir = out.path().join("backup");
    let (store, _) = open(data.path())?;
    ingest(&store, 2, "x").await?;
    backup(&store, data.path(), &dir).await?;
    store.close().await?;
    let target = out.path().join("target");

    // A flipped byte in a segment.
    let seg = blobs::segment_path(&dir.join(SEGMENTS), 0);
    let f = OpenOptions::new().read(true).write(true).open(&seg)?;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, 20)?;
    f.write_all_at(&[b[0] ^ 0x01], 20)?;
    let r = restore(&dir, &target).await;
    assert!(matches!(r, Err(StoreError::Corrupt { .. })), "{r:?}");
    assert!(!target.exists());
    f.write_all_at(&b, 20)?;

    // A flipped byte in the metadata export.
    let meta = dir.join(META_EXPORT);
    let f = OpenOptions::new().read(true).write(true).open(&meta)?;
    f.read_exact_at(&mut b, 12)?;
    f.write_all_at(&[b[0] ^ 0x80], 12)?;
    let r = restore(&dir, &target).await;
    assert!(matches!(r, Err(StoreError::Corrupt { .. })), "{r:?}");
    assert!(!target.exists());
    f.write_all_at(&b, 12)?;

    // No manifest: an unfinished backup.
    std::fs::rename(dir.join(MANIFEST), out.path().join("m"))?;
    let r = restore(&dir, &target).await;
    assert!(matches!(r, Err(StoreError::Corrupt { .. })), "{r:?}");
    std::fs::rename(out.path().join("m"), dir.join(MANIFEST))?;

    // Repaired, it restores into an existing empty directory.
    std::fs::create_dir(&target)?;
    let report = restore(&dir, &target).await?;
    assert_eq!(report.messages, 2);
    Ok(())
}

/// The export's checksum is sled's own: a restore compares them.
#[tokio::test]
async fn export_checksum_matches_sled() -> TestResult {
    let data = tempfile::tempdir()?;
    let out = tempfile::tempdir()?;
    let (store, _) = open(data.path())?;
    ingest(&store, 3, "x").await?;
    let snap = store.backup_snapshot(&out.path().join("b")).await?;
    assert_eq!(snap.meta.sled_checksum, store.inner.db.checksum()?);
    assert!(snap.meta.trees as usize > TreeId::ALL.len());
    store.close().await?;
    Ok(())
}
