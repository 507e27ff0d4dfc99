//! A value that SIGHUP may replace while sessions run. Each session takes a snapshot
//! (`current`) when it starts, so one session never sees two configs.

use std::sync::{Arc, RwLock};

#[derive(Debug)]
pub struct Reloadable<T> {
    inner: RwLock<Arc<T>>,
}

impl<T> Reloadable<T> {
    pub fn new(value: T) -> Self {
        Reloadable {
            inner: RwLock::new(Arc::new(value)),
        }
    }

    pub fn current(&self) -> Arc<T> {
        // A poisoned lock still holds a whole Arc: writers only swap it.
        match self.inner.read() {
            Ok(v) => v.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn replace(&self, value: T) {
        let value = Arc::new(value);
        match self.inner.write() {
            Ok(mut v) => *v = value,
            Err(poisoned) => *poisoned.into_inner() = value,
        }
    }
}
