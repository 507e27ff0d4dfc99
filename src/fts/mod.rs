//! The full-text index of every stored message (`<data_dir>/search`, tantivy): a
//! prefilter for SEARCH, never the answer. It holds, per message, the trigrams of the
//! exact folded strings the scan compares (`mail::search_text`). A message can match a
//! substring only if it holds every trigram of it, so the index names a superset of the
//! matches; the caller then evaluates the real key on those alone. Results are the
//! scan's by construction, and only the candidates' bytes are read.
//!
//! The index trails the store: the indexer (`indexer.rs`) commits messages in key
//! order and records in the commit the first key it does not cover. Keys from there on
//! are always candidates, so a message is found the moment it is stored. The index is derived
//! data: a missing, damaged or older-schema index is rebuilt from the store.

mod candidates;
mod document;
pub mod indexer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tantivy::{
    Index, IndexReader, ReloadPolicy, Term,
    query::{BooleanQuery, Occur, Query, TermQuery},
    schema::{self, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions},
    tokenizer::{NgramTokenizer, TextAnalyzer},
};

use crate::store::MessageKey;

pub use candidates::{Candidates, Prefilter};

/// Bumped whenever the documents change meaning: an index of another version is rebuilt.
const SCHEMA_VERSION: u32 = 1;
const TRIGRAM: &str = "trigram";
/// Substrings shorter than this have no trigram: they are found by the scan alone.
pub const MIN_NEEDLE_CHARS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum FtsError {
    #[error("search index in {dir}: {source}")]
    Index {
        dir: String,
        #[source]
        source: tantivy::TantivyError,
    },
    #[error("search index in {dir}: {what}: {source}")]
    Io {
        dir: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Which text of a message a needle is looked for in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    From,
    To,
    Cc,
    Bcc,
    Subject,
    /// Every top-level header as `Name: value` lines (HEADER, and TEXT's header half).
    Headers,
    /// Decoded text parts, embedded messages included (BODY, and TEXT's other half).
    Body,
}

impl Field {
    pub const ALL: [Field; 7] = [
        Field::From,
        Field::To,
        Field::Cc,
        Field::Bcc,
        Field::Subject,
        Field::Headers,
        Field::Body,
    ];

    fn name(self) -> &'static str {
        match self {
            Field::From => "from",
            Field::To => "to",
            Field::Cc => "cc",
            Field::Bcc => "bcc",
            Field::Subject => "subject",
            Field::Headers => "headers",
            Field::Body => "body",
        }
    }

    /// The header whose values the field holds, for the single-header fields.
    fn header(self) -> Option<&'static str> {
        match self {
            Field::From => Some("From"),
            Field::To => Some("To"),
            Field::Cc => Some("Cc"),
            Field::Bcc => Some("Bcc"),
            Field::Subject => Some("Subject"),
            Field::Headers | Field::Body => None,
        }
    }
}

/// What the last commit covers, kept in the commit itself.
#[derive(Debug, Serialize, Deserialize)]
struct CommitPayload {
    schema: u32,
    /// Every message with a key below this one is in the index.
    uncovered_from: u64,
}

/// A shared handle on the index; cheap to clone.
#[derive(Clone)]
pub struct FtsIndex {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    index: Index,
    reader: IndexReader,
    msg: schema::Field,
    text: [schema::Field; 7],
    /// The first key the searchable commit does not cover; published after the reader
    /// reloaded.
    uncovered_from: AtomicU64,
}

impl std::fmt::Debug for FtsIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FtsIndex")
            .field("dir", &self.inner.dir)
            .field("uncovered_from", &self.uncovered_from())
            .finish()
    }
}

fn schema() -> Schema {
    let mut b = Schema::builder();
    b.add_u64_field("msg", NumericOptions::default().set_fast());
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TRIGRAM)
            .set_index_option(IndexRecordOption::Basic),
    );
    for f in Field::ALL {
        b.add_text_field(f.name(), text.clone());
    }
    b.build()
}

fn trigram_analyzer() -> Result<TextAnalyzer, tantivy::TantivyError> {
    Ok(TextAnalyzer::from(NgramTokenizer::new(3, 3, false)?))
}

impl FtsIndex {
    /// Opens the index in `dir`, or creates it empty when it is missing, damaged or of
    /// another schema version (it is then rebuilt from the store by the indexer).
    pub fn open_or_rebuild(dir: &Path) -> Result<FtsIndex, FtsError> {
        match Self::open_existing(dir) {
            Ok(Some(index)) => return Ok(index),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "search index unusable; rebuilding it"),
        }
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|source| FtsError::Io {
                dir: dir.display().to_string(),
                what: "removing the old index",
                source,
            })?;
        }
        std::fs::create_dir_all(dir).map_err(|source| FtsError::Io {
            dir: dir.display().to_string(),
            what: "creating the directory",
            source,
        })?;
        let index = Index::create_in_dir(dir, schema()).map_err(|e| index_err(dir, e))?;
        Self::with_index(dir, index, 0)
    }

    /// The index in `dir` as its last commit left it; `None` when there is none or it is
    /// of another schema version.
    pub fn open_existing(dir: &Path) -> Result<Option<FtsIndex>, FtsError> {
        if !dir.join("meta.json").exists() {
            return Ok(None);
        }
        let index = Index::open_in_dir(dir).map_err(|e| index_err(dir, e))?;
        if index.schema() != schema() {
            return Ok(None);
        }
        let metas = index.load_metas().map_err(|e| index_err(dir, e))?;
        let uncovered_from = match metas.payload.as_deref() {
            None => 0,
            Some(p) => match serde_json::from_str::<CommitPayload>(p) {
                Ok(c) if c.schema == SCHEMA_VERSION => c.uncovered_from,
                _ => return Ok(None),
            },
        };
        Self::with_index(dir, index, uncovered_from).map(Some)
    }

    fn with_index(dir: &Path, index: Index, uncovered_from: u64) -> Result<FtsIndex, FtsError> {
        index
            .tokenizers()
            .register(TRIGRAM, trigram_analyzer().map_err(|e| index_err(dir, e))?);
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| index_err(dir, e))?;
        let s = index.schema();
        let field = |name: &str| s.get_field(name).map_err(|e| index_err(dir, e));
        let text = [
            field(Field::From.name())?,
            field(Field::To.name())?,
            field(Field::Cc.name())?,
            field(Field::Bcc.name())?,
            field(Field::Subject.name())?,
            field(Field::Headers.name())?,
            field(Field::Body.name())?,
        ];
        Ok(FtsIndex {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                msg: field("msg")?,
                text,
                index,
                reader,
                uncovered_from: AtomicU64::new(uncovered_from),
            }),
        })
    }

    /// The first message key the searchable index does not cover.
    pub fn uncovered_from(&self) -> u64 {
        self.inner.uncovered_from.load(Ordering::Acquire)
    }

    /// Messages in the searchable index (a message may count twice after a crash
    /// between a commit and its record; harmless, as candidates are checked).
    pub fn documents(&self) -> u64 {
        self.inner.reader.searcher().num_docs()
    }

    /// Bytes of the index on disk.
    pub fn disk_bytes(&self) -> u64 {
        std::fs::read_dir(&self.inner.dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.metadata().ok())
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// The messages that may hold `needle` (already folded, `mail::search_text::fold`) in
    /// `field`; `None` when the needle is too short to narrow anything.
    pub fn candidates(&self, field: Field, needle: &str) -> Result<Option<Candidates>, FtsError> {
        let inner = &self.inner;
        let dir = inner.dir.as_path();
        let grams = self.trigrams(needle)?;
        if grams.is_empty() {
            return Ok(None);
        }
        // This first: the searcher taken after it covers at least that much.
        let uncovered_from = self.uncovered_from();
        let searcher = inner.reader.searcher();
        let f = inner.text[field as usize];
        let clauses: Vec<(Occur, Box<dyn Query>)> = grams
            .iter()
            .map(|g| {
                let q: Box<dyn Query> = Box::new(TermQuery::new(
                    Term::from_field_text(f, g),
                    IndexRecordOption::Basic,
                ));
                (Occur::Must, q)
            })
            .collect();
        let keys = searcher
            .search(&BooleanQuery::new(clauses), &candidates::Keys("msg"))
            .map_err(|e| index_err(dir, e))?;
        Ok(Some(Candidates::new(keys, MessageKey(uncovered_from))))
    }

    /// The distinct trigrams of `needle`, as the index tokenizes text.
    fn trigrams(&self, needle: &str) -> Result<Vec<String>, FtsError> {
        if needle.chars().count() < MIN_NEEDLE_CHARS {
            return Ok(Vec::new());
        }
        let mut analyzer = trigram_analyzer().map_err(|e| index_err(&self.inner.dir, e))?;
        let mut stream = analyzer.token_stream(needle);
        let mut grams = Vec::new();
        while let Some(token) = stream.next() {
            if !grams.contains(&token.text) {
                grams.push(token.text.clone());
            }
        }
        Ok(grams)
    }
}

fn index_err(dir: &Path, source: tantivy::TantivyError) -> FtsError {
    FtsError::Index {
        dir: dir.display().to_string(),
        source,
    }
}
