//! `teamgate backup DIR` / `teamgate restore DIR` (SPEC §1) with the real binary: an
//! online backup through the control socket of a running daemon, an offline one, and a
//! restore that a daemon started on the restored directory serves exactly as before
//! (conversations, UIDVALIDITY, UIDs: IMAP clients download nothing again).

use std::path::{Path, PathBuf};

use crate::harness::{ImapConn, TestDaemon, simple_message, teamgate};

/// A CLI config for the data directory `data_dir`, written into `dir` (never into the
/// data directory itself: a restore needs that empty).
fn cli_config(dir: &Path, data_dir: &Path) -> PathBuf {
    let config = dir.join("cli.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nhostname = \"mx.example.test\"\ndata_dir = \"{}\"\n[submission]\nlisten = []\n[imap]\nlisten = []\n[filter]\ndns_server = \"none\"\n[[inbox]]\nname = \"Support\"\naddresses = [\"support@example.test\"]\nmembers = []\n",
            data_dir.display()
        ),
    )
    .unwrap();
    config
}

async fn deliver(d: &TestDaemon, id: &str) {
    let mut c = d.smtp().await;
    c.cmd("EHLO client.example", 250).await;
    let from = format!("{id}@customer.example");
    let msg = simple_message(&from, &format!("Question {id}"), &from);
    let (code, text) = c.send_mail(&from, &["support@example.test"], &msg).await;
    assert_eq!(code, 250, "{text:?}");
    c.cmd("QUIT", 221).await;
}

/// UIDVALIDITY and the uids of INBOX, as a client sees them after SELECT.
async fn inbox_uids(c: &mut ImapConn) -> (u32, Vec<u32>) {
    let select = c.ok("SELECT INBOX").await;
    let validity = select
        .iter()
        .find_map(|l| l.split("[UIDVALIDITY ").nth(1))
        .and_then(|t| t.split(']').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no UIDVALIDITY in {select:?}"));
    let fetch = c.ok("UID FETCH 1:* (UID)").await;
    let uids = fetch
        .iter()
        .filter_map(|l| l.split("UID ").nth(1))
        .filter_map(|t| t.trim_end_matches([')', '\r', '\n']).parse().ok())
        .collect();
    (validity, uids)
}

fn conversations(cfg: &str) -> serde_json::Value {
    let (code, out, err) = teamgate(&["conversations", "list", "--json", "--config", cfg]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().next().is_none()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_backup_restores_conversations_uidvalidity_and_uids() {
    let d = TestDaemon::start().await;
    let work = tempfile::tempdir().unwrap();
    let live_cfg = cli_config(work.path(), d.data_dir.path());
    let live_cfg = live_cfg.to_str().unwrap();
    for id in ["b1", "b2", "b3"] {
        deliver(&d, id).await;
    }
    let mut alice = d.imap_as("alice", "alice-password").await;
    let (validity, uids) = inbox_uids(&mut alice).await;
    assert_eq!(uids.len(), 3, "{uids:?}");
    let before = conversations(live_cfg);
    assert_eq!(before.as_array().unwrap().len(), 3);

    // Through the control socket of the running daemon.
    let backup = work.path().join("backup");
    let backup_arg = backup.to_str().unwrap();
    let (code, out, err) = teamgate(&["backup", backup_arg, "--json", "--config", live_cfg]);
    assert_eq!(code, 0, "{err}");
    let manifest: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(manifest["conversations"], 3, "{manifest}");
    assert_eq!(manifest["format"], "teamgate-backup");
    assert!(backup.join("manifest.json").is_file());
    assert!(backup.join("meta.export").is_file());

    // Mail after the backup is not in it.
    deliver(&d, "after").await;
    assert_eq!(conversations(live_cfg).as_array().unwrap().len(), 4);

    // A backup never overwrites: the same directory again is refused.
    let (code, _, err) = teamgate(&["backup", backup_arg, "--config", live_cfg]);
    assert_ne!(code, 0);
    assert!(err.contains("not empty"), "{err}");
    // Nor does a restore into the live data directory.
    let (code, _, err) = teamgate(&["restore", backup_arg, "--config", live_cfg]);
    assert_ne!(code, 0);
    assert!(
        err.contains("running teamgate daemon") && err.contains("live data directory"),
        "{err}"
    );
    assert_eq!(conversations(live_cfg).as_array().unwrap().len(), 4);

    alice.ok("LOGOUT").await;
    let old_data = d.stop().await;
    // Stopped, but not empty: still refused, and untouched.
    let (code, _, err) = teamgate(&["restore", backup_arg, "--config", live_cfg]);
    assert_ne!(code, 0);
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(conversations(live_cfg).as_array().unwrap().len(), 4);
    drop(old_data);

    // Into a fresh data directory.
    let fresh = tempfile::tempdir().unwrap();
    let cfg_dir = tempfile::tempdir().unwrap();
    let fresh_cfg = cli_config(cfg_dir.path(), fresh.path());
    let fresh_cfg = fresh_cfg.to_str().unwrap();
    let (code, out, err) = teamgate(&["restore", backup_arg, "--json", "--config", fresh_cfg]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["conversations"], 3, "{report}");
    assert_eq!(report["recovery"]["bad_records"], serde_json::json!([]));

    let d = TestDaemon::start_in(fresh, |_| {}).await;
    assert_eq!(conversations(fresh_cfg), before);
    let mut alice = d.imap_as("alice", "alice-password").await;
    assert_eq!(inbox_uids(&mut alice).await, (validity, uids.clone()));
    alice.ok("LOGOUT").await;
    // The restored daemon goes on from there: new mail gets a later uid, same UIDVALIDITY.
    deliver(&d, "later").await;
    let mut alice = d.imap_as("alice", "alice-password").await;
    let (again, more) = inbox_uids(&mut alice).await;
    assert_eq!(again, validity);
    assert_eq!(more.len(), 4);
    assert!(more[3] > uids[2], "{more:?}");
    alice.ok("LOGOUT").await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_backup_and_a_damaged_backup_is_refused() {
    let d = TestDaemon::start().await;
    let work = tempfile::tempdir().unwrap();
    let cfg = cli_config(work.path(), d.data_dir.path());
    let cfg = cfg.to_str().unwrap();
    deliver(&d, "o1").await;
    deliver(&d, "o2").await;
    let data = d.stop().await;

    // No daemon: the CLI opens the data directory itself; human output.
    let backup = work.path().join("backup");
    let backup_arg = backup.to_str().unwrap();
    let (code, out, err) = teamgate(&["backup", backup_arg, "--config", cfg]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 conversations"), "{out}");
    drop(data);

    // One flipped byte in a segment: restore refuses and writes nothing.
    let seg = backup.join("segments/00000000.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[40] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let cfg_dir = tempfile::tempdir().unwrap();
    let fresh_cfg = cli_config(cfg_dir.path(), fresh.path());
    let fresh_cfg = fresh_cfg.to_str().unwrap();
    let (code, out, err) = teamgate(&["restore", backup_arg, "--config", fresh_cfg]);
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("00000000.seg") && err.contains("crc32"),
        "{err}"
    );
    assert!(is_empty_dir(fresh.path()));

    // Repaired, the same backup restores (human output).
    bytes[40] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();
    let (code, out, err) = teamgate(&["restore", backup_arg, "--config", fresh_cfg]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 conversations"), "{out}");
    assert!(out.contains("no bad records"), "{out}");
    assert_eq!(conversations(fresh_cfg).as_array().unwrap().len(), 2);
}
