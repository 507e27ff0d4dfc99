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

#[test]
fn seeds_and_corpus_do_not_panic_the_fuzz_targets() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let mut replayed = 0;
    for f in files(&seeds.join("smtp_session")) {
        teamgate::fuzzing::smtp_session(&std::fs::read(f).unwrap());
        replayed += 1;
    }
    for f in files(&seeds.join("config_parse")) {
        teamgate::fuzzing::config_parse(&std::fs::read(f).unwrap());
        replayed += 1;
    }
    let corpus = files(&corpus_dir());
    for f in corpus
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "eml"))
    {
        let bytes = std::fs::read(f).unwrap();
        teamgate::fuzzing::message_analyze(&bytes);
        // The same bytes as an SMTP session and as a config must not panic either.
        teamgate::fuzzing::smtp_session(&bytes);
        replayed += 1;
    }
    assert!(replayed > 300, "corpus and seeds found ({replayed})");
}
