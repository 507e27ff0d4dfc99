//! Threading evaluated as production sees mail (issue 12): every theme of the labelled
//! corpus into one daemon over SMTP, in Date order, in reverse, and in orders shuffled
//! from fixed, printed seeds (`TEAMGATE_EVAL_SEED` tries another). Pairwise precision and
//! recall over every labelled message, and forwards credited to their original sender.

use std::collections::BTreeMap;

use teamgate::store::ConversationId;
use teamgate::test_corpus::{Row, manifest};

use crate::harness::{TestDaemon, conversation_number, corpus_as_stored};

/// A message's Date header as unix seconds, read with the parser, not the code under test.
fn date_of(raw: &[u8]) -> Option<i64> {
    mail_parser::MessageParser::default()
        .parse(raw)
        .and_then(|m| m.date().map(|d| d.to_timestamp()))
}

/// What one run measured.
struct Figures {
    precision: f64,
    recall: f64,
    forwards_right: usize,
    forwards_labelled: usize,
    /// Labels split over conversations and conversations merging labels, for the log.
    problems: Vec<String>,
}

/// Delivers `rows` in this order into a fresh daemon and scores the grouping.
async fn evaluate(rows: &[(Row, Vec<u8>)], order: &[usize]) -> Figures {
    let d = TestDaemon::start().await;
    let mut c = d.smtp().await;
    c.cmd("EHLO corpus.example", 250).await;
    let mut assigned: Vec<(&Row, u64)> = Vec::new();
    for &i in order {
        let (row, raw) = &rows[i];
        // The forwards theme reached us from a colleague's mailbox; the rest directly.
        let envelope = if row.theme == "forwards" {
            "forwarder@corpus.example"
        } else {
            "sender@corpus.example"
        };
        let (code, text) = c.send_mail(envelope, &["support@example.test"], raw).await;
        assert_eq!(code, 250, "{} refused: {text:?}", row.path);
        let conv = conversation_number(&text)
            .unwrap_or_else(|| panic!("{}: no conversation in {text:?}", row.path));
        assigned.push((row, conv));
    }
    let (mut tp, mut fp, mut fn_) = (0u64, 0u64, 0u64);
    for (i, (a, ca)) in assigned.iter().enumerate() {
        for (b, cb) in &assigned[i + 1..] {
            match (a.thread_key == b.thread_key, ca == cb) {
                (true, true) => tp += 1,
                (false, true) => fp += 1,
                (true, false) => fn_ += 1,
                (false, false) => {}
            }
        }
    }
    let mut convs_of: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let mut labels_of: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
    for (row, conv) in &assigned {
        convs_of.entry(&row.thread_key).or_default().push(*conv);
        labels_of.entry(*conv).or_default().push(&row.thread_key);
    }
    let mut problems = Vec::new();
    for (label, mut convs) in convs_of {
        convs.sort_unstable();
        convs.dedup();
        if convs.len() > 1 {
            problems.push(format!("{label} split over {convs:?}"));
        }
    }
    for (conv, mut labels) in labels_of {
        labels.sort_unstable();
        labels.dedup();
        if labels.len() > 1 {
            // Why each message is there, so a failure explains itself.
            let why: Vec<String> = d
                .handle
                .store()
                .conversation(ConversationId(conv))
                .expect("read conversation")
                .map(|c| {
                    c.messages
                        .iter()
                        .map(|m| format!("{} by {:?}", m.message_id, m.threaded_by))
                        .collect()
                })
                .unwrap_or_default();
            problems.push(format!("#{conv} merges {labels:?}: {why:#?}"));
        }
    }
    let (mut forwards_right, mut forwards_labelled) = (0, 0);
    for (row, conv) in &assigned {
        if row.theme != "forwards" || row.original_sender.is_empty() {
            continue;
        }
        forwards_labelled += 1;
        let detail = d
            .handle
            .store()
            .conversation(ConversationId(*conv))
            .expect("read conversation")
            .expect("conversation exists");
        let want = row.original_sender.to_ascii_lowercase();
        if detail.conversation.contact.as_deref() == Some(want.as_str()) {
            forwards_right += 1;
        } else {
            problems.push(format!(
                "forward {}: credited to {:?}, labelled {want}",
                row.path, detail.conversation.contact
            ));
        }
    }
    d.stop().await;
    let ratio = |a: u64, b: u64| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    Figures {
        precision: ratio(tp, tp + fp),
        recall: ratio(tp, tp + fn_),
        forwards_right,
        forwards_labelled,
        problems,
    }
}

/// Every labelled message of every theme, with its bytes.
fn labelled() -> Vec<(Row, Vec<u8>)> {
    let rows: Vec<(Row, Vec<u8>)> = manifest()
        .into_iter()
        .filter(|r| !r.thread_key.is_empty())
        .map(|r| {
            let raw = corpus_as_stored(&r.path);
            (r, raw)
        })
        .collect();
    let themes: std::collections::BTreeSet<&str> =
        rows.iter().map(|(r, _)| r.theme.as_str()).collect();
    assert!(
        rows.len() >= 300 && themes.len() >= 6,
        "corpus too small: {} rows, themes {themes:?}",
        rows.len()
    );
    rows
}

/// Production order: by Date header; messages without one keep their manifest place
/// among equals (a stable sort).
fn date_order(rows: &[(Row, Vec<u8>)]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&i| date_of(&rows[i].1).unwrap_or(i64::MIN));
    order
}

fn report(name: &str, f: &Figures) {
    println!(
        "combined corpus, {name}: precision {:.3} recall {:.3} forwards {}/{}",
        f.precision, f.recall, f.forwards_right, f.forwards_labelled
    );
    for p in &f.problems {
        println!("  {name}: {p}");
    }
}

fn assert_forwards(f: &Figures) {
    assert!(
        f.forwards_labelled >= 25 && f.forwards_right * 100 >= f.forwards_labelled * 95,
        "forwards {}/{}",
        f.forwards_right,
        f.forwards_labelled
    );
}

#[tokio::test]
async fn every_theme_in_date_order() {
    let rows = labelled();
    let f = evaluate(&rows, &date_order(&rows)).await;
    report("Date order", &f);
    assert!(
        f.precision >= 0.99 && f.recall >= 0.97,
        "precision {:.3} recall {:.3}",
        f.precision,
        f.recall
    );
    assert_forwards(&f);
}

/// Every reply before its parent: two replies that name only the parent start two
/// conversations the parent cannot join both of, so recall is held to what was measured.
#[tokio::test]
async fn every_theme_in_reverse_date_order() {
    let rows = labelled();
    let mut order = date_order(&rows);
    order.reverse();
    let f = evaluate(&rows, &order).await;
    report("reverse Date order", &f);
    assert!(
        f.precision >= 0.99 && f.recall >= 0.86,
        "precision {:.3} recall {:.3}",
        f.precision,
        f.recall
    );
    assert_forwards(&f);
}

/// A shuffle (xorshift64*, enough for an order) from a printed seed.
fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// Orders shuffled from fixed, printed seeds (`TEAMGATE_EVAL_SEED` tries another), so the
/// run is the same each time. Precision must hold in any order. Recall falls when replies
/// arrive before the messages that join them: two groups of one thread form, and the
/// message that links them joins only one (no merge at ingest yet). Over the seeds below
/// it lies between 0.77 and 0.90, so 0.75 is the floor.
const RANDOM_SEEDS: [u64; 3] = [
    1_796_346_063_553_555_975,
    1_796_346_098_715_186_468,
    1_796_353_688_371_707_158,
];

#[tokio::test]
async fn every_theme_in_random_order() {
    let rows = labelled();
    let seeds = match std::env::var("TEAMGATE_EVAL_SEED") {
        Ok(s) => vec![s.parse().expect("TEAMGATE_EVAL_SEED is a number")],
        Err(_) => RANDOM_SEEDS.to_vec(),
    };
    for seed in seeds {
        println!("combined corpus, random order: TEAMGATE_EVAL_SEED={seed}");
        let f = evaluate(&rows, &shuffled(rows.len(), seed)).await;
        report(&format!("random order (seed {seed})"), &f);
        assert!(
            f.precision >= 0.99 && f.recall >= 0.75,
            "seed {seed}: precision {:.3} recall {:.3}",
            f.precision,
            f.recall
        );
        assert_forwards(&f);
    }
}
