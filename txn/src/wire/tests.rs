//! The wire form of phase work: every batch and reply reads back as what was written (a
//! property test over random steps, constraint steps, results, sets and checkpoint rows), and
//! malformed, oversized, mismatched or out-of-range messages are refused with the error that
//! names the problem.
//!
//! Crate-internal, because the wire types are: they are the partitions' own internal types.
//! The property test prints its seed; `TXN_TEST_SEED=<n>` replays it.

use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use super::*;
use crate::constraint::{
    ChildLink, FkTarget, IndexOp, OnDelete, ParentDeleted, Probe, UniqueTarget,
};
use crate::context::Usage;
use crate::envelope::{Fallback, Sequenced};
use crate::error::{AbortReason, LimitKind};
use crate::ids::{RequestId, ServiceRef};
use crate::partition::{Emitted, OutboxMsg, StepEvent};
use crate::row_key::row_key_prefix;
use crate::table::ConflictTally;

/// A small application type for the wire: its events and outputs are what the log encodes.
#[derive(Debug)]
struct WireApp;

impl App for WireApp {
    type Event = (u32, String);
    type Output = Option<u64>;
}

/// Partitions of the application the messages are checked against.
const N_PARTITIONS: u32 = 64;

/// A runner seeded from `TXN_TEST_SEED` (else from the clock), printing the seed.
fn runner(test: &str, cases: u32) -> TestRunner {
    let seed: u64 = std::env::var("TXN_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("{test}: seed {seed} (replay with TXN_TEST_SEED={seed})");
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..24)
}

fn name() -> impl Strategy<Value = String> {
    "[a-z_#:]{0,10}"
}

fn event() -> impl Strategy<Value = (u32, String)> {
    (any::<u32>(), ".{0,12}")
}

fn usage() -> impl Strategy<Value = Usage> {
    any::<[u64; 4]>().prop_map(|[steps, emitted_events, bytes_written, work]| Usage {
        steps,
        emitted_events,
        bytes_written,
        work,
    })
}

fn fk_target() -> impl Strategy<Value = Arc<FkTarget>> {
    (name(), name(), name(), any::<u32>()).prop_map(|(name, service, table, idx)| {
        Arc::new(FkTarget {
            name,
            parent_service: service,
            parent_table: table,
            parent_table_idx: idx,
        })
    })
}

fn child() -> impl Strategy<Value = Arc<(String, String)>> {
    (name(), name()).prop_map(Arc::new)
}

fn probe() -> impl Strategy<Value = Probe> {
    (fk_target(), child(), bytes()).prop_map(|(target, child, key)| Probe { target, child, key })
}

fn index_op() -> impl Strategy<Value = IndexOp> {
    let target = (name(), any::<u32>()).prop_map(|(name, index_table_idx)| {
        Arc::new(UniqueTarget {
            name,
            index_table_idx,
        })
    });
    (target, child(), any::<bool>(), bytes(), bytes()).prop_map(
        |(target, child, claim, value, row_key)| IndexOp {
            target,
            child,
            claim,
            value,
            row_key,
        },
    )
}

fn parent_deleted() -> impl Strategy<Value = ParentDeleted> {
    let service = any::<[u32; 3]>().prop_map(|[idx, n_partitions, first_gp]| ServiceRef {
        idx,
        n_partitions,
        first_gp,
    });
    let on_delete = prop_oneof![Just(OnDelete::Restrict), Just(OnDelete::Cascade)];
    let link = (fk_target(), child(), service, any::<[u32; 2]>(), on_delete).prop_map(
        |(target, child, child_service, [child_table_idx, child_index_idx], on_delete)| {
            Arc::new(ChildLink {
                target,
                child,
                child_service,
                child_table_idx,
                child_index_idx,
                on_delete,
            })
        },
    );
    (link, bytes()).prop_map(|(link, parent_key)| ParentDeleted { link, parent_key })
}

fn step_event() -> impl Strategy<Value = StepEvent<(u32, String)>> {
    prop_oneof![
        Just(()).prop_map(|()| StepEvent::Inbound),
        event().prop_map(StepEvent::Emitted),
        probe().prop_map(StepEvent::Probe),
        index_op().prop_map(StepEvent::Index),
        parent_deleted().prop_map(StepEvent::ParentDeleted),
    ]
}

fn step() -> impl Strategy<Value = Step<(u32, String)>> {
    (any::<u32>(), any::<u32>(), usage(), step_event()).prop_map(|(seq, pos, used, event)| Step {
        seq,
        pos,
        used,
        event,
    })
}

fn steps() -> impl Strategy<Value = Vec<Step<(u32, String)>>> {
    prop::collection::vec(step(), 0..4)
}

/// Strictly ascending partitions below `N_PARTITIONS`.
fn partitions() -> impl Strategy<Value = Vec<GlobalPartition>> {
    prop::collection::btree_set(0..N_PARTITIONS, 0..4).prop_map(|set| set.into_iter().collect())
}

/// One value of `each` for each partition of a random set, in order.
fn per_partition<T: std::fmt::Debug + 'static>(
    each: impl Strategy<Value = T> + 'static,
) -> impl Strategy<Value = Vec<(GlobalPartition, T)>> {
    let each = each.boxed();
    partitions().prop_flat_map(move |parts| {
        prop::collection::vec(each.clone(), parts.len())
            .prop_map(move |values| parts.iter().copied().zip(values).collect::<Vec<_>>())
    })
}

fn seq_set() -> impl Strategy<Value = SeqSet> {
    (0usize..300).prop_flat_map(|len| {
        let members = prop::collection::vec(0..len.max(1) as u32, 0..8);
        members.prop_map(move |members| {
            let mut set = SeqSet::with_len(len);
            for seq in members.into_iter().filter(|&s| (s as usize) < len) {
                set.insert(seq);
            }
            set
        })
    })
}

fn env() -> impl Strategy<Value = EpochEnv<(u32, String)>> {
    let id =
        prop::option::of(any::<[u64; 2]>().prop_map(|[client, seq]| RequestId { client, seq }));
    let request =
        (any::<u32>(), event(), id, any::<u32>()).prop_map(|(target, event, id, retries)| {
            Sequenced {
                target,
                event,
                id,
                retries,
            }
        });
    let fallback = prop_oneof![
        Just(Fallback::Serial),
        Just(Fallback::NextEpoch),
        Just(Fallback::Ordered)
    ];
    (
        any::<[u64; 2]>(),
        prop::collection::vec(request, 0..4),
        prop::collection::vec(any::<u32>(), 0..4),
        fallback,
    )
        .prop_map(
            |([epoch, timestamp_ms], requests, serial, fallback)| EpochEnv {
                epoch,
                timestamp_ms,
                requests,
                serial,
                fallback,
            },
        )
}

fn work() -> impl Strategy<Value = PhaseWork<WireApp>> {
    let with_steps = |parts: Vec<GlobalPartition>| {
        prop::collection::vec(steps(), parts.len())
            .prop_map(move |steps| parts.iter().copied().zip(steps).collect::<Vec<_>>())
    };
    let fallback_job = || {
        (prop::option::of(any::<bool>()), any::<bool>(), steps()).prop_map(
            |(finish, begin, steps)| FallbackJob::<WireApp> {
                finish,
                begin,
                steps,
            },
        )
    };
    let fallback_jobs = partitions().prop_flat_map(move |parts| {
        prop::collection::vec(fallback_job(), parts.len())
            .prop_map(move |jobs| parts.iter().copied().zip(jobs).collect::<Vec<_>>())
    });
    // Named queries on some of the wave's partitions, each ascending, some listed twice.
    let with_queries = move |parts: Vec<GlobalPartition>| {
        let n = parts.len();
        let query = (
            any::<u32>(),
            name(),
            bytes(),
            prop::sample::subsequence(parts.clone(), 0..=n),
            any::<bool>(),
        )
            .prop_map(|(idx, name, args, mut partitions, twice)| {
                if twice && let Some(&first) = partitions.first() {
                    partitions.insert(0, first);
                }
                WireQuery {
                    idx,
                    name,
                    args,
                    partitions,
                }
            });
        (with_steps(parts), prop::collection::vec(query, 0..3))
    };
    prop_oneof![
        (
            any::<u32>(),
            prop::option::of(env().prop_map(Arc::new)),
            partitions().prop_flat_map(with_queries)
        )
            .prop_map(|(wave, env, (steps, queries))| PhaseWork::Wave {
                wave,
                env,
                steps,
                queries
            }),
        (seq_set(), partitions()).prop_map(|(user_aborted, partitions)| PhaseWork::Decide {
            user_aborted,
            partitions
        }),
        (seq_set(), partitions()).prop_map(|(aborted, partitions)| PhaseWork::Commit {
            aborted,
            partitions
        }),
        (any::<bool>(), partitions(), any::<u64>()).prop_map(
            |(begin, partitions, answer_bytes_max)| PhaseWork::CheckpointStep {
                begin,
                partitions,
                answer_bytes_max
            }
        ),
        (any::<u32>(), fallback_jobs).prop_map(|(round, jobs)| PhaseWork::Fallback {
            round,
            env: None,
            jobs
        }),
        partitions().prop_map(|partitions| PhaseWork::StateHash { partitions }),
        partitions().prop_map(|partitions| PhaseWork::ConflictTally { partitions }),
        per_partition(prop::collection::vec(
            (bytes(), bytes()).prop_map(|(key, value)| LoadRow(key, value)),
            0..3
        ))
        .prop_map(|chunks| PhaseWork::Load { chunks }),
        partitions()
            .prop_flat_map(|parts| {
                let per_partition: Vec<_> = parts
                    .iter()
                    .map(|&gp| rows_of(gp).prop_map(move |rows| (gp, rows)))
                    .collect();
                per_partition
            })
            .prop_map(|chunks| PhaseWork::Apply { chunks }),
    ]
}

fn abort_reason() -> impl Strategy<Value = AbortReason> {
    prop_oneof![
        (name(), name(), ".{0,12}").prop_map(|(service, kind, message)| AbortReason::User {
            service,
            kind,
            message
        }),
        (name(), name(), ".{0,12}").prop_map(|(service, table, message)| {
            AbortReason::Constraint {
                service,
                table,
                message,
            }
        }),
        any::<u64>().prop_map(|max| AbortReason::LimitExceeded {
            limit: LimitKind::BytesWritten,
            max
        }),
        any::<u32>().prop_map(|retries| AbortReason::RetriesExhausted { retries }),
    ]
}

fn wave_out() -> impl Strategy<Value = WaveOut<WireApp>> {
    let emitted = (any::<[u32; 2]>(), 0..N_PARTITIONS, step_event()).prop_map(
        |([seq, parent], target, event)| Emitted {
            seq,
            parent,
            target,
            event,
        },
    );
    let outbox = (any::<u32>(), name(), bytes()).prop_map(|(seq, topic, payload)| OutboxMsg {
        seq,
        topic,
        payload,
    });
    let aborts = (any::<[u32; 2]>(), abort_reason()).prop_map(|([s, p], r)| (s, p, r));
    let outputs = (any::<[u32; 2]>(), any::<Option<u64>>()).prop_map(|([s, p], o)| (s, p, o));
    (
        prop::collection::vec(emitted, 0..3),
        prop::collection::vec(outbox, 0..2),
        prop::collection::vec(aborts, 0..2),
        prop::collection::vec(outputs, 0..2),
        prop::collection::vec((any::<u32>(), usage()), 0..2),
    )
        .prop_map(|(emits, outbox, aborts, outputs, usage)| WaveOut {
            emits,
            outbox,
            aborts,
            outputs,
            usage,
            query_results: Vec::new(),
        })
}

/// Checkpoint rows whose keys belong to `partition`.
fn rows_of(partition: GlobalPartition) -> impl Strategy<Value = Vec<WireRow>> {
    let row =
        (0usize..4, bytes(), prop::option::of(bytes())).prop_map(move |(table, key, value)| {
            let mut full_key = row_key_prefix(partition, table);
            full_key.extend_from_slice(&key);
            WireRow(full_key, value)
        });
    prop::collection::vec(row, 0..3)
}

fn wire_answer() -> impl Strategy<Value = WireAnswer> {
    prop_oneof![
        bytes().prop_map(WireAnswer::Part),
        ".{0,12}".prop_map(WireAnswer::Failed),
        ".{0,12}".prop_map(WireAnswer::Panicked),
    ]
}

/// Wave outputs with answers to named queries for some of their partitions, ordered by
/// partition, then query.
fn outs_with_answers()
-> impl Strategy<Value = (Vec<(GlobalPartition, WaveOut<WireApp>)>, Vec<QueryAnswer>)> {
    partitions().prop_flat_map(|parts| {
        let n = parts.len();
        let answer = (0..n.max(1), any::<u32>(), wire_answer());
        (
            prop::collection::vec(wave_out(), n),
            prop::collection::vec(answer, if n == 0 { 0..1 } else { 0..4 }),
        )
            .prop_map(move |(outs, answers)| {
                let mut answers: Vec<QueryAnswer> = answers
                    .into_iter()
                    .map(|(at, idx, answer)| QueryAnswer {
                        partition: parts[at],
                        idx,
                        answer,
                    })
                    .collect();
                answers.sort_by_key(|a| (a.partition, a.idx));
                (parts.iter().copied().zip(outs).collect(), answers)
            })
    })
}

fn result() -> impl Strategy<Value = PhaseResult<WireApp>> {
    let outs = || {
        partitions().prop_flat_map(|parts| {
            prop::collection::vec(wave_out(), parts.len())
                .prop_map(move |outs| parts.iter().copied().zip(outs).collect::<Vec<_>>())
        })
    };
    let step_rows = partitions().prop_flat_map(|parts| {
        let per_partition: Vec<_> = parts
            .iter()
            .map(|&gp| {
                (rows_of(gp), any::<bool>())
                    .prop_map(move |(rows, done)| (gp, WireShare { rows, done }))
            })
            .collect();
        per_partition
    });
    prop_oneof![
        outs_with_answers().prop_map(|(outs, answers)| PhaseResult::Wave { outs, answers }),
        seq_set().prop_map(|conflicts| PhaseResult::Decide { conflicts }),
        Just(()).prop_map(|()| PhaseResult::Commit),
        step_rows.prop_map(|rows| PhaseResult::CheckpointStep { rows }),
        outs().prop_map(|outs| PhaseResult::Fallback { outs }),
        per_partition(prop::result::maybe_ok(Just(()), ".{0,12}"))
            .prop_map(|loaded| PhaseResult::Load { loaded }),
        per_partition(prop::result::maybe_ok(Just(()), ".{0,12}"))
            .prop_map(|applied| PhaseResult::Apply { applied }),
        per_partition((any::<u64>(), any::<u64>()))
            .prop_map(|marks| marks
                .into_iter()
                .map(|(gp, (hash, incarnation))| { (gp, StateMark { hash, incarnation }) })
                .collect())
            .prop_map(|hashes| PhaseResult::StateHash { hashes }),
        per_partition(prop::collection::vec(
            (
                name(),
                any::<u64>(),
                prop::collection::vec((name(), any::<u64>()), 0..2)
            )
                .prop_map(|(table, losers, hot_keys)| (table, ConflictTally { losers, hot_keys })),
            0..2
        ))
        .prop_map(|tallies| PhaseResult::ConflictTally { tallies }),
    ]
}

/// The phase a result answers, with `number` as its wave or round.
fn phase_of(result: &PhaseResult<WireApp>, number: u32) -> Phase {
    match result {
        PhaseResult::Wave { .. } => Phase::Wave { wave: number },
        PhaseResult::Decide { .. } => Phase::Decide,
        PhaseResult::Commit => Phase::Commit,
        PhaseResult::CheckpointStep { .. } => Phase::CheckpointStep,
        PhaseResult::Fallback { .. } => Phase::Fallback { round: number },
        PhaseResult::Load { .. } => Phase::Load,
        PhaseResult::Apply { .. } => Phase::Apply,
        PhaseResult::ConflictTally { .. } => Phase::ConflictTally,
        PhaseResult::StateHash { .. } | PhaseResult::Failed { .. } => Phase::StateHash,
    }
}

fn reply() -> impl Strategy<Value = PhaseReply<WireApp>> {
    (any::<u64>(), any::<u32>(), result()).prop_map(|(epoch, number, result)| PhaseReply {
        epoch,
        phase: phase_of(&result, number),
        result,
    })
}

#[test]
fn every_batch_reads_back_as_written() {
    let strategy = (any::<u64>(), work()).prop_map(|(epoch, work)| PhaseBatch { epoch, work });
    runner("every_batch_reads_back_as_written", 256)
        .run(&strategy, |batch| {
            let bytes = batch.encode().expect("a small batch encodes");
            let back = PhaseBatch::<WireApp>::decode(&bytes, N_PARTITIONS).expect("it decodes");
            prop_assert_eq!(format!("{back:?}"), format!("{batch:?}"));
            Ok(())
        })
        .unwrap();
}

#[test]
fn every_reply_reads_back_as_written() {
    runner("every_reply_reads_back_as_written", 256)
        .run(&reply(), |reply| {
            let bytes = reply.encode().expect("a small reply encodes");
            let sent = SentBatch {
                epoch: reply.epoch,
                phase: reply.phase,
                answered_by: reply.result.partitions(),
                n_partitions: N_PARTITIONS,
                query_answers: reply.result.query_answers(),
            };
            let back = PhaseReply::<WireApp>::decode(&bytes, &sent).expect("it decodes");
            prop_assert_eq!(format!("{back:?}"), format!("{reply:?}"));
            Ok(())
        })
        .unwrap();
}

// Goal: a node's failure answer reads back as the error it names, whatever batch it answers.
#[test]
fn a_failed_reply_reads_back_as_its_message() {
    let reply = PhaseReply::<WireApp> {
        epoch: 3,
        phase: Phase::Decide,
        result: PhaseResult::Failed {
            message: "partition 5 stopped".to_string(),
        },
    };
    let sent = commit_batch(vec![5]).sent(N_PARTITIONS);
    let error = PhaseReply::<WireApp>::decode(&reply.encode().unwrap(), &sent).unwrap_err();
    assert_eq!(
        error,
        WireError::Failed {
            message: "partition 5 stopped".to_string()
        }
    );
}

fn commit_batch(partitions: Vec<GlobalPartition>) -> PhaseBatch<WireApp> {
    let mut aborted = SeqSet::with_len(100);
    aborted.insert(7);
    PhaseBatch {
        epoch: 9,
        work: PhaseWork::Commit {
            aborted,
            partitions,
        },
    }
}

#[test]
fn a_message_of_another_version_truncated_or_with_trailing_bytes_is_refused() {
    let bytes = commit_batch(vec![1, 2]).encode().unwrap();
    let decode = |bytes: &[u8]| PhaseBatch::<WireApp>::decode(bytes, N_PARTITIONS).unwrap_err();
    let mut other_version = bytes.clone();
    other_version[0] = WIRE_FORMAT_VERSION + 1;
    assert_eq!(
        decode(&other_version),
        WireError::Version {
            what: BATCH,
            found: Some(WIRE_FORMAT_VERSION + 1)
        }
    );
    assert_eq!(
        decode(&[]),
        WireError::Version {
            what: BATCH,
            found: None
        }
    );
    let truncated = decode(&bytes[..bytes.len() - 1]);
    assert!(
        matches!(truncated, WireError::Malformed { .. }),
        "{truncated}"
    );
    let mut trailing = bytes.clone();
    trailing.push(0);
    let error = decode(&trailing);
    assert!(
        error.to_string().contains("1 bytes after the message"),
        "{error}"
    );
}

#[test]
fn an_oversized_message_is_refused_both_ways() {
    let huge = (0, "x".repeat(PHASE_MESSAGE_BYTES_MAX));
    let env = EpochEnv {
        epoch: 1,
        timestamp_ms: 0,
        requests: vec![Sequenced {
            target: 0,
            event: huge,
            id: None,
            retries: 0,
        }],
        serial: Vec::new(),
        fallback: Fallback::Serial,
    };
    let batch = PhaseBatch::<WireApp> {
        epoch: 1,
        work: PhaseWork::Wave {
            wave: 0,
            env: Some(Arc::new(env)),
            steps: Vec::new(),
            queries: Vec::new(),
        },
    };
    let error = batch.encode().unwrap_err();
    assert!(
        matches!(
            error,
            WireError::Oversized {
                what: BATCH,
                max: PHASE_MESSAGE_BYTES_MAX,
                ..
            }
        ),
        "{error}"
    );
    let bytes = vec![WIRE_FORMAT_VERSION; PHASE_MESSAGE_BYTES_MAX + 1];
    let error = PhaseBatch::<WireApp>::decode(&bytes, N_PARTITIONS).unwrap_err();
    assert!(matches!(error, WireError::Oversized { .. }), "{error}");
}

#[test]
fn a_batch_naming_unknown_or_unordered_partitions_is_refused() {
    let decode = |partitions| {
        let bytes = commit_batch(partitions).encode().unwrap();
        PhaseBatch::<WireApp>::decode(&bytes, N_PARTITIONS).unwrap_err()
    };
    assert_eq!(
        decode(vec![3, N_PARTITIONS]),
        WireError::UnknownPartition {
            what: BATCH,
            partition: N_PARTITIONS,
            n_partitions: N_PARTITIONS
        }
    );
    assert_eq!(
        decode(vec![3, 3]),
        WireError::PartitionOrder {
            what: BATCH,
            partition: 3
        }
    );
}

#[test]
fn a_set_with_members_past_its_length_is_refused() {
    let mut batch = commit_batch(vec![1]);
    batch.work = PhaseWork::Decide {
        user_aborted: SeqSet::from_words(vec![1 << 10], 5),
        partitions: vec![1],
    };
    let bytes = batch.encode().unwrap();
    let error = PhaseBatch::<WireApp>::decode(&bytes, N_PARTITIONS).unwrap_err();
    assert!(error.to_string().contains("has members past 5"), "{error}");
}

fn wave_reply(partitions: &[GlobalPartition], target: GlobalPartition) -> PhaseReply<WireApp> {
    let out = |_| {
        let mut out = WaveOut::default();
        out.emits.push(Emitted {
            seq: 0,
            parent: 0,
            target,
            event: StepEvent::Emitted((1, "credit".into())),
        });
        out
    };
    PhaseReply {
        epoch: 4,
        phase: Phase::Wave { wave: 1 },
        result: PhaseResult::Wave {
            outs: partitions.iter().map(|&gp| (gp, out(gp))).collect(),
            answers: Vec::new(),
        },
    }
}

fn wave_sent(answered_by: Vec<GlobalPartition>) -> SentBatch {
    SentBatch {
        epoch: 4,
        phase: Phase::Wave { wave: 1 },
        answered_by,
        n_partitions: N_PARTITIONS,
        query_answers: Vec::new(),
    }
}

#[test]
fn a_reply_for_another_phase_or_other_partitions_is_refused() {
    let bytes = wave_reply(&[2, 5], 0).encode().unwrap();
    let decode = |sent| PhaseReply::<WireApp>::decode(&bytes, &sent).unwrap_err();
    let mut next_wave = wave_sent(vec![2, 5]);
    next_wave.phase = Phase::Wave { wave: 2 };
    assert!(matches!(decode(next_wave), WireError::WrongReply { .. }));
    let mut other_epoch = wave_sent(vec![2, 5]);
    other_epoch.epoch = 5;
    let error = decode(other_epoch);
    assert_eq!(
        error.to_string(),
        "reply to the wave 1 batch of epoch 5 is for wave 1 of epoch 4"
    );
    assert!(matches!(
        decode(wave_sent(vec![2])),
        WireError::WrongPartitions { .. }
    ));
    let bytes = wave_reply(&[2], N_PARTITIONS).encode().unwrap();
    let error = PhaseReply::<WireApp>::decode(&bytes, &wave_sent(vec![2])).unwrap_err();
    assert!(
        matches!(error, WireError::UnknownPartition { .. }),
        "{error}"
    );
}

#[test]
fn a_checkpoint_row_of_another_partition_is_refused() {
    let mut key = row_key_prefix(8, 0);
    key.push(1);
    let reply = PhaseReply::<WireApp> {
        epoch: 4,
        phase: Phase::CheckpointStep,
        result: PhaseResult::CheckpointStep {
            rows: vec![(
                3,
                WireShare {
                    rows: vec![WireRow(key, None)],
                    done: true,
                },
            )],
        },
    };
    let sent = SentBatch {
        epoch: 4,
        phase: Phase::CheckpointStep,
        answered_by: vec![3],
        n_partitions: N_PARTITIONS,
        query_answers: Vec::new(),
    };
    let bytes = reply.encode().unwrap();
    let error = PhaseReply::<WireApp>::decode(&bytes, &sent).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("partition 3 has a key of partition Some(8)"),
        "{error}"
    );
}

#[test]
fn a_wave_result_with_query_results_is_not_sent() {
    let mut reply = wave_reply(&[2], 0);
    if let PhaseResult::Wave { outs, .. } = &mut reply.result {
        outs[0].1.query_results.push((0, Err("a query".into())));
    }
    assert_eq!(
        reply.encode().unwrap_err(),
        WireError::QueryResults { partition: 2 }
    );
}

#[test]
fn a_partitions_checkpoint_rows_travel_as_bytes_and_the_reply_matches_its_batch() {
    let batch = PhaseBatch::<WireApp> {
        epoch: 12,
        work: PhaseWork::CheckpointStep {
            begin: false,
            partitions: vec![3],
            answer_bytes_max: 1 << 20,
        },
    };
    let sent = batch.sent(N_PARTITIONS);
    assert_eq!(
        (sent.phase, sent.answered_by.as_slice()),
        (Phase::CheckpointStep, &[3][..])
    );
    let mut key = row_key_prefix(3, 1);
    key.extend_from_slice(b"k");
    let deferred: DeferredRows = Box::new(move |rows: &mut Vec<CheckpointRow>| {
        rows.push((key, Some(b"v".to_vec())));
    });
    let rows = wire_rows(vec![deferred]);
    let reply = PhaseReply::<WireApp> {
        epoch: 12,
        phase: Phase::CheckpointStep,
        result: PhaseResult::CheckpointStep {
            rows: vec![(3, WireShare { rows, done: true })],
        },
    };
    let back = PhaseReply::<WireApp>::decode(&reply.encode().unwrap(), &sent).unwrap();
    let PhaseResult::CheckpointStep { rows } = back.result else {
        panic!("a checkpoint step result");
    };
    let mut expected_key = row_key_prefix(3, 1);
    expected_key.extend_from_slice(b"k");
    assert_eq!(
        rows,
        vec![(
            3,
            WireShare {
                rows: vec![WireRow(expected_key, Some(b"v".to_vec()))],
                done: true
            }
        )]
    );
    let commit = commit_batch(vec![1, 2]).sent(N_PARTITIONS);
    assert!(commit.answered_by.is_empty(), "commit answers for the node");
}

/// A wave batch for partitions 2 and 5 with named query #1 on `query_partitions`.
fn wave_batch_with_query(query_partitions: Vec<GlobalPartition>) -> PhaseBatch<WireApp> {
    PhaseBatch {
        epoch: 4,
        work: PhaseWork::Wave {
            wave: 0,
            env: None,
            steps: vec![(2, Vec::new()), (5, Vec::new())],
            queries: vec![WireQuery {
                idx: 1,
                name: "audit".to_string(),
                args: vec![0x90],
                partitions: query_partitions,
            }],
        },
    }
}

// Goal: a named query travels by name and argument bytes, the reply must answer it in every
// partition it was sent to (no more, no fewer), and a query naming a partition the batch gives
// no work, or its partitions out of order, is refused.
#[test]
fn named_queries_are_answered_exactly_where_they_were_sent() {
    let batch = wave_batch_with_query(vec![2, 5]);
    let bytes = batch.encode().unwrap();
    let back = PhaseBatch::<WireApp>::decode(&bytes, N_PARTITIONS).unwrap();
    assert_eq!(format!("{back:?}"), format!("{batch:?}"));
    let sent = batch.sent(N_PARTITIONS);
    assert_eq!(sent.query_answers, vec![(2, 1), (5, 1)]);
    let answer = |partition| QueryAnswer {
        partition,
        idx: 1,
        answer: WireAnswer::Part(vec![partition as u8]),
    };
    let reply = |answers| PhaseReply::<WireApp> {
        epoch: 4,
        phase: Phase::Wave { wave: 0 },
        result: PhaseResult::Wave {
            outs: vec![(2, WaveOut::default()), (5, WaveOut::default())],
            answers,
        },
    };
    let decode =
        |r: PhaseReply<WireApp>| PhaseReply::<WireApp>::decode(&r.encode().unwrap(), &sent);
    let back = decode(reply(vec![answer(2), answer(5)])).unwrap();
    let PhaseResult::Wave { answers, .. } = back.result else {
        panic!("a wave result");
    };
    assert_eq!(answers, vec![answer(2), answer(5)]);
    let error = decode(reply(vec![answer(2)])).unwrap_err();
    assert!(matches!(error, WireError::WrongAnswers { .. }), "{error}");
    let error = decode(reply(vec![answer(5), answer(2)])).unwrap_err();
    assert!(matches!(error, WireError::WrongAnswers { .. }), "{error}");

    let refused = |partitions| {
        let bytes = wave_batch_with_query(partitions).encode().unwrap();
        PhaseBatch::<WireApp>::decode(&bytes, N_PARTITIONS).unwrap_err()
    };
    assert_eq!(
        refused(vec![2, 3]),
        WireError::QueryPartition {
            what: BATCH,
            idx: 1,
            partition: 3
        }
    );
    assert_eq!(
        refused(vec![5, 2]),
        WireError::PartitionOrder {
            what: BATCH,
            partition: 2
        }
    );
}

/// Row `i` of the share tests: keys and values of varied sizes, some rows deleted.
fn share_test_row(i: usize) -> WireRow {
    let value = (!i.is_multiple_of(3)).then(|| vec![1; i * 3]);
    WireRow(vec![i as u8; 1 + (i % 7) * 40], value)
}

#[test]
fn checkpoint_shares_stay_within_their_budget_and_send_each_row_once_in_order() {
    const BUDGET: u64 = 600;
    let mut waiting: std::collections::VecDeque<WireRow> = (0..100).map(share_test_row).collect();
    // One row larger than the budget: sent alone, as the first row of an answer.
    waiting.insert(50, WireRow(vec![7; 900], None));
    let mut sent = Vec::new();
    while !waiting.is_empty() {
        let (mut budget, mut first) = (BUDGET, true);
        let share = take_share(&mut waiting, &mut budget, &mut first);
        assert!(!share.is_empty(), "every answer makes progress");
        let encoded = rmp_serde::to_vec(&share).unwrap().len();
        let costs: usize = share.iter().map(wire_row_bytes).sum();
        assert!(
            encoded <= costs + 5,
            "{encoded} bytes encoded, {costs} counted"
        );
        assert!(
            share.len() == 1 || costs as u64 <= BUDGET,
            "{costs} over the budget"
        );
        sent.extend(share);
    }
    let mut expected: Vec<WireRow> = (0..100).map(share_test_row).collect();
    expected.insert(50, WireRow(vec![7; 900], None));
    assert_eq!(sent, expected);
}
