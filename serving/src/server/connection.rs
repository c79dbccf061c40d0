//! When a connection is closed for taking too long: a request head that is slow to arrive
//! (slowloris guard) or a keep-alive connection idle for long.
//!
//! hyper's own header-read timeout also runs while a keep-alive connection waits for its next
//! request, so it closed every connection idle for 10 s. Clients keep idle connections for
//! longer (hyper-util's and Go's pools 90 s, Python's requests for ever), and a server that
//! closes an idle connection races with a client sending on it: the client sees "connection
//! closed before message completed", a lost request. Here the head's clock starts with the
//! head's first byte, and idle connections get [`IDLE_TIMEOUT`], longer than those pools.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A keep-alive connection with no request for this long is closed: longer than the idle
/// timeouts of common client pools (90 s), so the client closes first.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// What a connection is doing, as far as its timeouts are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for a request head, whose bytes began to arrive (or the connection opened) at
    /// this many milliseconds after the connection opened.
    Head(u64),
    /// A request is being served.
    Busy,
    /// Between requests since this many milliseconds after the connection opened.
    Idle(u64),
}

impl Phase {
    const BUSY: u64 = 0;
    const HEAD: u64 = 1;
    const IDLE: u64 = 2;

    fn encode(self) -> u64 {
        match self {
            Phase::Busy => Self::BUSY,
            Phase::Head(at) => (at << 2) | Self::HEAD,
            Phase::Idle(at) => (at << 2) | Self::IDLE,
        }
    }

    fn decode(word: u64) -> Self {
        match word & 3 {
            Self::HEAD => Phase::Head(word >> 2),
            Self::IDLE => Phase::Idle(word >> 2),
            _ => Phase::Busy,
        }
    }
}

/// When a connection in `phase` is to be closed, in milliseconds after it opened; `None`
/// while it serves a request (whose own deadline bounds it).
pub fn close_at(phase: Phase, header_read_timeout: Duration) -> Option<u64> {
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    match phase {
        Phase::Head(since) => Some(since.saturating_add(millis(header_read_timeout))),
        Phase::Idle(since) => Some(since.saturating_add(millis(IDLE_TIMEOUT))),
        Phase::Busy => None,
    }
}

/// A connection's phase, shared by its socket, its service and its watchdog.
pub struct Activity {
    opened: Instant,
    phase: AtomicU64,
}

impl Activity {
    /// A new connection: waiting for its first request head from now.
    pub fn opened() -> Arc<Self> {
        Arc::new(Self { opened: Instant::now(), phase: AtomicU64::new(Phase::Head(0).encode()) })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX >> 2)
    }

    pub fn phase(&self) -> Phase {
        Phase::decode(self.phase.load(Ordering::Relaxed))
    }

    /// Bytes arrived: an idle connection starts receiving a request head.
    fn bytes_arrived(&self) {
        if let Phase::Idle(_) = self.phase() {
            self.phase.store(Phase::Head(self.now()).encode(), Ordering::Relaxed);
        }
    }

    /// The request head is complete and the request is being served.
    pub fn request_started(&self) {
        self.phase.store(Phase::Busy.encode(), Ordering::Relaxed);
    }

    /// The response is on its way; the connection waits for the next request.
    pub fn request_finished(&self) {
        self.phase.store(Phase::Idle(self.now()).encode(), Ordering::Relaxed);
    }

    /// Completes when the connection has been too long in its phase. The phase can change
    /// while this sleeps (an idle connection starts a head), so it looks again at least every
    /// quarter of the header timeout: a slow head is cut off within 1.25 times the timeout.
    pub async fn timed_out(&self, header_read_timeout: Duration) {
        let look_again = (header_read_timeout / 4).max(Duration::from_millis(1));
        loop {
            let wait = match close_at(self.phase(), header_read_timeout) {
                Some(at) => Duration::from_millis(at.saturating_sub(self.now())),
                None => look_again,
            };
            if wait.is_zero() {
                return;
            }
            tokio::time::sleep(wait.min(look_again)).await;
        }
    }
}

/// A socket that tells its [`Activity`] when bytes arrive.
pub struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl Watched {
    pub fn new(stream: TcpStream, activity: Arc<Activity>) -> Self {
        Self { stream, activity }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.bytes_arrived();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_survive_their_encoding() {
        for phase in [Phase::Busy, Phase::Head(0), Phase::Head(12_345), Phase::Idle(7)] {
            assert_eq!(Phase::decode(phase.encode()), phase);
        }
    }

    #[test]
    fn a_slow_head_is_closed_after_the_header_timeout_and_an_idle_connection_much_later() {
        let header = Duration::from_secs(10);
        assert_eq!(close_at(Phase::Head(1_000), header), Some(11_000));
        assert_eq!(close_at(Phase::Idle(1_000), header), Some(121_000));
        assert_eq!(close_at(Phase::Busy, header), None);
    }
}
