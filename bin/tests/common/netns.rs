//! Two hosts on a real kernel network: two network namespaces (`ip netns`)
//! joined by a veth pair on a private /30, removed on drop, even when a
//! test panics; and a silent blackhole between them (`iptables -j DROP`).
//!
//! Both ends live in namespaces of their own, so nothing is added to this
//! machine's own network: the addresses can be the same in every run, and
//! two runs at once do not meet (the namespaces' names are unique).
//!
//! Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN), `ip` (iproute2) and
//! `iptables`. Where `ip netns add` is refused or a tool is missing,
//! [`Hosts::create`] says so loudly and returns `None`; with `CI` set it
//! panics instead, so CI never skips these tests.

use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The server's host: its namespace, veth end and address.
pub const SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 1);
/// The client's host.
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 2);
const SERVER_VETH: &str = "veth-server";
const CLIENT_VETH: &str = "veth-client";

/// Two network namespaces joined by a veth pair: [`SERVER_ADDR`] in
/// `server`, [`CLIENT_ADDR`] in `client`, each with its loopback up.
/// Dropping it deletes both (and with them the veth pair and any rule).
pub struct Hosts {
    pub server: String,
    pub client: String,
    /// Namespaces made so far, deleted on drop.
    made: Vec<String>,
}

/// Runs `program args`, returning its output, or the reason it could not
/// be run.
fn run(program: &str, args: &[&str]) -> Result<Output, String> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))
}

/// Runs `program args`, panicking with its stderr if it fails.
fn must(program: &str, args: &[&str]) {
    let out = run(program, args).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{program} {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Skips (loudly) or, with `CI` set, fails: `why` the test cannot run.
fn unavailable(why: &str) -> Option<Hosts> {
    if std::env::var_os("CI").is_some() {
        panic!("{why}, but CI is set: network namespace tests must run in CI (as root, with iproute2 and iptables)");
    }
    eprintln!(
        "\n*** SKIPPING network namespace test: {why}. ***\n\
         *** It needs root, iproute2 and iptables (set CI=1 to make this an error). ***\n"
    );
    None
}

impl Hosts {
    /// Makes the two namespaces and joins them; `None` (after saying so
    /// loudly) where that is not allowed or a tool is missing, unless `CI`
    /// is set. Panics if a later step fails.
    pub fn create() -> Option<Hosts> {
        for tool in ["ip", "iptables"] {
            if let Err(e) = run(tool, &["-V"]) {
                return unavailable(&format!("{tool} is missing ({e})"));
            }
        }
        static RUNS: AtomicU32 = AtomicU32::new(0);
        let unique = format!(
            "{}-{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        );
        let mut hosts = Hosts {
            server: format!("station-server-{unique}"),
            client: format!("station-client-{unique}"),
            made: Vec::new(),
        };
        let first = run("ip", &["netns", "add", &hosts.server]).unwrap_or_else(|e| panic!("{e}"));
        if !first.status.success() {
            return unavailable(&format!(
                "`ip netns add` was refused ({})",
                String::from_utf8_lossy(&first.stderr).trim()
            ));
        }
        hosts.made.push(hosts.server.clone());
        must("ip", &["netns", "add", &hosts.client]);
        hosts.made.push(hosts.client.clone());
        let (server, client) = (hosts.server.as_str(), hosts.client.as_str());
        // Both ends are made inside the namespaces: no interface is ever
        // named in this machine's own, where another run could clash.
        must(
            "ip",
            &[
                "-n",
                server,
                "link",
                "add",
                SERVER_VETH,
                "type",
                "veth",
                "peer",
                "name",
                CLIENT_VETH,
                "netns",
                client,
            ],
        );
        for (ns, veth, addr) in [
            (server, SERVER_VETH, SERVER_ADDR),
            (client, CLIENT_VETH, CLIENT_ADDR),
        ] {
            let cidr = format!("{addr}/30");
            must("ip", &["-n", ns, "addr", "add", &cidr, "dev", veth]);
            must("ip", &["-n", ns, "link", "set", veth, "up"]);
            must("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        // iptables must work in the namespace too (its kernel modules).
        must("ip", &["netns", "exec", server, "iptables", "-L", "-n"]);
        Some(hosts)
    }

    pub fn server_ip(&self) -> IpAddr {
        IpAddr::V4(SERVER_ADDR)
    }

    /// Drops, silently, every packet between the hosts, both ways, at the
    /// server's end, until the returned guard is lifted or dropped: no
    /// RST, no ICMP, so each side learns only from its own timers.
    pub fn blackhole(&self) -> Blackhole<'_> {
        let hole = Blackhole {
            hosts: self,
            on: true,
        };
        for rule in Blackhole::RULES {
            hole.iptables("-A", rule);
        }
        hole
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in &self.made {
            // Processes still inside keep a namespace alive until they
            // exit; deleting it here only unnames it.
            let _ = run("ip", &["netns", "del", ns]);
        }
    }
}

/// The blackhole of [`Hosts::blackhole`]; lifted on drop.
pub struct Blackhole<'a> {
    hosts: &'a Hosts,
    on: bool,
}

impl Blackhole<'_> {
    /// Each chain, and how its rule names the server's veth end.
    const RULES: [(&'static str, &'static str); 2] = [("INPUT", "-i"), ("OUTPUT", "-o")];

    fn iptables(&self, op: &str, (chain, dir): (&str, &str)) {
        must(
            "ip",
            &[
                "netns",
                "exec",
                &self.hosts.server,
                "iptables",
                op,
                chain,
                dir,
                SERVER_VETH,
                "-j",
                "DROP",
            ],
        );
    }

    /// Removes the rules: packets flow again.
    pub fn lift(mut self) {
        self.remove();
    }

    fn remove(&mut self) {
        if std::mem::take(&mut self.on) {
            for rule in Self::RULES {
                self.iptables("-D", rule);
            }
        }
    }
}

impl Drop for Blackhole<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Deleting the namespace removes the rules anyway; a second
            // panic here would abort.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.remove()));
        } else {
            self.remove();
        }
    }
}
