//! DKIM signing of outgoing mail (RFC 6376) with mail-auth 0.13 (CRATES §2.6): the
//! `[outbound] dkim_key` PEM (RSA as PKCS#1 or PKCS#8, or Ed25519 as PKCS#8), signing
//! domain = the From address's domain, a `DKIM-Signature` header prepended.
//!
//! The key file is read at every signing, so a rotated key takes effect on SIGHUP
//! without a restart, and a broken one shows up in `queue list` as the last error.

use std::path::Path;

use mail_auth::common::crypto::{DkimKey, Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use mail_parser::MessageParser;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

/// Headers covered by the signature.
pub const SIGNED_HEADERS: [&str; 8] = [
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
];

#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    #[error("reading DKIM key {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("DKIM key {path}: {why}")]
    Key { path: String, why: String },
    #[error("cannot DKIM-sign: the message has no From address with a domain")]
    NoFromDomain,
    #[error("DKIM signing failed: {0}")]
    Sign(String),
}

/// Parses a PEM private key: RSA (PKCS#1 or PKCS#8) or Ed25519 (PKCS#8).
pub fn parse_key(pem: &[u8], path: &str) -> Result<DkimKey, DkimError> {
    let bad = |why: String| DkimError::Key {
        path: path.to_owned(),
        why,
    };
    let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| bad(format!("invalid PEM: {e}")))?;
    match der {
        PrivateKeyDer::Pkcs1(_) => RsaKey::<Sha256>::from_key_der(der)
            .map(DkimKey::Rsa)
            .map_err(|e| bad(e.to_string())),
        PrivateKeyDer::Pkcs8(pkcs8) => {
            let bytes = pkcs8.secret_pkcs8_der().to_vec();
            match RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(pkcs8)) {
                Ok(rsa) => Ok(DkimKey::Rsa(rsa)),
                // Not RSA: Ed25519 (v1 from OpenSSL, or v2 with the public key).
                Err(rsa_err) => Ed25519Key::from_pkcs8_maybe_unchecked_der(&bytes)
                    .map(DkimKey::Ed25519)
                    .map_err(|ed_err| {
                        bad(format!("neither RSA ({rsa_err}) nor Ed25519 ({ed_err})"))
                    }),
            }
        }
        _ => Err(bad(
            "unsupported key type (use RSA or Ed25519, not EC)".into()
        )),
    }
}

pub fn load_key(path: &Path) -> Result<DkimKey, DkimError> {
    let shown = path.display().to_string();
    let pem = std::fs::read(path).map_err(|source| DkimError::Read {
        path: shown.clone(),
        source,
    })?;
    parse_key(&pem, &shown)
}

/// The domain of the message's (first) From address.
pub fn from_domain(raw: &[u8]) -> Option<String> {
    let msg = std::panic::catch_unwind(|| MessageParser::default().parse_headers(raw))
        .ok()
        .flatten()?;
    let address = msg.from()?.first()?.address()?.to_owned();
    crate::mail::address::domain_of(&address)
}

/// `raw` with a `DKIM-Signature` header prepended (relaxed/relaxed over
/// [`SIGNED_HEADERS`]; those absent are signed as empty, so adding one later breaks it).
pub fn sign(raw: &[u8], selector: &str, key: DkimKey) -> Result<Vec<u8>, DkimError> {
    let domain = from_domain(raw).ok_or(DkimError::NoFromDomain)?;
    let signature = DkimSigner::from_key(key)
        .domain(domain)
        .selector(selector)
        .headers(SIGNED_HEADERS)
        .sign(raw)
        .map_err(|e| DkimError::Sign(e.to_string()))?;
    let mut signed = Vec::with_capacity(raw.len() + 512);
    signature.write_header(&mut signed);
    signed.extend_from_slice(raw);
    Ok(signed)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::hash::Hash;
    use std::sync::Arc;
    use std::time::Instant;

    use base64::Engine;
    use mail_auth::common::parse::TxtRecordParser;
    use mail_auth::common::verify::DomainKey;
    use mail_auth::hickory_resolver::config::{ResolverConfig, ResolverOpts};
    use mail_auth::{
        AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, ResolverCache, Txt,
    };

    use super::*;

    const RSA_PEM: &[u8] = include_bytes!("testdata/dkim-rsa.pem");

    const MESSAGE: &[u8] = b"From: Support <support@example.test>\r\n\
To: Customer <jose@example.org>\r\n\
Subject: Re: [#12] Printer\r\n\
Date: Tue, 24 Nov 2026 10:00:00 +0000\r\n\
Message-ID: <reply-1@example.test>\r\n\
In-Reply-To: <q-1@example.org>\r\n\
References: <q-1@example.org>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
We are on it.\r\n\
.leading dot\r\n";

    /// An in-memory DNS answer for one DKIM key record.
    struct KeyRecord(HashMap<Box<str>, Txt>);

    impl KeyRecord {
        fn new(name: &str, record: &str) -> KeyRecord {
            let key = DomainKey::parse(record.as_bytes()).expect("key record");
            KeyRecord(HashMap::from([(
                Box::<str>::from(name),
                Txt::DomainKey(Arc::new(key)),
            )]))
        }
    }

    impl ResolverCache<Box<str>, Txt> for KeyRecord {
        fn get<Q>(&self, name: &Q) -> Option<Txt>
        where
            Box<str>: std::borrow::Borrow<Q>,
            Q: Hash + Eq + ?Sized,
        {
            self.0.get(name).cloned()
        }

        fn remove<Q>(&self, _: &Q) -> Option<Txt>
        where
            Box<str>: std::borrow::Borrow<Q>,
            Q: Hash + Eq + ?Sized,
        {
            None
        }

        fn insert(&self, _: Box<str>, _: Txt, _: Instant) {}
    }

    /// Verifies `signed` with mail-auth against the in-memory record; no network.
    async fn verify(signed: &[u8], dns: &KeyRecord) -> Vec<DkimResult> {
        let auth = MessageAuthenticator::new(ResolverConfig::default(), ResolverOpts::default())
            .expect("resolver");
        let msg = AuthenticatedMessage::parse(signed).expect("parse");
        auth.verify_dkim(Parameters::new(&msg).with_txt_cache(dns))
            .await
            .iter()
            .map(|o| o.result().clone())
            .collect()
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[tokio::test]
    async fn rsa_signature_verifies_and_breaks_on_tampering() {
        let key = parse_key(RSA_PEM, "test").expect("rsa key");
        let DkimKey::Rsa(rsa) = &key else {
            panic!("expected an RSA key")
        };
        let record = format!("v=DKIM1; k=rsa; p={}", b64(&rsa.public_key()));
        let signed = sign(MESSAGE, "tg2026", key).expect("sign");
        assert!(signed.starts_with(b"DKIM-Signature: v=1; a=rsa-sha256;"));
        assert!(signed.ends_with(MESSAGE), "the message follows, unchanged");
        let header = String::from_utf8_lossy(&signed[..signed.len() - MESSAGE.len()]);
        assert!(header.contains("d=example.test"), "{header}");
        assert!(header.contains("s=tg2026"), "{header}");
        assert!(header.contains("c=relaxed/relaxed"), "{header}");
        let h = header.split("h=").nth(1).unwrap_or("").to_ascii_lowercase();
        for name in [
            "from",
            "to",
            "subject",
            "date",
            "message-id",
            "in-reply-to",
            "references",
        ] {
            assert!(h.contains(name), "{name} not signed: {header}");
        }
        // An absent header is signed as empty (RFC 6376 §5.4): a Cc added later breaks it.
        assert!(h.contains("cc"), "{header}");

        let dns = KeyRecord::new("tg2026._domainkey.example.test.", &record);
        assert_eq!(verify(&signed, &dns).await, [DkimResult::Pass]);

        let tampered = String::from_utf8_lossy(&signed)
            .replace("We are on it.", "We are NOT on it.")
            .into_bytes();
        let result = verify(&tampered, &dns).await;
        assert!(
            matches!(
                result.as_slice(),
                [DkimResult::Neutral(_) | DkimResult::Fail(_)]
            ),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn ed25519_pkcs8_key_signs_and_verifies() {
        let pkcs8 = Ed25519Key::generate_pkcs8().expect("generate");
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            b64(&pkcs8)
        );
        let key = parse_key(pem.as_bytes(), "test").expect("ed25519 key");
        let DkimKey::Ed25519(ed) = &key else {
            panic!("expected an Ed25519 key")
        };
        let record = format!("v=DKIM1; k=ed25519; p={}", b64(&ed.public_key()));
        let signed = sign(MESSAGE, "ed", key).expect("sign");
        assert!(signed.starts_with(b"DKIM-Signature: v=1; a=ed25519-sha256;"));
        let dns = KeyRecord::new("ed._domainkey.example.test.", &record);
        assert_eq!(verify(&signed, &dns).await, [DkimResult::Pass]);
    }

    #[test]
    fn bad_keys_and_messages_are_errors() {
        assert!(matches!(
            parse_key(b"not a pem", "k.pem"),
            Err(DkimError::Key { .. })
        ));
        let key = parse_key(RSA_PEM, "test").expect("rsa key");
        assert!(matches!(
            sign(b"Subject: no sender\r\n\r\nx\r\n", "s", key),
            Err(DkimError::NoFromDomain)
        ));
        assert!(matches!(
            load_key(Path::new("/nonexistent/dkim.pem")),
            Err(DkimError::Read { .. })
        ));
    }
}
