//! A server's Prometheus text (`--metrics-addr`), scraped over plain
//! HTTP/1.1 with the standard library and read as samples: what a
//! dashboard or an alert would see.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One GET of `/metrics` at `addr`: the body, or `None` while nothing
/// answers there (or anything but 200 does).
pub fn scrape(addr: SocketAddr) -> Option<String> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    conn.read_to_string(&mut response).ok()?;
    if !response.starts_with("HTTP/1.1 200") {
        return None;
    }
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    Some(body.to_string())
}

/// `scrape` on the loopback `port`.
pub fn scrape_port(port: u16) -> Option<String> {
    scrape(SocketAddr::from(([127, 0, 0, 1], port)))
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

/// The sum of every sample of metric `name`, or `None` if there is none:
/// the exporter lists a counter only once it has counted something.
pub fn sum(text: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = samples(text)
        .into_iter()
        .filter(|(key, _)| family(key) == name)
        .map(|(_, v)| v)
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}
