//! Contact identity and the contact touches of an inbound message (SPEC §4).
//!
//! Pure: no I/O, no clock. The store turns each [`ContactTouch`] into a create-or-update
//! of the contact and timeline entries.
//!
//! Decisions:
//! - A contact is identified by its **whole address lower-cased**, the domain in its ASCII
//!   (punycode) form. RFC 5321 allows case-sensitive local parts, but no real mailbox
//!   provider uses them, and users expect `John.Doe@x` and `john.doe@x` to be one contact.
//! - Only senders become contacts: the customer (the From, or for a forward the original
//!   sender) and the forwarder. Recipients do not.
//! - Machine-generated mail (bounces, auto-replies, see
//!   [`AutoReason::is_machine_generated`](crate::message::AutoReason::is_machine_generated)),
//!   null senders and `MAILER-DAEMON`/`postmaster`/`no-reply`-style senders never create
//!   or touch a contact. Mailing-list posts and newsletters (`Precedence: list|bulk`) are
//!   written by a person or an organisation and do touch their sender.

use crate::mail::address::is_system_sender;
use crate::message::MessageFacts;
use crate::store::model::{Address, ContactTouch, TimelineKind};

/// The contact an inbound message is credited to: the original sender of a forward, else
/// the From.
pub fn customer_of(f: &MessageFacts) -> Option<&Address> {
    f.forward
        .as_ref()
        .map(|fw| &fw.original)
        .or(f.from.as_ref())
}

/// Whether this message may touch contacts at all.
fn may_touch(f: &MessageFacts) -> bool {
    !f.auto.as_ref().is_some_and(|a| a.is_machine_generated())
}

/// Timeline entries for a message's attachments: "name (type, N bytes)".
pub fn attachment_events(f: &MessageFacts) -> impl Iterator<Item = (TimelineKind, String)> + '_ {
    f.attachments.iter().map(|a| {
        (
            TimelineKind::Attachment,
            format!("{} ({}, {} bytes)", a.name, a.content_type, a.size),
        )
    })
}

/// Contacts to create or touch for an inbound message.
///
/// - The `customer` (normally [`customer_of`]) gets `is_customer = true` and the events
///   `(Inbound, subject)`, for a forward also `(ForwardedBy, forwarder email)`, then one
///   `(Attachment, "name (type, N bytes)")` per attachment.
/// - For a forward, the forwarder gets `is_customer = false` and `(Inbound, subject)`.
/// - Nothing for machine-generated mail, system senders, or a missing customer.
pub fn inbound_touches(f: &MessageFacts, customer: Option<&Address>) -> Vec<ContactTouch> {
    let mut out = Vec::new();
    if !may_touch(f) {
        return out;
    }
    let forwarder = f
        .forward
        .as_ref()
        .and_then(|fw| fw.forwarder.as_ref())
        .filter(|fwd| customer.is_none_or(|c| c.email != fwd.email));
    if let Some(c) = customer.filter(|c| !is_system_sender(&c.email)) {
        let mut events = vec![(TimelineKind::Inbound, f.subject.clone())];
        if let Some(fwd) = forwarder {
            events.push((TimelineKind::ForwardedBy, fwd.email.clone()));
        }
        events.extend(attachment_events(f));
        out.push(ContactTouch {
            email: c.email.clone(),
            name: c.name.clone(),
            is_customer: true,
            events,
        });
    }
    if let Some(fwd) = forwarder.filter(|a| !is_system_sender(&a.email)) {
        out.push(ContactTouch {
            email: fwd.email.clone(),
            name: fwd.name.clone(),
            is_customer: false,
            events: vec![(TimelineKind::Inbound, f.subject.clone())],
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touches(raw: &str, env: &str) -> Vec<ContactTouch> {
        let f = crate::message::analyze(raw.as_bytes(), env).unwrap_or_else(|e| panic!("{e}"));
        inbound_touches(&f, customer_of(&f))
    }

    #[test]
    fn inbound_touch_table() {
        let plain = touches(
            "From: Ann <Ann@Cust.example>\r\nSubject: Help\r\n\r\nx",
            "ann@cust.example",
        );
        assert_eq!(
            plain,
            vec![ContactTouch {
                email: "ann@cust.example".into(),
                name: Some("Ann".into()),
                is_customer: true,
                events: vec![(TimelineKind::Inbound, "Help".into())],
            }]
        );
        let fwd = touches(
            "From: Sam <sam@us.example>\r\nSubject: Fwd: Help\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n\
             ---------- Forwarded message ---------\r\nFrom: Ann <ann@cust.example>\r\n\r\nhi\r\n\
             --b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\n\r\nPDF\r\n--b--\r\n",
            "sam@us.example",
        );
        assert_eq!(
            fwd,
            vec![
                ContactTouch {
                    email: "ann@cust.example".into(),
                    name: Some("Ann".into()),
                    is_customer: true,
                    events: vec![
                        (TimelineKind::Inbound, "Fwd: Help".into()),
                        (TimelineKind::ForwardedBy, "sam@us.example".into()),
                        (
                            TimelineKind::Attachment,
                            "a.pdf (application/pdf, 3 bytes)".into()
                        ),
                    ],
                },
                ContactTouch {
                    email: "sam@us.example".into(),
                    name: Some("Sam".into()),
                    is_customer: false,
                    events: vec![(TimelineKind::Inbound, "Fwd: Help".into())],
                },
            ]
        );
        // Bounces, auto-replies and system senders touch nobody; list posts do.
        assert!(touches("From: MAILER-DAEMON@mx.example\r\nSubject: x\r\n\r\nx", "").is_empty());
        assert!(
            touches(
                "From: ann@cust.example\r\nAuto-Submitted: auto-replied\r\n\r\nx",
                "a@b"
            )
            .is_empty()
        );
        assert!(
            touches(
                "From: no-reply@shop.example\r\nSubject: order\r\n\r\nx",
                "a@b"
            )
            .is_empty()
        );
        assert_eq!(
            touches("From: ann@cust.example\r\nPrecedence: list\r\n\r\nx", "a@b").len(),
            1
        );
    }
}
