//! End-to-end tests of the real `station` binary: servers and clients
//! run as separate processes on loopback with OS-picked ports.
//!
//! Every wait is bounded and every child is killed on drop, so a failing
//! test never hangs or leaks processes.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;

/// Exit codes of `station` (see `exit` in bin/src/main.rs).
mod code {
    pub const SUCCESS: i32 = 0;
    pub const USAGE: i32 = 2;
    pub const EXPIRED: i32 = 4;
    pub const REJECTED: i32 = 5;
    pub const UNREACHABLE: i32 = 6;
    pub const STATE_FILE: i32 = 7;
}

/// The client's human-readable block as `label -> value`.
fn text_fields(out: &Finished) -> HashMap<String, String> {
    out.stdout
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn field<'a>(fields: &'a HashMap<String, String>, key: &str, out: &Finished) -> &'a str {
    fields
        .get(key)
        .unwrap_or_else(|| panic!("no {key:?} line in the client's output:\n{out}"))
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
}

#[test]
fn plain_completion_text_and_json() {
    let server = Server::start(&[]);

    // Human-readable output.
    let out = run_client(server.port, &["--count", "30"]);
    out.assert_code(code::SUCCESS);
    let f = text_fields(&out);
    assert!(is_uuid(field(&f, "client id", &out)), "{out}");
    assert_eq!(field(&f, "count", &out), "30", "{out}");
    assert_eq!(field(&f, "received", &out), "30", "{out}");
    let sum: u64 = field(&f, "sum", &out).parse().expect("sum is a number");
    assert!(sum <= 30 * u64::from(u32::MAX), "{out}");
    let server_crc = field(&f, "server checksum", &out);
    let client_crc = field(&f, "client checksum", &out);
    assert!(
        server_crc.starts_with("0x") && server_crc.len() == 10,
        "checksum shown as 0x%08x:\n{out}"
    );
    assert_eq!(server_crc, client_crc, "{out}");
    assert_eq!(field(&f, "reconnects", &out), "0", "{out}");
    let result = field(&f, "result", &out);
    assert!(result.starts_with("SUCCESS"), "{out}");
    assert!(out.last_line().contains("SUCCESS"), "{out}");

    // `--json`, with a chosen client id that the output must echo.
    let id = "67e55044-10b1-426f-9247-bb680e5fe0c8";
    let out = run_client(server.port, &["--count", "25", "--json", "--client-id", id]);
    let j = assert_verified_json(&out, 25);
    assert_eq!(j["client_id"], id, "{out}");
    assert_eq!(j["reconnects"], 0, "{out}");

    // Both sessions were deleted on completion.
    let stats = server.wait_idle();
    assert_eq!(stats["sessions_opened"], 2, "{stats}");
    assert_eq!(stats["sessions_completed"], 2, "{stats}");
    assert_eq!(stats["sessions_resumed"], 0, "{stats}");
}

#[test]
fn completes_through_fail_every_3() {
    let server = Server::start(&["--fail-every", "3"]);
    let out = run_client(server.port, &["--count", "40", "--json"]);
    let j = assert_verified_json(&out, 40);
    assert!(j["reconnects"].as_u64().unwrap() > 0, "{out}");
    let stats = server.wait_idle();
    assert_eq!(stats["sessions_completed"], 1, "{stats}");
    assert_eq!(stats["sessions_opened"], 1, "{stats}");
    assert!(stats["sessions_resumed"].as_u64().unwrap() > 0, "{stats}");
}

#[test]
fn completes_through_fail_every_5_and_offline_periods() {
    let server = Server::start(&["--fail-every", "5", "--go-offline-for", "300ms"]);
    let started = Instant::now();
    let out = run_client(server.port, &["--count", "20", "--json"]);
    let elapsed = started.elapsed();
    let j = assert_verified_json(&out, 20);
    assert!(j["reconnects"].as_u64().unwrap() > 0, "{out}");
    // At least three faults, each followed by 300 ms offline.
    assert!(
        elapsed >= Duration::from_millis(900),
        "offline periods were not honoured: {elapsed:?}\n{out}"
    );
    server.wait_idle();
}

#[test]
fn killed_client_resumes_from_state_file() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("client.state");
    let state_arg = state.to_str().unwrap();
    let args = ["--count", "300", "--json", "--state-file", state_arg];

    let mut first = spawn_client(server.port, &args);
    wait_saved(&mut first, &state, Duration::from_secs(15), |n| n > 40);
    first.kill();
    assert!(first.try_status().is_some());
    let saved = state_next_index(&state).expect("the state file survives a SIGKILL");
    assert!(saved > 40 && saved < 300, "saved next_index {saved}");

    let second = run_client(server.port, &args);
    assert_no_panic(&second);
    let j = assert_verified_json(&second, 300);
    assert!(!state.exists(), "the state file is removed on success");
    assert_eq!(j["received"], 300, "{second}");

    // The second run resumed the first run's session, it did not start over.
    let stats = server.wait_idle();
    assert_eq!(stats["sessions_opened"], 1, "{stats}");
    assert!(stats["sessions_resumed"].as_u64().unwrap() >= 1, "{stats}");
    assert_eq!(stats["sessions_completed"], 1, "{stats}");
}

#[test]
fn killed_client_restarted_after_the_ttl_is_told_it_expired() {
    let server = Server::start(&["--session-ttl", "1s"]);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("client.state");
    let state_arg = state.to_str().unwrap();
    let args = ["--count", "1000", "--state-file", state_arg];

    let mut first = spawn_client(server.port, &args);
    wait_saved(&mut first, &state, Duration::from_secs(15), |n| n > 10);
    first.kill();
    // The server notices the dead stream; the TTL runs from then.
    server.wait_stats(Duration::from_secs(10), "the stream gone", |s| {
        s["attached_streams"] == 0
    });
    // Waiting out the TTL (1 s) is the point of this test, hence a sleep.
    std::thread::sleep(Duration::from_millis(2500));

    let out = run_client(server.port, &args);
    eprintln!("client after the TTL:\n{out}");
    assert_no_panic(&out);
    out.assert_code(code::EXPIRED);
    let result = out.last_line();
    assert!(result.contains("FAILURE"), "{out}");
    assert!(result.contains("expired"), "the verdict says why:\n{out}");
    assert_eq!(server.wait_idle()["live_sessions"], 0);
}

#[test]
fn corrupt_state_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("client.state");
    let port = dead_port();
    for garbage in ["this is not a state file", "", "{\"version\": 1}"] {
        std::fs::write(&state, garbage).unwrap();
        let out = run_client(
            port,
            &["--count", "10", "--state-file", state.to_str().unwrap()],
        );
        assert_no_panic(&out);
        out.assert_code(code::STATE_FILE);
        assert!(out.stderr.contains("corrupt"), "{out}");
        assert!(
            out.stderr.contains(state.to_str().unwrap()),
            "names the file:\n{out}"
        );
        assert_eq!(
            std::fs::read_to_string(&state).unwrap(),
            garbage,
            "the file is left alone"
        );
    }
}

#[test]
fn state_file_of_another_session_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("client.state");
    let state_arg = state.to_str().unwrap();
    let port = dead_port();

    // A genuine state file: the client writes it before its first request;
    // nothing listens on the port, so it never gets further.
    let mut writer = spawn_client(port, &["--count", "10", "--state-file", state_arg]);
    wait_saved(&mut writer, &state, Duration::from_secs(10), |_| true);
    writer.kill();
    let saved = std::fs::read_to_string(&state).unwrap();

    let out = run_client(port, &["--count", "11", "--state-file", state_arg]);
    assert_no_panic(&out);
    out.assert_code(code::STATE_FILE);
    assert!(out.stderr.contains("another session"), "{out}");
    assert!(out.stderr.contains("count"), "{out}");

    let out = run_client(
        port,
        &[
            "--count",
            "10",
            "--client-id",
            "67e55044-10b1-426f-9247-bb680e5fe0c8",
            "--state-file",
            state_arg,
        ],
    );
    out.assert_code(code::STATE_FILE);
    assert!(out.stderr.contains("another session"), "{out}");

    assert_eq!(
        std::fs::read_to_string(&state).unwrap(),
        saved,
        "the file is left alone"
    );
}

#[test]
fn count_out_of_range_is_a_usage_error() {
    for bad in ["0", "65536"] {
        let out = run_station(&["client", "--port", "1", "--count", bad]);
        assert_no_panic(&out);
        out.assert_code(code::USAGE);
        assert!(out.stderr.contains("--count"), "{out}");
        assert!(out.stdout.is_empty(), "{out}");
    }
}

#[test]
fn bogus_store_is_a_usage_error() {
    let out = run_station(&["server", "--port", "0", "--store", "bogus"]);
    assert_no_panic(&out);
    out.assert_code(code::USAGE);
    assert!(out.stderr.contains("--store"), "{out}");
    assert!(out.stderr.contains("bogus"), "{out}");
    assert!(!out.stdout.contains("listening"), "{out}");
}

#[test]
fn unworkable_settings_are_usage_errors_that_name_the_rule() {
    let cases: [(&[&str], &str); 3] = [
        (
            &[
                "server",
                "--port",
                "0",
                "--interval",
                "40s",
                "--session-ttl",
                "30s",
            ],
            "plus silence timeout",
        ),
        (
            &[
                "server",
                "--port",
                "0",
                "--interval",
                "40ms",
                "--window",
                "256",
            ],
            "acknowledge every 64 numbers",
        ),
        (
            &["client", "--port", "1", "--give-up-after", "0s"],
            "--give-up-after",
        ),
    ];
    for (args, rule) in cases {
        let out = run_station(args);
        assert_no_panic(&out);
        out.assert_code(code::USAGE);
        assert!(out.stderr.contains(rule), "{args:?}: {out}");
        assert!(!out.stdout.contains("listening"), "{out}");
    }
}

#[test]
fn fifty_concurrent_clients_complete_and_leave_nothing_behind() {
    const CLIENTS: usize = 50;
    // A server-wide fault every 40 numbers: about a hundred reconnections.
    let server = Server::start(&["--fail-every", "40"]);
    let clients: Vec<Proc> = (0..CLIENTS)
        .map(|_| spawn_client(server.port, &["--count", "80", "--json"]))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut reconnects = 0;
    for mut client in clients {
        let out = client.finish_by(deadline);
        let j = assert_verified_json(&out, 80);
        reconnects += j["reconnects"].as_u64().unwrap();
    }
    assert!(reconnects > 0, "the faults were exercised");

    let stats = server.wait_idle();
    assert_eq!(stats["live_sessions"], 0, "{stats}");
    assert_eq!(stats["attached_streams"], 0, "{stats}");
    assert_eq!(stats["sessions_opened"], CLIENTS as u64, "{stats}");
    assert_eq!(stats["sessions_completed"], CLIENTS as u64, "{stats}");
}

#[test]
fn load_split_over_processes_reports_every_session_once() {
    // Three worker processes, 90 sessions over 6 connections: the merged
    // report counts each session and number once, with the workers'
    // histograms merged.
    let server = Server::start(&[]);
    let endpoint = server.endpoint();
    let out = run_station(&[
        "load",
        "--endpoint",
        &endpoint,
        "--sessions",
        "90",
        "--connections",
        "6",
        "--count",
        "5",
        "--processes",
        "3",
        "--duration",
        "60s",
        "--json",
    ]);
    out.assert_code(code::SUCCESS);
    let j = out.json();
    assert_eq!(j["sessions"], 90, "{j}");
    assert_eq!(j["completed"], 90, "{j}");
    assert_eq!(j["numbers"], 90 * 5, "{j}");
    assert!(j["lateness_ms"]["max"].as_f64().unwrap() > 0.0, "{j}");
    assert!(j["load_cpu_seconds"].as_f64().is_some(), "{j}");
    let stats = server.wait_idle();
    assert_eq!(stats["sessions_completed"], 90, "{stats}");
}

#[test]
fn open_of_a_live_client_id_is_rejected() {
    let server = Server::start(&[]);
    let id = "0b7f4a5e-8f0a-4c1e-9d3b-2a6c5e4f1d00";
    let mut first = spawn_client(server.port, &["--count", "2000", "--client-id", id]);
    server.wait_stats(Duration::from_secs(10), "the first stream", |s| {
        s["attached_streams"] == 1
    });
    let out = run_client(
        server.port,
        &["--count", "2000", "--client-id", id, "--json"],
    );
    assert_no_panic(&out);
    out.assert_code(code::REJECTED);
    let j = out.json();
    assert_eq!(j["success"], false, "{out}");
    assert_eq!(j["exit_code"], code::REJECTED, "{out}");
    assert!(
        first.try_status().is_none(),
        "the first client is undisturbed:\n{}",
        first.stderr_so_far()
    );
    first.kill();
}

#[test]
fn sigterm_stops_the_server_promptly_and_the_client_fails_cleanly() {
    let mut doomed = Server::start(&[]);
    // Shares nothing with `doomed`: the client fails over to it and learns
    // that this server does not know the session.
    let other = Server::start(&[]);
    let mut client = spawn_client(
        doomed.port,
        &["--count", "5000", "--json", "--endpoint", &other.endpoint()],
    );
    doomed.wait_stats(Duration::from_secs(10), "the client's stream", |s| {
        s["attached_streams"] == 1 && s["numbers_sent"].as_u64().unwrap() > 5
    });

    let sent = Instant::now();
    doomed.proc.terminate();
    let status = doomed.proc.wait_for(Duration::from_secs(5));
    let status = status.unwrap_or_else(|| {
        panic!(
            "the server did not exit within 5s of SIGTERM\n{}",
            doomed.proc.stderr_so_far()
        )
    });
    assert_eq!(
        status.code(),
        Some(0),
        "graceful shutdown exits 0\n{}",
        doomed.proc.stderr_so_far()
    );
    eprintln!("server stopped {:?} after SIGTERM", sent.elapsed());

    let out = client.finish(CLIENT_TIMEOUT);
    eprintln!("client after shutdown:\n{out}");
    assert_no_panic(&out);
    assert!(
        out.stderr.to_lowercase().contains("unavailable"),
        "the client saw UNAVAILABLE:\n{out}"
    );
    let j = out.json();
    assert_eq!(j["success"], false, "{out}");
    assert!(
        [code::EXPIRED, code::REJECTED, code::UNREACHABLE].contains(&out.code.unwrap_or(-1)),
        "{out}"
    );
    assert_eq!(j["exit_code"], out.code.unwrap(), "{out}");
    other.wait_idle();
}
