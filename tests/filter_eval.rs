//! The filters evaluated as production sees mail (issue 13): every message of every theme
//! of the labelled corpus into one daemon over SMTP, in Date order, with real spamd (local
//! rules, Bayes learning from gestures) and real clamd, and dnsmasq as a DNS server that
//! knows no sender (so SPF/DKIM/DMARC are `none` for everyone, as for most small senders).
//!
//! Production conditions, not tuning: the bounces and auto-replies in the corpus answer
//! mail that, in production, the team would have sent, so before the replay an agent sends
//! each of those messages through submission (same Message-ID). Agents then act on what
//! they see, in order: a spam that reached the inbox is moved to Junk, a ham in Junk is
//! moved out, so spamd learns as it would on a real site.
//!
//! Printed: the spam confusion matrix, the attachment confusion matrix, reports and
//! auto-replies junked, and the lessons sent. Asserted: the goals that do not
//! depend on the corpus' spam mix: every dangerous attachment quarantined, no report on the
//! team's own mail junked.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use mail_parser::{MessageParser, MimeHeaders, PartType};
use teamgate::config::{ClamdAddr, DnsSource};
use teamgate::test_corpus::{Row, envelope_sender, manifest};

use crate::filter_services::{Dns, TEAM, start_clamd, start_spamd_learning};
use crate::harness::{ImapConn, TestDaemon, corpus_as_stored};

/// Bound on waiting for the learner to finish the last lessons.
const LEARN_WAIT: Duration = Duration::from_secs(120);

/// A message's Date header as unix seconds (the parser, not the code under test).
fn date_of(raw: &[u8]) -> Option<i64> {
    MessageParser::default()
        .parse(raw)
        .and_then(|m| m.date().map(|d| d.to_timestamp()))
}

/// The Message-IDs a report or auto-reply answers: its enclosed original's (message/rfc822
/// or text/rfc822-headers), else its In-Reply-To.
fn answered_ids(raw: &[u8]) -> Vec<String> {
    let Some(msg) = MessageParser::default().parse(raw) else {
        return Vec::new();
    };
    let mut ids = Vec::new();
    for part in &msg.parts {
        match &part.body {
            PartType::Message(inner) => ids.extend(inner.message_id().map(str::to_string)),
            PartType::Text(text)
                if part
                    .content_type()
                    .is_some_and(|ct| ct.subtype() == Some("rfc822-headers")) =>
            {
                let headers = MessageParser::default().parse_headers(text.as_bytes());
                ids.extend(
                    headers
                        .as_ref()
                        .and_then(|h| h.message_id())
                        .map(str::to_string),
                );
            }
            _ => {}
        }
    }
    if ids.is_empty() {
        ids.extend(
            msg.in_reply_to()
                .as_text_list()
                .unwrap_or_default()
                .iter()
                .map(|id| id.to_string()),
        );
    }
    ids
}

/// The Return-Path as MAIL FROM; one an MTA would not have accepted as it is written
/// (a comment, no domain) is replaced by a placeholder sender.
fn mail_from(raw: &[u8]) -> String {
    let sender = envelope_sender(raw);
    let plausible = sender.is_empty()
        || (sender.is_ascii()
            && sender.contains('@')
            && !sender.contains(|c: char| c.is_whitespace() || "<>()\",;".contains(c)));
    if plausible {
        sender
    } else {
        "unknown@corpus.invalid".to_string()
    }
}

/// The rule names of a junk reason (`SPAMD (spamd score 6.3 (…): A,B); RULE (…)`).
fn rules_of(reason: &str) -> String {
    reason
        .split("; ")
        .map(|finding| match finding.split_once("): ") {
            Some((head, symbols)) => format!(
                "{} {}",
                head.split(" (").next().unwrap_or(head),
                symbols.trim_end_matches(')')
            ),
            None => finding.split(" (").next().unwrap_or(finding).to_string(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn has_from_and_date(raw: &[u8]) -> bool {
    MessageParser::default()
        .parse(raw)
        .is_some_and(|m| m.from().is_some() && m.date().is_some())
}

fn message_id_of(raw: &[u8]) -> Option<String> {
    MessageParser::default()
        .parse(raw)
        .and_then(|m| m.message_id().map(str::to_string))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arrival {
    Conversation,
    Junk,
    Refused(u16),
}

/// 2×2 counts: (labelled yes, found yes), (yes, no), (no, yes), (no, no).
#[derive(Default)]
struct Matrix {
    tp: u32,
    fn_: u32,
    fp: u32,
    tn: u32,
    missed: Vec<String>,
    wrong: Vec<String>,
}

impl Matrix {
    fn add(&mut self, label: bool, found: bool, path: &str) {
        match (label, found) {
            (true, true) => self.tp += 1,
            (true, false) => {
                self.fn_ += 1;
                self.missed.push(path.to_string());
            }
            (false, true) => {
                self.fp += 1;
                self.wrong.push(path.to_string());
            }
            (false, false) => self.tn += 1,
        }
    }

    fn print(&self, what: &str, yes: &str, no: &str) {
        let recall = f64::from(self.tp) / f64::from((self.tp + self.fn_).max(1));
        let precision = f64::from(self.tp) / f64::from((self.tp + self.fp).max(1));
        println!("{what}:");
        println!("                    labelled {yes:<6} labelled {no}");
        println!("  judged {yes:<10} {:>8} {:>14}", self.tp, self.fp);
        println!("  judged {no:<10} {:>8} {:>14}", self.fn_, self.tn);
        println!("  recall {recall:.3}, precision {precision:.3}");
        for path in &self.missed {
            println!("  missed: {path}");
        }
        for path in &self.wrong {
            println!("  wrongly: {path}");
        }
    }
}

fn quarantined_so_far(d: &TestDaemon) -> f64 {
    d.handle
        .metrics()
        .snapshot()
        .sum("teamgate_quarantined_attachments_total", &[])
}

/// The UIDs in `mailbox` of the message with this Message-ID.
async fn uids_of(imap: &mut ImapConn, mailbox: &str, message_id: &str) -> Vec<String> {
    imap.ok(&format!("SELECT \"{mailbox}\"")).await;
    let found = imap
        .ok(&format!(
            "UID SEARCH HEADER Message-ID \"{}\"",
            message_id.replace(['"', '\\'], "")
        ))
        .await;
    found
        .iter()
        .find_map(|l| l.strip_prefix("* SEARCH"))
        .map(|rest| rest.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// What an agent does on seeing a mistake: a spam in the inbox goes to Junk, a ham in
/// Junk comes out. Returns whether a gesture was made.
async fn correct(imap: &mut ImapConn, row: &Row, message_id: &str, arrival: Arrival) -> bool {
    let (from, to) = match (row.is_spam, arrival) {
        (Some(true), Arrival::Conversation) => ("INBOX", "Junk"),
        (Some(false), Arrival::Junk) => ("Junk", "INBOX"),
        _ => return false,
    };
    let uids = uids_of(imap, from, message_id).await;
    if uids.is_empty() {
        return false;
    }
    imap.ok(&format!("UID MOVE {} {to}", uids.join(","))).await;
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_theme_through_real_spamd_and_clamd_in_date_order() {
    let dns = Dns::start(&[]).await;
    let spamd = start_spamd_learning().await;
    let clamd = start_clamd().await;
    let (spamd_addr, clamd_addr, dns_addr) = (spamd.addr.clone(), clamd.addr.to_string(), dns.addr);
    let d = TestDaemon::start_with(move |c| {
        c.filter.spamd = Some(spamd_addr);
        c.filter.clamd = Some(ClamdAddr::Tcp(clamd_addr));
        c.filter.dns = DnsSource::Server(dns_addr);
    })
    .await;

    let rows: Vec<(Row, Vec<u8>)> = manifest()
        .into_iter()
        .map(|r| {
            let raw = corpus_as_stored(&r.path);
            (r, raw)
        })
        .collect();
    let themes: BTreeSet<&str> = rows.iter().map(|(r, _)| r.theme.as_str()).collect();
    assert!(
        rows.len() >= 300 && themes.len() >= 6,
        "corpus too small: {} rows, themes {themes:?}",
        rows.len()
    );
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&i| date_of(&rows[i].1).unwrap_or(i64::MIN));

    // The team's own mail that the corpus' reports and auto-replies answer.
    let mut sent = BTreeSet::new();
    let mut alice = d.submission_as("alice", "alice-password").await;
    for (row, raw) in &rows {
        if row.auto_kind == "none" || row.auto_kind == "list" || row.auto_kind == "bulk" {
            continue;
        }
        for id in answered_ids(raw) {
            if !sent.insert(id.clone()) {
                continue;
            }
            let mail = format!(
                "From: Support <{TEAM}>\r\nTo: <customer@elsewhere.test>\r\nSubject: Re: your request\r\n\
                 Message-ID: <{id}>\r\nDate: Mon, 01 Jan 2001 00:00:00 +0000\r\n\r\nWe are on it.\r\n"
            );
            let (code, text) = alice
                .send_mail(TEAM, &["customer@elsewhere.test"], mail.as_bytes())
                .await;
            assert_eq!(code, 250, "sending <{id}>: {text:?}");
        }
    }

    let mut imap = d.imap_as("alice", "alice-password").await;
    let mut smtp = d.smtp().await;
    smtp.cmd("EHLO corpus.example", 250).await;
    let mut spam = Matrix::default();
    let mut attachments = Matrix::default();
    let (mut reports_ours, mut reports_ours_junked) = (0u32, Vec::new());
    let (mut reports_other, mut reports_other_junked) = (0u32, 0u32);
    let mut refused = Vec::new();
    // Ham that looks like mail at all (a From and a Date): most parser fixtures do not.
    let (mut real_ham, mut real_ham_junked) = (0u32, 0u32);
    let mut gestures = 0u32;
    for &i in &order {
        let (row, raw) = &rows[i];
        let before = quarantined_so_far(&d);
        let (code, text) = smtp.send_mail(&mail_from(raw), &[TEAM], raw).await;
        let arrival = match code {
            250 if text[0].contains("junk") => Arrival::Junk,
            250 => Arrival::Conversation,
            other => Arrival::Refused(other),
        };
        if let Arrival::Refused(code) = arrival {
            assert!(
                code >= 500,
                "{}: {code} {text:?} (a filter down?)",
                row.path
            );
            refused.push(format!("{} ({})", row.path, text.join(" ")));
            continue;
        }
        let junked = arrival == Arrival::Junk;
        if let Some(label) = row.is_spam {
            let why = if junked {
                let newest = d.handle.store().junk_list().expect("junk list");
                let reason = newest.last().map(|j| j.reason.clone()).unwrap_or_default();
                format!("{} ({})", row.path, rules_of(&reason))
            } else {
                row.path.clone()
            };
            spam.add(label, junked, &why);
            if !label && has_from_and_date(raw) {
                real_ham += 1;
                real_ham_junked += u32::from(junked);
            }
        }
        if let Some(label) = row.dangerous_attachment {
            attachments.add(label, quarantined_so_far(&d) > before, &row.path);
        }
        if row.is_autoreply && row.auto_kind != "list" && row.auto_kind != "bulk" {
            if answered_ids(raw).iter().any(|id| sent.contains(id)) {
                reports_ours += 1;
                if junked {
                    reports_ours_junked.push(row.path.clone());
                }
            } else {
                reports_other += 1;
                reports_other_junked += u32::from(junked);
            }
        }
        if let Some(id) = message_id_of(raw)
            && correct(&mut imap, row, &id, arrival).await
        {
            gestures += 1;
        }
    }

    // The last lessons reach spamd.
    let deadline = Instant::now() + LEARN_WAIT;
    while d.handle.store().learn_pending() > 0 {
        assert!(Instant::now() < deadline, "lessons still queued");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = d.handle.metrics().snapshot();
    let learned = |class: &str| {
        metrics.sum(
            "teamgate_spam_learn_total",
            &[("class", class), ("result", "learned")],
        )
    };

    println!(
        "combined corpus, Date order, {} messages ({} themes), real spamd (local rules + Bayes \
         from gestures) and clamd:",
        rows.len(),
        themes.len()
    );
    spam.print("spam", "spam", "ham");
    attachments.print("dangerous attachments", "danger", "clean");
    println!("ham with a From and a Date header: {real_ham}, junked {real_ham_junked}");
    println!(
        "reports and auto-replies on the team's own mail: {reports_ours}, junked {}; \
         on other mail: {reports_other}, junked {reports_other_junked}",
        reports_ours_junked.len()
    );
    println!(
        "agents' corrections: {gestures}; lessons learned by spamd: {} spam, {} ham",
        learned("spam"),
        learned("ham")
    );
    for r in &refused {
        println!("refused: {r}");
    }

    assert_eq!(
        attachments.fn_, 0,
        "dangerous attachments delivered unquarantined: {:?}",
        attachments.missed
    );
    assert!(attachments.tp > 0, "no dangerous attachment in the corpus?");
    assert!(
        reports_ours > 0 && reports_ours_junked.is_empty(),
        "reports on our own mail junked: {reports_ours_junked:?}"
    );
    assert!(spam.tp + spam.fn_ > 0, "no labelled spam in the corpus?");
    drop((imap, alice, spamd, clamd, dns));
    d.stop().await;
}
