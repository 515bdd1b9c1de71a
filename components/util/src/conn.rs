//! Accepted connections that a server's `stop` can close.
//!
//! tonic's graceful shutdown stops accepting and then waits for clients to
//! hang up; a client that keeps its channel open keeps its connection task,
//! and the services (and whatever they hold: a data directory's lock) alive
//! after the server "stopped". Every connection accepted through
//! [`incoming`] fails its next read or write once the [`Connections`] it came
//! from are closed, so the connection task ends and drops its services.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::tls::TlsAcceptor;

/// The connections accepted by one server; [`Connections::close`] ends all
/// of them, including those accepted later.
#[derive(Clone, Default)]
pub struct Connections {
    closed: CancellationToken,
}

impl Connections {
    pub fn new() -> Connections {
        Connections::default()
    }

    /// Makes every connection's next (or pending) read and write fail.
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// Accepts from `listener` with `TCP_NODELAY` set on every socket
    /// (`serve_with_incoming` ignores the builder's `tcp_nodelay`; without it
    /// small responses wait out delayed ACKs, ~40 ms).
    pub fn incoming(
        &self,
        listener: TcpListener,
    ) -> impl Stream<Item = io::Result<Conn>> + Send + 'static {
        let closed = self.closed.clone();
        futures::StreamExt::map(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            move |s| {
                let io = s?;
                let _ = io.set_nodelay(true);
                Ok(Conn { io: Io::Plain(io), closed: Box::pin(closed.clone().cancelled_owned()) })
            },
        )
    }

    /// [`Connections::incoming`], through `tls` when given: only peers whose
    /// handshake (and certificate check) succeeded come out. Handshakes run
    /// beside the accept loop, at most [`HANDSHAKES_MAX`] at once.
    pub fn incoming_tls(
        &self,
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
    ) -> Pin<Box<dyn Stream<Item = io::Result<Conn>> + Send + 'static>> {
        let Some(tls) = tls else { return Box::pin(self.incoming(listener)) };
        let closed = self.closed.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Conn>>(HANDSHAKES_MAX);
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_MAX));
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    // The server dropped its incoming stream: stop listening.
                    _ = tx.closed() => return,
                };
                let io = match accepted {
                    Ok((io, _)) => io,
                    Err(e) => {
                        tracing::debug!("accept: {e}");
                        continue;
                    }
                };
                let _ = io.set_nodelay(true);
                let Ok(slot) = slots.clone().acquire_owned().await else { return };
                let (tls, tx, closed) = (tls.clone(), tx.clone(), closed.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    let peer = io.peer_addr().ok();
                    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(io)).await;
                    match handshake {
                        Ok(Ok(io)) => {
                            let closed = Box::pin(closed.cancelled_owned());
                            let _ = tx.send(Ok(Conn { io: Io::Tls(Box::new(io)), closed })).await;
                        }
                        Ok(Err(e)) => tracing::info!(?peer, "TLS connection refused: {e}"),
                        Err(_) => tracing::info!(?peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
    }
}

/// TLS handshakes in progress at once, per server.
pub const HANDSHAKES_MAX: usize = 256;
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Io {
    fn tcp(&self) -> &TcpStream {
        match self {
            Io::Plain(s) => s,
            Io::Tls(s) => s.get_ref().0,
        }
    }
}

/// One accepted connection (TCP, or TLS over TCP) that fails once its
/// server's connections close.
pub struct Conn {
    io: Io,
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl Conn {
    /// Ready with an error once closed; otherwise registers the waker.
    fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        match self.closed.as_mut().poll(cx) {
            Poll::Ready(()) => {
                Poll::Ready(io::Error::new(io::ErrorKind::ConnectionAborted, "server stopped"))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Poll::Ready(e) = self.poll_closed(cx) {
            return Poll::Ready(Err(e));
        }
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Poll::Ready(e) = self.poll_closed(cx) {
            return Poll::Ready(Err(e));
        }
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Poll::Ready(e) = self.poll_closed(cx) {
            return Poll::Ready(Err(e));
        }
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.io.tcp().connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn close_ends_open_connections() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns = Connections::new();
        let mut incoming = Box::pin(conns.incoming(listener));
        let mut client = TcpStream::connect(addr).await.unwrap();
        let mut server = incoming.next().await.unwrap().unwrap();
        client.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        // A read already waiting is woken by close.
        let pending = tokio::spawn(async move {
            let mut buf = [0u8; 1];
            server.read(&mut buf).await
        });
        tokio::task::yield_now().await;
        conns.close();
        let err = pending.await.unwrap().expect_err("read after close");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        // Connections accepted after close fail at once.
        let _late = TcpStream::connect(addr).await.unwrap();
        let mut late = incoming.next().await.unwrap().unwrap();
        assert!(late.write_all(b"x").await.is_err());
        drop(client);
    }
}
