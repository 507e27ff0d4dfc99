//! The mail filters (SPEC §7) against the real programs: SpamAssassin's `spamd`, ClamAV's
//! `clamd` and `dnsmasq` as the loopback DNS server that publishes the SPF, DKIM and DMARC
//! records. Each test starts its own instances on free loopback ports with temp
//! configuration, and stops them (by their process id) when done. A missing program fails
//! the test: tests/run.sh installs them.

use std::{
    net::UdpSocket,
    path::Path,
    time::{Duration, Instant},
};

use crate::filter_services::{
    CLEAN_PDF, Dns, TEAM, b64, eicar, start_clamd, start_spamd, text_message, with_attachments,
    with_message_id,
};
use crate::harness::corpus_for_smtp;
use mail_auth::{
    common::{crypto::Ed25519Key, headers::HeaderWriter},
    dkim::DkimSigner,
};
use mail_parser::{MessageParser, MimeHeaders, PartType};
use teamgate::{
    config::{ClamdAddr, FilterConfig},
    filter::{
        AttachmentHit, FilterError, FilterInput, FilterOutcome, Filters, Resolver, Verdict,
        strip_parts,
    },
};

const HOSTNAME: &str = "mx.example.test";

fn filter_config() -> FilterConfig {
    FilterConfig {
        spamd: None,
        spam_threshold: 5.0,
        clamd: None,
        blocked_extensions: [
            "exe", "scr", "js", "vbs", "bat", "cmd", "com", "jar", "msi", "ps1", "hta", "iso",
            "lnk",
        ]
        .map(String::from)
        .to_vec(),
        trust_upstream_spam_headers: false,
        dns: teamgate::config::DnsSource::Off,
        ..FilterConfig::default()
    }
}

/// Runs the filters on `raw` as if it came from `peer` with `MAIL FROM:<mail_from>`.
async fn check(
    filters: &Filters,
    raw: &[u8],
    peer: &str,
    mail_from: &str,
) -> Result<FilterOutcome, FilterError> {
    let team = vec![TEAM.to_string()];
    let input = FilterInput {
        raw,
        peer_ip: peer.parse().expect("ip"),
        helo: "mail.sender.test",
        mail_from,
        team_addresses: &team,
        hostname: HOSTNAME,
        agents: &[],
        own_mail_report: false,
    };
    filters.check(&input).await
}

fn hits_of(outcome: &FilterOutcome) -> &[AttachmentHit] {
    match &outcome.verdict {
        Verdict::Quarantine { hits } => hits,
        other => panic!("expected quarantine, got {other:?}"),
    }
}

fn is_junk(outcome: &FilterOutcome) -> bool {
    matches!(outcome.verdict, Verdict::Junk { .. })
}

// ---------------------------------------------------------------------------------------
// spamd

#[tokio::test]
async fn spamd_gtube_is_junk_ham_is_not_and_an_outage_temp_fails() {
    let dns = Dns::start(&[]).await;
    let mut spamd = start_spamd().await;
    let mut config = filter_config();
    config.spamd = Some(spamd.addr.clone());
    let filters = Filters::new(&config, dns.resolver());

    let gtube = corpus_for_smtp("spam/asf-spamassassin__gtube.eml");
    let outcome = check(&filters, &gtube, "192.0.2.50", "spammer@spam.test")
        .await
        .expect("spamd answers");
    let Verdict::Junk {
        score,
        reason,
        findings,
        ..
    } = &outcome.verdict
    else {
        panic!("GTUBE not junk: {outcome:?}\n{}", spamd.service.log())
    };
    assert!(*score >= 1000.0, "{score}");
    assert!(reason.contains("GTUBE"), "{reason}");
    assert!(findings.iter().any(|f| f.rule == "SPAMD"), "{findings:?}");

    // Ham from the SpamAssassin public corpus (is_spam=no in the manifest).
    let ham = corpus_for_smtp("threading/sa-corpus__easy-ham-1_00018.6fe.eml");
    let outcome = check(&filters, &ham, "192.0.2.50", "someone@sender.test")
        .await
        .expect("spamd answers");
    assert_eq!(outcome.verdict, Verdict::Accept, "{}", spamd.service.log());

    // Junk wins over quarantine: the attachment hit is kept among the findings.
    let mut spam_with_exe = with_attachments(&[("setup.exe", "application/octet-stream", b"MZ")]);
    let at = spam_with_exe
        .windows(31)
        .position(|w| w == b"Please see the attached files.\r")
        .expect("text part");
    spam_with_exe.splice(
        at..at,
        b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n"
            .iter()
            .copied(),
    );
    let outcome = check(&filters, &spam_with_exe, "192.0.2.50", "spammer@spam.test")
        .await
        .expect("spamd answers");
    let Verdict::Junk { findings, .. } = &outcome.verdict else {
        panic!("not junk: {outcome:?}")
    };
    assert!(
        findings
            .iter()
            .any(|f| f.rule == "ATTACHMENT" && f.detail.contains("setup.exe")),
        "{findings:?}"
    );

    // spamd stops: temp-fail, never let through.
    spamd.service.stop();
    let err = check(&filters, &gtube, "192.0.2.50", "spammer@spam.test")
        .await
        .expect_err("spamd is down");
    assert!(matches!(err, FilterError::SpamdDown(_)), "{err:?}");
    assert_eq!((err.reply().code, err.reply().status), (451, (4, 7, 0)));
    let err = check(&filters, &ham, "192.0.2.50", "someone@sender.test")
        .await
        .expect_err("spamd is down");
    assert!(matches!(err, FilterError::SpamdDown(_)), "{err:?}");

    // spamd is back on the same port: the same filters recover.
    spamd.service.restart();
    spamd.service.wait_tcp(spamd.addr.parse().unwrap()).await;
    let outcome = check(&filters, &gtube, "192.0.2.50", "spammer@spam.test")
        .await
        .expect("spamd answers again");
    assert!(is_junk(&outcome), "{outcome:?}");

    // A spamd that accepts but never answers is down after the timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    config.spamd = Some(silent.local_addr().unwrap().to_string());
    let filters = Filters::new(&config, dns.resolver()).with_timeout(Duration::from_secs(2));
    let started = Instant::now();
    let err = check(&filters, &ham, "192.0.2.50", "someone@sender.test")
        .await
        .expect_err("silent spamd");
    assert!(matches!(err, FilterError::SpamdDown(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

// ---------------------------------------------------------------------------------------
// clamd

#[test]
fn the_signature_database_is_the_eicar_string() {
    let ndb = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clamav/teamgate-test.ndb"),
    )
    .expect("tests/clamav/teamgate-test.ndb");
    let hex = ndb.trim().rsplit(':').next().expect("hex");
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    assert_eq!(bytes, eicar());
}

#[tokio::test]
async fn clamd_quarantines_eicar_accepts_a_clean_pdf_and_an_outage_temp_fails() {
    let dns = Dns::start(&[]).await;
    let mut clamd = start_clamd().await;
    let mut config = filter_config();
    config.clamd = Some(ClamdAddr::Tcp(clamd.addr.to_string()));
    let over_tcp = Filters::new(&config, dns.resolver());
    config.clamd = Some(ClamdAddr::Unix(clamd.socket.clone()));
    let over_unix = Filters::new(&config, dns.resolver());

    let infected = with_attachments(&[
        ("report.pdf", "application/pdf", CLEAN_PDF),
        ("test-file.txt", "text/plain", &eicar()),
    ]);
    let clean = with_attachments(&[("report.pdf", "application/pdf", CLEAN_PDF)]);
    for filters in [&over_tcp, &over_unix] {
        let outcome = check(filters, &infected, "192.0.2.50", "customer@sender.test")
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", clamd.service.log()));
        let hits = hits_of(&outcome);
        assert_eq!(hits.len(), 1, "{hits:?}");
        assert_eq!(hits[0].filename, "test-file.txt");
        // parts[0] is the multipart root, [1] the text, [2] the PDF.
        assert_eq!(hits[0].part_path, vec![3]);
        assert_eq!(
            hits[0].reason,
            "infected: Teamgate.Test.EICAR.UNOFFICIAL (clamd)"
        );

        let outcome = check(filters, &clean, "192.0.2.50", "customer@sender.test")
            .await
            .expect("clamd answers");
        assert_eq!(outcome.verdict, Verdict::Accept);
    }

    // The conversation copy: the virus is gone, the PDF is byte-for-byte the same.
    let outcome = check(&over_tcp, &infected, "192.0.2.50", "customer@sender.test")
        .await
        .expect("clamd answers");
    let stripped = strip_parts(&infected, hits_of(&outcome));
    assert_unchanged_except(&infected, &stripped, &[3]);
    assert!(
        !stripped
            .windows(20)
            .any(|w| w == &b64(&eicar()).as_bytes()[..20])
    );

    // clamd stops: temp-fail; it comes back: the same filters recover.
    clamd.service.stop();
    for filters in [&over_tcp, &over_unix] {
        let err = check(filters, &clean, "192.0.2.50", "customer@sender.test")
            .await
            .expect_err("clamd is down");
        assert!(matches!(err, FilterError::ClamdDown(_)), "{err:?}");
    }
    clamd.service.restart();
    clamd.service.wait_tcp(clamd.addr).await;
    let outcome = check(&over_tcp, &infected, "192.0.2.50", "customer@sender.test")
        .await
        .expect("clamd answers again");
    assert_eq!(hits_of(&outcome).len(), 1);
}

// ---------------------------------------------------------------------------------------
// SPF, DKIM, DMARC

/// Signs `raw` for `domain` with selector `sel`; returns the signed message.
fn dkim_sign(key_pkcs8: &[u8], domain: &str, raw: &[u8]) -> Vec<u8> {
    let key = Ed25519Key::from_pkcs8_der(key_pkcs8).expect("key");
    let signature = DkimSigner::from_key(key)
        .domain(domain)
        .selector("sel")
        .headers(["From", "To", "Subject", "Message-ID", "Date"])
        .sign(raw)
        .expect("sign");
    let mut signed = Vec::new();
    signature.write_header(&mut signed);
    signed.extend_from_slice(raw);
    signed
}

fn dkim_record(key_pkcs8: &[u8]) -> String {
    let key = Ed25519Key::from_pkcs8_der(key_pkcs8).expect("key");
    format!("v=DKIM1; k=ed25519; p={}", b64(&key.public_key()))
}

fn assert_results(outcome: &FilterOutcome, expected: &[&str]) {
    let header = &outcome.authentication_results;
    assert!(
        header.starts_with(&format!("Authentication-Results: {HOSTNAME};")),
        "{header}"
    );
    assert!(
        header.ends_with("\r\n") && !header.ends_with("\r\n\r\n"),
        "{header:?}"
    );
    // The field parses as a header: folded lines only.
    assert!(
        header
            .split("\r\n")
            .skip(1)
            .all(|l| l.is_empty() || l.starts_with('\t')),
        "{header:?}"
    );
    for clause in expected {
        assert!(header.contains(clause), "no {clause:?} in\n{header}");
    }
}

#[tokio::test]
async fn spf_dkim_dmarc_pass_and_fail_with_real_signatures() {
    let sender_key = Ed25519Key::generate_pkcs8().expect("key");
    let team_key = Ed25519Key::generate_pkcs8().expect("key");
    let dns = Dns::start(&[
        ("sender.test", "v=spf1 ip4:192.0.2.10 -all"),
        ("sel._domainkey.sender.test", &dkim_record(&sender_key)),
        ("_dmarc.sender.test", "v=DMARC1; p=reject"),
        ("example.test", "v=spf1 ip4:192.0.2.99 -all"),
        ("sel._domainkey.example.test", &dkim_record(&team_key)),
    ])
    .await;
    let filters = Filters::new(&filter_config(), dns.resolver());

    // Everything passes: the right IP, an intact signature, aligned.
    let signed = dkim_sign(
        &sender_key,
        "sender.test",
        &text_message("alice@sender.test", "pass"),
    );
    let outcome = check(&filters, &signed, "192.0.2.10", "alice@sender.test")
        .await
        .expect("check");
    assert_results(
        &outcome,
        &[
            "spf=pass",
            "smtp.mailfrom=alice@sender.test",
            "dkim=pass header.d=sender.test header.s=sel",
            "dmarc=pass header.from=sender.test policy.dmarc=reject",
        ],
    );
    assert_eq!(outcome.verdict, Verdict::Accept);

    // A forwarder: SPF fails, the intact signature still passes DMARC.
    let outcome = check(&filters, &signed, "203.0.113.5", "alice@sender.test")
        .await
        .expect("check");
    assert_results(&outcome, &["spf=fail", "dkim=pass", "dmarc=pass"]);
    assert_eq!(outcome.verdict, Verdict::Accept);

    // Forged: wrong IP and a signed header changed after signing → DMARC fails,
    // p=reject → Junk.
    let tampered = String::from_utf8(signed.clone())
        .unwrap()
        .replace("Subject: pass", "Subject: urgent payment")
        .into_bytes();
    let outcome = check(&filters, &tampered, "203.0.113.5", "alice@sender.test")
        .await
        .expect("check");
    assert_results(
        &outcome,
        &[
            "spf=fail",
            "dkim=fail (verification failed) header.d=sender.test",
            "dmarc=fail",
            "policy.dmarc=reject",
        ],
    );
    let Verdict::Junk { reason, .. } = &outcome.verdict else {
        panic!("forged mail not junk: {outcome:?}")
    };
    assert!(reason.contains("DMARC_REJECT"), "{reason}");

    // A body changed after signing: mail-auth calls a body-hash mismatch "neutral".
    let mut tampered = signed.clone();
    let at = tampered.len() - "broken.\r\n".len();
    tampered.splice(at.., b"fixed, send money.\r\n".iter().copied());
    let outcome = check(&filters, &tampered, "203.0.113.5", "alice@sender.test")
        .await
        .expect("check");
    assert_results(
        &outcome,
        &["dkim=neutral (body hash did not verify)", "dmarc=fail"],
    );
    assert!(is_junk(&outcome));

    // No signature at all from the wrong IP: dkim=none, still DMARC reject.
    let unsigned = text_message("alice@sender.test", "unsigned");
    let outcome = check(&filters, &unsigned, "203.0.113.5", "alice@sender.test")
        .await
        .expect("check");
    assert_results(&outcome, &["spf=fail", "dkim=none", "dmarc=fail"]);
    assert!(is_junk(&outcome));

    // The null sender is checked by its HELO name (no SPF record there: none).
    let outcome = check(&filters, &signed, "192.0.2.10", "")
        .await
        .expect("check");
    assert_results(
        &outcome,
        &[
            "spf=none",
            "smtp.helo=mail.sender.test",
            "dkim=pass",
            "dmarc=pass",
        ],
    );

    // A team address in From, from outside and unauthenticated: spoofed → Junk, even
    // though example.test publishes no DMARC record.
    let spoof = text_message(TEAM, "spoof");
    let outcome = check(&filters, &spoof, "203.0.113.5", "billing@elsewhere.test")
        .await
        .expect("check");
    assert_results(&outcome, &["dkim=none", "dmarc=none"]);
    let Verdict::Junk { reason, .. } = &outcome.verdict else {
        panic!("spoofed team mail not junk: {outcome:?}")
    };
    assert!(reason.contains("FROM_SPOOFS_TEAM"), "{reason}");

    // The team's own signed mail (e.g. looped back through a relay) is authenticated.
    let own = dkim_sign(&team_key, "example.test", &text_message(TEAM, "own"));
    let outcome = check(&filters, &own, "203.0.113.5", "billing@elsewhere.test")
        .await
        .expect("check");
    assert_results(&outcome, &["dkim=pass header.d=example.test"]);
    assert_eq!(outcome.verdict, Verdict::Accept);
}

#[tokio::test]
async fn dns_down_or_silent_is_temperror_never_a_crash() {
    let sender_key = Ed25519Key::generate_pkcs8().expect("key");
    let signed = dkim_sign(
        &sender_key,
        "sender.test",
        &text_message("alice@sender.test", "dns"),
    );
    let mut dns = Dns::start(&[
        ("sender.test", "v=spf1 ip4:192.0.2.10 -all"),
        ("sel._domainkey.sender.test", &dkim_record(&sender_key)),
        ("_dmarc.sender.test", "v=DMARC1; p=reject"),
    ])
    .await;
    let resolver = dns.resolver();
    dns.service.stop();
    let filters = Filters::new(&filter_config(), resolver).with_timeout(Duration::from_secs(8));

    // The DNS server is gone (nothing listens on its port).
    let started = Instant::now();
    let outcome = check(&filters, &signed, "192.0.2.10", "alice@sender.test")
        .await
        .expect("a DNS outage is no filter error");
    assert_results(
        &outcome,
        &["spf=temperror", "dkim=temperror", "dmarc=temperror"],
    );
    assert_eq!(outcome.verdict, Verdict::Accept, "temperror is not spam");
    assert!(started.elapsed() < Duration::from_secs(20));

    // A server that swallows queries: the checks give up at the timeout.
    let silent = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let resolver = Resolver::name_server(silent.local_addr().unwrap()).expect("resolver");
    let filters = Filters::new(&filter_config(), resolver).with_timeout(Duration::from_secs(2));
    let started = Instant::now();
    let outcome = check(&filters, &signed, "192.0.2.10", "alice@sender.test")
        .await
        .expect("a DNS timeout is no filter error");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_results(
        &outcome,
        &["spf=temperror", "dkim=temperror", "dmarc=temperror"],
    );
    assert_eq!(outcome.verdict, Verdict::Accept);
}

// ---------------------------------------------------------------------------------------
// Attachments by name and type, and the conversation copy

/// A zip archive (stored, no compression) with these file names and contents.
fn zip(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in files {
        let offset = out.len() as u32;
        let crc = crc32fast::hash(data);
        let mut local = Vec::new();
        local.extend_from_slice(b"PK\x03\x04\x14\0\0\0\0\0\0\0\0\0");
        local.extend_from_slice(&crc.to_le_bytes());
        local.extend_from_slice(&(data.len() as u32).to_le_bytes());
        local.extend_from_slice(&(data.len() as u32).to_le_bytes());
        local.extend_from_slice(&(name.len() as u16).to_le_bytes());
        local.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&local);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        central.extend_from_slice(b"PK\x01\x02\x14\0\x14\0\0\0\0\0\0\0\0\0");
        central.extend_from_slice(&crc.to_le_bytes());
        central.extend_from_slice(&(data.len() as u32).to_le_bytes());
        central.extend_from_slice(&(data.len() as u32).to_le_bytes());
        central.extend_from_slice(&(name.len() as u16).to_le_bytes());
        central.extend_from_slice(&[0; 12]);
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(b"PK\x05\x06\0\0\0\0");
    out.extend_from_slice(&(files.len() as u16).to_le_bytes());
    out.extend_from_slice(&(files.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// Every top-level part of `after` but those in `replaced` is byte-identical to `before`'s,
/// and `after` parses with the same number of parts.
fn assert_unchanged_except(before: &[u8], after: &[u8], replaced: &[usize]) {
    let old = MessageParser::default()
        .parse(before)
        .expect("parse before");
    let new = MessageParser::default()
        .parse(after)
        .expect("stripped message parses");
    assert_eq!(old.parts.len(), new.parts.len());
    let bytes = |raw: &[u8], m: &mail_parser::Message<'_>, i: usize| {
        let p = &m.parts[i];
        raw[p.offset_header as usize..p.offset_end as usize].to_vec()
    };
    // The root header block is untouched.
    assert_eq!(
        &before[..old.parts[0].offset_body as usize],
        &after[..new.parts[0].offset_body as usize]
    );
    for i in 1..old.parts.len() {
        if replaced.contains(&i) {
            assert_eq!(
                new.parts[i].content_type().map(|c| c.ctype().to_string()),
                Some("text".to_string())
            );
        } else {
            assert_eq!(
                bytes(before, &old, i),
                bytes(after, &new, i),
                "part {i} changed"
            );
        }
    }
}

#[tokio::test]
async fn blocked_names_archives_and_disguised_executables_are_quarantined_and_stripped() {
    let dns = Dns::start(&[]).await;
    let filters = Filters::new(&filter_config(), dns.resolver());
    let pe = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00";
    let archive = zip(&[
        ("docs/readme.txt", b"hello"),
        ("docs/payload.js", b"alert(1)"),
    ]);
    let harmless = zip(&[("a.txt", b"a"), ("b.pdf", CLEAN_PDF)]);
    let raw = with_attachments(&[
        ("report.pdf", "application/pdf", CLEAN_PDF),
        ("invoice.pdf.exe", "application/pdf", pe),
        ("documents.zip", "application/zip", &archive),
        ("scan.pdf", "application/pdf", pe),
        ("photos.zip", "application/zip", &harmless),
    ]);
    let outcome = check(&filters, &raw, "192.0.2.50", "customer@sender.test")
        .await
        .expect("check");
    let hits = hits_of(&outcome);
    let got: Vec<(Vec<usize>, &str, &str)> = hits
        .iter()
        .map(|h| (h.part_path.clone(), h.filename.as_str(), h.reason.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                vec![3],
                "invoice.pdf.exe",
                "blocked file type .exe behind a double extension .pdf.exe; \
                 Windows executable declared as application/pdf"
            ),
            (
                vec![4],
                "documents.zip",
                "archive contains docs/payload.js: blocked file type .js"
            ),
            (vec![5], "scan.pdf", "Windows executable disguised as .pdf"),
        ]
    );

    let stripped = strip_parts(&raw, hits);
    assert_unchanged_except(&raw, &stripped, &[3, 4, 5]);
    let parsed = MessageParser::default()
        .parse(&stripped[..])
        .expect("parses");
    for (i, name) in [
        (3, "invoice.pdf.exe"),
        (4, "documents.zip"),
        (5, "scan.pdf"),
    ] {
        let PartType::Text(text) = &parsed.parts[i].body else {
            panic!("part {i} is not the notice")
        };
        assert!(text.contains(&format!("\"{name}\" was removed")), "{text}");
        assert!(text.contains("kept in quarantine"), "{text}");
    }
    // Nothing left to quarantine in the conversation copy.
    let outcome = check(&filters, &stripped, "192.0.2.50", "customer@sender.test")
        .await
        .expect("check");
    assert_eq!(outcome.verdict, Verdict::Accept);

    // The corpus' own dangerous-attachment samples do not crash the filters.
    for path in [
        "attachments/asf-spamassassin__macro.eml",
        "attachments/asf-spamassassin__malicemacro.eml",
        "attachments/asf-spamassassin__encrypted.eml",
    ] {
        let raw = corpus_for_smtp(path);
        let outcome = check(&filters, &raw, "192.0.2.50", "spammer@example.com")
            .await
            .expect("check");
        if let Verdict::Quarantine { hits } = &outcome.verdict {
            let stripped = strip_parts(&raw, hits);
            assert!(
                MessageParser::default().parse(&stripped[..]).is_some(),
                "{path}"
            );
        }
    }
}

#[tokio::test]
async fn upstream_spam_headers_count_only_when_trusted() {
    let dns = Dns::start(&[]).await;
    let mut raw = b"X-Spam-Flag: YES\r\nX-Spam-Status: Yes, score=12.3 required=5.0\r\n".to_vec();
    raw.extend_from_slice(&text_message("customer@sender.test", "upstream"));
    let untrusted = Filters::new(&filter_config(), dns.resolver());
    let outcome = check(&untrusted, &raw, "192.0.2.50", "customer@sender.test")
        .await
        .expect("check");
    assert_eq!(outcome.verdict, Verdict::Accept);

    let mut config = filter_config();
    config.trust_upstream_spam_headers = true;
    let trusted = Filters::new(&config, dns.resolver());
    let outcome = check(&trusted, &raw, "192.0.2.50", "customer@sender.test")
        .await
        .expect("check");
    let Verdict::Junk { reason, .. } = &outcome.verdict else {
        panic!("not junk: {outcome:?}")
    };
    assert!(
        reason.contains("UPSTREAM_SPAM (X-Spam-Flag: YES)"),
        "{reason}"
    );
}

/// Every corpus message goes through the local rules without a panic, and wherever
/// something is quarantined (here: most ordinary file types are "blocked") the stripped
/// copy parses again and no longer trips the same rules.
#[tokio::test]
async fn every_corpus_message_filters_and_strips_cleanly() {
    let dns = Dns::start(&[]).await;
    let mut config = filter_config();
    config.blocked_extensions.extend(
        [
            "pdf", "txt", "doc", "docx", "xls", "xlsx", "xlsm", "jpg", "jpeg", "png", "gif", "zip",
            "html", "htm", "csv", "eml", "ics", "vcf", "p7s", "asc", "dat", "bin",
        ]
        .map(String::from),
    );
    let filters = Filters::new(&config, dns.resolver());
    let manifest = std::fs::read_to_string(crate::harness::corpus_dir().join("MANIFEST.tsv"))
        .expect("corpus manifest");
    let (mut messages, mut quarantined) = (0, 0);
    for path in manifest
        .lines()
        .skip(1)
        .filter_map(|l| l.split('\t').next())
    {
        if !path.ends_with(".eml") {
            continue;
        }
        let raw = corpus_for_smtp(path);
        let outcome = check(&filters, &raw, "192.0.2.50", "someone@corpus.test")
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        messages += 1;
        let Verdict::Quarantine { hits } = &outcome.verdict else {
            continue;
        };
        quarantined += 1;
        let stripped = strip_parts(&raw, hits);
        assert!(
            MessageParser::default().parse(&stripped[..]).is_some(),
            "{path}: stripped copy does not parse"
        );
        let again = check(&filters, &stripped, "192.0.2.50", "someone@corpus.test")
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        if let Verdict::Quarantine { hits: left } = &again.verdict {
            let before: Vec<&str> = hits.iter().map(|h| h.filename.as_str()).collect();
            for hit in left {
                assert!(
                    !before.contains(&hit.filename.as_str()) || hit.filename.is_empty(),
                    "{path}: {} still there after stripping",
                    hit.filename
                );
            }
        }
    }
    assert!(messages > 300, "{messages}");
    assert!(quarantined > 20, "{quarantined}");
}

// ---------------------------------------------------------------------------------------
// The whole path: SMTP in → filters → Junk / quarantine / conversation, IMAP and CLI.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_daemon_spam_goes_to_junk_viruses_to_quarantine_and_outages_temp_fail() {
    use teamgate::store::{ConversationId, JunkId, QuarantineId};

    use crate::harness::{TestDaemon, teamgate};

    let mut spamd = start_spamd().await;
    let mut clamd = start_clamd().await;
    let spamd_addr = spamd.addr.clone();
    let clamd_addr = clamd.addr.to_string();
    let d = TestDaemon::start_with(move |c| {
        c.filter.spamd = Some(spamd_addr);
        c.filter.clamd = Some(teamgate::config::ClamdAddr::Tcp(clamd_addr));
    })
    .await;
    let store = d.handle.store().clone();
    let mut c = d.smtp().await;
    c.cmd("EHLO sender.test", 250).await;

    // GTUBE: accepted into Junk, no conversation, no contact.
    let gtube = corpus_for_smtp("spam/asf-spamassassin__gtube.eml");
    let (code, text) = c.send_mail("spammer@spam.test", &[TEAM], &gtube).await;
    assert_eq!(code, 250, "{text:?}");
    assert!(text[0].contains("junk"), "{text:?}");
    let junk = store.junk_list().unwrap();
    assert_eq!(junk.len(), 1, "{junk:?}");
    assert!(
        junk[0].reason.contains("SPAMD") && junk[0].score >= 1000.0,
        "{:?}",
        junk[0]
    );
    assert!(store.list_conversations().unwrap().is_empty());
    assert!(store.list_contacts().unwrap().is_empty());

    // EICAR next to a clean PDF: the conversation gets a notice instead of the virus, the
    // PDF stays; the original is kept whole in quarantine.
    let mail = with_message_id(
        with_attachments(&[
            ("report.pdf", "application/pdf", CLEAN_PDF),
            ("invoice.txt", "text/plain", &eicar()),
        ]),
        "virus1@sender.test",
    );
    let (code, text) = c.send_mail("customer@sender.test", &[TEAM], &mail).await;
    assert_eq!(code, 250, "{text:?}");
    let quarantine = store.quarantine_list().unwrap();
    assert_eq!(quarantine.len(), 1, "{quarantine:?}");
    assert_eq!(quarantine[0].filename, "invoice.txt");
    assert!(
        quarantine[0].reason.contains("EICAR"),
        "{:?}",
        quarantine[0]
    );
    let conv = quarantine[0].conversation.expect("in a conversation");
    let keys = store.message_keys(conv).unwrap();
    let stripped = store.read_message(keys[0]).unwrap();
    assert!(
        !String::from_utf8_lossy(&stripped).contains("WDVPIVAlQEFQ"),
        "virus gone"
    );
    assert!(
        String::from_utf8_lossy(&stripped).contains("invoice.txt"),
        "notice names the file"
    );
    let item = store.quarantine_item(quarantine[0].id).unwrap().unwrap();
    assert!(
        store.read_message(item.original).unwrap().ends_with(&mail),
        "original kept whole"
    );
    let detail = store.conversation(conv).unwrap().unwrap();
    let atts = &detail.messages[0].attachments;
    assert!(
        atts.iter()
            .any(|a| a.name == "invoice.txt" && a.quarantined),
        "{atts:?}"
    );
    assert!(
        atts.iter()
            .any(|a| a.name == "report.pdf" && !a.quarantined),
        "{atts:?}"
    );

    // The CLI lists and releases both (through the control socket).
    let config = d.data_dir.path().join("cli.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nhostname = \"mx.example.test\"\ndata_dir = \"{}\"\n[submission]\nlisten = []\n[imap]\nlisten = []\n[filter]\ndns_server = \"none\"\n[[inbox]]\nname = \"Support\"\naddresses = [\"{TEAM}\"]\nmembers = []\n",
            d.data_dir.path().display()
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let (code, out, err) = teamgate(&["junk", "list", "--json", "--config", cfg]);
    assert_eq!(code, 0, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
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
        assert!(
            listed[0].get(field).is_some(),
            "junk list lacks {field}: {listed}"
        );
    }
    let (code, out, err) = teamgate(&["quarantine", "list", "--json", "--config", cfg]);
    assert_eq!(code, 0, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    for field in [
        "id",
        "message_id",
        "conversation",
        "filename",
        "reason",
        "at",
    ] {
        assert!(
            listed[0].get(field).is_some(),
            "quarantine list lacks {field}: {listed}"
        );
    }
    let qid = quarantine[0].id.0.to_string();
    let (code, out, err) = teamgate(&["quarantine", "show", &qid, "--config", cfg]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("invoice.txt"), "{out}");
    // An IMAP client watching the inbox sees the released revision replace the stripped one.
    let mut imap = d.imap_as("alice", "alice-password").await;
    imap.ok("SELECT INBOX").await;
    let (code, _, err) = teamgate(&["quarantine", "release", &qid, "--config", cfg]);
    assert_eq!(code, 0, "{err}");
    let noop = imap.ok("NOOP").await;
    assert!(
        noop.iter().any(|l| l == "* 1 EXPUNGE") && noop.iter().any(|l| l == "* 1 EXISTS"),
        "{noop:?}"
    );
    let keys = store.message_keys(conv).unwrap();
    assert!(
        store.read_message(keys[0]).unwrap().ends_with(&mail),
        "the original is back"
    );
    assert_eq!(
        teamgate(&["quarantine", "release", &qid, "--config", cfg]).0,
        2,
        "released once"
    );
    // "Not spam" from Junk: threaded like any mail.
    let (code, _, err) = teamgate(&[
        "junk",
        "release",
        &junk[0].id.0.to_string(),
        "--config",
        cfg,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(store.junk_list().unwrap().is_empty());
    assert_eq!(store.list_conversations().unwrap().len(), 2);
    let _ = (JunkId(0), QuarantineId(0), ConversationId(0));

    // A configured filter that is down: 451 4.7.0, nothing stored, then recovery.
    spamd.service.stop();
    let ham = with_message_id(with_attachments(&[]), "ham1@sender.test");
    let (code, text) = c.send_mail("customer@sender.test", &[TEAM], &ham).await;
    assert_eq!(code, 451, "{text:?}");
    assert!(text[0].starts_with("451 4.7.0"), "{text:?}");
    spamd.service.restart();
    spamd.service.wait_tcp(spamd.addr.parse().unwrap()).await;
    let (code, text) = c.send_mail("customer@sender.test", &[TEAM], &ham).await;
    assert_eq!(code, 250, "{text:?}");
    clamd.service.stop();
    let (code, text) = c
        .send_mail(
            "customer@sender.test",
            &[TEAM],
            &with_message_id(mail.clone(), "virus2@sender.test"),
        )
        .await;
    assert_eq!(code, 451, "clamd down: {text:?}");
    // The ham joined the customer's conversation (same subject); the refused one is nowhere.
    let messages: usize = store
        .list_conversations()
        .unwrap()
        .iter()
        .map(|c| c.message_ids.len())
        .sum();
    assert_eq!(messages, 3);
    assert!(store.quarantine_list().unwrap().len() == 1);
    d.stop().await;
}

#[tokio::test]
async fn imap_junk_gestures_mark_and_release() {
    use crate::harness::TestDaemon;
    let d = TestDaemon::start().await;
    let mut c = d.smtp().await;
    c.cmd("EHLO sender.test", 250).await;
    let mail = with_message_id(with_attachments(&[]), "j1@sender.test");
    assert_eq!(
        c.send_mail("customer@sender.test", &[TEAM], &mail).await.0,
        250
    );
    let store = d.handle.store().clone();
    let conv = store.list_conversations().unwrap()[0].id;
    let mut imap = d.imap_as("alice", "alice-password").await;
    imap.ok("SELECT INBOX").await;
    // Move to Junk = spam: out of the inbox, into Junk only (not the trash, not the list).
    let moved = imap.ok("MOVE 1 Junk").await;
    assert!(moved.iter().any(|l| l == "* 1 EXPUNGE"), "{moved:?}");
    assert_eq!(store.junk_list().unwrap().len(), 1);
    assert!(store.conversation_info(conv).unwrap().unwrap().junk);
    assert!(store.list_conversations().unwrap().is_empty());
    let junk = imap.ok("SELECT Junk").await;
    assert!(junk.iter().any(|l| l == "* 1 EXISTS"), "{junk:?}");
    // Move out of Junk = not spam: threaded normally (back into its conversation).
    let released = imap.ok("MOVE 1 INBOX").await;
    assert!(
        released.iter().any(|l| l.contains("COPYUID")),
        "{released:?}"
    );
    assert!(store.junk_list().unwrap().is_empty());
    let inbox = imap.ok("SELECT INBOX").await;
    assert!(inbox.iter().any(|l| l == "* 1 EXISTS"), "{inbox:?}");
    d.stop().await;
}
