//! What the platform emulators share: serving a router on a local port, and failures
//! injected per request path (each emulator names its own kinds of failure, the way its
//! platform answers them).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How long a timeout failure keeps the client waiting unless a test says otherwise:
/// longer than any client timeout closeloop uses.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Failures queued per request path, answered one per request, oldest first.
#[derive(Debug)]
pub struct Injected<F> {
    queues: HashMap<String, VecDeque<F>>,
    timeout: Duration,
}

impl<F> Default for Injected<F> {
    fn default() -> Self {
        Injected {
            queues: HashMap::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl<F: Clone> Injected<F> {
    /// The next `n` requests to `path` fail with `failure`.
    pub fn push(&mut self, path: &str, n: usize, failure: F) {
        self.queues
            .entry(path.to_string())
            .or_default()
            .extend(std::iter::repeat_n(failure, n));
    }

    /// The failure the next request to `path` meets, if one is queued, with how long a
    /// timeout failure should hold the request.
    pub fn pop(&mut self, path: &str) -> Option<(F, Duration)> {
        let failure = self.queues.get_mut(path)?.pop_front()?;
        Some((failure, self.timeout))
    }

    /// How long a timeout failure keeps the client waiting.
    pub fn set_timeout(&mut self, delay: Duration) {
        self.timeout = delay;
    }
}

/// Serves `router` on `127.0.0.1:0` in the background; `name` is for the log.
pub async fn serve(router: Router, name: &'static str) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("the {name} emulator cannot bind a local port: {e}"));
    serve_on(listener, router, name)
}

/// Serves `router` on a listener the caller bound (a port it chose) in the background.
pub fn serve_on(
    listener: TcpListener,
    router: Router,
    name: &'static str,
) -> (SocketAddr, JoinHandle<()>) {
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::warn!(error = %e, emulator = name, "emulator stopped");
        }
    });
    (addr, server)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_come_per_path_in_order() {
        let mut f = Injected::default();
        f.push("/a", 2, 'x');
        f.push("/a", 1, 'y');
        f.set_timeout(Duration::from_millis(5));
        assert_eq!(f.pop("/b"), None);
        assert_eq!(f.pop("/a"), Some(('x', Duration::from_millis(5))));
        assert_eq!(f.pop("/a").map(|p| p.0), Some('x'));
        assert_eq!(f.pop("/a").map(|p| p.0), Some('y'));
        assert_eq!(f.pop("/a"), None);
    }
}
