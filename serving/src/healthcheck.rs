//! `modelship-serving healthcheck`: the container HEALTHCHECK for an image without a shell.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(2);

/// The URL checked when none is given: this server's own /health on loopback.
pub fn default_url(listen: SocketAddr) -> String {
    let host =
        if listen.ip().is_unspecified() { "127.0.0.1".to_owned() } else { listen.ip().to_string() };
    let host =
        if listen.is_ipv6() && !listen.ip().is_unspecified() { format!("[{host}]") } else { host };
    format!("http://{host}:{}{}", listen.port(), modelship_contract::routes::HEALTH)
}

/// `Ok(())` when the URL answers 200.
pub fn check(url: &str) -> Result<(), String> {
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs are supported")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("bad address {authority}: {e}"))?
        .next()
        .ok_or("address resolved to nothing")?;
    let mut stream =
        TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).map_err(|e| format!("read: {e}"))?;
    let line = String::from_utf8_lossy(&head[..n]);
    match line.split_whitespace().nth(1) {
        Some("200") => Ok(()),
        Some(code) => Err(format!("{url} answered {code}")),
        None => Err(format!("{url} sent no HTTP status line")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_url_uses_loopback_for_wildcard_listens() {
        assert_eq!(default_url("0.0.0.0:8080".parse().unwrap()), "http://127.0.0.1:8080/health");
        assert_eq!(default_url("127.0.0.1:9".parse().unwrap()), "http://127.0.0.1:9/health");
    }

    #[test]
    fn nothing_listening_is_a_failure() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        assert!(check(&format!("http://{addr}/health")).is_err());
    }
}
