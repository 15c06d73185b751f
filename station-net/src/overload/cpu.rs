//! How busy the processors are: the process's CPU time against the wall
//! clock, the second sign the probe refuses new sessions on.

use std::time::{Duration, Instant};

use super::CPU_OVER;

/// The share of the processors a process may run on that it keeps busy:
/// its CPU time (all its threads) against the wall clock times the
/// processors, over the last [`CPU_OVER`]. Both clocks are inputs.
#[derive(Debug)]
pub struct CpuShare {
    /// (wall clock, CPU time) samples of the last [`CPU_OVER`] or so,
    /// oldest first.
    samples: std::collections::VecDeque<(Instant, Duration)>,
}

impl CpuShare {
    /// Starts at `now`, the process having used `used` of CPU time so far.
    pub fn new(now: Instant, used: Duration) -> Self {
        CpuShare {
            samples: std::collections::VecDeque::from([(now, used)]),
        }
    }

    /// The share of `processors` busy since the oldest sample kept, at
    /// `now` with `used` CPU time so far, once a whole [`CPU_OVER`] has
    /// been seen. Never more than 1, and 0 if `used` went backwards.
    pub fn sample(&mut self, now: Instant, used: Duration, processors: usize) -> Option<f64> {
        self.samples.push_back((now, used));
        while self.samples.len() > 2 && now.saturating_duration_since(self.samples[1].0) >= CPU_OVER
        {
            self.samples.pop_front();
        }
        let (since, used_then) = *self.samples.front()?;
        let wall = now.saturating_duration_since(since);
        (wall >= CPU_OVER).then(|| {
            let busy = used.saturating_sub(used_then).as_secs_f64();
            (busy / (wall.as_secs_f64() * processors.max(1) as f64)).min(1.0)
        })
    }
}

/// The CPU time all the process's threads have used so far.
pub fn process_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    // The kernel never reports a negative time; read one as none used.
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_processors_share_is_cpu_time_over_wall_time_over_the_last_second() {
        let t0 = Instant::now();
        let used0 = Duration::from_secs(7);
        let mut cpu = CpuShare::new(t0, used0);
        let quarter = CPU_OVER / 4;
        // Half a processor's worth each quarter second, on two processors:
        // a quarter of them; nothing is said before a whole second.
        for i in 1..=4u32 {
            let share = cpu.sample(t0 + quarter * i, used0 + quarter * i / 2, 2);
            assert_eq!(share.is_some(), i == 4, "after {:?}", quarter * i);
            if let Some(share) = share {
                assert!((share - 0.25).abs() < 1e-9, "{share}");
            }
        }
        // Then a whole processor for a quarter on one: the window is the
        // last second (the first quarter dropped), so 1/2 + 1/8 + 1/8 + 1/8
        // ... of one processor: (3 × 1/8 + 1/4) / 1 s.
        let used = used0 + quarter * 4 / 2 + quarter;
        let share = cpu.sample(t0 + quarter * 5, used, 1).expect("a window");
        assert_eq!(cpu.samples.front().map(|s| s.0), Some(t0 + quarter));
        assert!((share - 0.625).abs() < 1e-9, "{share}");
        // Never over 1, and never less than 0 if the clock went backwards.
        let share = cpu.sample(t0 + quarter * 6, used + CPU_OVER * 9, 1);
        assert_eq!(share, Some(1.0));
        let share = cpu.sample(t0 + quarter * 7, Duration::ZERO, 1);
        assert_eq!(share, Some(0.0));
    }

    #[test]
    fn the_process_cpu_time_moves_while_a_thread_works() {
        let before = process_cpu_time();
        let start = Instant::now();
        let mut spins = 0u64;
        // Bounded: stops once the clock moved, or after 10 s.
        while process_cpu_time() < before + 20 * MS && start.elapsed() < Duration::from_secs(10) {
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
        assert!(
            process_cpu_time() >= before + 20 * MS,
            "{:?}",
            process_cpu_time()
        );
    }
}
