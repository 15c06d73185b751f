//! A server's Prometheus text (`--metrics-addr`), scraped over HTTP and
//! read as samples: what a dashboard or an alert would see.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One HTTP/1.1 GET of `/metrics` on the loopback `port`: the body, or
/// `None` while nothing answers (or anything but 200 does).
pub fn scrape(port: u16) -> Option<String> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    conn.read_to_string(&mut response).ok()?;
    if !response.starts_with("HTTP/1.1 200") {
        return None;
    }
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    Some(body.to_string())
}

/// Every sample of a text exposition, keyed as printed: `name` or
/// `name{label="value",…}`. Comment lines (`# HELP`, `# TYPE`) are left
/// out; a value that is not a number (a chunked body's size line) too.
pub fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The metric name of a sample key (before any `{`).
pub fn family(key: &str) -> &str {
    key.split('{').next().unwrap_or(key)
}
