//! Helpers shared by the stages' unit tests.

use std::io::{Read, Write};

/// A loopback HTTP server answering each connection with the next of `statuses` (an empty
/// body `nope`) after reading its request, which it sends on the channel; its base URL.
pub(crate) fn http_receiver(statuses: Vec<u16>) -> (String, std::sync::mpsc::Receiver<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for status in statuses {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = vec![0u8; 65536];
            let n = s.read(&mut buf).unwrap();
            let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\ncontent-length: 4\r\nconnection: close\r\n\r\nnope"
            );
        }
    });
    (format!("http://{addr}/hook"), rx)
}

/// The body of an HTTP request's text.
pub(crate) fn body(request: &str) -> &str {
    request.split("\r\n\r\n").nth(1).unwrap_or_default()
}
