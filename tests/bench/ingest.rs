//! Ingest throughput of the whole SMTP path (filters → parse → thread → durable store →
//! 250): `cargo bench --bench ingest [-- SESSIONS MESSAGES_PER_SESSION]`.
//! With `TEAMGATE_BENCH_SPAMD=127.0.0.1:783` and/or `TEAMGATE_BENCH_CLAMD=127.0.0.1:3310`
//! the filters ask those daemons; every message carries a small attachment so clamd is
//! consulted. `TEAMGATE_BENCH_NO_INDEX=1` turns the search index off, to compare.
//! Starts the daemon in-process on a loopback port with a temp data dir, then runs the
//! given number of concurrent SMTP sessions; prints messages/s, latency percentiles and
//! how many durability barriers (fsync + sled flush) the store needed.

use std::time::{Duration, Instant};

use teamgate::{config::Config, daemon};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

async fn reply(io: &mut BufReader<TcpStream>) -> u16 {
    loop {
        let mut line = String::new();
        if io.read_line(&mut line).await.unwrap_or(0) == 0 {
            return 0;
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        }
    }
}

async fn session(addr: std::net::SocketAddr, id: usize, messages: usize) -> Vec<Duration> {
    let mut io = BufReader::new(TcpStream::connect(addr).await.expect("connect"));
    assert_eq!(reply(&mut io).await, 220);
    io.get_mut()
        .write_all(b"EHLO bench.example\r\n")
        .await
        .unwrap();
    assert_eq!(reply(&mut io).await, 250);
    let mut latencies = Vec::with_capacity(messages);
    for m in 0..messages {
        let started = Instant::now();
        let body = format!(
            "MAIL FROM:<c{id}@customer.example>\r\nRCPT TO:<support@example.test>\r\nDATA\r\n"
        );
        io.get_mut().write_all(body.as_bytes()).await.unwrap();
        for _ in 0..3 {
            reply(&mut io).await;
        }
        let msg = format!(
            "From: Customer {id} <c{id}@customer.example>\r\nTo: support@example.test\r\nSubject: bench {id} {m}\r\nMessage-ID: <bench-{id}-{m}@customer.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n{}\r\n--b\r\nContent-Type: application/pdf; name=r.pdf\r\nContent-Disposition: attachment; filename=r.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKMSAwIG9iago8PCAvVHlwZSAvQ2F0YWxvZyA+PgplbmRvYmoKJSVFT0YK\r\n--b--\r\n.\r\n",
            "Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n".repeat(40)
        );
        io.get_mut().write_all(msg.as_bytes()).await.unwrap();
        assert_eq!(reply(&mut io).await, 250);
        latencies.push(started.elapsed());
    }
    io.get_mut().write_all(b"QUIT\r\n").await.unwrap();
    latencies
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let runs: Vec<(usize, usize)> = match args.as_slice() {
        [s, m, ..] => vec![(*s, *m)],
        _ => vec![(1, 500), (10, 100), (50, 40)],
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for (sessions, per_session) in runs {
        rt.block_on(async {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut config = Config::for_tests(dir.path());
            config.smtp.max_connections = sessions + 10;
            if let Ok(spamd) = std::env::var("TEAMGATE_BENCH_SPAMD") {
                config.filter.spamd = Some(spamd);
            }
            if let Ok(clamd) = std::env::var("TEAMGATE_BENCH_CLAMD") {
                config.filter.clamd = Some(teamgate::config::ClamdAddr::Tcp(clamd));
            }
            // The search indexer runs beside ingest; this measures without it.
            if std::env::var_os("TEAMGATE_BENCH_NO_INDEX").is_some() {
                config.search.index = false;
            }
            let handle = daemon::start(config).await.expect("daemon");
            let addr = handle.addrs.smtp[0];
            let before = handle.store().stats().expect("stats").barriers;
            let started = Instant::now();
            let tasks: Vec<_> = (0..sessions).map(|id| tokio::spawn(session(addr, id, per_session))).collect();
            let mut latencies = Vec::new();
            for t in tasks {
                latencies.extend(t.await.expect("session"));
            }
            let elapsed = started.elapsed();
            let barriers = handle.store().stats().expect("stats").barriers - before;
            latencies.sort();
            let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
            let total = latencies.len();
            println!(
                "{sessions:>3} sessions x {per_session:>3} msgs: {total} msgs in {:.2?} = {:.0} msg/s; latency p50 {:.2?} p95 {:.2?} p99 {:.2?}; {barriers} barriers",
                elapsed,
                total as f64 / elapsed.as_secs_f64(),
                pct(0.50),
                pct(0.95),
                pct(0.99),
            );
            handle.shutdown().await.expect("shutdown");
        });
    }
}
