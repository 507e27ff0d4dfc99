//! SORT and THREAD (RFC 5256) as pure functions over what the handler read from each
//! message: the sort keys, the base subject, and the THREAD=ORDEREDSUBJECT and
//! THREAD=REFERENCES algorithms, plus grouping by a known conversation (team views).

use std::{cmp::Ordering, collections::HashMap};

use imap_codec::imap_types::{
    core::{Vec1, Vec2},
    extensions::{
        sort::{SortCriterion, SortKey},
        thread::Thread,
    },
};

/// What sorting and threading need of one message.
#[derive(Debug, Clone, Default)]
pub struct Item {
    /// The number to answer with (sequence number or UID).
    pub number: u32,
    /// Sequence number: the final tie-breaker (RFC 5256 §3).
    pub seq: u32,
    pub arrival: i64,
    /// The Date header in UTC seconds, else the arrival (RFC 5256 §2.2).
    pub sent: i64,
    pub size: u64,
    pub subject: String,
    /// The original subject had a reply/forward marker (RFC 5256 §2.1 step 5 `(2)`).
    pub is_reply: bool,
    /// addr-mailbox of the first address, upper-cased (i;ascii-casemap, RFC 5256 §3).
    pub from: String,
    pub to: String,
    pub cc: String,
    pub message_id: String,
    /// References, else In-Reply-To (RFC 5256 §2.2 step 1A).
    pub references: Vec<String>,
    /// The store's conversation (team views).
    pub conversation: Option<u64>,
}

impl Item {
    /// Fills the header-derived fields from the message bytes.
    pub fn read_headers(&mut self, raw: &[u8]) {
        let Some(msg) = mail_parser::MessageParser::default().parse_headers(raw) else {
            return;
        };
        let subject = msg.subject().unwrap_or_default();
        let (base, is_reply) = base_subject(subject);
        self.subject = base;
        self.is_reply = is_reply;
        if let Some(d) = msg.date() {
            self.sent = d.to_timestamp();
        }
        // RFC 5256 §3: the addr-mailbox of the first address as ENVELOPE gives it; for an
        // RFC 5322 group that is the group's start, whose mailbox is the group name.
        let first = |a: Option<&mail_parser::Address<'_>>| {
            let mailbox = match a {
                // mail-parser puts plain addresses before a group into an unnamed group.
                Some(mail_parser::Address::Group(groups)) => groups.first().and_then(|g| {
                    g.name.as_deref().map(str::to_owned).or_else(|| {
                        g.addresses
                            .first()
                            .and_then(|a| a.address())
                            .map(|a| a.split('@').next().unwrap_or_default().to_owned())
                    })
                }),
                Some(list) => list
                    .first()
                    .and_then(|a| a.address())
                    .map(|a| a.split('@').next().unwrap_or_default().to_owned()),
                None => None,
            };
            mailbox.unwrap_or_default().to_ascii_uppercase()
        };
        self.from = first(msg.from());
        self.to = first(msg.to());
        self.cc = first(msg.cc());
        self.message_id = msg.message_id().unwrap_or_default().to_string();
        let ids = |v: &mail_parser::HeaderValue<'_>| -> Vec<String> {
            v.as_text_list()
                .map(|l| l.iter().map(|s| s.to_string()).collect())
                .unwrap_or_default()
        };
        self.references = ids(msg.references());
        if self.references.is_empty() {
            self.references = ids(msg.in_reply_to()).into_iter().take(1).collect();
        }
    }
}

/// RFC 5256 §3: compare by each criterion in turn, then by sequence number.
pub fn sort(items: &mut [Item], criteria: &[SortCriterion]) {
    items.sort_by(|a, b| {
        for c in criteria {
            let o = match c.key {
                SortKey::Arrival => a.arrival.cmp(&b.arrival),
                SortKey::Date => a.sent.cmp(&b.sent),
                SortKey::Size => a.size.cmp(&b.size),
                SortKey::Subject => a.subject.cmp(&b.subject),
                SortKey::From | SortKey::DisplayFrom => a.from.cmp(&b.from),
                SortKey::To | SortKey::DisplayTo => a.to.cmp(&b.to),
                SortKey::Cc => a.cc.cmp(&b.cc),
            };
            let o = if c.reverse { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        a.seq.cmp(&b.seq)
    });
}

/// The base subject (RFC 5256 §2.1), upper-cased for i;ascii-casemap comparison, and
/// whether a reply/forward marker was removed.
pub fn base_subject(subject: &str) -> (String, bool) {
    // Step 1: decoded already; runs of whitespace become one space.
    let mut s = subject.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut reply = false;
    loop {
        // Step 2: trailing "(fwd)" and whitespace.
        loop {
            let t = s.trim_end();
            // `get`: subjects are UTF-8, and a byte offset may fall inside a character.
            let cut = t.len().saturating_sub(5);
            if t.get(cut..)
                .is_some_and(|e| e.eq_ignore_ascii_case("(fwd)"))
            {
                s = t[..cut].to_string();
                reply = true;
            } else {
                s = t.to_string();
                break;
            }
        }
        // Steps 3-5: leaders and blobs, until none is left.
        loop {
            let before = s.len();
            s = s.trim_start().to_string();
            if let Some(rest) = strip_refwd(&s) {
                s = rest.to_string();
                reply = true;
            }
            // Step 4: a leading blob goes if something remains after it.
            if let Some(rest) = strip_blob(&s)
                && !rest.trim().is_empty()
            {
                s = rest.to_string();
            }
            if s.len() == before {
                break;
            }
        }
        // Step 6: "[fwd: ... ]" wraps the subject; unwrap and start over.
        if s.len() >= 6
            && s.get(..5).is_some_and(|h| h.eq_ignore_ascii_case("[fwd:"))
            && s.ends_with(']')
        {
            s = s[5..s.len() - 1].to_string();
            reply = true;
            continue;
        }
        break;
    }
    (s.to_ascii_uppercase(), reply)
}

/// `subj-blob = "[" *BLOBCHAR "]" *WSP`: the rest after it.
fn strip_blob(s: &str) -> Option<&str> {
    let inner = s.strip_prefix('[')?;
    let end = inner.find([']', '['])?;
    inner[end..]
        .strip_prefix(']')
        .map(|r| r.trim_start_matches([' ', '\t']))
}

/// `*subj-blob subj-refwd` with `subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"`.
fn strip_refwd(s: &str) -> Option<&str> {
    let mut rest = s;
    while let Some(r) = strip_blob(rest) {
        rest = r;
    }
    let lower = rest.get(..3).unwrap_or(rest).to_ascii_lowercase();
    let rest = if lower.starts_with("fwd") {
        &rest[3..]
    } else if lower.starts_with("fw") || lower.starts_with("re") {
        &rest[2..]
    } else {
        return None;
    };
    let rest = rest.trim_start_matches([' ', '\t']);
    let rest = strip_blob(rest).unwrap_or(rest);
    rest.strip_prefix(':')
}

/// One node of a thread tree: a message (its index in `items`) or a dummy.
#[derive(Debug, Default, Clone)]
struct Node {
    item: Option<usize>,
    children: Vec<Node>,
}

/// THREAD=ORDEREDSUBJECT (RFC 5256 §2.1): by base subject, then sent date; in each
/// group the first message is the parent of the others; groups by their first's date.
pub fn ordered_subject(items: &[Item]) -> Vec<Thread> {
    grouped(items, |i| i.subject.clone())
}

/// Team views: the store's conversations, each a thread of its messages by sent date.
pub fn by_conversation(items: &[Item]) -> Vec<Thread> {
    grouped(items, |i| match i.conversation {
        Some(c) => format!("c{c}"),
        None => format!("m{}", i.seq),
    })
}

fn grouped(items: &[Item], key: impl Fn(&Item) -> String) -> Vec<Thread> {
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| (items[i].sent, items[i].seq));
    for i in order {
        let k = key(&items[i]);
        let g = *index.entry(k.clone()).or_insert_with(|| {
            groups.push((k, Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push(i);
    }
    let roots: Vec<Node> = groups
        .into_iter()
        .map(|(_, members)| Node {
            item: Some(members[0]),
            children: members[1..]
                .iter()
                .map(|&i| Node {
                    item: Some(i),
                    children: Vec::new(),
                })
                .collect(),
        })
        .collect();
    roots.iter().filter_map(|n| to_thread(n, items)).collect()
}

/// THREAD=REFERENCES (RFC 5256 §2.2).
pub fn references(items: &[Item]) -> Vec<Thread> {
    // Containers: one per Message-ID; messages without one (or with a duplicate) get
    // their own (step 1A).
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut count = 0usize;
    let mut container = |id: &str| -> usize {
        *ids.entry(id.to_string()).or_insert_with(|| {
            count += 1;
            count - 1
        })
    };
    let mut own = Vec::with_capacity(items.len());
    let mut refs_of = Vec::with_capacity(items.len());
    let mut seen = std::collections::HashSet::new();
    for (i, item) in items.iter().enumerate() {
        let id = if item.message_id.is_empty() || !seen.insert(item.message_id.as_str()) {
            format!("\0unique{i}")
        } else {
            item.message_id.clone()
        };
        own.push(container(&id));
        let refs: Vec<usize> = item.references.iter().map(|r| container(r)).collect();
        refs_of.push(refs);
    }
    let mut item_of: Vec<Option<usize>> = vec![None; count];
    let mut parent: Vec<Option<usize>> = vec![None; count];
    for (i, &c) in own.iter().enumerate() {
        item_of[c] = Some(i);
    }
    let reaches = |parent: &[Option<usize>], from: usize, to: usize| {
        let mut at = Some(from);
        let mut steps = 0;
        while let Some(a) = at {
            if a == to {
                return true;
            }
            steps += 1;
            if steps > parent.len() {
                return true;
            }
            at = parent[a];
        }
        false
    };
    for (i, refs) in refs_of.iter().enumerate() {
        // Step 1B: link the references in order, keeping links already made.
        for pair in refs.windows(2) {
            let (p, c) = (pair[0], pair[1]);
            if p != c && parent[c].is_none() && !reaches(&parent, p, c) {
                parent[c] = Some(p);
            }
        }
        // Step 1C: the message's parent is its last reference.
        let c = own[i];
        parent[c] = None;
        if let Some(&p) = refs.last()
            && p != c
            && !reaches(&parent, p, c)
        {
            parent[c] = Some(p);
        }
    }
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); count];
    for (c, p) in parent.iter().enumerate() {
        if let Some(p) = p {
            children[*p].push(c);
        }
    }
    fn build(c: usize, item_of: &[Option<usize>], children: &[Vec<usize>]) -> Node {
        Node {
            item: item_of[c],
            children: children[c]
                .iter()
                .map(|&k| build(k, item_of, children))
                .collect(),
        }
    }
    // Step 2: the root set.
    let mut roots: Vec<Node> = (0..count)
        .filter(|&c| parent[c].is_none())
        .map(|c| build(c, &item_of, &children))
        .collect();
    // Step 3: prune dummies.
    roots = prune(roots, true);
    // Step 4: the root set by sent date.
    sort_nodes(&mut roots, items);
    // Step 5: merge roots with the same base subject.
    let roots = merge_subjects(roots, items);
    // Step 6: every level by sent date.
    let mut roots = roots;
    for r in &mut roots {
        sort_tree(r, items);
    }
    roots.iter().filter_map(|n| to_thread(n, items)).collect()
}

/// RFC 5256 §2.2 step 3: drop empty dummies; promote a dummy's children, except a root
/// dummy with several children, which stays.
fn prune(nodes: Vec<Node>, root: bool) -> Vec<Node> {
    let mut out = Vec::new();
    for mut n in nodes {
        n.children = prune(std::mem::take(&mut n.children), false);
        if n.item.is_some() {
            out.push(n);
        } else if n.children.is_empty() {
            // An empty dummy: dropped.
        } else if !root || n.children.len() == 1 {
            out.extend(n.children);
        } else {
            out.push(n);
        }
    }
    out
}

/// A node's sort date: its message's, or for a dummy its first child's (RFC 5256 §2.2
/// step 4).
fn node_key(n: &Node, items: &[Item]) -> (i64, u32) {
    match n.item {
        Some(i) => (items[i].sent, items[i].seq),
        None => n
            .children
            .iter()
            .map(|c| node_key(c, items))
            .min()
            .unwrap_or_default(),
    }
}

fn sort_nodes(nodes: &mut [Node], items: &[Item]) {
    nodes.sort_by_key(|n| node_key(n, items));
}

fn sort_tree(n: &mut Node, items: &[Item]) {
    for c in &mut n.children {
        sort_tree(c, items);
    }
    sort_nodes(&mut n.children, items);
}

/// The subject of a thread: its root's, or a dummy's first child's.
fn node_subject<'a>(n: &Node, items: &'a [Item]) -> Option<(&'a str, bool)> {
    match n.item {
        Some(i) => Some((items[i].subject.as_str(), items[i].is_reply)),
        None => n.children.first().and_then(|c| node_subject(c, items)),
    }
}

/// RFC 5256 §2.2 step 5.
fn merge_subjects(roots: Vec<Node>, items: &[Item]) -> Vec<Node> {
    // (A) the table: one root per non-empty base subject, preferring a dummy, then a
    // non-reply.
    let mut table: HashMap<String, usize> = HashMap::new();
    for (r, n) in roots.iter().enumerate() {
        let Some((subject, reply)) = node_subject(n, items) else {
            continue;
        };
        if subject.is_empty() {
            continue;
        }
        match table.get(subject) {
            None => {
                table.insert(subject.to_string(), r);
            }
            Some(&t) => {
                let current = &roots[t];
                let current_reply = node_subject(current, items).is_some_and(|(_, r)| r);
                if current.item.is_some() && (n.item.is_none() || (current_reply && !reply)) {
                    table.insert(subject.to_string(), r);
                }
            }
        }
    }
    // (B) merge each root into the one the table holds for its subject.
    let mut slots: Vec<Option<Node>> = roots.into_iter().map(Some).collect();
    for r in 0..slots.len() {
        let Some(n) = slots[r].as_ref() else { continue };
        let Some((subject, reply)) = node_subject(n, items) else {
            continue;
        };
        let Some(&t) = table.get(subject) else {
            continue;
        };
        if t == r {
            continue;
        }
        let Some(this) = slots[r].take() else {
            continue;
        };
        let Some(mut kept) = slots[t].take() else {
            continue;
        };
        let kept_reply = node_subject(&kept, items).is_some_and(|(_, r)| r);
        kept = if kept.item.is_none() && this.item.is_none() {
            kept.children.extend(this.children);
            kept
        } else if kept.item.is_none() || (this.item.is_some() && !kept_reply && reply) {
            // A dummy adopts the message; an original adopts its reply.
            kept.children.push(this);
            kept
        } else {
            Node {
                item: None,
                children: vec![kept, this],
            }
        };
        slots[t] = Some(kept);
    }
    slots.into_iter().flatten().collect()
}

/// imap-types' shape: a chain of single children is a prefix; a branch is its answers.
fn to_thread(n: &Node, items: &[Item]) -> Option<Thread> {
    let Some(first) = n.item else {
        let answers: Vec<Thread> = n
            .children
            .iter()
            .filter_map(|c| to_thread(c, items))
            .collect();
        return match answers.len() {
            0 => None,
            1 => answers.into_iter().next(),
            _ => Some(Thread::Nested {
                answers: Vec2::unvalidated(answers),
            }),
        };
    };
    let mut prefix = vec![items[first].number];
    let mut at = n;
    while let [only] = at.children.as_slice()
        && let Some(i) = only.item
    {
        prefix.push(items[i].number);
        at = only;
    }
    let answers: Vec<Thread> = at
        .children
        .iter()
        .filter_map(|c| to_thread(c, items))
        .collect();
    let prefix = prefix
        .into_iter()
        .filter_map(std::num::NonZeroU32::new)
        .collect::<Vec<_>>();
    let prefix = Vec1::try_from(prefix).ok()?;
    Some(match answers.len() {
        0 => Thread::Members {
            prefix,
            answers: None,
        },
        1 => {
            // A single answer that is a dummy's group: still nested, as a pair can't be.
            let mut answers = answers;
            let only = answers.remove(0);
            match only {
                Thread::Members {
                    prefix: more,
                    answers,
                } => {
                    let mut p = prefix.into_inner();
                    p.extend(more.into_inner());
                    Thread::Members {
                        prefix: Vec1::unvalidated(p),
                        answers,
                    }
                }
                Thread::Nested { answers } => Thread::Members {
                    prefix,
                    answers: Some(answers),
                },
            }
        }
        _ => Thread::Members {
            prefix,
            answers: Some(Vec2::unvalidated(answers)),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(threads: &[Thread]) -> String {
        threads.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn base_subjects() {
        // RFC 5256 §2.1, case by case.
        for (subject, base, reply) in [
            ("Hello", "HELLO", false),
            ("Re: Hello", "HELLO", true),
            ("RE:   re: Hello  ", "HELLO", true),
            ("Fwd: Hello (fwd)", "HELLO", true),
            ("[list] Re: Hello", "HELLO", true),
            ("Re[2]: Hello", "HELLO", true),
            ("[Fwd: Re: Hello]", "HELLO", true),
            ("[only a blob]", "[ONLY A BLOB]", false),
            ("Rename: x", "RENAME: X", false),
            ("", "", false),
            ("ééé", "ééé", false),
            ("Re: Grüße (fwd)", "GRüßE", true),
            ("[fwdé x]", "[FWDé X]", false),
            ("reé", "REé", false),
        ] {
            assert_eq!(
                base_subject(subject),
                (base.to_string(), reply),
                "{subject:?}"
            );
        }
    }

    fn item(number: u32, sent: i64, subject: &str, id: &str, refs: &[&str]) -> Item {
        let (subject, is_reply) = base_subject(subject);
        Item {
            number,
            seq: number,
            sent,
            subject,
            is_reply,
            message_id: id.into(),
            references: refs.iter().map(|r| r.to_string()).collect(),
            ..Item::default()
        }
    }

    #[test]
    fn sort_keys_reverse_and_ties() {
        let mut items = vec![
            Item {
                number: 1,
                seq: 1,
                size: 30,
                from: "B".into(),
                ..Item::default()
            },
            Item {
                number: 2,
                seq: 2,
                size: 10,
                from: "A".into(),
                ..Item::default()
            },
            Item {
                number: 3,
                seq: 3,
                size: 30,
                from: "A".into(),
                ..Item::default()
            },
        ];
        let c = |key, reverse| SortCriterion { reverse, key };
        sort(&mut items, &[c(SortKey::Size, true)]);
        assert_eq!(
            items.iter().map(|i| i.number).collect::<Vec<_>>(),
            [1, 3, 2]
        );
        sort(
            &mut items,
            &[c(SortKey::From, false), c(SortKey::Size, false)],
        );
        assert_eq!(
            items.iter().map(|i| i.number).collect::<Vec<_>>(),
            [2, 3, 1]
        );
    }

    #[test]
    fn references_threads_like_the_rfc() {
        let items = vec![
            item(1, 10, "Topic", "a", &[]),
            item(2, 20, "Re: Topic", "b", &["a"]),
            item(3, 30, "Re: Topic", "c", &["a"]),
            item(4, 40, "Re: Topic", "d", &["a", "b"]),
            item(5, 15, "Other", "e", &[]),
            // Its parent is missing: a dummy that is pruned away (step 3).
            item(6, 50, "Re: lost", "f", &["gone"]),
            // Same base subject, no reference: merged under the original (step 5).
            item(7, 60, "Re: Other", "g", &[]),
        ];
        assert_eq!(text(&references(&items)), "(1 (2 4)(3))(5 7)(6)");
    }

    #[test]
    fn references_survive_loops_and_duplicate_ids() {
        let items = vec![
            item(1, 10, "x", "a", &["b"]),
            item(2, 20, "y", "b", &["a"]),
            item(3, 30, "z", "a", &[]),
        ];
        let out = text(&references(&items));
        for n in ["1", "2", "3"] {
            assert!(out.contains(n), "{out}");
        }
    }

    #[test]
    fn ordered_subject_groups_by_base_subject() {
        let items = vec![
            item(1, 30, "Re: b", "", &[]),
            item(2, 10, "a", "", &[]),
            item(3, 20, "B", "", &[]),
            item(4, 40, "re: A", "", &[]),
            item(5, 50, "a", "", &[]),
        ];
        assert_eq!(text(&ordered_subject(&items)), "(2 (4)(5))(3 1)");
    }
}
