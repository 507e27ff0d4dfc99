//! What the index answers: the keys of the messages that may match, and how answers for
//! the parts of a SEARCH combine.

use tantivy::{
    DocId, Score, SegmentOrdinal, SegmentReader,
    collector::{Collector, SegmentCollector},
    columnar::Column,
};

use crate::store::MessageKey;

/// The messages that may match one needle: those the index names, and every message
/// from the first one the index does not cover yet.
#[derive(Debug, Clone)]
pub struct Candidates {
    /// Sorted, distinct.
    keys: Vec<u64>,
    uncovered_from: MessageKey,
}

impl Candidates {
    pub fn new(mut keys: Vec<u64>, uncovered_from: MessageKey) -> Candidates {
        keys.sort_unstable();
        keys.dedup();
        Candidates {
            keys,
            uncovered_from,
        }
    }

    pub fn admits(&self, key: MessageKey) -> bool {
        key >= self.uncovered_from || self.keys.binary_search(&key.0).is_ok()
    }

    /// How many indexed messages were named.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Which messages a whole search key may match, built from the parts the index can
/// narrow. Anything it cannot say about (flags, dates, a negation) admits everything.
#[derive(Debug, Clone)]
pub enum Prefilter {
    Everything,
    Only(Candidates),
    /// Admitted by every one.
    All(Vec<Prefilter>),
    /// Admitted by at least one.
    Any(Vec<Prefilter>),
}

impl Prefilter {
    pub fn all(parts: Vec<Prefilter>) -> Prefilter {
        let narrowing: Vec<Prefilter> = parts
            .into_iter()
            .filter(|p| !matches!(p, Prefilter::Everything))
            .collect();
        match narrowing.len() {
            0 => Prefilter::Everything,
            1 => narrowing
                .into_iter()
                .next()
                .unwrap_or(Prefilter::Everything),
            _ => Prefilter::All(narrowing),
        }
    }

    pub fn any(parts: Vec<Prefilter>) -> Prefilter {
        if parts.is_empty() || parts.iter().any(|p| matches!(p, Prefilter::Everything)) {
            return Prefilter::Everything;
        }
        Prefilter::Any(parts)
    }

    /// Whether the index narrows anything at all.
    pub fn narrows(&self) -> bool {
        !matches!(self, Prefilter::Everything)
    }

    pub fn admits(&self, key: MessageKey) -> bool {
        match self {
            Prefilter::Everything => true,
            Prefilter::Only(c) => c.admits(key),
            Prefilter::All(parts) => parts.iter().all(|p| p.admits(key)),
            Prefilter::Any(parts) => parts.iter().any(|p| p.admits(key)),
        }
    }
}

/// Collects the `msg` fast field of every matching document.
pub(super) struct Keys(pub(super) &'static str);

pub(super) struct SegmentKeys {
    column: Column<u64>,
    keys: Vec<u64>,
}

impl Collector for Keys {
    type Fruit = Vec<u64>;
    type Child = SegmentKeys;

    fn for_segment(
        &self,
        _segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<SegmentKeys> {
        Ok(SegmentKeys {
            column: reader.fast_fields().u64(self.0)?,
            keys: Vec::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Vec<u64>>) -> tantivy::Result<Vec<u64>> {
        Ok(fruits.into_iter().flatten().collect())
    }
}

impl SegmentCollector for SegmentKeys {
    type Fruit = Vec<u64>;

    fn collect(&mut self, doc: DocId, _score: Score) {
        if let Some(key) = self.column.first(doc) {
            self.keys.push(key);
        }
    }

    fn harvest(self) -> Vec<u64> {
        self.keys
    }
}
