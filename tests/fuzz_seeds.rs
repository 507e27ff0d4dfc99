//! Replays the fuzz seeds and the shared corpus through the fuzz entry points on stable,
//! so a harness that panics fails CI even without libFuzzer.

use std::path::Path;

use crate::harness::corpus_dir;

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Every file of `fuzz/seeds/<target>/`, through that target's entry point.
fn replay_seeds(target: &str, run: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let seeds = files(&dir);
    for f in &seeds {
        run(&std::fs::read(f).unwrap());
    }
    seeds.len()
}

fn corpus_messages() -> Vec<Vec<u8>> {
    files(&corpus_dir())
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "eml"))
        .map(|f| std::fs::read(f).unwrap())
        .collect()
}

#[test]
fn seeds_and_corpus_do_not_panic_the_fuzz_targets() {
    let mut replayed = replay_seeds("smtp_session", teamgate::fuzzing::smtp_session)
        + replay_seeds("config_parse", teamgate::fuzzing::config_parse)
        + replay_seeds("message_analyze", teamgate::fuzzing::message_analyze)
        + replay_seeds("forward_extract", teamgate::fuzzing::forward_extract)
        + replay_seeds("subject_normalize", teamgate::fuzzing::subject_normalize)
        + replay_seeds("placeholders", teamgate::fuzzing::placeholders);
    for bytes in corpus_messages() {
        teamgate::fuzzing::message_analyze(&bytes);
        // The same bytes as an SMTP session, a forward (both modes) and a reply must not
        // panic either.
        teamgate::fuzzing::smtp_session(&bytes);
        for mode in [b"\x00", b"\x01"] {
            teamgate::fuzzing::forward_extract(&[&mode[..], &bytes].concat());
        }
        for mode in [b"\x00", b"\x01", b"\x02"] {
            teamgate::fuzzing::placeholders(&[&mode[..], &bytes].concat());
        }
        replayed += 1;
    }
    assert!(replayed > 300, "corpus and seeds found ({replayed})");
}

#[test]
fn subjects_of_the_corpus_do_not_panic_subject_normalize() {
    let mut subjects = 0;
    for bytes in corpus_messages() {
        for line in bytes.split(|b| *b == b'\n') {
            if line.len() > 8 && line[..8].eq_ignore_ascii_case(b"subject:") {
                teamgate::fuzzing::subject_normalize(&line[8..]);
                subjects += 1;
            }
        }
    }
    assert!(subjects > 300, "subjects found ({subjects})");
}

#[test]
fn imap_seeds_and_corpus_do_not_panic_the_store_backed_fuzz_targets() {
    let imap = replay_seeds("imap_session", teamgate::fuzzing::imap_session);
    assert!(imap > 0, "imap_session seeds found");
    replay_seeds("ingest_fetch", teamgate::fuzzing::ingest_fetch);
    let corpus = corpus_messages();
    for bytes in &corpus {
        teamgate::fuzzing::ingest_fetch(bytes);
    }
    assert!(corpus.len() > 300, "corpus found ({})", corpus.len());
}
