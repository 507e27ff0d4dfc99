//! Dovecot's imaptest scripted compliance suite (`test=DIR`) against the real daemon, in a
//! private folder below `Personal/`, which behaves like a plain mail store. Team views
//! (INBOX and the other gestures) are not plain mailboxes, so the suite does not run there.

use std::{path::Path, process::Stdio, time::Duration};

use tokio::{io::AsyncReadExt, process::Command};

use crate::harness::TestDaemon;

/// Where tests/run.sh (via /work/shared/tools/imaptest/build.sh) installs imaptest.
const IMAPTEST: &str = "/usr/local/bin/imaptest";
const SCRIPTS: &str = "/usr/local/share/imaptest/tests";
/// The whole suite takes a few seconds; a hung command must not hang the test run.
const DEADLINE: Duration = Duration::from_secs(180);

/// imaptest's closing summary (test-exec.c `tests_execute_next`).
#[derive(Debug, Default, PartialEq)]
struct Summary {
    groups: u32,
    failed_groups: u32,
    skipped_groups: u32,
    base_failed: u32,
    base_total: u32,
    ext_failed: u32,
    ext_total: u32,
}

/// `<n> test groups: <f> failed, <s> skipped ...`, `base protocol: <f>/<t> ...` and
/// `extensions: <f>/<t> ...`; `None` if any of the three lines is missing.
fn parse_summary(out: &str) -> Option<Summary> {
    let mut s = Summary::default();
    let (mut groups, mut base, mut ext) = (false, false, false);
    let num = |w: Option<&str>| w.and_then(|w| w.trim_end_matches(',').parse::<u32>().ok());
    for line in out.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if line.contains(" test groups: ") {
            s.groups = num(words.first().copied())?;
            s.failed_groups = num(words.get(3).copied())?;
            s.skipped_groups = num(words.get(5).copied())?;
            groups = true;
        } else if let Some(rest) = line
            .strip_prefix("base protocol: ")
            .or_else(|| line.strip_prefix("extensions: "))
        {
            let (f, t) = rest.split_whitespace().next()?.split_once('/')?;
            let (f, t) = (f.parse().ok()?, t.parse().ok()?);
            if line.starts_with("base") {
                (s.base_failed, s.base_total, base) = (f, t, true);
            } else {
                (s.ext_failed, s.ext_total, ext) = (f, t, true);
            }
        }
    }
    (groups && base && ext).then_some(s)
}

/// Runs the scripted suite against `mailbox`; returns (stdout, stderr). Killed (and reaped)
/// at the deadline, so no imaptest outlives the test.
async fn run_suite(d: &TestDaemon, mailbox: &str) -> (String, String) {
    assert!(
        Path::new(IMAPTEST).is_file() && Path::new(SCRIPTS).is_dir(),
        "imaptest is not installed at {IMAPTEST} with scripts in {SCRIPTS}; run tests/run.sh, which builds it"
    );
    let addr = d.imap_addr();
    let mut child = Command::new(IMAPTEST)
        .env("LD_LIBRARY_PATH", "/usr/lib/dovecot")
        .args([
            format!("host={}", addr.ip()),
            format!("port={}", addr.port()),
            "user=alice".into(),
            "pass=alice-password".into(),
            format!("box={mailbox}"),
            format!("test={SCRIPTS}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start imaptest");
    let (mut out, mut err) = (String::new(), String::new());
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let run = async {
        let (a, b) = tokio::join!(
            stdout.read_to_string(&mut out),
            stderr.read_to_string(&mut err)
        );
        a.and(b).expect("read imaptest output");
        child.wait().await.expect("wait for imaptest")
    };
    let finished = tokio::time::timeout(DEADLINE, run).await;
    if finished.is_err() {
        let _ = child.kill().await;
        panic!("imaptest did not finish within {DEADLINE:?}");
    }
    (out, err)
}

#[test]
fn summary_lines_are_parsed() {
    let out = "71 test groups: 5 failed, 2 skipped due to missing capabilities\n\
               base protocol: 15/457 individual commands failed\n\
               extensions: 3/120 individual commands failed\n";
    assert_eq!(
        parse_summary(out),
        Some(Summary {
            groups: 71,
            failed_groups: 5,
            skipped_groups: 2,
            base_failed: 15,
            base_total: 457,
            ext_failed: 3,
            ext_total: 120,
        })
    );
    assert_eq!(parse_summary("71 test groups: 5 failed, 2 skipped\n"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imaptest_scripted_suite_passes_in_a_personal_folder() {
    let d = TestDaemon::start().await;
    let (out, err) = run_suite(&d, "Personal/imaptest").await;
    print!("{out}");
    eprint!("{err}");
    let summary = parse_summary(&out)
        .unwrap_or_else(|| panic!("no imaptest summary in its output:\n{out}\n{err}"));
    println!("imaptest Personal/imaptest: {summary:?}");
    let errors: Vec<&str> = out
        .lines()
        .chain(err.lines())
        .filter(|l| l.contains("Error:"))
        .collect();
    assert!(errors.is_empty(), "imaptest errors: {errors:#?}");
    assert!(summary.groups > 0 && summary.base_total > 0, "{summary:?}");
    assert_eq!(summary.failed_groups, 0, "failed groups:\n{err}");
    assert_eq!(summary.base_failed, 0, "failed base commands:\n{err}");
    // The extension groups (LIST-EXTENDED, SORT, THREAD, ESEARCH with CONDSTORE, BINARY,
    // MULTIAPPEND, ...) run only when their capabilities are advertised.
    assert_eq!(summary.ext_failed, 0, "failed extension commands:\n{err}");
    assert!(
        summary.ext_total >= 170,
        "extension commands exercised: {summary:?}"
    );
    d.stop().await;
}
