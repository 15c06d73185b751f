//! End-to-end tests of what `station client` says, and does with its state
//! file, when it gives up: only a server's `SESSION_EXPIRED` is "expired"
//! (exit 4, state file moved aside); a client that reaches no server exits
//! 6, keeps its state file, and the same command later resumes.

mod common;

use std::time::Duration;

use common::*;

const EXPIRED: i32 = 4;
const UNREACHABLE: i32 = 6;

/// A server slow enough (100 ms a number) that a client can be killed
/// mid-session, with a TTL far longer than any test.
fn slow_server() -> Server {
    Server::spawn(
        "server --interval 100ms --session-ttl 5m",
        station([
            "server",
            "--port",
            "0",
            "--interval",
            "100ms",
            "--session-ttl",
            "5m",
        ]),
    )
}

/// A client killed (-9) mid-session, then run again with its state file
/// but no server to reach, used to say "session expired" (exit 4) and move
/// the state file aside, although the server still held the session: the
/// next correct run then opened a new session instead of resuming.
#[test]
fn a_restored_client_that_reaches_no_server_keeps_its_session() {
    let server = slow_server();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s.json");
    let ended = dir.path().join("s.json.ended");
    let state_arg = state.to_str().unwrap();
    let args = ["--count", "40", "--state-file", state_arg];

    let mut first = spawn_client(server.port, &args);
    wait_saved(&mut first, &state, Duration::from_secs(15), |n| n >= 3);
    first.kill();

    let nowhere = dead_port();
    let mut lost_args = args.to_vec();
    lost_args.extend(["--give-up-after", "3s"]);
    let out = run_client(nowhere, &lost_args);
    eprintln!("client with no server:\n{out}");
    assert_no_panic(&out);
    out.assert_code(UNREACHABLE);
    let result = out.last_line();
    assert!(result.contains("no server reachable"), "{out}");
    assert!(result.contains("may have expired"), "{out}");
    assert!(!result.contains("session expired"), "{out}");
    assert!(
        out.stderr.contains("run the same command again"),
        "the note says how to go on:\n{out}"
    );
    assert!(state.exists(), "the state file is kept");
    assert!(!ended.exists(), "and not moved aside");
    // The server still holds the session...
    let stats = server.stats();
    assert_eq!(stats["live_sessions"], 1, "{stats}");

    // ...and the same command, pointed at it, resumes it.
    let out = run_client(server.port, &[&args[..], &["--json"]].concat());
    assert_no_panic(&out);
    assert_verified_json(&out, 40);
    assert!(!state.exists(), "the state file is removed on success");
    let stats = server.wait_idle();
    assert_eq!(stats["sessions_opened"], 1, "{stats}");
    assert!(counter(&stats, "sessions_resumed") >= 1, "{stats}");
    assert_eq!(stats["sessions_completed"], 1, "{stats}");
}

/// Exit 4 stays for what a server said: a session resumed after its TTL.
#[test]
fn a_session_a_server_says_expired_is_expired() {
    let server = Server::start(&["--session-ttl", "1s"]);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s.json");
    let state_arg = state.to_str().unwrap();
    let args = ["--count", "1000", "--state-file", state_arg];
    let mut first = spawn_client(server.port, &args);
    wait_saved(&mut first, &state, Duration::from_secs(15), |n| n > 10);
    first.kill();
    server.wait_stats(Duration::from_secs(10), "the stream gone", |s| {
        s["attached_streams"] == 0
    });
    // Waiting out the TTL (1 s) is the point of this test, hence a sleep.
    std::thread::sleep(Duration::from_millis(2500));
    let out = run_client(server.port, &args);
    assert_no_panic(&out);
    out.assert_code(EXPIRED);
    assert!(out.last_line().contains("session expired"), "{out}");
    assert!(!state.exists(), "moved aside");
}

/// A client whose server died mid-session: no server was reachable since
/// the last number, and the message says so -- it used to say "servers
/// attached the session but sent no new number".
#[test]
fn a_client_whose_server_died_says_no_server_was_reachable() {
    let mut server = slow_server();
    let mut client = spawn_client(
        server.port,
        &["--count", "100", "--give-up-after", "5s", "--json"],
    );
    server.wait_stats(Duration::from_secs(10), "numbers sent", |s| {
        s["attached_streams"] == 1 && counter(s, "numbers_sent") >= 3
    });
    server.proc.kill();
    let out = client.finish(CLIENT_TIMEOUT);
    eprintln!("client after its server died:\n{out}");
    assert_no_panic(&out);
    out.assert_code(UNREACHABLE);
    let result = out.json()["result"].as_str().unwrap().to_string();
    assert!(result.contains("no progress for 5s"), "{result}");
    assert!(result.contains("no server reachable"), "{result}");
    assert!(!result.contains("attached"), "{result}");
    assert!(!result.contains("expired"), "{result}");
}
