//! Storage faults through the SMTP path: a full disk is a `451`, never a `250` for bytes
//! that are not stored, and the daemon recovers once space returns. The data directory
//! is a small tmpfs mounted for the test (CI runs as root, like the sessions).

use std::{path::Path, process::Command};

use crate::harness::{TestDaemon, simple_message};

/// A mounted tmpfs, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CI runs as root)"
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the filesystem, leaving about `leave` bytes free.
fn fill(dir: &Path, leave: u64) -> std::path::PathBuf {
    let filler = dir.join("filler");
    let free = fs_free(dir);
    let size = free.saturating_sub(leave);
    std::fs::write(&filler, vec![0u8; size as usize]).expect("write filler");
    filler
}

fn fs_free(dir: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .expect("df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df output")
}

#[tokio::test]
async fn full_disk_is_451_and_recovers_when_space_returns() {
    let fs = Tmpfs::mount("64m");
    let data_dir = tempfile::Builder::new().tempdir_in(fs.path()).unwrap();
    let d = TestDaemon::start_in(data_dir, |_| {}).await;
    let mut c = d.smtp().await;
    c.cmd("EHLO client.example", 250).await;
    // Something stored before the disk fills up.
    let first = simple_message("a@customer.example", "before", "before@customer.example");
    assert_eq!(
        c.send_mail("a@customer.example", &["support@example.test"], &first)
            .await
            .0,
        250
    );

    let filler = fill(fs.path(), 64 * 1024);
    let mut big = simple_message(
        "a@customer.example",
        "too big for the disk",
        "big@customer.example",
    );
    big.extend(
        std::iter::repeat_n(
            b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n".as_slice(),
            4096,
        )
        .flatten(),
    );
    let (code, text) = c
        .send_mail("a@customer.example", &["support@example.test"], &big)
        .await;
    assert_eq!(
        code, 451,
        "a message that cannot be stored is temp-failed: {text:?}"
    );
    assert!(text[0].starts_with("451 4.3.0"), "{text:?}");

    // Space returns: the same session goes on and the message is accepted now.
    std::fs::remove_file(filler).unwrap();
    let (code, text) = c
        .send_mail("a@customer.example", &["support@example.test"], &big)
        .await;
    assert_eq!(code, 250, "{text:?}");
    c.cmd("QUIT", 221).await;

    let store = d.handle.store();
    let convs = store.list_conversations().unwrap();
    let subjects: Vec<&str> = convs.iter().map(|c| c.subject.as_str()).collect();
    assert_eq!(subjects, ["before", "too big for the disk"]);
    for conv in &convs {
        for key in store.message_keys(conv.id).unwrap() {
            store
                .read_message(key)
                .expect("every acknowledged message reads back intact");
        }
    }
    // And it all survives a restart on the same (once full) filesystem.
    let dir = d.stop().await;
    let d = TestDaemon::start_in(dir, |_| {}).await;
    assert_eq!(d.handle.store().list_conversations().unwrap().len(), 2);
    d.stop().await;
    drop(fs);
}
