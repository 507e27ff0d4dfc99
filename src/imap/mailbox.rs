//! Which mailboxes an agent sees and what each one is (SPEC §5): a team view over
//! conversations, or a private folder. Pure: config in, names and targets out.

use crate::{
    config::Config,
    store::{FolderId, TeamView},
};

/// Hierarchy delimiter of every mailbox name.
pub const DELIMITER: char = '/';

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialUse {
    Archive,
    Sent,
    Junk,
    Drafts,
    Trash,
}

impl SpecialUse {
    pub fn attribute(self) -> &'static str {
        match self {
            SpecialUse::Archive => "Archive",
            SpecialUse::Sent => "Sent",
            SpecialUse::Junk => "Junk",
            SpecialUse::Drafts => "Drafts",
            SpecialUse::Trash => "Trash",
        }
    }
}

/// What a mailbox name stands for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Team(TeamView),
    Folder(FolderId),
}

/// How a message moved or copied into a team view changes its conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gesture {
    /// INBOX, or an inbox of the conversation's own: open it (reopen, restore).
    Open,
    /// `Inboxes/<name>`: open it in that inbox (a transfer when it is another one).
    OpenIn(String),
    Close,
    Trash,
    Assign(String),
    Unassign,
    /// Spam: the conversation's inbound mail goes to Junk.
    Junk,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxInfo {
    pub name: String,
    /// A parent that only groups others (`Inboxes`, `Assigned`, `Personal`).
    pub no_select: bool,
    pub special_use: Option<SpecialUse>,
    pub target: Option<Target>,
    /// Writable by this agent (an admin sees non-member inboxes read-only).
    pub writable: bool,
}

/// The agent's view of the installation.
#[derive(Debug, Clone)]
pub struct Mailboxes {
    pub login: String,
    /// Inboxes the agent is a member of (sorted).
    pub member_of: Vec<String>,
    /// Inboxes the agent can see: members' inboxes, or all of them for an admin (sorted).
    pub visible: Vec<String>,
    /// Teammates: agents sharing an inbox with this one (sorted, including itself).
    pub teammates: Vec<String>,
}

impl Mailboxes {
    pub fn for_agent(config: &Config, login: &str) -> Mailboxes {
        let mut member_of: Vec<String> = config
            .inboxes
            .iter()
            .filter(|i| i.members.iter().any(|m| m == login))
            .map(|i| i.name.clone())
            .collect();
        member_of.sort();
        let admin = config.agent(login).is_some_and(|a| a.admin);
        let mut visible: Vec<String> = if admin {
            config.inboxes.iter().map(|i| i.name.clone()).collect()
        } else {
            member_of.clone()
        };
        visible.sort();
        let mut teammates: Vec<String> = config
            .inboxes
            .iter()
            .filter(|i| visible.contains(&i.name))
            .flat_map(|i| i.members.iter().cloned())
            .collect();
        teammates.push(login.to_string());
        teammates.sort();
        teammates.dedup();
        Mailboxes {
            login: login.to_string(),
            member_of,
            visible,
            teammates,
        }
    }

    fn writable(&self, inboxes: &[String]) -> bool {
        !inboxes.is_empty() && inboxes.iter().all(|i| self.member_of.contains(i))
    }

    /// Every mailbox of the agent, parents first. `personal` lists the agent's private
    /// folders (names below `Personal/`) and `closed_years` its `Closed/<year>` folders.
    pub fn list(&self, personal: &[String], closed_years: &[i32]) -> Vec<MailboxInfo> {
        let all = self.visible.clone();
        let writable_all = self.writable(&all);
        let team =
            |name: &str, view: TeamView, special: Option<SpecialUse>, writable: bool| MailboxInfo {
                name: name.to_string(),
                no_select: false,
                special_use: special,
                target: Some(Target::Team(view)),
                writable,
            };
        let group = |name: &str| MailboxInfo {
            name: name.to_string(),
            no_select: true,
            special_use: None,
            target: None,
            writable: false,
        };
        let mut out = vec![team(
            "INBOX",
            TeamView::Open {
                inboxes: all.clone(),
            },
            None,
            writable_all,
        )];
        out.push(group("Inboxes"));
        for inbox in &self.visible {
            let one = vec![inbox.clone()];
            let writable = self.writable(&one);
            out.push(team(
                &format!("Inboxes/{inbox}"),
                TeamView::Open { inboxes: one },
                None,
                writable,
            ));
        }
        out.push(team(
            "Mine",
            TeamView::Assigned {
                inboxes: all.clone(),
                assignee: self.login.clone(),
            },
            None,
            writable_all,
        ));
        out.push(team(
            "Unassigned",
            TeamView::Unassigned {
                inboxes: all.clone(),
            },
            None,
            writable_all,
        ));
        out.push(group("Assigned"));
        for mate in &self.teammates {
            out.push(team(
                &format!("Assigned/{mate}"),
                TeamView::Assigned {
                    inboxes: all.clone(),
                    assignee: mate.clone(),
                },
                None,
                writable_all,
            ));
        }
        out.push(team(
            "Closed",
            TeamView::Closed {
                inboxes: all.clone(),
                year: None,
            },
            Some(SpecialUse::Archive),
            writable_all,
        ));
        for year in closed_years {
            out.push(team(
                &format!("Closed/{year}"),
                TeamView::Closed {
                    inboxes: all.clone(),
                    year: Some(*year),
                },
                None,
                writable_all,
            ));
        }
        out.push(team(
            "Sent",
            TeamView::Sent {
                inboxes: all.clone(),
            },
            Some(SpecialUse::Sent),
            writable_all,
        ));
        out.push(team(
            "Junk",
            TeamView::Junk {
                inboxes: all.clone(),
            },
            Some(SpecialUse::Junk),
            writable_all,
        ));
        out.push(self.folder("Drafts", Some(SpecialUse::Drafts)));
        // Templates belong to an inbox and are shared by all its members: `Templates` is
        // the first inbox's, `Templates/<name>` each inbox's when the agent has several.
        if let Some(first) = self.visible.first() {
            out.push(self.templates_box("Templates", first));
        }
        if self.visible.len() > 1 {
            for inbox in &self.visible {
                out.push(self.templates_box(&format!("Templates/{inbox}"), inbox));
            }
        }
        out.push(team(
            "Trash",
            TeamView::Trash {
                inboxes: all,
                agent: self.login.clone(),
            },
            Some(SpecialUse::Trash),
            writable_all,
        ));
        out.push(group("Personal"));
        for name in personal {
            out.push(self.folder(&format!("Personal/{name}"), None));
        }
        out
    }

    fn folder(&self, name: &str, special: Option<SpecialUse>) -> MailboxInfo {
        MailboxInfo {
            name: name.to_string(),
            no_select: false,
            special_use: special,
            target: Some(Target::Folder(FolderId {
                owner: self.login.clone(),
                name: name.to_string(),
            })),
            writable: true,
        }
    }

    fn templates_box(&self, name: &str, inbox: &str) -> MailboxInfo {
        MailboxInfo {
            name: name.to_string(),
            no_select: false,
            special_use: None,
            target: Some(Target::Folder(templates_of(inbox))),
            writable: self.member_of.iter().any(|i| i == inbox),
        }
    }

    /// The template folders of every inbox the agent sees.
    pub fn template_folders(&self) -> Vec<FolderId> {
        self.visible.iter().map(|i| templates_of(i)).collect()
    }

    /// What moving a conversation into `name` means, if it is a team view.
    pub fn gesture(&self, name: &str) -> Option<Gesture> {
        let name = canonical(name);
        match name.as_str() {
            "INBOX" => Some(Gesture::Open),
            "Mine" => Some(Gesture::Assign(self.login.clone())),
            "Unassigned" => Some(Gesture::Unassign),
            "Closed" => Some(Gesture::Close),
            "Trash" => Some(Gesture::Trash),
            "Junk" => Some(Gesture::Junk),
            other => {
                if let Some(inbox) = other.strip_prefix("Inboxes/") {
                    return self
                        .visible
                        .iter()
                        .any(|i| i == inbox)
                        .then(|| Gesture::OpenIn(inbox.to_string()));
                }
                if let Some(login) = other.strip_prefix("Assigned/") {
                    return self
                        .teammates
                        .iter()
                        .any(|t| t == login)
                        .then(|| Gesture::Assign(login.to_string()));
                }
                if let Some(year) = other.strip_prefix("Closed/") {
                    return closed_year(year).map(|_| Gesture::Close);
                }
                None
            }
        }
    }
}

/// The shared template folder of an inbox (the store keeps only shared flags for
/// folders owned by `inbox:<name>`).
pub fn templates_of(inbox: &str) -> FolderId {
    FolderId {
        owner: format!("inbox:{inbox}"),
        name: "Templates".into(),
    }
}

/// `INBOX` is case-insensitive (RFC 3501 §5.1); every other name is exact.
pub fn canonical(name: &str) -> String {
    if name.eq_ignore_ascii_case("INBOX") {
        "INBOX".to_string()
    } else {
        name.trim_end_matches(DELIMITER).to_string()
    }
}

/// `2026` in `Closed/2026`: a plausible year, nothing else.
pub fn closed_year(s: &str) -> Option<i32> {
    if s.len() != 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|y| (1970..=9999).contains(y))
}

/// A name for a new private folder below `Personal/`: non-empty segments, no wildcards.
pub fn personal_name(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("Personal/")?;
    let valid = !rest.is_empty()
        && rest.split(DELIMITER).all(|seg| {
            !seg.is_empty() && !seg.contains(['*', '%']) && !seg.chars().any(char::is_control)
        });
    valid.then_some(rest)
}

/// RFC 3501 §6.3.8 LIST matching: `*` matches anything, `%` anything but the delimiter.
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some(('*', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..])),
            Some(('%', rest)) => {
                let stop = n.iter().position(|c| *c == DELIMITER).unwrap_or(n.len());
                (0..=stop).any(|i| go(rest, &n[i..]))
            }
            Some((c, rest)) => n
                .split_first()
                .is_some_and(|(nc, nrest)| nc == c && go(rest, nrest)),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Bound the backtracking: mailbox names and patterns are short.
    if p.len() > 256 || n.len() > 512 {
        return false;
    }
    // INBOX is case-insensitive, so it also matches an upper-cased pattern.
    go(&p, &n)
        || (name == "INBOX"
            && go(
                &pattern.to_ascii_uppercase().chars().collect::<Vec<_>>(),
                &n,
            ))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config() -> Config {
        let mut c = Config::for_tests(Path::new("/tmp/x"));
        let mut sales = c.inboxes[0].clone();
        sales.name = "Sales".into();
        sales.addresses = vec!["sales@example.test".into()];
        sales.members = vec!["bob".into()];
        c.inboxes.push(sales);
        let mut bob = c.agents[0].clone();
        bob.login = "bob".into();
        bob.email = "bob@example.test".into();
        c.agents.push(bob);
        let mut root = c.agents[0].clone();
        root.login = "root".into();
        root.email = "root@example.test".into();
        root.admin = true;
        c.agents.push(root);
        c
    }

    #[test]
    fn members_see_their_inboxes_and_admins_see_all_read_only() {
        let c = config();
        let alice = Mailboxes::for_agent(&c, "alice");
        assert_eq!(alice.visible, ["Support"]);
        let names: Vec<String> = alice
            .list(&["Notes".into()], &[2026])
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(
            names,
            [
                "INBOX",
                "Inboxes",
                "Inboxes/Support",
                "Mine",
                "Unassigned",
                "Assigned",
                "Assigned/alice",
                "Closed",
                "Closed/2026",
                "Sent",
                "Junk",
                "Drafts",
                "Templates",
                "Trash",
                "Personal",
                "Personal/Notes"
            ]
        );
        let root = Mailboxes::for_agent(&c, "root");
        assert_eq!(root.visible, ["Sales", "Support"]);
        let list = root.list(&[], &[]);
        let inbox = list.iter().find(|m| m.name == "INBOX").unwrap();
        assert!(!inbox.writable, "an admin who is no member only reads");
        assert_eq!(
            inbox.target,
            Some(Target::Team(TeamView::Open {
                inboxes: vec!["Sales".into(), "Support".into()]
            }))
        );
    }

    #[test]
    fn gestures() {
        let c = config();
        let alice = Mailboxes::for_agent(&c, "alice");
        assert_eq!(alice.gesture("inbox"), Some(Gesture::Open));
        assert_eq!(alice.gesture("Closed/2025"), Some(Gesture::Close));
        assert_eq!(alice.gesture("Closed/25"), None);
        assert_eq!(alice.gesture("Mine"), Some(Gesture::Assign("alice".into())));
        assert_eq!(
            alice.gesture("Assigned/alice"),
            Some(Gesture::Assign("alice".into()))
        );
        assert_eq!(
            alice.gesture("Assigned/bob"),
            None,
            "bob is no teammate of alice"
        );
        assert_eq!(alice.gesture("Inboxes/Sales"), None, "not her inbox");
        assert_eq!(
            alice.gesture("Inboxes/Support"),
            Some(Gesture::OpenIn("Support".into()))
        );
        assert_eq!(alice.gesture("Personal/x"), None);
    }

    #[test]
    fn names_and_wildcards() {
        assert_eq!(personal_name("Personal/a/b"), Some("a/b"));
        assert_eq!(personal_name("Personal/"), None);
        assert_eq!(personal_name("Personal/a//b"), None);
        assert_eq!(personal_name("Personal/a*"), None);
        assert_eq!(personal_name("Other/a"), None);
        assert!(wildcard_match("*", "Inboxes/Support"));
        assert!(wildcard_match("%", "INBOX"));
        assert!(!wildcard_match("%", "Inboxes/Support"));
        assert!(wildcard_match("Inboxes/%", "Inboxes/Support"));
        assert!(wildcard_match("inbox", "INBOX"));
        assert!(wildcard_match("Inbox*", "Inboxes/Support"));
        assert!(wildcard_match("in%", "INBOX"));
        assert!(!wildcard_match("Sent", "Sent/x"));
    }
}
