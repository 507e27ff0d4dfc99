//! An agent's IMAP subscriptions (RFC 3501 §6.3.6, §6.3.7): the names it subscribed or
//! unsubscribed, kept whether or not a mailbox of that name exists (the RFC forbids
//! dropping a name because its mailbox went away). Which names count as subscribed when
//! the agent never said is the IMAP layer's rule, so "unsubscribed" is stored too.
//! Under the empty name (no mailbox has it) a marker says the agent's records are set up.

use sled::Transactional;

use super::error::StoreError;
use super::handle::Store;
use super::keys::{self, TreeId};
use super::records;
use super::request::Op;
use super::tx::{Tx, tx_error};
use super::writer_state::WriterState;

impl Store {
    /// Records that `agent` subscribed (`true`) or unsubscribed `name`.
    pub async fn subscription_set(
        &self,
        agent: &str,
        name: &str,
        subscribed: bool,
    ) -> Result<(), StoreError> {
        self.op_done(Op::Subscribe {
            agent: agent.to_string(),
            name: name.to_string(),
            subscribed,
        })
        .await
    }

    /// Once per agent: records `names` as subscribed, unless its subscriptions were set up
    /// before (folders from before subscriptions were kept, when every one counted as
    /// subscribed, stay so).
    pub async fn subscriptions_adopt(
        &self,
        agent: &str,
        names: Vec<String>,
    ) -> Result<(), StoreError> {
        // Every login asks; after the first, the marker answers without the writer.
        let marker = keys::subscription(agent, "");
        if self
            .inner
            .trees
            .get(TreeId::Subscriptions)
            .contains_key(&marker)?
        {
            return Ok(());
        }
        self.op_done(Op::SubscriptionsAdopt {
            agent: agent.to_string(),
            names,
        })
        .await
    }

    /// Every name `agent` subscribed (`true`) or unsubscribed, sorted by name.
    pub fn subscriptions(&self, agent: &str) -> Result<Vec<(String, bool)>, StoreError> {
        let prefix = keys::subscriptions_prefix(agent);
        let mut out = self
            .inner
            .trees
            .get(TreeId::Subscriptions)
            .scan_prefix(&prefix)
            .map(|kv| {
                let (k, v) = kv?;
                let name = keys::folder_name(&k, &prefix).ok_or_else(|| {
                    records::corrupt(TreeId::Subscriptions, &k, "bad subscription key")
                })?;
                Ok((name, v.as_ref() == [1]))
            })
            .filter(|r| !matches!(r, Ok((name, _)) if name.is_empty()))
            .collect::<Result<Vec<_>, StoreError>>()?;
        out.sort();
        Ok(out)
    }
}

impl WriterState {
    pub(super) fn subscription_set(
        &mut self,
        agent: &str,
        name: &str,
        subscribed: bool,
    ) -> Result<(), StoreError> {
        let key = keys::subscription(agent, name);
        let value = [u8::from(subscribed)];
        // A change like any other: the barrier after it makes it durable.
        let bump = self.bump(false);
        self.trees.all[..]
            .transaction(|t| {
                let tx = Tx(t);
                tx.t(TreeId::Subscriptions)
                    .insert(key.as_slice(), &value[..])?;
                bump.write(&tx)
            })
            .map_err(tx_error)?;
        self.bumped(bump);
        Ok(())
    }

    pub(super) fn subscriptions_adopt(
        &mut self,
        agent: &str,
        names: &[String],
    ) -> Result<(), StoreError> {
        let marker = keys::subscription(agent, "");
        if self
            .trees
            .get(TreeId::Subscriptions)
            .contains_key(&marker)?
        {
            return Ok(());
        }
        let keys: Vec<Vec<u8>> = names.iter().map(|n| keys::subscription(agent, n)).collect();
        let bump = self.bump(false);
        self.trees.all[..]
            .transaction(|t| {
                let tx = Tx(t);
                let subs = tx.t(TreeId::Subscriptions);
                for k in &keys {
                    subs.insert(k.as_slice(), &[1u8][..])?;
                }
                subs.insert(marker.as_slice(), &[1u8][..])?;
                bump.write(&tx)
            })
            .map_err(tx_error)?;
        self.bumped(bump);
        Ok(())
    }
}
