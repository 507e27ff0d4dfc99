//! Entry points shared by the `fuzz/` targets and the seed-replay test, so CI exercises
//! the harnesses on stable without libFuzzer. Each must never panic on any input.

use std::{path::Path, sync::Arc};

use smtp_proto::request::receiver::RequestReceiver;

use crate::{
    config::{self, Config},
    message,
    smtp::session::{Action, Mode, Session},
    store::Direction,
    threading,
};

/// Feeds arbitrary bytes, line by line, through the SMTP command parser and session.
pub fn smtp_session(data: &[u8]) {
    let config = Arc::new(Config::for_tests(Path::new("/nonexistent")));
    // Submission mode exercises AUTH as well as everything the MX does.
    let mode = if data.first().is_some_and(|b| b % 2 == 1) {
        Mode::Submission
    } else {
        Mode::Inbound
    };
    let mut session = Session::with_mode(config, mode, true, false);
    let mut lines = data.split_inclusive(|b| *b == b'\n').take(2048);
    while let Some(line) = lines.next() {
        let action = match RequestReceiver::default().ingest(&mut line.iter()) {
            Ok(request) => session.handle(request.into_owned()),
            Err(e) => session.parse_error(&e),
        };
        match action {
            Action::StartData | Action::StartBdat { .. } => {
                // The next line stands in for a whole body.
                let body = lines.next().unwrap_or_default();
                if session.check_message(body).is_ok() {
                    let _ = session.take_envelope();
                } else {
                    session.abort_transaction();
                }
            }
            Action::StartTls => session.reset_after_tls(),
            Action::Close(_) => return,
            Action::SaslChallenge(_) => {
                let next = lines.next().unwrap_or_default();
                let action = session.sasl_line(String::from_utf8_lossy(next).trim_end());
                if let Action::Verify { .. } = action {
                    let _ = session.verified(Err(crate::auth::AuthError::Invalid));
                }
            }
            Action::Verify { .. } => {
                let _ = session.verified(Err(crate::auth::AuthError::Invalid));
            }
            Action::Reply(_) | Action::Raw(_) | Action::SkipBdat { .. } => {}
        }
    }
}

/// Parses arbitrary bytes as a message and derives everything ingest derives.
pub fn message_analyze(data: &[u8]) {
    if let Ok(facts) = message::analyze(data, "sender@customer.example") {
        let _ = threading::thread_keys(&facts);
        let _ = message::summary(&facts, Direction::In, "fallback@teamgate");
        let _ = crate::contacts::inbound_touches(&facts, facts.from.as_ref());
    }
    let _ = threading::normalize_subject(&String::from_utf8_lossy(data));
}

/// Parses arbitrary bytes as a config file.
pub fn config_parse(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = config::load_from_str(text, &[]);
    }
}
