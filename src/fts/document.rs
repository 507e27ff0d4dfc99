//! One message as the index holds it: the folded strings the scan compares, per field.

use tantivy::TantivyDocument;

use super::{Field, Inner};
use crate::mail::search_text;
use crate::store::MessageKey;

/// The document for message `key`, whose bytes are `raw`.
pub(super) fn document(inner: &Inner, key: MessageKey, raw: &[u8]) -> TantivyDocument {
    let mut doc = TantivyDocument::default();
    doc.add_u64(inner.msg, key.0);
    let msg = search_text::parse(raw);
    for field in Field::ALL {
        let text = match (field, &msg) {
            (Field::Body, msg) => search_text::body_text(msg.as_ref(), raw),
            (Field::Headers, Some(msg)) => search_text::header_text(msg),
            (single, Some(msg)) => match single.header() {
                // Each value on its own line, as the scan looks at each header alone.
                Some(name) => search_text::field_values(msg, name)
                    .collect::<Vec<_>>()
                    .join("\n"),
                None => String::new(),
            },
            (_, None) => String::new(),
        };
        if !text.is_empty() {
            doc.add_text(inner.text[field as usize], search_text::fold(&text));
        }
    }
    doc
}
