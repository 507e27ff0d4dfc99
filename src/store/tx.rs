//! The transaction base every change on the writer builds on: [`Tx`], the transactional
//! views of every tree (addressed by [`TreeId`]), and the error plumbing of a sled
//! transaction ([`TxResult`], [`abort`], [`abort_with`], [`tx_error`]). A closure run by
//! `Transactional::transaction` is pure (sled may run it again on conflict): it only writes
//! what was computed before, through a `Tx`.

use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use super::error::StoreError;
use super::keys::TreeId;

pub type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

pub fn abort_with(e: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(e)
}

pub fn abort<T>(r: Result<T, StoreError>) -> TxResult<T> {
    r.map_err(abort_with)
}

pub fn tx_error(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Db(e),
    }
}

/// The transactional views of every tree, addressed by [`TreeId`].
pub struct Tx<'a>(pub &'a [TransactionalTree]);

impl Tx<'_> {
    pub fn t(&self, id: TreeId) -> &TransactionalTree {
        &self.0[id.index()]
    }
}
