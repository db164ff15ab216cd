//! The userland proxy, what docker-proxy is: it listens on the host's
//! 127.0.0.1:PORT and opens a second connection to the box for each one it
//! accepts. DNAT cannot serve that address: the host's own loopback traffic
//! never passes prerouting, and the kernel will not route 127.0.0.0/8 out of
//! another interface unless route_localnet is set.
//!
//! Threads, not tasks: the engine that starts it is synchronous, and the walk
//! has no async runtime. Connections are bounded in number.

use std::io;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// At most this many connections through one box's proxy at once.
const MAX_CONNECTIONS: usize = 32;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Binds the first free port from `first` on 127.0.0.1 (the proxy's own
/// port, and the host port of the forward).
pub fn reserve(first: u16, taken: &[u16]) -> io::Result<TcpListener> {
    let mut last_error = io::Error::new(io::ErrorKind::AddrInUse, "no port left to forward");
    for port in (first..first.saturating_add(200)).filter(|p| !taken.contains(p)) {
        match TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)) {
            Ok(listener) => return Ok(listener),
            Err(err) => last_error = err,
        }
    }
    Err(last_error)
}

/// A running proxy; stops, and closes its connections, on drop.
pub struct Proxy {
    address: SocketAddr,
    stopping: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Forwards connections accepted on `listener` to `target`.
    pub fn start(listener: TcpListener, target: SocketAddr) -> io::Result<Proxy> {
        let address = listener.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let stopping = stopping.clone();
            let open = open.clone();
            std::thread::Builder::new()
                .name(format!("proxy-{}", address.port()))
                .spawn(move || accept_loop(listener, target, &stopping, &open))?
        };
        Ok(Proxy {
            address,
            stopping,
            open,
            acceptor: Some(acceptor),
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wakes the blocking accept; it sees the flag and returns.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for stream in self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    stopping: &AtomicBool,
    open: &Arc<Mutex<Vec<TcpStream>>>,
) {
    let active = Arc::new(AtomicUsize::new(0));
    for client in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        if active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            // Refused by closing: the client sees a reset, the box is spared.
            continue;
        }
        let Ok(upstream) = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) else {
            continue;
        };
        if let (Ok(a), Ok(b)) = (client.try_clone(), upstream.try_clone()) {
            let mut list = open.lock().unwrap_or_else(|e| e.into_inner());
            list.retain(|s| s.peer_addr().is_ok());
            list.extend([a, b]);
        }
        active.fetch_add(1, Ordering::SeqCst);
        let active = active.clone();
        let spawned = std::thread::Builder::new().spawn(move || {
            relay(client, upstream);
            active.fetch_sub(1, Ordering::SeqCst);
        });
        if spawned.is_err() {
            tracing::warn!("proxy: no thread for a connection");
        }
    }
}

/// Copies both ways until both sides are done.
fn relay(client: TcpStream, upstream: TcpStream) {
    let (Ok(mut client_read), Ok(mut upstream_read)) = (client.try_clone(), upstream.try_clone())
    else {
        return;
    };
    let mut client_write = client;
    let mut upstream_write = upstream;
    let back = std::thread::spawn(move || {
        let _ = io::copy(&mut upstream_read, &mut client_write);
        let _ = client_write.shutdown(Shutdown::Write);
    });
    let _ = io::copy(&mut client_read, &mut upstream_write);
    let _ = upstream_write.shutdown(Shutdown::Write);
    let _ = back.join();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn relays_both_ways_and_stops() {
        // A stand-in for the box's server, on loopback.
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = server.local_addr().unwrap();
        let echo = std::thread::spawn(move || {
            let (mut conn, _) = server.accept().unwrap();
            let mut request = [0u8; 5];
            conn.read_exact(&mut request).unwrap();
            conn.write_all(b"pong:").unwrap();
            conn.write_all(&request).unwrap();
        });
        let listener = reserve(18081, &[18081]).unwrap();
        assert_ne!(
            listener.local_addr().unwrap().port(),
            18081,
            "a taken port is skipped"
        );
        let proxy = Proxy::start(listener, target).unwrap();
        let mut client = TcpStream::connect(proxy.address()).unwrap();
        client.write_all(b"hello").unwrap();
        let mut reply = String::new();
        client.read_to_string(&mut reply).unwrap();
        assert_eq!(reply, "pong:hello");
        echo.join().unwrap();
        let address = proxy.address();
        drop(proxy);
        assert!(
            TcpStream::connect(address).is_err(),
            "the port is closed after the proxy"
        );
    }
}
