//! Tests of the whole load path: TOML and environment in, a typed `Config` or every
//! problem (key, origin, why) out. That the shipped password hashes verify is tested in
//! `auth`, which owns verification.

use super::validate::{check_mailbox, check_password_hash, parse_relay};
use super::*;

const ALICE_HASH: &str = TEST_ALICE_HASH;

fn good_toml() -> String {
    format!(
        r#"
[server]
hostname = "mx.example.test"

[tls]
allow_plaintext_auth = true

[[inbox]]
name = "Support"
addresses = ["Support@Example.test", "help@example.test"]
members = ["alice"]

[[agent]]
login = "alice"
email = "alice@example.test"
password_hash = "{ALICE_HASH}"
"#
    )
}

struct Fixture {
    /// Keeps the directory alive as long as the fixture.
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn write(toml: &str) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("teamgate.toml");
    std::fs::write(&path, toml).expect("write config");
    Fixture { _dir: dir, path }
}

fn load_ok(toml: &str, env: &[(&str, &str)]) -> Config {
    let f = write(toml);
    match load_with_env(&f.path, env.iter().copied()) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

fn load_err(toml: &str, env: &[(&str, &str)]) -> (ConfigErrors, Fixture) {
    let f = write(toml);
    match load_with_env(&f.path, env.iter().copied()) {
        Ok(c) => panic!("expected errors, got {c:?}"),
        Err(e) => (e, f),
    }
}

/// The error for `key` exists, names the file, and its message contains `needle`.
#[track_caller]
fn assert_file_err(errs: &ConfigErrors, f: &Fixture, key: &str, needle: &str) {
    let Some(e) = errs.find(key) else {
        panic!("no error for {key:?} in:\n{errs}")
    };
    assert_eq!(e.origin, ConfigOrigin::File(f.path.clone()), "{e}");
    assert!(
        e.message.contains(needle),
        "{key}: {:?} does not contain {needle:?}",
        e.message
    );
    let line = e.to_string();
    assert!(
        line.starts_with(&format!("{}: {key}: ", f.path.display())),
        "{line}"
    );
}

/// `good_toml()` with `old` replaced by `new` (which must occur).
fn edit(old: &str, new: &str) -> String {
    let t = good_toml();
    assert!(t.contains(old), "{old:?} not in the good config");
    t.replacen(old, new, 1)
}

#[test]
fn good_config_loads_with_defaults() {
    let c = load_ok(&good_toml(), &[]);
    assert_eq!(c.server.hostname, "mx.example.test");
    assert_eq!(c.server.data_dir, PathBuf::from("./data"));
    assert_eq!(c.server.shutdown_grace, Duration::from_secs(20));
    assert_eq!(c.server.tls_handshake_timeout, Duration::from_secs(10));
    assert_eq!(
        c.smtp.listen,
        vec!["127.0.0.1:2525".parse::<SocketAddr>().expect("addr")]
    );
    assert_eq!(c.smtp.max_message_size, 26_214_400);
    assert_eq!(c.smtp.max_recipients, 100);
    assert_eq!(c.smtp.max_connections, 500);
    assert_eq!(c.smtp.timeout, Duration::from_secs(300));
    assert_eq!(c.smtp.data_timeout, Duration::from_secs(600));
    assert_eq!(c.smtp.max_line_length, 4096);
    assert_eq!(c.smtp.max_header_size, 262_144);
    assert_eq!(c.smtp.max_errors, 10);
    assert_eq!(
        c.submission.listen,
        vec!["127.0.0.1:2587".parse::<SocketAddr>().expect("addr")]
    );
    assert_eq!(
        c.imap.listen,
        vec!["127.0.0.1:1143".parse::<SocketAddr>().expect("addr")]
    );
    assert!(c.submission.listen_tls.is_empty() && c.imap.listen_tls.is_empty());
    assert_eq!(c.tls, None);
    assert!(c.allow_plaintext_auth);
    assert_eq!(
        c.inboxes[0].addresses,
        vec!["support@example.test", "help@example.test"]
    );
    assert_eq!(c.agents[0].name, "alice", "name defaults to the login");
    assert!(!c.agents[0].admin);
    assert_eq!(c.outbound.relay, None);
    assert_eq!(c.outbound.dkim, None);
    assert_eq!(c.outbound.retry_schedule.len(), 5);
    assert_eq!(c.outbound.retry_schedule[4], Duration::from_secs(14400));
    assert_eq!(c.filter.spam_threshold, 5.0);
    assert_eq!(c.filter.blocked_extensions.len(), 13);
    assert!(c.workflow.subject_tag);
    assert_eq!(
        c.workflow.notes_address, "notes@mx.example.test",
        "defaults from the hostname"
    );
    assert_eq!(c.workflow.collision_window, Duration::from_secs(600));
    assert_eq!(c.workflow.snippets_dir, PathBuf::from("config/snippets"));
    assert_eq!(c.log.format, LogFormat::Text);
    assert_eq!(c.log.level, "info");
    assert_eq!(c.metrics.listen, None);
    assert!(c.source.is_some());
}

#[test]
fn example_config_file_is_valid() {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/teamgate.toml"));
    let c = match load_with_env(path, std::iter::empty::<(&str, &str)>()) {
        Ok(c) => c,
        Err(e) => panic!("config/teamgate.toml:\n{e}"),
    };
    assert_eq!(c.source.as_deref(), Some(path));
    assert_eq!(c.server.hostname, "mx.example.test");
    assert_eq!(c.server.data_dir, PathBuf::from("./data"));
    assert_eq!(
        c.smtp.listen,
        vec!["127.0.0.1:2525".parse::<SocketAddr>().expect("addr")]
    );
    assert_eq!(
        c.submission.listen,
        vec!["127.0.0.1:2587".parse::<SocketAddr>().expect("addr")]
    );
    assert_eq!(
        c.imap.listen,
        vec!["127.0.0.1:1143".parse::<SocketAddr>().expect("addr")]
    );
    assert_eq!(c.tls, None);
    assert!(c.allow_plaintext_auth);
    assert_eq!(c.inboxes.len(), 1);
    assert_eq!(c.inboxes[0].name, "Support");
    assert_eq!(c.inboxes[0].members, vec!["demo"]);
    let (inbox, _) = c
        .inbox_for_address("support@example.test")
        .expect("support inbox");
    assert_eq!(inbox.name, "Support");
    c.agent("demo").expect("demo agent");
    assert_eq!(c.workflow.notes_address, "notes@mx.example.test");
    assert_eq!(c.log.format, LogFormat::Text);
    assert_eq!(c.metrics.listen, None);
    // Every key of the example is spelled out (SPEC §2 plus the additions).
    let text = std::fs::read_to_string(path).expect("read example");
    for key in [
        "shutdown_grace_secs",
        "tls_handshake_timeout_secs",
        "max_line_length",
        "max_header_size",
        "data_timeout_secs",
        "max_errors",
        "listen_tls",
        "allow_plaintext_auth",
        "dkim_selector",
        "retry_schedule_secs",
        "trust_upstream_spam_headers",
        "collision_window_secs",
        "snippets_dir",
    ] {
        assert!(
            text.contains(key),
            "{key} missing from config/teamgate.toml"
        );
    }
}

#[test]
fn missing_file_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nope.toml");
    let errs = load_with_env(&path, std::iter::empty::<(&str, &str)>()).expect_err("missing file");
    assert_eq!(errs.len(), 1);
    assert_eq!(errs.0[0].origin, ConfigOrigin::File(path.clone()));
    let text = errs.to_string();
    assert!(text.starts_with(&path.display().to_string()), "{text}");
    assert!(text.contains("No such file"), "{text}");
}

#[test]
fn toml_syntax_error_names_file() {
    let (errs, f) = load_err("[server\nhostname = 1", &[]);
    assert_eq!(errs.0[0].origin, ConfigOrigin::File(f.path.clone()));
    assert!(errs.to_string().contains("TOML parse error"), "{errs}");
}

#[test]
fn missing_hostname_is_named() {
    let (errs, f) = load_err(&edit("hostname = \"mx.example.test\"", ""), &[]);
    assert_file_err(&errs, &f, "server.hostname", "missing");
}

#[test]
fn implausible_hostname_is_named() {
    for bad in [
        "mx example.test",
        "-mx.example.test",
        "mx..example.test",
        "192.168.1.1",
        "mx",
    ] {
        let (errs, f) = load_err(&edit("\"mx.example.test\"", &format!("{bad:?}")), &[]);
        assert_file_err(
            &errs,
            &f,
            "server.hostname",
            "not a fully qualified domain name",
        );
    }
}

#[test]
fn unknown_key_is_named() {
    let (errs, f) = load_err(
        &format!("{}\n[smtp]\nmax_mesage_size = 5\n", good_toml()),
        &[],
    );
    assert_file_err(&errs, &f, "smtp.max_mesage_size", "unknown field");
    let (errs, f) = load_err(&format!("{}\n[smpt]\nlisten = []\n", good_toml()), &[]);
    assert_file_err(&errs, &f, "smpt", "unknown field");
    let (errs, f) = load_err(
        &edit(
            "login = \"alice\"",
            "login = \"alice\"\npasword_hash = \"x\"",
        ),
        &[],
    );
    assert_file_err(&errs, &f, "agent[0].pasword_hash", "unknown field");
}

#[test]
fn wrong_type_is_named() {
    let (errs, f) = load_err(
        &format!("{}\n[smtp]\nmax_recipients = \"many\"\n", good_toml()),
        &[],
    );
    assert_file_err(&errs, &f, "smtp.max_recipients", "invalid type");
    let (errs, f) = load_err(
        &format!("{}\n[smtp]\nmax_recipients = -1\n", good_toml()),
        &[],
    );
    assert_file_err(&errs, &f, "smtp.max_recipients", "");
}

#[test]
fn bad_listen_addresses_are_named() {
    let t = format!(
        "{}\n[smtp]\nlisten = [\"127.0.0.1:2525\", \"localhost:25\"]\n[metrics]\nlisten = \"9464\"\n",
        good_toml()
    );
    let (errs, f) = load_err(&t, &[]);
    assert_file_err(&errs, &f, "smtp.listen[1]", "not a socket address");
    assert_file_err(&errs, &f, "metrics.listen", "not a socket address");
    assert!(errs.find("smtp.listen[0]").is_none());
}

#[test]
fn duplicate_listeners_are_named() {
    let t = format!("{}\n[imap]\nlisten = [\"127.0.0.1:2525\"]\n", good_toml());
    let (errs, f) = load_err(&t, &[]);
    assert_file_err(
        &errs,
        &f,
        "imap.listen[0]",
        "already used by smtp.listen[0]",
    );
}

#[test]
fn zero_limits_are_named() {
    let t = edit(
        "hostname = \"mx.example.test\"",
        "hostname = \"mx.example.test\"\nshutdown_grace_secs = 0\ntls_handshake_timeout_secs = 0",
    ) + "\n[smtp]\nmax_message_size = 0\nmax_recipients = 0\nmax_connections = 0\ntimeout_secs = 0\n\
         max_line_length = 0\nmax_header_size = 0\ndata_timeout_secs = 0\nmax_errors = 0\n\
         [workflow]\ncollision_window_secs = 0\n[metrics]\nmax_connections = 0\ntimeout_secs = 0\n";
    let (errs, f) = load_err(&t, &[]);
    for key in [
        "metrics.max_connections",
        "metrics.timeout_secs",
        "smtp.max_message_size",
        "smtp.max_recipients",
        "smtp.max_connections",
        "smtp.timeout_secs",
        "smtp.max_line_length",
        "smtp.max_header_size",
        "smtp.data_timeout_secs",
        "smtp.max_errors",
        "server.shutdown_grace_secs",
        "server.tls_handshake_timeout_secs",
        "workflow.collision_window_secs",
    ] {
        assert_file_err(&errs, &f, key, "greater than 0");
    }
    let (errs, f) = load_err(
        &format!("{}\n[smtp]\nmax_line_length = 512\n", good_toml()),
        &[],
    );
    assert_file_err(&errs, &f, "smtp.max_line_length", "at least 1000");
    let (errs, f) = load_err(
        &format!("{}\n[smtp]\ntimeout_secs = 99999999999\n", good_toml()),
        &[],
    );
    assert_file_err(&errs, &f, "smtp.timeout_secs", "at most");
}

#[test]
fn bad_email_addresses_are_named() {
    let t = edit("\"help@example.test\"", "\"help desk@example.test\"")
        .replacen("alice@example.test", "alice@localhost", 1)
        .replacen(
            "[tls]",
            "[workflow]\nnotes_address = \"<notes>@example.test\"\n[tls]",
            1,
        );
    let (errs, f) = load_err(&t, &[]);
    assert_file_err(&errs, &f, "inbox[0].addresses[1]", "not an email address");
    assert_file_err(&errs, &f, "agent[0].email", "not an email address");
    assert_file_err(&errs, &f, "workflow.notes_address", "not an email address");
    assert!(errs.find("inbox[0].addresses[0]").is_none(), "{errs}");
    for bad in [
        "plain",
        "@example.test",
        "a@b",
        "a..b@example.test",
        "a@[1.2.3]",
        "a@exa mple.test",
    ] {
        assert!(check_mailbox(bad).is_err(), "{bad} accepted");
    }
    for good in [
        "a.b+c@example.test",
        "x@[192.0.2.1]",
        "x@[IPv6:2001:db8::1]",
        "Ünï@bücher.example",
    ] {
        assert!(check_mailbox(good).is_ok(), "{good} rejected");
    }
}

#[test]
fn duplicate_inbox_addresses_and_names_are_named() {
    let t = format!(
        "{}\n[[inbox]]\nname = \"support\"\naddresses = [\"sales@example.test\", \"SUPPORT@example.test\", \"Sales@Example.Test\"]\n",
        good_toml()
    );
    let (errs, f) = load_err(&t, &[]);
    assert_file_err(&errs, &f, "inbox[1].name", "duplicate inbox name");
    assert_file_err(
        &errs,
        &f,
        "inbox[1].addresses[1]",
        "also inbox[0].addresses[0]",
    );
    assert_file_err(
        &errs,
        &f,
        "inbox[1].addresses[2]",
        "also inbox[1].addresses[0]",
    );
    assert!(errs.find("inbox[1].addresses[0]").is_none(), "{errs}");
}

#[test]
fn invalid_inbox_names_are_named() {
    for bad in ["", "Sales/EU", "Tab\there", " Padded", "All*"] {
        let (errs, f) = load_err(&edit("name = \"Support\"", &format!("name = {bad:?}")), &[]);
        assert_file_err(&errs, &f, "inbox[0].name", "must not");
    }
    let (errs, f) = load_err(
        &edit(
            "addresses = [\"Support@Example.test\", \"help@example.test\"]",
            "",
        ),
        &[],
    );
    assert_file_err(&errs, &f, "inbox[0].addresses", "at least one");
}

#[test]
fn agents_are_checked() {
    let t = format!(
        "{}\n[[agent]]\nlogin = \"alice\"\nemail = \"support@example.test\"\npassword_hash = \"{ALICE_HASH}\"\n\
         [[agent]]\nlogin = \"bob\"\nemail = \"bob@example.test\"\npassword_hash = \"hunter2\"\n\
         [[agent]]\nlogin = \"carol\"\nemail = \"carol@example.test\"\n\
         password_hash = \"$pbkdf2-sha256$i=600000$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo\"\n\
         [[agent]]\nlogin = \"dave/x\"\nemail = \"dave@example.test\"\n",
        edit(
            "members = [\"alice\"]",
            "members = [\"alice\", \"zoe\", \"alice\"]"
        )
    );
    let (errs, f) = load_err(&t, &[]);
    assert_file_err(
        &errs,
        &f,
        "inbox[0].members[1]",
        "not the login of any [[agent]]",
    );
    assert_file_err(&errs, &f, "inbox[0].members[2]", "listed twice");
    assert_file_err(&errs, &f, "agent[1].login", "duplicate login");
    assert_file_err(
        &errs,
        &f,
        "agent[1].email",
        "is an address of inbox \"Support\"",
    );
    assert_file_err(
        &errs,
        &f,
        "agent[2].password_hash",
        "not a PHC password hash",
    );
    assert_file_err(&errs, &f, "agent[3].password_hash", "not argon2");
    assert_file_err(&errs, &f, "agent[4].login", "must not contain");
    assert_file_err(&errs, &f, "agent[4].password_hash", "missing");
    assert!(errs.find("agent[0].password_hash").is_none(), "{errs}");
}

#[test]
fn no_inbox_is_an_error() {
    let t = good_toml();
    let start = t.find("[[inbox]]").expect("inbox");
    let end = t.find("[[agent]]").expect("agent");
    let t = format!("{}{}", &t[..start], &t[end..]);
    let (errs, f) = load_err(&t, &[]);
    assert_file_err(&errs, &f, "inbox", "refuse all mail");
}

fn tls_files(dir: &Path) -> (PathBuf, PathBuf) {
    let ck = rcgen::generate_simple_self_signed(vec!["mx.example.test".to_owned()]).expect("rcgen");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).expect("write cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
    (cert, key)
}

fn with_tls(cert: &Path, key: &Path, extra: &str) -> String {
    edit(
        "[tls]\nallow_plaintext_auth = true",
        &format!(
            "[tls]\ncert = {:?}\nkey = {:?}\n{extra}",
            cert.display().to_string(),
            key.display().to_string()
        ),
    )
}

#[test]
fn tls_files_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = tls_files(dir.path());
    let c = load_ok(
        &format!(
            "{}\n[imap]\nlisten_tls = [\"127.0.0.1:1993\"]\n",
            with_tls(&cert, &key, "")
        ),
        &[],
    );
    assert_eq!(
        c.tls,
        Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone()
        })
    );
    assert!(!c.allow_plaintext_auth);
    assert_eq!(c.imap.listen_tls.len(), 1);

    // Swapped: the cert file holds no CERTIFICATE, the key file no private key.
    let (errs, f) = load_err(&with_tls(&key, &cert, ""), &[]);
    assert_file_err(&errs, &f, "tls.cert", "no CERTIFICATE PEM block");
    assert_file_err(&errs, &f, "tls.key", "no private key PEM block");

    // Unreadable: missing file, and a directory.
    let (errs, f) = load_err(&with_tls(&dir.path().join("gone.pem"), dir.path(), ""), &[]);
    assert_file_err(&errs, &f, "tls.cert", "No such file or directory");
    assert_file_err(&errs, &f, "tls.key", "cannot read");
    assert!(
        errs.find("tls.key")
            .is_some_and(|e| e.message.contains("os error")),
        "{errs}"
    );
}

#[test]
fn tls_cert_and_key_go_together() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, _) = tls_files(dir.path());
    let t = edit(
        "[tls]\n",
        &format!("[tls]\ncert = {:?}\n", cert.display().to_string()),
    );
    let (errs, f) = load_err(&t, &[]);
    assert_file_err(&errs, &f, "tls.key", "both or neither");
    // Empty strings mean "no TLS", and then implicit-TLS listeners are an error.
    let t = edit("[tls]\n", "[tls]\ncert = \"\"\nkey = \"\"\n");
    let t = format!("{t}\n[submission]\nlisten_tls = [\"127.0.0.1:2465\"]\n");
    let (errs, f) = load_err(&t, &[]);
    assert_file_err(&errs, &f, "submission.listen_tls", "need [tls]");
    assert!(
        errs.find("tls.cert").is_none() && errs.find("tls.key").is_none(),
        "{errs}"
    );
}

#[test]
fn plaintext_auth_without_tls_is_an_error() {
    let (errs, f) = load_err(
        &edit(
            "allow_plaintext_auth = true",
            "allow_plaintext_auth = false",
        ),
        &[],
    );
    assert_file_err(&errs, &f, "submission.listen", "never log in");
    assert_file_err(&errs, &f, "imap.listen", "never log in");
    let t = edit("allow_plaintext_auth = true", "")
        + "\n[submission]\nlisten = []\n[imap]\nlisten = []\n";
    load_ok(&t, &[]);
}

#[test]
fn auth_cache_and_worker_keys() {
    let c = load_ok(&good_toml(), &[]);
    assert_eq!(c.server.auth_cache_ttl, Duration::from_secs(300));
    assert_eq!(c.server.auth_workers, 0);
    let t = edit(
        "hostname = \"mx.example.test\"",
        "hostname = \"mx.example.test\"\nauth_cache_secs = 0\nauth_workers = 3",
    );
    let c = load_ok(&t, &[]);
    assert_eq!(
        c.server.auth_cache_ttl,
        Duration::ZERO,
        "0 turns the cache off"
    );
    assert_eq!(c.server.auth_workers, 3);
    let t = edit(
        "hostname = \"mx.example.test\"",
        "hostname = \"mx.example.test\"\nauth_cache_secs = 99999999999",
    );
    let (errs, f) = load_err(&t, &[]);
    assert_file_err(&errs, &f, "server.auth_cache_secs", "more than a year");
}

#[test]
fn store_and_search_keys_are_checked() {
    let c = load_ok(&good_toml(), &[]);
    assert_eq!(c.store.cache_bytes, 64 << 20);
    assert!(c.search.index);
    assert_eq!(c.search.memory_bytes, 16 << 20);
    assert_eq!(c.search.commit_interval, Duration::from_secs(1));
    assert_eq!(c.search.busy_cpu_percent, 25);
    let t = format!(
        "{}\n[store]\ncache_mb = 8\n[search]\nindex = false\nindex_memory_mb = 32\ncommit_interval_ms = 250\n",
        good_toml()
    );
    let c = load_ok(&t, &[]);
    assert_eq!(c.store.cache_bytes, 8 << 20);
    assert!(!c.search.index);
    assert_eq!(c.search.memory_bytes, 32 << 20);
    assert_eq!(c.search.commit_interval, Duration::from_millis(250));
    let t = format!(
        "{}\n[store]\ncache_mb = 0\n[search]\nindex_memory_mb = 4\ncommit_interval_ms = 0\nbusy_cpu_percent = 0\n",
        good_toml()
    );
    let (errs, f) = load_err(&t, &[]);
    assert_file_err(&errs, &f, "store.cache_mb", "at least 1");
    assert_file_err(&errs, &f, "search.index_memory_mb", "at least 15");
    assert_file_err(&errs, &f, "search.commit_interval_ms", "greater than 0");
    assert_file_err(&errs, &f, "search.busy_cpu_percent", "from 1 to 100");
    let t = format!(
        "{}\n[search]\nindex_memory_mb = 5000\ncommit_interval_ms = 99999999\n",
        good_toml()
    );
    let (errs, f) = load_err(&t, &[]);
    assert_file_err(&errs, &f, "search.index_memory_mb", "at most 4000");
    assert_file_err(&errs, &f, "search.commit_interval_ms", "more than an hour");
    let t = format!("{}\n[search]\nindex = \"yes\"\n", good_toml());
    let (errs, f) = load_err(&t, &[]);
    assert_file_err(&errs, &f, "search.index", "invalid type");
}

#[test]
fn learning_and_display_name_keys_are_checked() {
    let t = format!(
        "{}\n[filter]\nlearn = true\nlearn_retry_secs = []\ndisplay_name_spoof_score = -1\n",
        good_toml()
    );
    let (errs, f) = load_err(&t, &[]);
    assert_file_err(&errs, &f, "filter.learn", "needs filter.spamd");
    assert_file_err(&errs, &f, "filter.learn_retry_secs", "at least one");
    assert_file_err(&errs, &f, "filter.display_name_spoof_score", "0 or more");
    let t = format!("{}\n[filter]\nlearn_retry_secs = [0]\n", good_toml());
    let (errs, f) = load_err(&t, &[]);
    assert_file_err(&errs, &f, "filter.learn_retry_secs[0]", "greater than 0");

    // Learning is on by default once spamd is configured, and can be turned off.
    let c = load_ok(
        &format!("{}\n[filter]\nspamd = \"127.0.0.1:783\"\n", good_toml()),
        &[],
    );
    assert!(c.filter.learns());
    assert_eq!(c.filter.display_name_spoof_score, 4.0);
    assert_eq!(c.filter.learn_retry.len(), 5);
    let c = load_ok(
        &format!(
            "{}\n[filter]\nspamd = \"127.0.0.1:783\"\nlearn = false\n",
            good_toml()
        ),
        &[],
    );
    assert!(!c.filter.learns());
    assert!(!load_ok(&good_toml(), &[]).filter.learns());
}

#[test]
fn outbound_filter_log_values_are_checked() {
    let t = format!(
        "{}\n[outbound]\nrelay = \"mail.example.test:25\"\nretry_schedule_secs = []\ndkim_selector = \"s1\"\n\
         [filter]\nspamd = \"localhost\"\nclamd = \"clamd.sock\"\nspam_threshold = 0\nblocked_extensions = [\"\"]\n\
         [log]\nformat = \"xml\"\nlevel = \"verbose\"\n",
        good_toml()
    );
    let (errs, f) = load_err(&t, &[]);
    assert_file_err(&errs, &f, "outbound.relay", "smtp://host:port");
    assert_file_err(&errs, &f, "outbound.retry_schedule_secs", "at least one");
    assert_file_err(&errs, &f, "outbound.dkim_key", "go together");
    assert_file_err(&errs, &f, "filter.spamd", "host:port");
    assert_file_err(&errs, &f, "filter.clamd", "unix socket path");
    assert_file_err(&errs, &f, "filter.spam_threshold", "greater than 0");
    assert_file_err(
        &errs,
        &f,
        "filter.blocked_extensions[0]",
        "not a file extension",
    );
    assert_file_err(&errs, &f, "log.format", "neither");
    assert_file_err(&errs, &f, "log.level", "level");

    let t = format!(
        "{}\n[outbound]\nrelay = \"smtp://[::1]:2526\"\n[filter]\nspamd = \"127.0.0.1:783\"\n\
         clamd = \"/run/clamav/clamd.ctl\"\nblocked_extensions = [\".EXE\"]\n\
         [log]\nformat = \"json\"\nlevel = \"warn,teamgate::smtp=debug\"\n[metrics]\nlisten = \"127.0.0.1:9464\"\n",
        good_toml()
    );
    let c = load_ok(&t, &[]);
    assert_eq!(c.outbound.relay, Some(("::1".to_owned(), 2526)));
    assert_eq!(c.filter.spamd.as_deref(), Some("127.0.0.1:783"));
    assert_eq!(
        c.filter.clamd,
        Some(ClamdAddr::Unix(PathBuf::from("/run/clamav/clamd.ctl")))
    );
    assert_eq!(c.filter.blocked_extensions, vec!["exe"]);
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(
        c.metrics.listen,
        Some("127.0.0.1:9464".parse().expect("addr"))
    );
    assert_eq!(
        parse_relay("smtp://relay.example.test"),
        Ok(("relay.example.test".to_owned(), 25))
    );
    assert!(parse_relay("smtp://relay.example.test:0").is_err());
}

#[test]
fn dkim_key_is_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = tls_files(dir.path());
    let t = format!(
        "{}\n[outbound]\ndkim_selector = \"2024\"\ndkim_key = {:?}\n",
        good_toml(),
        key.display().to_string()
    );
    let c = load_ok(&t, &[]);
    assert_eq!(
        c.outbound.dkim,
        Some(DkimConfig {
            selector: "2024".into(),
            key
        })
    );
    let t = format!(
        "{}\n[outbound]\ndkim_selector = \"s 1\"\ndkim_key = {:?}\n",
        good_toml(),
        cert.display().to_string()
    );
    let (errs, f) = load_err(&t, &[]);
    assert_file_err(&errs, &f, "outbound.dkim_key", "no private key");
    assert_file_err(&errs, &f, "outbound.dkim_selector", "DNS label");
}

#[test]
fn all_problems_are_reported_at_once() {
    let t = edit("hostname = \"mx.example.test\"", "hostname = \"\"")
        .replacen("\"help@example.test\"", "\"nope\"", 1)
        .replacen("members = [\"alice\"]", "members = [\"nobody\"]", 1)
        + "\n[smtp]\nmax_message_size = 0\nlisten = [\"x\"]\n[log]\nformat = \"yaml\"\n";
    let (errs, f) = load_err(&t, &[]);
    for key in [
        "server.hostname",
        "inbox[0].addresses[1]",
        "inbox[0].members[0]",
        "smtp.max_message_size",
        "smtp.listen[0]",
        "log.format",
    ] {
        assert_file_err(&errs, &f, key, "");
    }
    assert_eq!(errs.len(), 6, "{errs}");
    let text = errs.to_string();
    assert_eq!(text.lines().count(), 6, "one problem per line:\n{text}");
    assert!(
        text.lines()
            .all(|l| l.starts_with(&f.path.display().to_string())),
        "{text}"
    );
}

#[test]
fn env_overrides_file() {
    let c = load_ok(
        &format!("{}\n[smtp]\nmax_message_size = 5000\n", good_toml()),
        &[
            ("TEAMGATE_SMTP__MAX_MESSAGE_SIZE", "1048576"),
            ("teamgate_filter__spam_threshold", "7.5"),
            ("TEAMGATE_SMTP__LISTEN", "127.0.0.1:2626"),
            (
                "TEAMGATE_IMAP__LISTEN",
                "[\"127.0.0.1:2143\", \"[::1]:2143\"]",
            ),
            ("TEAMGATE_CONFIG", "/etc/teamgate/other.toml"),
            ("OTHER_SMTP__MAX_RECIPIENTS", "1"),
        ],
    );
    assert_eq!(c.smtp.max_message_size, 1_048_576);
    assert_eq!(c.filter.spam_threshold, 7.5);
    assert_eq!(
        c.smtp.listen,
        vec!["127.0.0.1:2626".parse::<SocketAddr>().expect("addr")]
    );
    assert_eq!(c.imap.listen.len(), 2);
    assert_eq!(c.smtp.max_recipients, 100);
}

#[test]
fn env_numeric_string_for_string_field() {
    let c = load_ok(
        &good_toml(),
        &[
            ("TEAMGATE_SERVER__DATA_DIR", "12345"),
            ("TEAMGATE_WORKFLOW__SNIPPETS_DIR", "true"),
        ],
    );
    assert_eq!(c.server.data_dir, PathBuf::from("12345"));
    assert_eq!(c.workflow.snippets_dir, PathBuf::from("true"));
}

#[test]
fn bad_env_value_names_the_variable() {
    let (errs, _f) = load_err(&good_toml(), &[("TEAMGATE_SMTP__MAX_MESSAGE_SIZE", "soon")]);
    let e = errs
        .find("smtp.max_message_size")
        .expect("error for the key");
    assert_eq!(
        e.origin,
        ConfigOrigin::Env("TEAMGATE_SMTP__MAX_MESSAGE_SIZE".into())
    );
    assert!(e.to_string().starts_with(
        "environment variable TEAMGATE_SMTP__MAX_MESSAGE_SIZE: smtp.max_message_size: "
    ));

    // Validation errors name the variable too, down to array elements.
    let (errs, _) = load_err(
        &good_toml(),
        &[
            ("TEAMGATE_SMTP__MAX_RECIPIENTS", "0"),
            (
                "TEAMGATE_INBOX",
                "[{name = \"Sales\", addresses = [\"bad\"], members = [\"alice\"]}]",
            ),
        ],
    );
    let e = errs.find("smtp.max_recipients").expect("max_recipients");
    assert_eq!(
        e.origin,
        ConfigOrigin::Env("TEAMGATE_SMTP__MAX_RECIPIENTS".into())
    );
    let e = errs.find("inbox[0].addresses[0]").expect("inbox address");
    assert_eq!(e.origin, ConfigOrigin::Env("TEAMGATE_INBOX".into()));
    // Values from the file still name the file.
    let (errs, _) = load_err(
        &format!("{}\n[log]\nformat = \"xml\"\n", good_toml()),
        &[("TEAMGATE_SMTP__MAX_RECIPIENTS", "0")],
    );
    assert!(
        matches!(
            errs.find("log.format").map(|e| &e.origin),
            Some(ConfigOrigin::File(_))
        ),
        "{errs}"
    );
    assert!(errs.find("smtp.max_recipients").is_some(), "{errs}");
    // An unknown key from the environment names the variable.
    let (errs, _) = load_err(&good_toml(), &[("TEAMGATE_SMTP__MAX_MESAGE_SIZE", "1")]);
    let e = errs.find("smtp.max_mesage_size").expect("typo from env");
    assert_eq!(
        e.origin,
        ConfigOrigin::Env("TEAMGATE_SMTP__MAX_MESAGE_SIZE".into())
    );
}

#[test]
fn load_from_str_works_without_files() {
    let c = load_from_str(&good_toml(), &[("TEAMGATE_SMTP__MAX_ERRORS", "3")]).expect("valid");
    assert_eq!(c.smtp.max_errors, 3);
    assert_eq!(c.source, None);
    let errs = load_from_str("[log]\nformat = 1\n", &[]).expect_err("invalid");
    assert_eq!(errs.0[0].origin, ConfigOrigin::Inline);
}

#[test]
fn inbox_for_address_folds_case_and_tags() {
    let c = load_ok(&good_toml(), &[]);
    let name = |r: &str| c.inbox_for_address(r).map(|(i, t)| (i.name.clone(), t));
    assert_eq!(name("support@example.test"), Some(("Support".into(), None)));
    assert_eq!(name("SUPPORT@EXAMPLE.TEST"), Some(("Support".into(), None)));
    assert_eq!(name("<Help@example.test>"), Some(("Support".into(), None)));
    assert_eq!(
        name("support+c123@example.test"),
        Some(("Support".into(), Some("c123".into())))
    );
    assert_eq!(
        name("Support+C123@Example.Test"),
        Some(("Support".into(), Some("c123".into())))
    );
    assert_eq!(
        name("support+@example.test"),
        Some(("Support".into(), None))
    );
    assert_eq!(name("sales@example.test"), None);
    assert_eq!(name("support@other.test"), None);
    assert_eq!(name("support"), None);
    assert_eq!(
        c.agent("alice").map(|a| a.email.as_str()),
        Some("alice@example.test")
    );
    assert!(c.agent("Alice").is_none());
    assert!(c.inbox("Support").is_some());
}

#[test]
fn for_tests_config_is_usable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Config::for_tests(dir.path());
    assert_eq!(c.server.data_dir, dir.path());
    assert_eq!(c.smtp.listen, vec![SocketAddr::from(([127, 0, 0, 1], 0))]);
    assert_eq!(c.smtp.timeout, Duration::from_secs(5));
    assert!(c.allow_plaintext_auth);
    assert!(c.inbox_for_address("support+c7@example.test").is_some());
    let alice = c.agent("alice").expect("alice");
    assert!(check_password_hash(&alice.password_hash).is_ok());
}
