//! [`StoreOptions`]: the store's tuning knobs.

/// Tuning knobs of the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// A new segment file is started when an append would grow the current one past
    /// this. 64 MiB: few files, and a backup can copy whole segments cheaply.
    pub segment_max_bytes: u64,
    /// sled page cache. 64 MiB instead of sled's 1 GiB default: sled holds only small
    /// metadata records here, the bodies live in segments.
    pub cache_capacity_bytes: u64,
    /// Most requests answered by one durability barrier. 256 covers every SMTP session
    /// a busy gateway has in DATA at once; the bound keeps a batch's latency finite.
    pub max_batch: usize,
    /// Expunges remembered per UID space for QRESYNC's VANISHED (RFC 7162 §3.2.5). 10,000
    /// covers weeks of a busy shared view; a client further behind gets every vanished
    /// uid of its known range instead (correct, only larger).
    pub expunge_log_len: usize,
    /// A view sync adding more entries than this writes them ahead of its transaction in
    /// batches (`uid_space.rs`): a sled transaction holds each write in memory several
    /// times over, so one of 20,000 entries took 236 MiB.
    pub view_write_ahead: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            segment_max_bytes: 64 << 20,
            cache_capacity_bytes: 64 << 20,
            max_batch: 256,
            expunge_log_len: 10_000,
            view_write_ahead: 1000,
        }
    }
}
