//! Which messages a team view holds (SPEC §5): one pure decision over a conversation
//! record and a message's direction, used by `sync_view` and nothing else, so every view
//! agrees with this table.

use time::OffsetDateTime;

use super::model::{Direction, Status, TeamView};
use super::records::ConversationRecord;

/// How much of one conversation a view holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    None,
    /// Every message (in, out, comment): clients thread the whole conversation.
    All,
    /// Only the messages with this direction (`Sent`).
    Only(Direction),
}

/// The UTC year of a unix time, if representable.
pub fn utc_year(t: i64) -> Option<i32> {
    OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .map(|d| d.year())
}

/// The decision for a whole conversation (so a sync reads message records only when the
/// answer depends on the direction).
pub fn membership(view: &TeamView, conv: &ConversationRecord) -> Membership {
    // A conversation judged spam is in Junk only, as junk records (`junk.rs`).
    if conv.junk || conv.merged_into.is_some() || !view.inboxes().contains(&conv.inbox) {
        return Membership::None;
    }
    let open = conv.status == Status::Open;
    let held = match view {
        TeamView::Open { .. } => open,
        TeamView::Assigned { assignee, .. } => {
            open && conv.assignee.as_deref() == Some(assignee.as_str())
        }
        TeamView::Unassigned { .. } => open && conv.assignee.is_none(),
        TeamView::Closed { year, .. } => {
            conv.status == Status::Closed
                && year.is_none_or(|y| utc_year(conv.closed_at.unwrap_or(conv.updated)) == Some(y))
        }
        TeamView::Trash { .. } => conv.status == Status::Trash,
        // Junk holds junk records, not conversations (`junk::entries`).
        TeamView::Junk { .. } => return Membership::None,
        TeamView::Sent { .. } => {
            return if conv.status == Status::Trash {
                Membership::None
            } else {
                Membership::Only(Direction::Out)
            };
        }
    };
    if held {
        Membership::All
    } else {
        Membership::None
    }
}

/// Whether a message of `direction` in conversation `conv` is in `view`.
pub fn in_view(view: &TeamView, conv: &ConversationRecord, direction: Direction) -> bool {
    match membership(view, conv) {
        Membership::None => false,
        Membership::All => true,
        Membership::Only(d) => d == direction,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::store::model::ConversationId;

    // 2024-06-01T00:00:00Z and 2025-06-01T00:00:00Z.
    const Y2024: i64 = 1_717_200_000;
    const Y2025: i64 = 1_748_736_000;

    fn conv(inbox: &str, status: Status, assignee: Option<&str>) -> ConversationRecord {
        ConversationRecord {
            id: ConversationId(1),
            inbox: inbox.into(),
            status,
            assignee: assignee.map(Into::into),
            subject: "s".into(),
            customer: None,
            linked_to: None,
            participants: BTreeSet::new(),
            created: Y2024,
            updated: Y2024,
            closed_at: (status == Status::Closed).then_some(Y2025),
            former_inboxes: BTreeSet::new(),
            junk: false,
            merged_into: None,
        }
    }

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn table() {
        use Direction::{Comment, In, Out};
        use Status::{Closed, Open, Trash};
        let ab = v(&["a", "b"]);
        let open = TeamView::Open {
            inboxes: ab.clone(),
        };
        let bob = TeamView::Assigned {
            inboxes: ab.clone(),
            assignee: "bob".into(),
        };
        let unassigned = TeamView::Unassigned {
            inboxes: ab.clone(),
        };
        let closed = TeamView::Closed {
            inboxes: ab.clone(),
            year: None,
        };
        let closed_2025 = TeamView::Closed {
            inboxes: ab.clone(),
            year: Some(2025),
        };
        let closed_2024 = TeamView::Closed {
            inboxes: ab.clone(),
            year: Some(2024),
        };
        let trash = TeamView::Trash {
            inboxes: ab.clone(),
            agent: "alice".into(),
        };
        let sent = TeamView::Sent { inboxes: ab };
        // (view, inbox, status, assignee, direction, expected)
        type Case<'a> = (
            &'a TeamView,
            &'a str,
            Status,
            Option<&'a str>,
            Direction,
            bool,
        );
        let cases: &[Case<'_>] = &[
            (&open, "a", Open, None, In, true),
            (&open, "b", Open, Some("bob"), Comment, true),
            (&open, "c", Open, None, In, false),
            (&open, "a", Closed, None, In, false),
            (&open, "a", Trash, None, Out, false),
            (&bob, "a", Open, Some("bob"), Out, true),
            (&bob, "a", Open, Some("eve"), In, false),
            (&bob, "a", Open, None, In, false),
            (&bob, "a", Closed, Some("bob"), In, false),
            (&unassigned, "a", Open, None, In, true),
            (&unassigned, "a", Open, Some("bob"), In, false),
            (&unassigned, "a", Trash, None, In, false),
            (&closed, "b", Closed, Some("bob"), In, true),
            (&closed, "b", Open, None, In, false),
            (&closed, "c", Closed, None, In, false),
            (&closed_2025, "a", Closed, None, In, true),
            (&closed_2024, "a", Closed, None, In, false),
            (&trash, "a", Trash, None, Comment, true),
            (&trash, "a", Open, None, In, false),
            (&sent, "a", Open, None, Out, true),
            (&sent, "a", Closed, None, Out, true),
            (&sent, "a", Open, None, In, false),
            (&sent, "a", Open, None, Comment, false),
            (&sent, "a", Trash, None, Out, false),
            (&sent, "c", Open, None, Out, false),
        ];
        for (i, (view, inbox, status, assignee, dir, want)) in cases.iter().enumerate() {
            let c = conv(inbox, *status, *assignee);
            assert_eq!(
                in_view(view, &c, *dir),
                *want,
                "case {i}: {view:?} {c:?} {dir:?}"
            );
        }
    }

    #[test]
    fn closed_year_falls_back_to_updated() {
        let mut c = conv("a", Status::Closed, None);
        c.closed_at = None;
        let year = |y| TeamView::Closed {
            inboxes: v(&["a"]),
            year: Some(y),
        };
        assert!(in_view(&year(2024), &c, Direction::In));
        assert!(!in_view(&year(2025), &c, Direction::In));
        assert_eq!(utc_year(Y2025), Some(2025));
    }

    #[test]
    fn membership_reads_direction_only_for_sent() {
        let c = conv("a", Status::Open, None);
        assert_eq!(
            membership(&TeamView::Open { inboxes: v(&["a"]) }, &c),
            Membership::All
        );
        assert_eq!(
            membership(&TeamView::Sent { inboxes: v(&["a"]) }, &c),
            Membership::Only(Direction::Out)
        );
    }
}
