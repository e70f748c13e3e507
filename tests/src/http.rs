//! A tiny HTTP endpoint for tests of steps and verifications that call one: every request is
//! answered `200` with the JSON its `body` function gives.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

/// Serves on `127.0.0.1:<free port>` until the test process ends; `body(n)` is the answer to the
/// n-th request (from 1). Returns the `host:port` it listens on.
pub fn json_server(body: impl Fn(usize) -> String + Send + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let body = body(n + 1);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    address
}

/// What [`file_server`] answers for a path: a status and `length` bytes of `byte`.
pub struct Answer {
    pub status: u16,
    pub byte: u8,
    pub length: u64,
}

/// Serves `answer(path)` on `127.0.0.1:<free port>` until the test process ends, streaming the
/// body (a large one is never held in memory). Returns the `host:port` it listens on.
pub fn file_server(answer: impl Fn(&str) -> Answer + Send + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let path = request.split(' ').nth(1).unwrap_or("/").to_string();
            let Answer {
                status,
                byte,
                length,
            } = answer(&path);
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Type: application/octet-stream\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
            );
            let chunk = vec![byte; 64 * 1024];
            let mut left = length;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                if stream.write_all(&chunk[..n]).is_err() {
                    break;
                }
                left -= n as u64;
            }
        }
    });
    address
}
