//! The signal as a whole, fed as the probe feeds it: shedding, the
//! learned limit, the excuse for silence and the processors' share.

use super::*;

const MS: Duration = Duration::from_millis(1);

impl Overload {
    /// The learned limit, if `held` streams are at it (what refuses a
    /// new session when the server does not also shed on lateness).
    fn limited(&self, held: u64) -> Option<u64> {
        self.limit().filter(|&limit| held >= limit)
    }
}

fn feed(o: &Overload, late: Duration, times: usize) {
    feed_at(o, &mut Instant::now(), late, 0, times);
}

/// Feeds `times` samples of `late` with `held` streams held, `clock`
/// advancing as the probe's does: its period plus the lateness.
fn feed_at(o: &Overload, clock: &mut Instant, late: Duration, held: u64, times: usize) {
    for _ in 0..times {
        *clock += PROBE_EVERY + late.min(Duration::from_secs(3_600));
        o.observe(*clock, late, held);
    }
}

/// Feeds `windows` acknowledgement windows of `acks` round trips of
/// `rtt` each, the probe on time, with `held` streams held (a window
/// with at least [`MIN_ACKS`] closes on its last sample).
fn feed_acks(o: &Overload, clock: &mut Instant, rtt: Duration, acks: u64, held: u64, windows: u32) {
    let per_window = (ACK_WINDOW.as_millis() / PROBE_EVERY.as_millis()) as usize;
    for _ in 0..windows {
        for _ in 0..acks {
            o.ack_round_trip(rtt);
        }
        feed_at(o, clock, Duration::ZERO, held, per_window);
    }
}

#[test]
fn acknowledgements_late_over_their_baseline_shed_and_cut_the_limit() {
    let o = Overload::new(Some(100 * MS), None);
    let t = &mut Instant::now();
    // A far network: round trips of 300 ms from the start are its
    // baseline, not lateness.
    feed_acks(&o, t, 300 * MS, 100, 10_000, 20);
    assert_eq!(o.shedding(), None);
    assert!(o.lateness() < MS, "{:?}", o.lateness());
    // Too few round trips, however late, gathered for a second: they
    // say nothing.
    feed_acks(&o, t, Duration::from_secs(5), MIN_ACKS - 1, 10_000, 1);
    feed_acks(&o, t, Duration::ZERO, 0, 10_000, 4);
    assert_eq!(o.shedding(), None);
    // One late window alone (a client's pause, a retransmission) sheds
    // nobody.
    feed_acks(&o, t, 900 * MS, 100, 10_000, 1);
    feed_acks(&o, t, 300 * MS, 100, 10_000, 4);
    assert_eq!(o.shedding(), None);
    assert_eq!(o.limit(), None);
    // Most round trips 600 ms over it, two windows in a row, the probe
    // on time throughout: shed, and after CUT_AFTER, a limit under the
    // streams held.
    feed_acks(&o, t, 900 * MS, 100, 10_000, 4);
    assert!(o.shedding().expect("sheds") >= 100 * MS);
    assert_eq!(o.limit(), Some(9_000));
    // Back to the baseline: shedding stops.
    feed_acks(&o, t, 300 * MS, 100, 9_000, 4);
    assert_eq!(o.shedding(), None);
}

#[test]
fn round_trips_are_not_kept_unless_shedding_is_configured() {
    let o = Overload::new(None, None);
    for _ in 0..100 {
        o.ack_round_trip(Duration::from_secs(9));
    }
    assert_eq!(o.acks.take_median(), None);
}

#[test]
fn sheds_only_on_sustained_lateness_and_stops_below_half() {
    let o = Overload::new(Some(100 * MS), None);
    assert!(o.enabled());
    feed(&o, Duration::ZERO, 10);
    assert_eq!(o.shedding(), None);
    // One long stall is smoothed away: 400 ms / 8 = 50 ms.
    o.observe(Instant::now(), 400 * MS, 0);
    assert_eq!(o.shedding(), None);
    // Sustained lateness above the threshold sheds.
    feed(&o, 200 * MS, 20);
    let late = o.shedding().expect("sheds");
    assert!(late >= 100 * MS, "{late:?}");
    // Hysteresis: below the threshold but above half, still shedding.
    feed(&o, 70 * MS, 40);
    assert!(o.lateness() < 100 * MS);
    assert!(o.shedding().is_some());
    // Below half: admits again, and does not flap back at 70 ms.
    feed(&o, Duration::ZERO, 40);
    assert_eq!(o.shedding(), None);
    feed(&o, 70 * MS, 40);
    assert_eq!(o.shedding(), None);
}

#[test]
fn the_limit_is_cut_below_a_late_population_and_grows_back_only_while_it_binds() {
    let o = Overload::new(Some(100 * MS), None);
    let t = &mut Instant::now();
    // On time: no limit is learned, however many streams are held.
    feed_at(&o, t, Duration::ZERO, 50_000, 1_000);
    assert_eq!(o.limit(), None);
    assert_eq!(o.limited(1_000_000), None);
    // One stall of the whole process: late for 140 ms, no cut.
    feed_at(&o, t, Duration::from_secs(5), 10_000, 1);
    feed_at(&o, t, Duration::ZERO, 10_000, 100);
    assert_eq!(o.limit(), None);
    // Late at 10,000 streams for a quarter second (the average reaches
    // the threshold at the 6th sample of 210 ms): cut to 9,000, so new
    // sessions wait although the lateness soon falls.
    feed_at(&o, t, 200 * MS, 10_000, 7);
    assert_eq!(o.limit(), None);
    feed_at(&o, t, 200 * MS, 10_000, 3);
    assert_eq!(o.limit(), Some(9_000));
    assert_eq!(o.limited(9_500), Some(9_000));
    assert_eq!(o.limited(8_999), None);
    // Still late half a second after the cut: cut again, below what
    // is held.
    feed_at(&o, t, 200 * MS, 9_500, 3);
    assert_eq!(o.limit(), Some(8_550));
    // On time but far under the limit: it says nothing, no growth.
    feed_at(&o, t, Duration::ZERO, 1_000, 1_000);
    assert_eq!(o.limit(), Some(8_550));
    // Between half the threshold and the threshold: held, even while
    // it binds.
    feed_at(&o, t, 70 * MS, 1_000, 20);
    feed_at(&o, t, 70 * MS, 8_000, 100);
    assert_eq!(o.limit(), Some(8_550));
    // Under half the threshold at the limit: 1 % a second.
    feed_at(&o, t, 40 * MS, 8_550, 15);
    assert_eq!(o.limit(), Some(8_635));
    feed_at(&o, t, 40 * MS, 8_600, 10);
    // Well on time at the limit, under the highest a cut set (9,000):
    // 4 % a second, up to that.
    feed_at(&o, t, Duration::ZERO, 8_600, 50);
    assert_eq!(o.limit(), Some(8_980));
    feed_at(&o, t, Duration::ZERO, 8_980, 150);
    assert_eq!(o.limit(), Some(9_000));
    // Past it, where the server ran late before: 1 % a second again.
    feed_at(&o, t, Duration::ZERO, 9_000, 100);
    assert_eq!(o.limit(), Some(9_090));
    feed_at(&o, t, Duration::ZERO, 9_090, 500);
    let grown = o.limit().expect("a limit");
    assert!((9_400..9_700).contains(&grown), "{grown}");
    // Late with under half the limit held: not theirs, no cut.
    let half = grown.div_ceil(2);
    feed_at(&o, t, Duration::from_secs(1), half - 1, 100);
    assert_eq!(o.limit(), Some(grown));
    // Late at half: cut to 90 % of them.
    feed_at(&o, t, Duration::from_secs(1), half, 1);
    assert_eq!(o.limit(), Some(half * 9 / 10));
    // On time for 30 s, well under the limit: forgotten.
    feed_at(&o, t, Duration::ZERO, 100, 2_900);
    assert!(o.limit().is_some());
    feed_at(&o, t, Duration::ZERO, 100, 200);
    assert_eq!(o.limit(), None);
    assert_eq!(o.limited(1_000_000), None);
    // A cut never goes below the floor.
    let fresh = Overload::new(Some(100 * MS), None);
    feed_at(&fresh, &mut Instant::now(), Duration::from_secs(1), 3, 3);
    assert_eq!(fresh.limit(), Some(MIN_LIMIT));
}

#[test]
fn a_cut_waits_for_the_work_queued_behind_the_lateness_to_drain() {
    let o = Overload::new(Some(100 * MS), None);
    let mut t = Instant::now();
    // A second late, sampled every 10 ms: cut once the average has been
    // at the threshold a quarter second.
    let mut late_for = |o: &Overload, span: Duration, held: u64| {
        let end = t + span;
        while t < end {
            t += PROBE_EVERY;
            o.observe(t, Duration::from_secs(1), held);
        }
    };
    late_for(&o, 300 * MS, 10_000);
    assert_eq!(o.limit(), Some(9_000));
    // The average is soon a second: what it stands for needs two
    // seconds to show a cut, not half of one.
    late_for(&o, 1_500 * MS, 9_500);
    assert_eq!(o.limit(), Some(9_000));
    late_for(&o, 600 * MS, 9_500);
    assert_eq!(o.limit(), Some(8_550));
}

#[test]
fn a_lateness_excuses_silence_for_a_while_after_it_was_seen() {
    let o = Overload::new(Some(100 * MS), None);
    let mut clock = Instant::now();
    // 20 samples of 50 ms late: about 1.2 s of the probe's clock.
    feed_at(&o, &mut clock, 50 * MS, 0, 20);
    let peak = o.silence_excused();
    assert!(peak >= 40 * MS, "{peak:?}");
    // On time again, for 4 s: the lateness falls at once, the excuse
    // holds (for at least half of EXCUSE_FOR)...
    feed_at(&o, &mut clock, Duration::ZERO, 0, 400);
    assert!(o.lateness() < MS, "{:?}", o.lateness());
    assert_eq!(o.silence_excused(), peak);
    // ... and is gone within all of it.
    feed_at(&o, &mut clock, Duration::ZERO, 0, 1_000);
    assert!(o.silence_excused() < MS, "{:?}", o.silence_excused());
}

#[test]
fn busy_processors_refuse_new_sessions_until_they_fall_well_under() {
    let o = Overload::new(None, Some(0.9));
    assert!(o.watches_cpu() && !o.enabled());
    o.cpu_used(0.89);
    assert_eq!(o.admits(50_000), Ok(()));
    o.cpu_used(0.93);
    assert_eq!(o.admits(50_000), Err(Busy::Cpu(93)));
    // Under the threshold but within the hysteresis: still refused.
    o.cpu_used(0.86);
    assert_eq!(o.admits(50_000), Err(Busy::Cpu(86)));
    // 5 points under: admitted again.
    o.cpu_used(0.85);
    assert_eq!(o.admits(50_000), Ok(()));
    // Fully busy reads as 100 %, never more.
    o.cpu_used(1.7);
    assert_eq!(o.admits(0), Err(Busy::Cpu(100)));
    // It refuses on the moment alone: no limit is learned from it.
    assert_eq!(o.limit(), None);
    // Off at zero, and at what rounds to zero.
    for off in [
        Overload::new(None, Some(0.0)),
        Overload::new(None, Some(0.0004)),
    ] {
        assert!(!off.watches_cpu());
        off.cpu_used(1.0);
        assert_eq!(off.admits(50_000), Ok(()));
    }
}

#[test]
fn a_low_busy_setting_reopens_at_half_of_it() {
    let o = Overload::new(None, Some(0.04));
    o.cpu_used(0.05);
    assert_eq!(o.admits(0), Err(Busy::Cpu(5)));
    o.cpu_used(0.021);
    assert_eq!(o.admits(0), Err(Busy::Cpu(2)));
    o.cpu_used(0.02);
    assert_eq!(o.admits(0), Ok(()));
}

#[test]
fn lateness_then_the_limit_then_the_processors_give_the_reason() {
    let o = Overload::new(Some(100 * MS), Some(0.9));
    let t = &mut Instant::now();
    // Late at 10,000 streams long enough for a cut to 9,000.
    feed_at(&o, t, 200 * MS, 10_000, 10);
    assert_eq!(o.limit(), Some(9_000));
    o.cpu_used(0.95);
    assert!(matches!(o.admits(9_500), Err(Busy::Late(_))));
    // On time again (under the limit, which then stays): the limit,
    // then the processors.
    feed_at(&o, t, Duration::ZERO, 8_000, 100);
    assert_eq!(o.shedding(), None);
    assert_eq!(
        o.admits(9_500),
        Err(Busy::Limit {
            held: 9_500,
            limit: 9_000
        })
    );
    assert_eq!(o.limit(), Some(9_000));
    assert_eq!(o.admits(8_000), Err(Busy::Cpu(95)));
}

#[test]
fn disabled_never_sheds() {
    for o in [
        Overload::new(None, None),
        Overload::new(Some(Duration::ZERO), None),
    ] {
        assert!(!o.enabled());
        feed(&o, Duration::from_secs(10), 100);
        assert_eq!(o.shedding(), None);
        assert_eq!(o.lateness(), Duration::ZERO);
    }
}

#[test]
fn absurd_samples_do_not_overflow() {
    let o = Overload::new(Some(MS), None);
    feed(&o, Duration::MAX, 100);
    assert!(o.shedding().is_some());
}
