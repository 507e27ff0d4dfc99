//! STARTTLS on the inbound port, command injection across the upgrade, and certificate
//! reload without a restart.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use teamgate::config::TlsFiles;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::harness::{STEP, SmtpConn, TestDaemon, simple_message};

struct TestCert {
    der: CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
}

fn make_cert() -> TestCert {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "mx.example.test".into()])
        .expect("rcgen");
    TestCert {
        der: ck.cert.der().clone(),
        cert_pem: ck.cert.pem(),
        key_pem: ck.signing_key.serialize_pem(),
    }
}

fn write_cert(dir: &std::path::Path, cert: &TestCert) -> TlsFiles {
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&files.cert, &cert.cert_pem).unwrap();
    std::fs::write(&files.key, &cert.key_pem).unwrap();
    files
}

fn connector(trusted: &[&TestCert]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in trusted {
        roots.add(c.der.clone()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// Plain connect, EHLO, STARTTLS (with an injected command pipelined behind it), handshake.
async fn starttls(
    d: &TestDaemon,
    connector: &TlsConnector,
) -> (
    SmtpConn<tokio_rustls::client::TlsStream<TcpStream>>,
    Vec<CertificateDer<'static>>,
) {
    let mut c = d.smtp().await;
    let ehlo = c.cmd("EHLO client.example", 250).await;
    assert!(ehlo.iter().any(|l| l.ends_with("STARTTLS")), "{ehlo:?}");
    c.send_raw(b"STARTTLS\r\nNOOP injected before the handshake\r\n")
        .await;
    let r = c.expect(220).await;
    assert!(r[0].starts_with("220 2.0.0"), "{r:?}");
    let tcp = c.io.into_inner();
    let tls = tokio::time::timeout(
        STEP,
        connector.connect(ServerName::try_from("localhost").unwrap(), tcp),
    )
    .await
    .expect("handshake timeout")
    .expect("handshake");
    let certs = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| c.to_vec())
        .unwrap_or_default();
    (SmtpConn::new(tls), certs)
}

#[tokio::test]
async fn starttls_upgrade_drops_pipelined_plaintext_and_resets_the_session() {
    let cert_dir = tempfile::tempdir().unwrap();
    let cert = make_cert();
    let files = write_cert(cert_dir.path(), &cert);
    let d = TestDaemon::start_with(|c| c.tls = Some(files)).await;
    let (mut c, _) = starttls(&d, &connector(&[&cert])).await;
    // The injected NOOP must not have been answered: the next reply is the EHLO's.
    c.send_raw(b"MAIL FROM:<a@customer.example>\r\n").await;
    c.expect(503).await; // the session forgot the plaintext EHLO
    let ehlo = c.cmd("EHLO client.example", 250).await;
    assert!(ehlo[0].starts_with("250-mx.example.test"), "{ehlo:?}");
    assert!(
        !ehlo.iter().any(|l| l.contains("STARTTLS")),
        "no STARTTLS offered inside TLS: {ehlo:?}"
    );
    c.cmd("STARTTLS", 503).await;
    let (code, text) = c
        .send_mail(
            "a@customer.example",
            &["support@example.test"],
            &simple_message("a@customer.example", "over tls", "tls-1@customer.example"),
        )
        .await;
    assert_eq!(code, 250, "{text:?}");
    c.cmd("QUIT", 221).await;
    let store = d.handle.store();
    let convs = store.list_conversations().unwrap();
    let raw = store
        .read_message(store.message_keys(convs[0].id).unwrap()[0])
        .unwrap();
    let head = String::from_utf8_lossy(&raw[..200]).into_owned();
    assert!(head.contains("with ESMTPS"), "{head}");
    d.stop().await;
}

#[tokio::test]
async fn certificate_reload_applies_to_new_handshakes() {
    let cert_dir = tempfile::tempdir().unwrap();
    let first = make_cert();
    let files = write_cert(cert_dir.path(), &first);
    let d = TestDaemon::start_with(|c| c.tls = Some(files.clone())).await;
    let both = connector(&[&first]);
    let (_c, certs) = starttls(&d, &both).await;
    assert_eq!(certs[0], first.der);

    let second = make_cert();
    write_cert(cert_dir.path(), &second);
    let mut config = (*d.handle.config()).clone();
    config.tls = Some(files.clone());
    d.handle.reload(config.clone()).expect("reload");
    let (_c, certs) = starttls(&d, &connector(&[&second])).await;
    assert_eq!(
        certs[0], second.der,
        "new handshakes present the reloaded certificate"
    );

    // A broken certificate file is refused and the current certificate stays.
    std::fs::write(&files.cert, "not a certificate").unwrap();
    assert!(d.handle.reload(config).is_err());
    let (_c, certs) = starttls(&d, &connector(&[&second])).await;
    assert_eq!(certs[0], second.der);
    d.stop().await;
}

#[tokio::test]
async fn silent_client_after_starttls_is_dropped() {
    let cert_dir = tempfile::tempdir().unwrap();
    let cert = make_cert();
    let files = write_cert(cert_dir.path(), &cert);
    let d = TestDaemon::start_with(|c| {
        c.tls = Some(files);
        c.server.tls_handshake_timeout = std::time::Duration::from_millis(300);
    })
    .await;
    let mut c = d.smtp().await;
    c.cmd("EHLO client.example", 250).await;
    c.cmd("STARTTLS", 220).await;
    // Never start the handshake: the server gives up and closes.
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(
        STEP,
        tokio::io::AsyncReadExt::read(c.io.get_mut(), &mut buf),
    )
    .await
    .expect("closed in time");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    d.stop().await;
}

#[tokio::test]
async fn submission_offers_auth_only_inside_tls() {
    let cert_dir = tempfile::tempdir().unwrap();
    let cert = make_cert();
    let files = write_cert(cert_dir.path(), &cert);
    let d = TestDaemon::start_with(|c| {
        c.tls = Some(files);
        c.allow_plaintext_auth = false;
        c.submission.listen_tls = vec!["127.0.0.1:0".parse().unwrap()];
    })
    .await;
    let connector = connector(&[&cert]);
    // 587-style: no AUTH before STARTTLS, AUTH after.
    let mut c = SmtpConn::connect(d.submission_addr()).await;
    let ehlo = c.cmd("EHLO agent.example", 250).await;
    assert!(!ehlo.iter().any(|l| l.contains("AUTH")), "{ehlo:?}");
    c.cmd("AUTH PLAIN AGFsaWNlAGFsaWNlLXBhc3N3b3Jk", 538).await;
    c.cmd("STARTTLS", 220).await;
    let tcp = c.io.into_inner();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("handshake");
    let mut c = SmtpConn::new(tls);
    let ehlo = c.cmd("EHLO agent.example", 250).await;
    assert!(ehlo.iter().any(|l| l.contains("AUTH")), "{ehlo:?}");
    c.cmd("AUTH PLAIN AGFsaWNlAGFsaWNlLXBhc3N3b3Jk", 235).await;
    c.cmd("MAIL FROM:<support@example.test>", 250).await;
    // 465-style: TLS from the first byte.
    let tcp = tokio::net::TcpStream::connect(d.handle.addrs.submission_tls[0])
        .await
        .unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("handshake");
    let mut c = SmtpConn::new(tls);
    c.expect(220).await;
    let ehlo = c.cmd("EHLO agent.example", 250).await;
    assert!(
        ehlo.iter().any(|l| l.contains("AUTH")) && !ehlo.iter().any(|l| l.contains("STARTTLS")),
        "{ehlo:?}"
    );
    c.cmd("AUTH PLAIN AGFsaWNlAGFsaWNlLXBhc3N3b3Jk", 235).await;
    c.cmd("QUIT", 221).await;
    d.stop().await;
}
