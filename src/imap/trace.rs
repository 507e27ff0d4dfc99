//! The operator's protocol trace (like Dovecot's rawlog): `[log] protocol_trace` names
//! logins (or `"*"`), and each of their IMAP sessions is written to
//! `<data_dir>/trace/<login>-<session>.log`, one `C:`/`S:` line per protocol line.
//!
//! What is left out, so a trace can be handed around: credentials (the arguments of
//! LOGIN, every AUTHENTICATE exchange) and literal bodies over
//! `protocol_trace_max_literal` bytes (a message body is replaced by its size). Before
//! login the session's login is unknown, so its lines wait in a bounded buffer and are
//! written only if the login turns out to be traced.
//!
//! The scanner is pure (bytes in, trace lines out); the file is written by [`Trace`].

use std::{
    fs::{File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
};

/// Bytes of trace kept before the login is known (pre-login input is bounded too).
const MAX_PENDING: usize = 64 * 1024;
/// Bytes of one protocol line kept (shown literals included); the rest is counted, not
/// kept. A client may send without LF for as long as it likes.
const MAX_LINE: usize = 64 * 1024;

/// One direction of the stream, cut into lines, with literals and credentials handled.
#[derive(Debug)]
struct Scanner {
    prefix: &'static str,
    /// The current protocol line, not yet ended by LF.
    line: Vec<u8>,
    /// Bytes of a literal still to come, and whether they are written or omitted.
    literal_left: usize,
    literal_shown: bool,
    /// Inside a command whose arguments are secret (LOGIN, and its literals).
    secret: bool,
    /// Where the text after the last literal starts in `line`: only there can the next
    /// literal be announced (a literal's own bytes may end in `{n}`).
    segment_start: usize,
    /// Bytes of the current line beyond `MAX_LINE`, left out.
    dropped: usize,
    max_literal: usize,
}

impl Scanner {
    fn new(prefix: &'static str, max_literal: usize) -> Scanner {
        Scanner {
            prefix,
            line: Vec::new(),
            literal_left: 0,
            literal_shown: false,
            secret: false,
            segment_start: 0,
            dropped: 0,
            max_literal,
        }
    }

    /// Feeds bytes; appends finished trace lines to `out`. `authenticating` says the
    /// client is answering an AUTHENTICATE challenge: every line is a credential.
    fn feed(&mut self, mut bytes: &[u8], authenticating: bool, out: &mut Vec<u8>) {
        while !bytes.is_empty() {
            if self.literal_left > 0 {
                let n = self.literal_left.min(bytes.len());
                if self.literal_shown && !self.secret {
                    self.keep(&bytes[..n]);
                }
                self.literal_left -= n;
                bytes = &bytes[n..];
                if self.literal_left == 0 {
                    self.segment_start = self.line.len();
                }
                continue;
            }
            let Some(lf) = bytes.iter().position(|b| *b == b'\n') else {
                self.keep(bytes);
                return;
            };
            self.keep(&bytes[..=lf]);
            bytes = &bytes[lf + 1..];
            self.end_line(authenticating, out);
        }
    }

    /// Appends to the current line up to `MAX_LINE`; counts what does not fit.
    fn keep(&mut self, bytes: &[u8]) {
        let room = MAX_LINE.saturating_sub(self.line.len()).min(bytes.len());
        self.line.extend_from_slice(&bytes[..room]);
        self.dropped += bytes.len() - room;
    }

    /// A line ended by LF: write it, unless it announces a literal (then the line goes
    /// on after the literal, as IMAP parses it).
    fn end_line(&mut self, authenticating: bool, out: &mut Vec<u8>) {
        let text = String::from_utf8_lossy(&self.line).into_owned();
        let trimmed = text.trim_end_matches(['\r', '\n']);
        if !self.secret && !authenticating && starts_secret_command(trimmed) {
            self.secret = true;
        }
        let segment =
            String::from_utf8_lossy(self.line.get(self.segment_start..).unwrap_or_default())
                .into_owned();
        if let Some(size) = literal_size(segment.trim_end_matches(['\r', '\n'])) {
            self.literal_left = size;
            self.literal_shown = size <= self.max_literal;
            if !self.literal_shown && !self.secret {
                let end = self
                    .line
                    .iter()
                    .rposition(|b| !matches!(b, b'\r' | b'\n'))
                    .map_or(0, |p| p + 1);
                self.line.truncate(end);
                self.line
                    .extend_from_slice(format!(" <{size} bytes of literal omitted>").as_bytes());
            }
            if size > 0 {
                return;
            }
            self.segment_start = self.line.len();
        }
        let shown = if authenticating {
            "<credentials removed>".to_owned()
        } else if self.secret {
            redact_arguments(trimmed)
        } else {
            // A literal shown in full spans lines: each gets the direction prefix.
            String::from_utf8_lossy(&self.line)
                .trim_end_matches(['\r', '\n'])
                .replace("\r\n", "\n")
                .replace('\n', &format!("\n{}", self.prefix))
        };
        out.extend_from_slice(self.prefix.as_bytes());
        out.extend_from_slice(shown.as_bytes());
        if self.dropped > 0 {
            out.extend_from_slice(format!(" <{} more bytes omitted>", self.dropped).as_bytes());
        }
        out.push(b'\n');
        self.line.clear();
        self.segment_start = 0;
        self.dropped = 0;
        self.secret = false;
    }
}

/// `{123}` or `{123+}` (LITERAL+) or `~{123}` (literal8) at the end of a line.
fn literal_size(line: &str) -> Option<usize> {
    let inner = line.strip_suffix('}')?;
    let open = inner.rfind('{')?;
    let digits = inner[open + 1..].trim_end_matches('+');
    if digits.is_empty() || digits.len() > 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// `tag LOGIN …` (RFC 3501 §6.2.3): its arguments are the credentials.
fn starts_secret_command(line: &str) -> bool {
    let mut words = line.split_ascii_whitespace();
    let _tag = words.next();
    words
        .next()
        .is_some_and(|w| w.eq_ignore_ascii_case("LOGIN"))
}

/// `tag LOGIN <credentials removed>`; `tag AUTHENTICATE PLAIN` keeps its mechanism.
fn redact_arguments(line: &str) -> String {
    let mut words = line.split_ascii_whitespace();
    let tag = words.next().unwrap_or_default();
    let verb = words.next().unwrap_or_default();
    format!("{tag} {verb} <credentials removed>")
}

/// True when a client line starts an AUTHENTICATE with no initial response: the next
/// client lines answer the challenge.
fn starts_authenticate(line: &str) -> bool {
    let mut words = line.split_ascii_whitespace();
    let _tag = words.next();
    let verb = words
        .next()
        .is_some_and(|w| w.eq_ignore_ascii_case("AUTHENTICATE"));
    verb && words.next().is_some() && words.next().is_none()
}

/// One session's trace: pending until the login is known, then a file or nothing.
#[derive(Debug)]
pub struct Trace {
    client: Scanner,
    server: Scanner,
    /// The client is answering an AUTHENTICATE challenge.
    authenticating: bool,
    state: State,
}

#[derive(Debug)]
enum State {
    /// Login unknown: lines wait here (bounded).
    Pending(Vec<u8>),
    Writing(File),
    /// Not traced, or the file failed: nothing more is kept.
    Off,
}

/// Who is traced, and where (from `[log]`).
#[derive(Debug, Clone)]
pub struct TraceConfig {
    /// Logins, or `"*"` for every login; empty: off.
    pub logins: Vec<String>,
    pub max_literal: usize,
    /// `<data_dir>/trace`.
    pub dir: PathBuf,
}

impl TraceConfig {
    pub fn of(config: &crate::config::Config) -> TraceConfig {
        TraceConfig {
            logins: config.log.protocol_trace.clone(),
            max_literal: config.log.protocol_trace_max_literal,
            dir: config.server.data_dir.join("trace"),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.logins.is_empty()
    }

    fn traces(&self, login: &str) -> bool {
        self.logins.iter().any(|l| l == "*" || l == login)
    }
}

impl Trace {
    /// A trace for a new session, or `None` when tracing is off.
    pub fn start(config: &TraceConfig) -> Option<Trace> {
        config.enabled().then(|| Trace {
            client: Scanner::new("C: ", config.max_literal),
            server: Scanner::new("S: ", config.max_literal),
            authenticating: false,
            state: State::Pending(Vec::new()),
        })
    }

    pub fn client(&mut self, bytes: &[u8]) {
        let mut out = Vec::new();
        // The answer to a challenge is one line; the line after it is a command again.
        let was_authenticating = self.authenticating;
        self.client.feed(bytes, was_authenticating, &mut out);
        if was_authenticating && !out.is_empty() {
            self.authenticating = false;
        }
        if !was_authenticating
            && let Some(last) = out.split(|b| *b == b'\n').rev().find(|l| !l.is_empty())
        {
            let last = String::from_utf8_lossy(last.get(3..).unwrap_or_default()).into_owned();
            self.authenticating = starts_authenticate(&last);
        }
        self.write(&out);
    }

    pub fn server(&mut self, bytes: &[u8]) {
        let mut out = Vec::new();
        self.server.feed(bytes, false, &mut out);
        self.write(&out);
    }

    /// The session logged in as `login`: open its file and write what waited, or stop.
    pub fn logged_in(&mut self, config: &TraceConfig, login: &str, session: u64) {
        if !matches!(self.state, State::Pending(_)) {
            return;
        }
        let State::Pending(pending) = std::mem::replace(&mut self.state, State::Off) else {
            return;
        };
        if !config.traces(login) {
            return;
        }
        match open(&config.dir, login, session) {
            Ok(mut file) => {
                if file.write_all(&pending).is_ok() {
                    self.state = State::Writing(file);
                }
            }
            Err(e) => tracing::warn!(error = %e, %login, "protocol trace: cannot open the file"),
        }
    }

    fn write(&mut self, lines: &[u8]) {
        if lines.is_empty() {
            return;
        }
        match &mut self.state {
            State::Pending(buf) if buf.len() + lines.len() <= MAX_PENDING => {
                buf.extend_from_slice(lines);
            }
            State::Pending(_) => self.state = State::Off,
            State::Writing(file) => {
                if let Err(e) = file.write_all(lines) {
                    tracing::warn!(error = %e, "protocol trace: write failed, trace stopped");
                    self.state = State::Off;
                }
            }
            State::Off => {}
        }
    }
}

/// `<dir>/<login>-<session>.log`, created with mode 0600 (a trace shows mail).
fn open(dir: &Path, login: &str, session: u64) -> std::io::Result<File> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // Logins are validated ASCII names without '/' (config), so this stays in `dir`.
    let name: String = login
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(dir.join(format!("{name}-{session}.log")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(prefix: &'static str, chunks: &[&[u8]], max_literal: usize) -> String {
        let mut s = Scanner::new(prefix, max_literal);
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, false, &mut out);
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn lines_literals_and_credentials() {
        assert_eq!(
            scan("C: ", &[b"a1 NOOP\r\na2 SEL", b"ECT INBOX\r\n"], 10),
            "C: a1 NOOP\nC: a2 SELECT INBOX\n"
        );
        assert_eq!(
            scan("C: ", &[b"a1 LOGIN alice s3cret\r\n"], 10),
            "C: a1 LOGIN <credentials removed>\n"
        );
        // A literal whose bytes end in `{n}` announces nothing.
        assert_eq!(
            scan("C: ", &[b"a4 APPEND Sent {6}\r\nabc{3}\r\n"], 10),
            "C: a4 APPEND Sent {6}\nC: abc{3}\n"
        );
        // LOGIN with literals: nothing of them shows.
        let t = scan(
            "C: ",
            &[b"a1 LOGIN {5}\r\n", b"alice {6+}\r\ns3cret\r\n"],
            100,
        );
        assert_eq!(t, "C: a1 LOGIN <credentials removed>\n");
        assert!(!t.contains("s3cret") && !t.contains("alice"));
        // A small literal is kept, a big one replaced by its size.
        assert_eq!(
            scan("C: ", &[b"a3 APPEND Sent {3}\r\nabc\r\n"], 10),
            "C: a3 APPEND Sent {3}\nC: abc\n"
        );
        let big = scan(
            "S: ",
            &[b"* 1 FETCH (BODY[] {20}\r\n", &[b'x'; 20], b")\r\n"],
            10,
        );
        assert_eq!(
            big,
            "S: * 1 FETCH (BODY[] {20} <20 bytes of literal omitted>)\n"
        );
    }

    #[test]
    fn a_line_without_end_is_bounded() {
        let mut s = Scanner::new("C: ", 10);
        let mut out = Vec::new();
        for _ in 0..100 {
            s.feed(&[b'x'; 4096], false, &mut out);
        }
        assert!(out.is_empty() && s.line.len() <= MAX_LINE);
        s.feed(b"\r\n", false, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.ends_with(&format!(
                " <{} more bytes omitted>\n",
                100 * 4096 + 2 - MAX_LINE
            )),
            "{}",
            &text[text.len() - 60..]
        );
    }

    #[test]
    fn authenticate_answers_are_removed() {
        let config = TraceConfig {
            logins: vec!["*".into()],
            max_literal: 100,
            dir: PathBuf::from("/nonexistent"),
        };
        let mut t = Trace::start(&config).unwrap();
        t.client(b"a1 AUTHENTICATE PLAIN\r\n");
        t.server(b"+ \r\n");
        t.client(b"AGFsaWNlAHMzY3JldA==\r\n");
        t.server(b"a1 OK done\r\n");
        t.client(b"a2 NOOP\r\n");
        let State::Pending(buf) = &t.state else {
            panic!()
        };
        let text = String::from_utf8(buf.clone()).unwrap();
        assert_eq!(
            text,
            "C: a1 AUTHENTICATE PLAIN\nS: + \nC: <credentials removed>\nS: a1 OK done\nC: a2 NOOP\n"
        );
    }

    #[test]
    fn not_traced_logins_keep_nothing_and_pending_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let config = TraceConfig {
            logins: vec!["bob".into()],
            max_literal: 100,
            dir: dir.path().join("trace"),
        };
        let mut t = Trace::start(&config).unwrap();
        t.client(b"a1 LOGIN alice pw\r\n");
        t.logged_in(&config, "alice", 7);
        t.client(b"a2 NOOP\r\n");
        assert!(!dir.path().join("trace").exists());
        let mut t = Trace::start(&config).unwrap();
        for _ in 0..10_000 {
            t.client(b"a1 NOOP\r\n");
        }
        assert!(matches!(t.state, State::Off));
        assert!(
            Trace::start(&TraceConfig {
                logins: vec![],
                ..config
            })
            .is_none()
        );
    }
}
