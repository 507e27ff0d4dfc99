//! IDLE: the driver sends `+ idling` and pushes `pending_updates` until DONE.

use crate::imap::session::{After, Outcome, Session, done};

impl Session {
    pub(in crate::imap) fn handle_idle(&self) -> Outcome {
        self.agent()?;
        let mut answer = done(Vec::new(), "IDLE terminated");
        answer.after = After::Idle;
        Ok(answer)
    }
}
