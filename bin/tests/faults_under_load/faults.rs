//! The faults: a process stopped (`SIGSTOP`) and Redis starved of CPU,
//! each undone on drop, also when a test panics; the network blackhole is
//! `common/netns.rs`'s.

use std::process::{Child, Command, Stdio};

/// `kill -SIG pid`.
fn signal(sig: &str, pid: u32) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("run kill(1)")
        .success();
    assert!(ok, "kill -{sig} {pid} failed");
}

/// A process stopped (`SIGSTOP`): frozen with its sockets open, as a
/// process the kernel does not schedule, a VM paused, or a long GC pause
/// looks to its peers. Continued on drop.
pub(crate) struct Stopped {
    pid: u32,
}

impl Stopped {
    pub(crate) fn new(pid: u32) -> Stopped {
        signal("STOP", pid);
        Stopped { pid }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.pid.to_string()])
            .status();
    }
}

/// Whether `program` runs (is installed); with `CI` set a missing one is
/// an error, otherwise the test says loudly that it skips.
pub(crate) fn have(program: &str, args: &[&str]) -> bool {
    let ran = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ran {
        assert!(
            std::env::var_os("CI").is_none(),
            "{program} is missing but CI is set: install it (util-linux)"
        );
        eprintln!("\n*** SKIPPING: {program} is missing (set CI=1 to make this an error). ***\n");
    }
    ran
}

/// Redis starved of CPU: every thread of it pinned to one core, where
/// busy loops run, and its priority set to the lowest (nice 19): it gets
/// about 1 % of that core. Undone on drop: the loops killed, Redis back
/// to every core at nice 0.
pub(crate) struct Starved {
    redis: u32,
    loops: Vec<Child>,
}

/// Busy loops beside the starved Redis.
const BUSY_LOOPS: usize = 2;

impl Starved {
    pub(crate) fn new(redis: u32) -> Starved {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // The last core: the load and the server get the others, where
        // the scheduler moves them.
        let core = (cores - 1).to_string();
        let mut starved = Starved {
            redis,
            loops: Vec::new(),
        };
        for _ in 0..BUSY_LOOPS {
            let child = Command::new("taskset")
                .args(["-c", &core, "sh", "-c", "while :; do :; done"])
                .stdin(Stdio::null())
                .spawn()
                .expect("run taskset");
            starved.loops.push(child);
        }
        let pid = redis.to_string();
        run_ok("taskset", &["-a", "-p", "-c", &core, &pid]);
        run_ok("renice", &["-n", "19", "-p", &pid]);
        starved
    }
}

impl Drop for Starved {
    fn drop(&mut self) {
        for child in &mut self.loops {
            let _ = child.kill();
            let _ = child.wait();
        }
        let pid = self.redis.to_string();
        let all = format!(
            "0-{}",
            std::thread::available_parallelism().map_or(1, |n| n.get()) - 1
        );
        let _ = Command::new("renice")
            .args(["-n", "0", "-p", &pid])
            .output();
        let _ = Command::new("taskset")
            .args(["-a", "-p", "-c", &all, &pid])
            .output();
    }
}

/// Runs `program args`, panicking with its output if it fails.
fn run_ok(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
