//! A loopback SMTP sink standing in for a relay or a recipient's MX: accepts on
//! 127.0.0.1, records every transaction (MAIL, RCPT, the data as received after
//! dot-unstuffing), answers configured replies for given recipients, and can be taken
//! down and brought back. A down sink keeps its listener and closes every connection
//! before the greeting, as a relay whose SMTP service is dead does: giving up the port to
//! simulate an outage would let a parallel test take it before the rebind.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// One accepted transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub mail_from: String,
    /// Recipients that were accepted.
    pub rcpts: Vec<String>,
    pub data: Vec<u8>,
}

#[derive(Default)]
struct State {
    /// Lower-cased recipient → the full reply line to answer its RCPT with.
    rcpt_replies: HashMap<String, String>,
    chunking: bool,
    mails: Vec<Received>,
    /// Every RCPT address seen, accepted or not.
    rcpts_seen: Vec<String>,
    connections: usize,
    /// While set, every connection is closed unanswered (not counted as a session).
    down: bool,
}

pub struct Sink {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    acceptor: JoinHandle<()>,
}

impl Sink {
    pub async fn start() -> Sink {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("sink bind");
        let addr = listener.local_addr().expect("sink addr");
        let state = Arc::new(Mutex::new(State::default()));
        let acceptor = tokio::spawn(accept(listener, state.clone()));
        Sink {
            addr,
            state,
            acceptor,
        }
    }

    /// A sink that is down from the start (every connection is refused with `421`).
    pub async fn start_down() -> Sink {
        let mut sink = Sink::start().await;
        sink.down().await;
        sink
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Answers RCPT for `rcpt` with `reply` (e.g. "550 5.1.1 No such user").
    pub fn reply_to_rcpt(&self, rcpt: &str, reply: &str) {
        self.state
            .lock()
            .unwrap()
            .rcpt_replies
            .insert(rcpt.to_lowercase(), reply.to_owned());
    }

    /// Announce CHUNKING (the client then uses BDAT).
    pub fn set_chunking(&self, on: bool) {
        self.state.lock().unwrap().chunking = on;
    }

    /// Refuses service: every connection is closed unanswered until [`Sink::up`].
    pub async fn down(&mut self) {
        self.state.lock().unwrap().down = true;
    }

    /// Serves again, on the same port it never gave up.
    pub async fn up(&mut self) {
        self.state.lock().unwrap().down = false;
    }

    pub fn mails(&self) -> Vec<Received> {
        self.state.lock().unwrap().mails.clone()
    }

    pub fn rcpts_seen(&self) -> Vec<String> {
        self.state.lock().unwrap().rcpts_seen.clone()
    }

    /// SMTP sessions served (connections refused while down are not counted).
    pub fn connections(&self) -> usize {
        self.state.lock().unwrap().connections
    }

    /// Waits until at least `n` transactions arrived; panics after `limit`.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let mails = self.mails();
            if mails.len() >= n {
                return mails;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "sink got {} of {n} messages within {limit:?}",
                mails.len()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

async fn accept(listener: TcpListener, state: Arc<Mutex<State>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let down = {
            let mut s = state.lock().unwrap();
            if !s.down {
                s.connections += 1;
            }
            s.down
        };
        if down {
            drop(stream);
        } else {
            tokio::spawn(session(stream, state.clone()));
        }
    }
}

/// One SMTP session; ends at QUIT, EOF or any I/O error.
async fn session(stream: TcpStream, state: Arc<Mutex<State>>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    write.write_all(b"220 sink.test ESMTP\r\n").await?;
    let mut mail_from = String::new();
    let mut rcpts: Vec<String> = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if read.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_string();
        let upper = cmd.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            let chunking = state.lock().unwrap().chunking;
            let mut r = String::from("250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n");
            if chunking {
                r.push_str("250-CHUNKING\r\n");
            }
            r.push_str("250 ENHANCEDSTATUSCODES\r\n");
            r
        } else if upper.starts_with("MAIL FROM:") {
            mail_from = path(&cmd["MAIL FROM:".len()..]);
            rcpts.clear();
            "250 2.1.0 Ok\r\n".into()
        } else if upper.starts_with("RCPT TO:") {
            let rcpt = path(&cmd["RCPT TO:".len()..]);
            let configured = {
                let mut s = state.lock().unwrap();
                s.rcpts_seen.push(rcpt.clone());
                s.rcpt_replies.get(&rcpt.to_lowercase()).cloned()
            };
            match configured {
                Some(r) => format!("{r}\r\n"),
                None => {
                    rcpts.push(rcpt);
                    "250 2.1.5 Ok\r\n".into()
                }
            }
        } else if upper == "DATA" {
            write
                .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                .await?;
            let mut data = Vec::new();
            loop {
                let mut l = Vec::new();
                if read.read_until(b'\n', &mut l).await? == 0 {
                    return Ok(());
                }
                if l == b".\r\n" {
                    break;
                }
                let l = if l.starts_with(b".") { &l[1..] } else { &l[..] };
                data.extend_from_slice(l);
            }
            record(&state, &mail_from, &rcpts, data);
            "250 2.0.0 Ok: queued\r\n".into()
        } else if upper.starts_with("BDAT ") {
            let n: usize = upper
                .split_whitespace()
                .nth(1)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let mut data = vec![0u8; n];
            read.read_exact(&mut data).await?;
            record(&state, &mail_from, &rcpts, data);
            "250 2.0.0 Ok: queued\r\n".into()
        } else if upper == "QUIT" {
            write.write_all(b"221 2.0.0 Bye\r\n").await?;
            return Ok(());
        } else if upper == "RSET" || upper == "NOOP" {
            "250 2.0.0 Ok\r\n".into()
        } else {
            "502 5.5.1 Not implemented\r\n".into()
        };
        write.write_all(reply.as_bytes()).await?;
    }
}

fn record(state: &Mutex<State>, mail_from: &str, rcpts: &[String], data: Vec<u8>) {
    state.lock().unwrap().mails.push(Received {
        mail_from: mail_from.to_owned(),
        rcpts: rcpts.to_vec(),
        data,
    });
}

/// `<a@b> PARAM=...` → `a@b`.
fn path(arg: &str) -> String {
    let arg = arg.trim();
    let end = arg.find('>').unwrap_or(arg.len());
    arg[..end].trim_start_matches('<').to_owned()
}
