//! Serial hints: predicting which transactions would lose a conflict, so that they skip the
//! parallel pass and run in the serial pass right away.
//!
//! Under heavy contention most of an epoch's parallel pass is wasted: a transaction that loses
//! a conflict is executed once in parallel, thrown away, and executed again serially. The
//! [`Predictor`] keeps, per kind of request (its target service and [`App::event_kind`]), a
//! count of how many ran in the parallel pass and how many of those lost. A kind enters the
//! hint (is sent straight to the serial pass) once at least `MIN_SAMPLES` were measured and its
//! loss rate is at or above the threshold, except, in one epoch of every `PROBE_EPOCHS` (a
//! *probe epoch*), for the first and every `PROBE_EVERY`-th request after it of that kind,
//! which still run in parallel so the rate keeps being measured. Between probe epochs a hinted
//! kind runs entirely in the serial pass: when every kind of an epoch is hinted, that epoch has
//! no parallel pass at all — no waves, no decide, no commit — only the serial pass.
//!
//! A kind not hinted has its counts halved every epoch (it is measured whole). A hinted kind's
//! counts are its probes' alone, over its last `WINDOW` probes whatever the number of epochs
//! they took (not decayed by epoch, which starved kinds with few requests of samples and flipped
//! them in and out of the hint), and it leaves the hint only when that rate falls below the
//! threshold minus `HYSTERESIS`. Every probe that wins pulls the rate down by
//! `WINDOW / (WINDOW + 1)`, and a hinted kind has at least one probe per probe epoch, so a kind
//! that cools down from losing always leaves within 12 probe epochs (48 epochs; fewer the more
//! requests it has). A kind not seen in an epoch decays, and is forgotten once its counts are
//! nothing. The decision is taken once per kind and epoch, at its first request, from counts
//! only: no clock, no randomness.
//!
//! The hints are a scheduling choice, not a correctness one: a hinted transaction takes the
//! same place in the serial order as a conflict loser, and the hints are logged with the
//! epoch, so replay follows them (see `epoch.rs`).

use crate::app::App;
use crate::envelope::Sequenced;
use crate::epoch::TxnResult;
use crate::ids::Seq;
use rustc_hash::FxHashMap;

/// Which transactions the sequencer sends straight to the serial pass.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SerialHints {
    /// Never: every transaction runs in the parallel pass first.
    Off,
    /// Requests of a kind whose recent conflict-loss rate in the parallel pass is at least
    /// `threshold` (in (0, 1]). Only with `Fallback::Serial` and `Fallback::Ordered`.
    Adaptive { threshold: f64 },
    /// Every `every`-th request of each epoch, whatever its kind (for tests and experiments:
    /// it exercises the hinted path independently of contention).
    Sample { every: u32 },
}

impl SerialHints {
    /// The default: kinds that lose at least 60 % of the time go straight to the serial pass.
    /// Break-even is near 50 % on two cores (a loser costs a parallel execution plus a serial
    /// one); the margin keeps kinds with middling contention in the parallel pass.
    pub const DEFAULT: SerialHints = SerialHints::Adaptive { threshold: 0.6 };

    /// Why the setting is invalid, if it is.
    pub(crate) fn invalid(&self) -> Option<String> {
        match *self {
            SerialHints::Adaptive { threshold } if !(threshold > 0.0 && threshold <= 1.0) => Some(
                format!("serial_hints threshold {threshold} is outside (0, 1]"),
            ),
            SerialHints::Sample { every: 0 } => Some("serial_hints every must be ≥ 1".into()),
            _ => None,
        }
    }
}

/// In a probe epoch, the first request of a hinted kind and every this many after it still run
/// in parallel.
const PROBE_EVERY: u32 = 8;
/// One epoch in this many is a probe epoch (see the module documentation). Under YCSB-T Zipf
/// 0.99 the probes were 15 % of an epoch's transactions, three in four of them lost and ran
/// again, and they alone made the epoch run its parallel phases.
pub(crate) const PROBE_EPOCHS: u64 = 4;
/// Parallel executions of a kind needed before its rate is trusted enough to hint it.
const MIN_SAMPLES: f64 = 16.0;
/// A hinted kind leaves the hint only when its rate falls this far below the threshold (at
/// most half the threshold below it), so a rate near the threshold does not flip the kind in
/// and out every few epochs.
const HYSTERESIS: f64 = 0.1;
/// A hinted kind's rate is measured over (about) its last this many parallel executions — its
/// probes — however many epochs they took, and not decayed by epoch: a kind with few
/// requests per epoch has few probes, and decaying them by epoch would drop it below
/// `MIN_SAMPLES` and out of the hint while it is still hot. Each probe that wins pulls the rate
/// down by a factor of `WINDOW / (WINDOW + 1)`, which bounds how long a kind that cooled down
/// stays hinted (see the module documentation).
const WINDOW: f64 = 16.0;
/// Weight of the past at each epoch that measures the kind or does not see it (the counts
/// halve every such epoch without new samples).
const DECAY: f64 = 0.5;

#[derive(Default)]
struct KindStat {
    tried: f64,
    lost: f64,
    /// This epoch's counts, folded in by [`Predictor::observe`].
    epoch_tried: u32,
    epoch_lost: u32,
    /// Requests of this kind seen by [`Predictor::hints`] in the current epoch.
    seen: u32,
    /// Whether the kind is hinted: decided at its first request of each epoch.
    hinted: bool,
}

/// The per-kind loss statistics and the policy.
pub(crate) struct Predictor {
    policy: SerialHints,
    kinds: FxHashMap<KindKey, KindStat>,
    /// Epochs hinted so far: epoch `n` probes if `n % PROBE_EPOCHS == 0`.
    epochs: u64,
    /// Kinds that entered or left the hint since the last [`Predictor::take_flips`].
    flips: u64,
}

/// A kind of request: its target and its event kind's name, by the name's address and length.
/// `event_kind` returns string literals, so the same kind has the same address on every call,
/// and hashing two words is much cheaper than hashing and comparing the name's bytes for every
/// request of every epoch. Two literals with equal text at different addresses only split one
/// kind's statistics in two; the hints are recorded in the log, so replay never recomputes them.
type KindKey = (u32, usize, usize);

impl Predictor {
    pub fn new(policy: SerialHints) -> Self {
        Predictor {
            policy,
            kinds: FxHashMap::default(),
            epochs: 0,
            flips: 0,
        }
    }

    fn kind<A: App>(request: &Sequenced<A::Event>) -> KindKey {
        let name = A::event_kind(&request.event);
        (request.target, name.as_ptr() as usize, name.len())
    }

    /// The positions of `requests` to send straight to the serial pass, ascending.
    pub fn hints<A: App>(&mut self, requests: &[Sequenced<A::Event>]) -> Vec<Seq> {
        match self.policy {
            SerialHints::Off => Vec::new(),
            SerialHints::Sample { every } => (0..requests.len() as Seq)
                .filter(|seq| seq % every == every - 1)
                .collect(),
            SerialHints::Adaptive { threshold } => {
                for stat in self.kinds.values_mut() {
                    stat.seen = 0;
                }
                let probing = self.epochs.is_multiple_of(PROBE_EPOCHS);
                self.epochs += 1;
                // One allocation per epoch: under contention nearly every request is hinted.
                let mut out = Vec::with_capacity(requests.len());
                for (seq, r) in requests.iter().enumerate() {
                    let stat = self.kinds.entry(Self::kind::<A>(r)).or_default();
                    stat.seen += 1;
                    if stat.seen == 1 {
                        let hot = if stat.hinted {
                            let leave = threshold - HYSTERESIS.min(threshold / 2.0);
                            stat.lost >= leave * stat.tried
                        } else {
                            stat.tried >= MIN_SAMPLES && stat.lost >= threshold * stat.tried
                        };
                        if hot != stat.hinted {
                            stat.hinted = hot;
                            self.flips += 1;
                        }
                    }
                    let probe = probing && stat.seen % PROBE_EVERY == 1;
                    if stat.hinted && !probe {
                        out.push(seq as Seq);
                    }
                }
                out
            }
        }
    }

    /// How many times a kind entered or left the hint since the last call.
    pub fn take_flips(&mut self) -> u64 {
        std::mem::take(&mut self.flips)
    }

    /// Learns from an epoch's results: which requests ran in the parallel pass (those not in
    /// `hinted`) and which of them lost a conflict (re-run in the serial pass, or retried).
    pub fn observe<A: App>(
        &mut self,
        requests: &[Sequenced<A::Event>],
        hinted: &[Seq],
        results: &[TxnResult<A::Output>],
    ) {
        if !matches!(self.policy, SerialHints::Adaptive { .. }) {
            return;
        }
        let mut hinted = hinted.iter().copied().peekable();
        for (seq, (r, result)) in requests.iter().zip(results).enumerate() {
            if hinted.next_if_eq(&(seq as Seq)).is_some() {
                continue;
            }
            let lost = match result {
                TxnResult::Committed { pass, .. } | TxnResult::Aborted { pass, .. } => *pass > 0,
                TxnResult::Retry => true,
            };
            let stat = self.kinds.entry(Self::kind::<A>(r)).or_default();
            stat.epoch_tried += 1;
            stat.epoch_lost += u32::from(lost);
        }
        for stat in self.kinds.values_mut() {
            if stat.seen > 0 && stat.hinted {
                // Measured by its probes only (none between probe epochs): add them to the
                // window of its last `WINDOW` samples, whatever the number of epochs.
                stat.tried += f64::from(stat.epoch_tried);
                stat.lost += f64::from(stat.epoch_lost);
                if stat.tried > WINDOW {
                    stat.lost *= WINDOW / stat.tried;
                    stat.tried = WINDOW;
                }
            } else {
                stat.tried = stat.tried * DECAY + f64::from(stat.epoch_tried);
                stat.lost = stat.lost * DECAY + f64::from(stat.epoch_lost);
            }
            stat.epoch_tried = 0;
            stat.epoch_lost = 0;
        }
        // Forget kinds not seen for a long time (their counts have decayed to nothing).
        self.kinds.retain(|_, s| s.tried >= 1e-3);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::epoch::TxnResult;

    struct T;
    impl App for T {
        type Event = u8;
        type Output = ();
        fn event_kind(e: &u8) -> &'static str {
            if *e == 0 { "cold" } else { "hot" }
        }
    }

    fn req(e: u8) -> Sequenced<u8> {
        Sequenced {
            target: 0,
            event: e,
            id: None,
            retries: 0,
        }
    }

    fn lost(l: bool) -> TxnResult<()> {
        if l {
            TxnResult::Committed {
                pass: 1,
                output: None,
            }
        } else {
            TxnResult::Committed {
                pass: 0,
                output: None,
            }
        }
    }

    #[test]
    fn a_kind_that_keeps_losing_is_hinted_and_let_back_when_it_stops() {
        // Goal: after a few epochs in which every "hot" request loses and every "cold" one
        // wins, "hot" requests are hinted (but for the probes of a probe epoch) and "cold" ones
        // never are; once the probes stop losing, the hints go away.
        let mut p = Predictor::new(SerialHints::DEFAULT);
        let requests: Vec<_> = (0..64).map(|i| req(u8::from(i % 2 == 1))).collect();
        let results = |hot_loses: bool| -> Vec<TxnResult<()>> {
            (0..64).map(|i| lost(hot_loses && i % 2 == 1)).collect()
        };
        assert!(p.hints::<T>(&requests).is_empty(), "nothing learned yet");
        p.observe::<T>(&requests, &[], &results(true));
        // Epochs 1..PROBE_EPOCHS: every hot request hinted, none probed.
        for _ in 1..PROBE_EPOCHS {
            let hinted = p.hints::<T>(&requests);
            assert!(hinted.iter().all(|s| s % 2 == 1), "only hot requests");
            assert_eq!(hinted.len(), 32, "all hot requests between probe epochs");
            p.observe::<T>(&requests, &hinted, &results(true));
        }
        // A probe epoch: the 1st, 9th, 17th and 25th hot requests run in parallel.
        let hinted = p.hints::<T>(&requests);
        assert_eq!(
            hinted.len(),
            32 - 32 / PROBE_EVERY as usize,
            "all hot but the probes"
        );
        assert!(
            !hinted.contains(&1) && hinted.contains(&3),
            "the first hot one is a probe"
        );
        p.observe::<T>(&requests, &hinted, &results(true));
        for _ in 0..4 * PROBE_EPOCHS {
            let hinted = p.hints::<T>(&requests);
            p.observe::<T>(&requests, &hinted, &results(false));
        }
        assert!(p.hints::<T>(&requests).is_empty(), "hot stopped losing");
    }

    #[test]
    fn between_probe_epochs_a_hot_kind_keeps_its_rate() {
        // Goal: a hot kind hinted whole between probe epochs measures nothing, so its counts
        // do not decay and it stays hinted through any number of such epochs; a kind that is
        // not seen at all still decays and is forgotten.
        let mut p = Predictor::new(SerialHints::DEFAULT);
        // 128 a epoch: 16 probes a probe epoch keep `MIN_SAMPLES` measured.
        let hot: Vec<_> = (0..128).map(|_| req(1)).collect();
        let cold: Vec<_> = (0..32).map(|_| req(0)).collect();
        let all_lost: Vec<_> = (0..128).map(|_| lost(true)).collect();
        assert!(p.hints::<T>(&hot).is_empty());
        p.observe::<T>(&hot, &[], &all_lost);
        for epoch in 1..20 * PROBE_EPOCHS {
            let hinted = p.hints::<T>(&hot);
            if !epoch.is_multiple_of(PROBE_EPOCHS) {
                assert_eq!(hinted.len(), 128, "epoch {epoch}: hinted whole");
            }
            // The probes keep losing.
            p.observe::<T>(&hot, &hinted, &all_lost);
        }
        // Epochs without the hot kind: it decays away and is forgotten.
        for _ in 0..64 {
            let hinted = p.hints::<T>(&cold);
            p.observe::<T>(
                &cold,
                &hinted,
                &(0..32).map(|_| lost(false)).collect::<Vec<_>>(),
            );
        }
        assert_eq!(p.kinds.len(), 1, "only the cold kind is left");
    }

    /// Runs one epoch of `n` requests of the hot kind, every parallel one losing if
    /// `losing`; returns how many were hinted.
    fn epoch(p: &mut Predictor, n: usize, losing: bool) -> usize {
        let requests: Vec<_> = (0..n).map(|_| req(1)).collect();
        let hinted = p.hints::<T>(&requests);
        let results: Vec<_> = (0..n).map(|_| lost(losing)).collect();
        p.observe::<T>(&requests, &hinted, &results);
        hinted.len()
    }

    #[test]
    fn a_hot_kind_with_few_requests_stays_hinted_while_it_is_hot() {
        // Goal: a kind with just enough requests per epoch to be hinted (9: two probes a probe
        // epoch) that keeps losing stays hinted in every epoch, but for its probes, instead of
        // dropping below `MIN_SAMPLES` through its few probes and running whole in the
        // parallel pass every few epochs; it enters the hint once and never leaves.
        let mut p = Predictor::new(SerialHints::DEFAULT);
        let mut epochs = 0;
        while epoch(&mut p, 9, true) == 0 {
            epochs += 1;
            assert!(epochs < 16, "never hinted");
        }
        for _ in 0..32 * PROBE_EPOCHS {
            let hinted = epoch(&mut p, 9, true);
            assert!(hinted == 9 || hinted == 7, "hinted {hinted} of 9");
        }
        assert_eq!(p.take_flips(), 1, "entered the hint once");
    }

    #[test]
    fn a_hot_kind_whose_traffic_drops_stays_hinted_then_leaves_when_it_cools() {
        // Goal: a hot kind whose requests drop to one per epoch (one probe in a probe epoch)
        // stays hinted while that probe keeps losing, and once it wins the kind leaves the
        // hint within 16 probe epochs: the measurement is never starved.
        let mut p = Predictor::new(SerialHints::DEFAULT);
        for _ in 0..=PROBE_EPOCHS {
            epoch(&mut p, 64, true);
        }
        assert_eq!(epoch(&mut p, 64, true), 64, "hinted");
        for e in 0..32 * PROBE_EPOCHS {
            let hinted = epoch(&mut p, 1, true);
            assert!(
                hinted == 1 || p.epochs % PROBE_EPOCHS == 1,
                "epoch {e}: not hinted"
            );
        }
        let mut epochs = 0;
        while epoch(&mut p, 1, false) == 1 || p.epochs % PROBE_EPOCHS == 1 {
            epochs += 1;
            assert!(
                epochs <= 16 * PROBE_EPOCHS,
                "still hinted after {epochs} epochs"
            );
        }
        // It stays out while it wins.
        for _ in 0..8 * PROBE_EPOCHS {
            assert_eq!(epoch(&mut p, 64, false), 0);
        }
        assert_eq!(p.take_flips(), 2, "in once, out once");
    }

    #[test]
    fn a_rate_near_the_threshold_does_not_flip_the_hint() {
        // Goal: a hinted kind whose probes lose a little less often than the threshold (9 of
        // its 16 probes a probe epoch, 56 % against 60 %) stays hinted: it leaves only below
        // the threshold minus `HYSTERESIS`.
        let mut p = Predictor::new(SerialHints::DEFAULT);
        for _ in 0..PROBE_EPOCHS {
            epoch(&mut p, 128, true);
        }
        let requests: Vec<_> = (0..128).map(|_| req(1)).collect();
        for e in 0..64 * PROBE_EPOCHS {
            let hinted = p.hints::<T>(&requests);
            assert!(
                hinted.len() >= 112,
                "epoch {e}: hinted {} of 128",
                hinted.len()
            );
            let mut probe = 0;
            let results: Vec<_> = (0..128)
                .map(|seq| {
                    if hinted.contains(&seq) {
                        return lost(false);
                    }
                    probe += 1;
                    lost(probe <= 9)
                })
                .collect();
            p.observe::<T>(&requests, &hinted, &results);
        }
        assert_eq!(p.take_flips(), 1, "entered the hint once");
    }

    #[test]
    fn sample_and_off_policies() {
        // Goal: `Sample` hints exactly every n-th position; `Off` hints nothing; invalid
        // settings are named.
        let requests: Vec<_> = (0..10).map(|_| req(1)).collect();
        let mut s = Predictor::new(SerialHints::Sample { every: 3 });
        assert_eq!(s.hints::<T>(&requests), vec![2, 5, 8]);
        assert!(
            Predictor::new(SerialHints::Off)
                .hints::<T>(&requests)
                .is_empty()
        );
        assert!(SerialHints::Adaptive { threshold: 1.5 }.invalid().is_some());
        assert!(SerialHints::Sample { every: 0 }.invalid().is_some());
        assert!(SerialHints::DEFAULT.invalid().is_none());
    }
}
