//! A tiny Redis client of the fixtures' own (not the `redis` crate under
//! test): one command on a fresh connection, its RESP2 reply parsed.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// A reply of Redis's RESP2 protocol, as [`command`] reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// A null bulk string or array.
    Nil,
    /// A simple string (`+OK`).
    Status(String),
    /// An error (`-ERR ...`).
    Error(String),
    /// An integer.
    Int(i64),
    /// A bulk string.
    Bulk(Vec<u8>),
    /// An array of replies.
    Array(Vec<Reply>),
}

impl Reply {
    /// The reply as text: a status, or a bulk string read as UTF-8.
    pub fn text(&self) -> Option<String> {
        match self {
            Reply::Status(s) => Some(s.clone()),
            Reply::Bulk(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
}

/// Sends one command to the Redis on loopback `port`, on a fresh
/// connection, each step bounded (1 s to connect, 5 s to answer), and
/// returns its reply; an error reply is `Ok(Reply::Error(..))`.
pub fn command(port: u16, args: &[&str]) -> Result<Reply, String> {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    command_bytes(port, &args)
}

/// [`command`] with binary arguments.
pub fn command_bytes(port: u16, args: &[&[u8]]) -> Result<Reply, String> {
    let exchange = || -> std::io::Result<Reply> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        conn.set_write_timeout(Some(Duration::from_secs(5)))?;
        let mut msg = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            msg.extend(format!("${}\r\n", arg.len()).bytes());
            msg.extend_from_slice(arg);
            msg.extend(b"\r\n");
        }
        conn.write_all(&msg)?;
        parse(&mut std::io::BufReader::new(conn))
    };
    exchange().map_err(|e| format!("{} on port {port}: {e}", describe(args)))
}

fn describe(args: &[&[u8]]) -> String {
    args.iter()
        .take(3)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn parse(r: &mut impl std::io::BufRead) -> std::io::Result<Reply> {
    let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(bad("connection closed".into()));
    }
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at(line.len().min(1));
    let number = || {
        rest.parse::<i64>()
            .map_err(|e| bad(format!("{line:?}: {e}")))
    };
    Ok(match kind {
        "+" => Reply::Status(rest.into()),
        "-" => Reply::Error(rest.into()),
        ":" => Reply::Int(number()?),
        "$" if number()? < 0 => Reply::Nil,
        "$" => {
            let len = usize::try_from(number()?).map_err(|e| bad(e.to_string()))?;
            let mut data = vec![0; len + 2];
            r.read_exact(&mut data)?;
            data.truncate(len);
            Reply::Bulk(data)
        }
        "*" if number()? < 0 => Reply::Nil,
        "*" => (0..number()?)
            .map(|_| parse(r))
            .collect::<std::io::Result<_>>()
            .map(Reply::Array)?,
        _ => return Err(bad(format!("unexpected reply line {line:?}"))),
    })
}

/// [`command`], expecting text (a status or a bulk string).
pub(super) fn text(port: u16, args: &[&str]) -> Result<String, String> {
    match command(port, args)? {
        Reply::Error(e) => Err(format!("{} on port {port}: {e}", args.join(" "))),
        reply => reply
            .text()
            .ok_or_else(|| format!("{}: unexpected reply {reply:?}", args.join(" "))),
    }
}
