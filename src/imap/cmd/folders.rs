//! The agent's mailbox list (`mailboxes`, `lookup`) and the commands on it: LIST/LSUB,
//! CREATE/DELETE/RENAME (private folders only: team mailboxes are fixed), SUBSCRIBE and
//! NAMESPACE.

use std::collections::{BTreeMap, BTreeSet};

use imap_codec::imap_types::{
    core::{IString, QuotedChar},
    extensions::namespace::Namespace,
    flag::FlagNameAttribute,
    mailbox::{ListMailbox, Mailbox},
    response::Data,
};

use crate::{
    imap::{
        mailbox::{self, MailboxInfo},
        session::{Outcome, Refusal, Session, State, bad, done, no},
        wire::attribute,
    },
    store::{FolderId, StoreError},
};

impl Session {
    /// Every mailbox of the agent, with its private folders and `Closed/<year>` folders.
    pub(super) fn mailboxes(&self) -> Result<Vec<MailboxInfo>, Refusal> {
        let agent = self.agent()?;
        let folders = self.ctx.store.folder_list(&agent.login)?;
        let personal: Vec<String> = folders
            .iter()
            .filter_map(|f| f.strip_prefix("Personal/").map(str::to_string))
            .collect();
        let years: Vec<i32> = folders
            .iter()
            .filter_map(|f| f.strip_prefix("Closed/").and_then(mailbox::closed_year))
            .collect();
        Ok(agent.boxes.list(&personal, &years))
    }

    pub(super) fn lookup(&self, name: &str) -> Result<MailboxInfo, Refusal> {
        let name = mailbox::canonical(name);
        self.mailboxes()?
            .into_iter()
            .find(|m| m.name == name)
            .ok_or_else(|| no(Some("NONEXISTENT"), format!("no mailbox {name}")))
    }

    /// SUBSCRIBE / UNSUBSCRIBE (RFC 3501 §6.3.6, §6.3.7), kept per agent in the store.
    pub(in crate::imap) async fn handle_subscribe(
        &self,
        mailbox: &Mailbox<'_>,
        subscribe: bool,
    ) -> Outcome {
        let name = mailbox::canonical(&self.mailbox_arg(mailbox)?);
        let login = self.agent()?.login.clone();
        if subscribe {
            // §6.3.6: the server MAY check that the mailbox exists; UNSUBSCRIBE never
            // does, so a name whose mailbox went away can still be dropped.
            self.lookup(&name)?;
        }
        self.ctx
            .store
            .subscription_set(&login, &name, subscribe)
            .await?;
        Ok(done(
            Vec::new(),
            if subscribe {
                "SUBSCRIBE completed"
            } else {
                "UNSUBSCRIBE completed"
            },
        ))
    }

    /// Private folders made before subscriptions were kept counted as subscribed, and
    /// Thunderbird shows only subscribed ones: on an agent's first login they become
    /// subscribed (once; later CREATEs do not subscribe, RFC 3501 §6.3.3).
    pub(in crate::imap) async fn adopt_subscriptions(&self, login: &str) -> Result<(), Refusal> {
        let personal: Vec<String> = self
            .ctx
            .store
            .folder_list(login)?
            .into_iter()
            .filter(|f| mailbox::personal_name(f).is_some())
            .collect();
        Ok(self.ctx.store.subscriptions_adopt(login, personal).await?)
    }

    /// The agent's subscribed names: team mailboxes and other fixed ones unless it
    /// unsubscribed them, private folders below `Personal/` once it subscribed them (as
    /// CREATE does not, RFC 3501 §6.3.3), and subscribed names whose mailbox is gone
    /// (§6.3.6: the server MUST NOT drop them on its own). Mailbox order, then the rest.
    pub(super) fn subscribed(&self, boxes: &[MailboxInfo]) -> Result<Vec<String>, Refusal> {
        let login = &self.agent()?.login;
        let said: BTreeMap<String, bool> =
            self.ctx.store.subscriptions(login)?.into_iter().collect();
        let mut out: Vec<String> = boxes
            .iter()
            .filter(|b| {
                let default = mailbox::personal_name(&b.name).is_none();
                said.get(&b.name).copied().unwrap_or(default)
            })
            .map(|b| b.name.clone())
            .collect();
        out.extend(
            said.iter()
                .filter(|(name, on)| **on && !boxes.iter().any(|b| &b.name == *name))
                .map(|(name, _)| name.clone()),
        );
        Ok(out)
    }

    pub(in crate::imap) fn handle_namespace(&self) -> Outcome {
        self.agent()?;
        let personal = vec![Namespace {
            prefix: IString::try_from("").map_err(bad)?,
            delimiter: QuotedChar::try_from(mailbox::DELIMITER).ok(),
            extensions: Vec::new(),
        }];
        Ok(done(
            vec![Data::Namespace {
                personal,
                other: Vec::new(),
                shared: Vec::new(),
            }],
            "NAMESPACE completed",
        ))
    }

    pub(in crate::imap) fn handle_list(
        &self,
        reference: &Mailbox<'_>,
        pattern: &ListMailbox<'_>,
        lsub: bool,
    ) -> Outcome {
        let (reference, pattern) = (&self.mailbox_arg(reference)?, &self.pattern_arg(pattern)?);
        let delimiter = QuotedChar::try_from(mailbox::DELIMITER).ok();
        if pattern.is_empty() {
            // RFC 3501 §6.3.8: the hierarchy delimiter and root.
            let data = Data::List {
                items: vec![FlagNameAttribute::Noselect],
                delimiter,
                mailbox: Mailbox::try_from("").map_err(bad)?,
            };
            return Ok(done(vec![data], "LIST completed"));
        }
        let full = format!("{reference}{pattern}");
        let boxes = self.mailboxes()?;
        let mut untagged = Vec::new();
        let mut entry = |items, name: &str| -> Result<(), Refusal> {
            let mailbox = self.wire_mailbox(name)?;
            untagged.push(if lsub {
                Data::Lsub {
                    items,
                    delimiter,
                    mailbox,
                }
            } else {
                Data::List {
                    items,
                    delimiter,
                    mailbox,
                }
            });
            Ok(())
        };
        if !lsub {
            for b in boxes
                .iter()
                .filter(|b| mailbox::wildcard_match(&full, &b.name))
            {
                entry(attributes(b, &boxes), &b.name)?;
            }
            return Ok(done(untagged, "LIST completed"));
        }
        let subscribed = self.subscribed(&boxes)?;
        let mut shown = BTreeSet::new();
        for name in &subscribed {
            if mailbox::wildcard_match(&full, name) {
                if shown.insert(name.clone()) {
                    let items = match boxes.iter().find(|b| &b.name == name) {
                        Some(b) => attributes(b, &boxes),
                        None => Vec::new(),
                    };
                    entry(items, name)?;
                }
                continue;
            }
            // RFC 3501 §6.3.9: with `%`, a subscribed "foo/bar" whose parent "foo" is not
            // subscribed shows as "foo" with \Noselect.
            if !full.contains('%') {
                continue;
            }
            let mut parent = String::new();
            for segment in name.split(mailbox::DELIMITER) {
                if !parent.is_empty() {
                    parent.push(mailbox::DELIMITER);
                }
                parent.push_str(segment);
                if parent.len() < name.len()
                    && mailbox::wildcard_match(&full, &parent)
                    && !subscribed.contains(&parent)
                    && shown.insert(parent.clone())
                {
                    entry(vec![FlagNameAttribute::Noselect], &parent)?;
                }
            }
        }
        Ok(done(untagged, "LSUB completed"))
    }

    pub(in crate::imap) async fn handle_create(&mut self, mailbox: &Mailbox<'_>) -> Outcome {
        let name = &self.mailbox_arg(mailbox)?;
        let login = self.agent()?.login.clone();
        let name = mailbox::canonical(name);
        let folder = if mailbox::personal_name(&name).is_some() {
            FolderId {
                owner: login,
                name: name.clone(),
            }
        } else if name
            .strip_prefix("Closed/")
            .and_then(mailbox::closed_year)
            .is_some()
        {
            // Thunderbird's yearly archive folders: a marker; the mailbox is a view.
            FolderId {
                owner: login,
                name: name.clone(),
            }
        } else {
            return Err(no(
                Some("CANNOT"),
                format!(
                    "{name}: team mailboxes are fixed; create private folders below Personal/ (or Closed/<year>)"
                ),
            ));
        };
        match self.ctx.store.folder_create(&folder).await {
            Ok(()) => Ok(done(Vec::new(), "CREATE completed")),
            Err(StoreError::AlreadyExists(_)) => {
                Err(no(Some("ALREADYEXISTS"), format!("{name} exists")))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub(in crate::imap) async fn handle_delete(&mut self, mailbox: &Mailbox<'_>) -> Outcome {
        let name = &self.mailbox_arg(mailbox)?;
        let login = self.agent()?.login.clone();
        let name = mailbox::canonical(name);
        let deletable = mailbox::personal_name(&name).is_some()
            || name
                .strip_prefix("Closed/")
                .and_then(mailbox::closed_year)
                .is_some();
        if !deletable {
            return Err(no(Some("CANNOT"), format!("{name} cannot be deleted")));
        }
        if let State::Selected(_, sel) = &self.state
            && sel.name == name
        {
            self.unselect();
        }
        match self
            .ctx
            .store
            .folder_delete(&FolderId {
                owner: login,
                name: name.clone(),
            })
            .await
        {
            Ok(()) => Ok(done(Vec::new(), "DELETE completed")),
            Err(StoreError::NotFound(_)) => {
                Err(no(Some("NONEXISTENT"), format!("no mailbox {name}")))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub(in crate::imap) async fn handle_rename(
        &mut self,
        from: &Mailbox<'_>,
        to: &Mailbox<'_>,
    ) -> Outcome {
        let (from, to) = (&self.mailbox_arg(from)?, &self.mailbox_arg(to)?);
        let login = self.agent()?.login.clone();
        let (from, to) = (mailbox::canonical(from), mailbox::canonical(to));
        if mailbox::personal_name(&from).is_none() || mailbox::personal_name(&to).is_none() {
            return Err(no(
                Some("CANNOT"),
                "only folders below Personal/ can be renamed, within Personal/",
            ));
        }
        let source = FolderId {
            owner: login.clone(),
            name: from.clone(),
        };
        let target = FolderId {
            owner: login,
            name: to.clone(),
        };
        match self.ctx.store.folder_rename(&source, &target).await {
            Ok(()) => Ok(done(Vec::new(), "RENAME completed")),
            Err(StoreError::NotFound(_)) => {
                Err(no(Some("NONEXISTENT"), format!("no mailbox {from}")))
            }
            Err(StoreError::AlreadyExists(_)) => {
                Err(no(Some("ALREADYEXISTS"), format!("{to} exists")))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// LIST / LSUB attributes of an existing mailbox: \Noselect for groups, CHILDREN (RFC 3348)
/// and SPECIAL-USE (RFC 6154).
/// A mailbox's LIST attributes: `\Noselect`, CHILDREN (RFC 3348) and SPECIAL-USE
/// (RFC 6154), shared by LIST, LSUB and LIST-EXTENDED.
pub(super) fn attributes(
    b: &MailboxInfo,
    boxes: &[MailboxInfo],
) -> Vec<FlagNameAttribute<'static>> {
    let prefix = format!("{}{}", b.name, mailbox::DELIMITER);
    let children = boxes.iter().any(|o| o.name.starts_with(&prefix));
    let mut items = Vec::new();
    if b.no_select {
        items.push(FlagNameAttribute::Noselect);
    }
    items.push(attribute(if children {
        "HasChildren"
    } else {
        "HasNoChildren"
    }));
    if let Some(special) = b.special_use {
        items.push(attribute(special.attribute()));
    }
    items
}
