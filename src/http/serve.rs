//! The listener loop. `axum::serve` cannot bound slow or idle clients nor cap connections,
//! so each connection is served by hyper's HTTP/1.1 builder here: a connection must finish
//! its request headers within `header_read_timeout` of opening (or of the first byte of a
//! later request), may wait `keep_alive_timeout` between requests, and at most
//! `max_connections` are served at once — the next waits in the kernel's backlog until one
//! closes. Stopping lets in-flight requests finish and closes idle connections.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt as _;

use crate::config::HttpConfig;

/// Serves `router` on `listener` until `shutdown` resolves, then waits for the open
/// connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &HttpConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The deadlines below replace hyper's own header timer, which would also cut an idle
    // keep-alive connection at the header timeout.
    builder.header_read_timeout(None);
    // Polled from the start, not only when the loop waits: a signal handler is registered
    // on the first poll, and must be before the first request is answered.
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(());
    });
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = &mut stopped => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            _ = &mut stopped => break,
        };
        let deadline = Arc::new(Deadline::new(
            limits.header_read_timeout,
            limits.keep_alive_timeout,
        ));
        let io = TokioIo::new(Timed::new(stream, deadline.clone()));
        let router = router.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            deadline.request_started();
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(ConnectInfo(peer));
            let response = router.clone().oneshot(req);
            let deadline = deadline.clone();
            async move {
                let response = response.await?;
                Ok::<_, Infallible>(response.map(|body| Tracked { body, deadline }))
            }
        });
        let connection = graceful.watch(builder.serve_connection(io, service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection closed with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// A refused or reset connection is the client's business; anything else (out of file
/// descriptors) would spin the loop, so it waits a moment.
async fn accept_failed(e: io::Error) {
    match e.kind() {
        io::ErrorKind::ConnectionAborted
        | io::ErrorKind::ConnectionRefused
        | io::ErrorKind::ConnectionReset => {}
        _ => {
            tracing::warn!(error = %e, "accepting a connection failed");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// When a connection must next have made progress, shared by its reader and the hooks
/// that see a request start and its response end.
struct Deadline {
    header: Duration,
    idle: Duration,
    state: Mutex<DeadlineState>,
}

struct DeadlineState {
    /// None while a request is being handled (its time is the handler's business).
    at: Option<Instant>,
    /// Between requests: the next byte read starts a request's headers.
    between_requests: bool,
    /// The connection task, woken when the deadline moves while it waits to read.
    waker: Option<Waker>,
}

impl Deadline {
    /// A new connection owes its first request's headers within the header timeout.
    fn new(header: Duration, idle: Duration) -> Deadline {
        Deadline {
            header,
            idle,
            state: Mutex::new(DeadlineState {
                at: Some(Instant::now() + header),
                between_requests: false,
                waker: None,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, DeadlineState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The headers are complete.
    fn request_started(&self) {
        let mut s = self.state();
        s.at = None;
        s.between_requests = false;
    }

    /// The response is written (or abandoned): wait for the next request.
    fn response_ended(&self) {
        let mut s = self.state();
        s.at = Some(Instant::now() + self.idle);
        s.between_requests = true;
        if let Some(w) = s.waker.take() {
            w.wake();
        }
    }

    fn bytes_read(&self) {
        let mut s = self.state();
        if s.between_requests {
            s.between_requests = false;
            s.at = Some(Instant::now() + self.header);
        }
    }

    /// The deadline in force, remembering who to wake when it moves.
    fn current(&self, waker: &Waker) -> Option<Instant> {
        let mut s = self.state();
        if !s.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            s.waker = Some(waker.clone());
        }
        s.at
    }
}

/// The socket, failing a read that waits past the deadline (hyper then closes it).
struct Timed {
    io: TcpStream,
    deadline: Arc<Deadline>,
    sleep: Pin<Box<Sleep>>,
}

impl Timed {
    fn new(io: TcpStream, deadline: Arc<Deadline>) -> Timed {
        Timed {
            io,
            deadline,
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }
}

impl AsyncRead for Timed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.deadline.bytes_read();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let Some(at) = this.deadline.current(cx.waker()) else {
                    return Poll::Pending;
                };
                if this.sleep.deadline() != at {
                    this.sleep.as_mut().reset(at);
                }
                match this.sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client too slow sending headers, or idle too long",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for Timed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// A response body that tells the connection's deadline when hyper is done with it.
struct Tracked {
    body: Body,
    deadline: Arc<Deadline>,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.deadline.response_ended();
    }
}
