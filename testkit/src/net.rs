//! Ports and secrets for the servers the tests start.
//!
//! A server that can bind port 0 and say which port it got should (see
//! [`crate::http_server`]): nothing can take its port. For one that cannot (Garage logs the
//! address it was configured with, not the port the kernel gave it), [`free_ports`] picks ports
//! *below* the kernel's ephemeral range, so no `bind(…:0)` or outgoing connection of any process
//! is ever handed them, at random, checked free by binding them; the server is then started
//! with [`start_with_free_ports`], which retries with other ports when the server reports it
//! could not bind (another test picked the same port in the instant between the check and the
//! server's bind).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A TCP port of 127.0.0.1 that was free a moment ago and that the kernel never hands out by
/// itself (see the module's doc).
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct TCP ports of 127.0.0.1 that were free a moment ago, below the ephemeral range.
pub fn free_ports(n: usize) -> Vec<u16> {
    let (low, _) = ephemeral_range();
    let first = 10_000u16;
    assert!(
        low > first + 1_000,
        "the ephemeral port range starts at {low}: no room below it for test servers"
    );
    let span = u64::from(low - first);
    let mut held: Vec<TcpListener> = Vec::new();
    let mut seed = u64::from_le_bytes(random_bytes::<8>());
    let mut tries = 0;
    while held.len() < n {
        tries += 1;
        assert!(tries < 10_000, "no free port found below {low}");
        seed = crate::data::splitmix(seed);
        let port = first + (seed % span) as u16;
        // Binding checks the port is free; the listeners are all held until the end, so the
        // ports differ.
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            held.push(l);
        }
    }
    held.iter()
        .map(|l| l.local_addr().expect("local_addr").port())
        .collect()
}

/// `/proc/sys/net/ipv4/ip_local_port_range` (Linux's default when it cannot be read).
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|p| p.parse().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32_768, 60_999))
}

/// Starts a server that needs `n` ports chosen in advance: `start` gets fresh [`free_ports`]
/// and returns `Err(why)` when the server could not bind one of them; it is called again with
/// other ports, up to 5 times.
pub fn start_with_free_ports<T>(
    n: usize,
    what: &str,
    mut start: impl FnMut(&[u16]) -> Result<T, String>,
) -> T {
    let mut failures = Vec::new();
    for _ in 0..5 {
        match start(&free_ports(n)) {
            Ok(server) => return server,
            Err(why) => failures.push(why),
        }
    }
    panic!(
        "{what} could not bind its ports in 5 attempts:\n{}",
        failures.join("\n---\n")
    );
}

/// Waits until something accepts connections on `127.0.0.1:port`, or panics after `timeout`.
pub fn wait_for_port(port: u16, timeout: Duration, what: &str) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            start.elapsed() < timeout,
            "{what} did not listen on 127.0.0.1:{port} within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    use std::io::Read;
    let mut b = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("read /dev/urandom");
    b
}

/// 32 random bytes in hex (from the OS).
pub fn random_hex32() -> String {
    random_bytes::<32>()
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}
