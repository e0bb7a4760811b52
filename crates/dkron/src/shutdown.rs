//! A node's stop signal: asked for by `dkron leave`, `POST /v1/leave`, a process signal, or a
//! task that cannot go on (retry-join gave up); awaited by every loop and listener.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// Clones share one signal.
#[derive(Clone)]
pub struct Shutdown {
    asked: Arc<watch::Sender<bool>>,
    /// Why the node stopped on its own, for the process's exit status.
    failure: Arc<Mutex<Option<String>>>,
}

impl Default for Shutdown {
    fn default() -> Shutdown {
        Shutdown {
            asked: Arc::new(watch::channel(false).0),
            failure: Arc::default(),
        }
    }
}

impl Shutdown {
    pub fn request(&self) {
        self.asked.send_replace(true);
    }

    /// Stops the node because it cannot go on; `message` becomes the process's error.
    pub fn fail(&self, message: String) {
        tracing::error!(reason = %message, "stopping the node");
        *self.failure.lock().expect("failure lock") = Some(message);
        self.request();
    }

    /// Why the node stopped on its own, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().expect("failure lock").clone()
    }

    pub fn is_requested(&self) -> bool {
        *self.asked.borrow()
    }

    /// Resolves once a stop was asked for (at once if it already was).
    pub async fn requested(&self) {
        let mut rx = self.asked.subscribe();
        let _ = rx.wait_for(|asked| *asked).await;
    }
}
