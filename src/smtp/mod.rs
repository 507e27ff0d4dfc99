//! SMTP: `reply` (codes and their wire form), `session` (the pure RFC 5321 state machine)
//! and `server` (the I/O driver: reads, timeouts, STARTTLS, DATA/BDAT bodies, shutdown).

pub mod server;
pub mod session;
