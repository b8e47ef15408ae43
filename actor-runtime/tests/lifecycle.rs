//! Activation, passivation, mailbox bounds, supervision and shutdown, through the public API.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use actor_runtime::{
    ActorError, ActorId, ActorSystem, ServiceConfig, ServiceHandle, SystemConfig, VirtualActor,
    partition_of,
};
use parking_lot::Mutex;
use tokio::sync::{Semaphore, oneshot};

/// Generous bound for anything that should happen "soon" on a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(10);

/// The persistence callback's target and the test's view of what the runtime did.
struct Store {
    rows: Mutex<HashMap<ActorId, Vec<i64>>>,
    n_activations: Mutex<HashMap<ActorId, usize>>,
    n_passivations: AtomicUsize,
    n_batches: AtomicUsize,
    fail_activation: Mutex<Option<ActorId>>,
    /// When set, the next `passivate` reports on `passivation_started` and waits for a permit
    /// of `passivation_gate` before writing the row.
    hold_next_passivation: AtomicBool,
    passivation_started: tokio::sync::Notify,
    passivation_gate: Semaphore,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            rows: Mutex::default(),
            n_activations: Mutex::default(),
            n_passivations: AtomicUsize::new(0),
            n_batches: AtomicUsize::new(0),
            fail_activation: Mutex::new(None),
            hold_next_passivation: AtomicBool::new(false),
            passivation_started: tokio::sync::Notify::new(),
            passivation_gate: Semaphore::new(0),
        }
    }
}

impl Store {
    fn n_activations(&self, id: ActorId) -> usize {
        self.n_activations.lock().get(&id).copied().unwrap_or(0)
    }

    fn row(&self, id: ActorId) -> Option<Vec<i64>> {
        self.rows.lock().get(&id).cloned()
    }
}

/// A service whose state is the ordered list of values appended to a partition.
struct Ledger {
    store: Arc<Store>,
}

enum Msg {
    Append(i64),
    /// Write the state to the store now (the "committed" state a restart goes back to).
    Persist,
    Get(oneshot::Sender<Vec<i64>>),
    /// Panic without anyone waiting for an answer.
    Panic,
    /// Panic while a caller waits for the answer.
    PanicCall(oneshot::Sender<()>),
    /// Report entry, then wait for a permit of `gate`; keeps the mailbox from draining.
    Block {
        entered: oneshot::Sender<()>,
        gate: Arc<Semaphore>,
    },
    /// Drop the reply sender without answering.
    Ignore(oneshot::Sender<()>),
}

impl VirtualActor for Ledger {
    type Msg = Msg;
    type State = Vec<i64>;

    async fn activate(&self, id: ActorId) -> Result<Vec<i64>, ActorError> {
        *self.store.n_activations.lock().entry(id).or_default() += 1;
        if *self.store.fail_activation.lock() == Some(id) {
            return Err(ActorError::activation_failed(id, "store unavailable"));
        }
        Ok(self.store.row(id).unwrap_or_default())
    }

    async fn handle(&self, id: ActorId, state: &mut Vec<i64>, msg: Msg) {
        match msg {
            Msg::Append(value) => state.push(value),
            Msg::Persist => {
                self.store.rows.lock().insert(id, state.clone());
            }
            Msg::Get(reply) => {
                let _ = reply.send(state.clone());
            }
            Msg::Panic => panic!("boom in {id}"),
            Msg::PanicCall(reply) => {
                // Panics before answering; the caller must learn why it got no answer.
                drop(reply);
                panic!("boom in {id}")
            }
            Msg::Block { entered, gate } => {
                let _ = entered.send(());
                gate.acquire().await.expect("gate is never closed").forget();
            }
            Msg::Ignore(_reply) => {}
        }
    }

    async fn handle_batch(&self, id: ActorId, state: &mut Vec<i64>, msgs: Vec<Msg>) {
        self.store.n_batches.fetch_add(1, Ordering::SeqCst);
        for msg in msgs {
            self.handle(id, state, msg).await;
        }
    }

    async fn passivate(&self, id: ActorId, state: Vec<i64>) -> Result<(), ActorError> {
        if self
            .store
            .hold_next_passivation
            .swap(false, Ordering::SeqCst)
        {
            self.store.passivation_started.notify_one();
            self.store
                .passivation_gate
                .acquire()
                .await
                .expect("gate is never closed")
                .forget();
        }
        self.store.rows.lock().insert(id, state);
        self.store.n_passivations.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn ledger(
    n_partitions: u32,
    mailbox_capacity: usize,
    idle_timeout: Option<Duration>,
) -> (ActorSystem, ServiceHandle<Ledger>, Arc<Store>) {
    let store = Arc::new(Store::default());
    let system = ActorSystem::new(SystemConfig::embedded());
    let config = ServiceConfig {
        n_partitions,
        mailbox_capacity,
        idle_timeout,
    };
    let service = system
        .register(
            "ledger",
            config,
            Ledger {
                store: Arc::clone(&store),
            },
        )
        .expect("first registration succeeds");
    (system, service, store)
}

async fn get(service: &ServiceHandle<Ledger>, partition: u32) -> Vec<i64> {
    tokio::time::timeout(DEADLINE, service.call(partition, Msg::Get))
        .await
        .expect("the actor answers in time")
        .expect("the actor answers")
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let started = tokio::time::Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < DEADLINE,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// With the clock paused (`start_paused`, one thread): returns once every task is idle, as
/// the paused clock only moves on when nothing else can run. Not a timed wait.
async fn settle() {
    assert!(
        tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::CurrentThread,
        "settle needs the paused clock of a current-thread test runtime"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Sends `Block` and waits until the handler is inside it; returns the gate that releases it.
async fn block(service: &ServiceHandle<Ledger>, partition: u32) -> Arc<Semaphore> {
    let gate = Arc::new(Semaphore::new(0));
    let (entered, entered_rx) = oneshot::channel();
    let gate_for_actor = Arc::clone(&gate);
    service
        .send(
            partition,
            Msg::Block {
                entered,
                gate: gate_for_actor,
            },
        )
        .await
        .unwrap();
    tokio::time::timeout(DEADLINE, entered_rx)
        .await
        .expect("the handler enters Block in time")
        .unwrap();
    gate
}

// Goal: a partition is activated (state loaded once) by its first message and not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_on_first_message() {
    let (_system, service, store) = ledger(8, 16, None);
    let id = service.actor_id(3);
    assert!(!service.is_active(3));
    assert_eq!(service.n_active(), 0);
    assert_eq!(store.n_activations(id), 0);

    store.rows.lock().insert(id, vec![7]);
    service.send(3, Msg::Append(1)).await.unwrap();
    assert!(service.is_active(3));
    assert_eq!(
        get(&service, 3).await,
        vec![7, 1],
        "state was loaded by activate"
    );
    service.send(3, Msg::Append(2)).await.unwrap();
    assert_eq!(get(&service, 3).await, vec![7, 1, 2]);

    assert_eq!(
        store.n_activations(id),
        1,
        "later messages do not re-activate"
    );
    assert_eq!(service.n_active(), 1, "no other partition was activated");
}

// Goal: an idle actor hands its state to passivate, stops, and a later message re-activates it
// with that state intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passivation_then_reactivation_keeps_state() {
    let (_system, service, store) = ledger(4, 16, Some(Duration::from_millis(50)));
    let id = service.actor_id(0);
    service.send(0, Msg::Append(1)).await.unwrap();
    service.send(0, Msg::Append(2)).await.unwrap();
    assert_eq!(get(&service, 0).await, vec![1, 2]);
    assert_eq!(store.row(id), None, "nothing persisted while active");

    wait_until("the idle actor is passivated", || !service.is_active(0)).await;
    assert_eq!(
        store.row(id),
        Some(vec![1, 2]),
        "passivate ran before the actor stopped"
    );
    assert_eq!(store.n_passivations.load(Ordering::SeqCst), 1);

    service.send(0, Msg::Append(3)).await.unwrap();
    assert_eq!(get(&service, 0).await, vec![1, 2, 3]);
    assert_eq!(store.n_activations(id), 2, "re-activated exactly once");
}

// Goal: messages sent while an actor is passivating are delivered, in order, to the next
// incarnation, which loads the state only after the passivation has persisted it. The clock is
// paused (one thread), so `settle` returns only once every task, the actors' included, has
// nothing left to do: a successor activated early would have been by then.
#[tokio::test(start_paused = true)]
async fn message_sent_during_passivation_is_not_lost() {
    let (_system, service, store) = ledger(4, 16, Some(Duration::from_millis(30)));
    let id = service.actor_id(1);
    store.hold_next_passivation.store(true, Ordering::SeqCst);
    service.send(1, Msg::Append(1)).await.unwrap();

    tokio::time::timeout(DEADLINE, store.passivation_started.notified())
        .await
        .expect("the idle actor starts passivating");
    assert!(
        service.is_active(1),
        "a passivating actor still counts as active"
    );
    service.send(1, Msg::Append(2)).await.unwrap();
    service.send(1, Msg::Append(3)).await.unwrap();
    let reply = {
        let service = service.clone();
        tokio::spawn(async move { service.call(1, Msg::Get).await })
    };

    settle().await;
    assert_eq!(
        store.n_activations(id),
        1,
        "the successor must not load state before the passivation finished"
    );
    assert!(
        !reply.is_finished(),
        "nothing may answer for the partition while its passivation is unfinished"
    );
    store.passivation_gate.add_permits(1);

    let state = tokio::time::timeout(DEADLINE, reply)
        .await
        .expect("answer in time")
        .unwrap()
        .unwrap();
    assert_eq!(state, vec![1, 2, 3]);
    assert_eq!(store.n_activations(id), 2);
}

// Goal: a panicking partition restarts from its persisted state, keeps the messages queued
// behind the failing one, reports the panic to its caller, and a thousand others never notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_restarts_only_that_partition_from_persisted_state() {
    let n_partitions = 1001;
    let victim = 1000;
    let (_system, service, store) = ledger(n_partitions, 64, None);
    for partition in 0..n_partitions {
        service
            .send(partition, Msg::Append(i64::from(partition)))
            .await
            .unwrap();
    }
    let victim_id = service.actor_id(victim);
    service.send(victim, Msg::Persist).await.unwrap();
    service.send(victim, Msg::Append(-1)).await.unwrap(); // never persisted

    // Queue a panic and a message behind it while the victim is busy.
    let gate = block(&service, victim).await;
    service.send(victim, Msg::Panic).await.unwrap();
    service.send(victim, Msg::Append(1)).await.unwrap();
    let mut others = tokio::task::JoinSet::new();
    for partition in 0..n_partitions - 1 {
        let service = service.clone();
        others.spawn(async move { (partition, service.call(partition, Msg::Get).await) });
    }
    gate.add_permits(1);

    assert_eq!(
        get(&service, victim).await,
        vec![i64::from(victim), 1],
        "restarted from the persisted state, then got the queued message"
    );
    assert_eq!(store.n_activations(victim_id), 2);

    let error = service.call(victim, Msg::PanicCall).await.unwrap_err();
    match &error {
        ActorError::Panicked { actor, message } => {
            assert_eq!(*actor, victim_id);
            assert!(message.contains("boom in s0/1000"), "{message}");
        }
        other => panic!("expected Panicked, got {other:?}"),
    }
    assert_eq!(get(&service, victim).await, vec![i64::from(victim)]);
    assert_eq!(store.n_activations(victim_id), 3);

    let mut n_answered = 0;
    while let Some(joined) = tokio::time::timeout(DEADLINE, others.join_next())
        .await
        .expect("the others answer in time")
    {
        let (partition, answer) = joined.unwrap();
        assert_eq!(answer.unwrap(), vec![i64::from(partition)]);
        n_answered += 1;
    }
    assert_eq!(n_answered, 1000);
    for partition in 0..n_partitions - 1 {
        assert_eq!(get(&service, partition).await, vec![i64::from(partition)]);
        assert_eq!(
            store.n_activations(service.actor_id(partition)),
            1,
            "never restarted"
        );
    }
}

// Goal: a full mailbox makes try_send fail with MailboxFull and send wait until the actor drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_mailbox_applies_backpressure() {
    let capacity = 4;
    let (_system, service, _store) = ledger(2, capacity, None);
    let gate = block(&service, 0).await; // holds one of the 4 places while it is handled
    for value in 1..=3 {
        service.try_send(0, Msg::Append(value)).unwrap();
    }
    let error = service.try_send(0, Msg::Append(99)).unwrap_err();
    assert_eq!(
        error,
        ActorError::MailboxFull {
            actor: service.actor_id(0),
            capacity
        }
    );
    assert!(
        service.try_send(1, Msg::Append(5)).is_ok(),
        "other partitions have their own mailbox"
    );

    // Polled once now, while all four places are taken, `send` must not complete.
    let mut waiting_send = std::pin::pin!(service.send(0, Msg::Append(4)));
    let first_poll =
        std::future::poll_fn(|cx| std::task::Poll::Ready(waiting_send.as_mut().poll(cx))).await;
    assert!(
        first_poll.is_pending(),
        "send waits while the mailbox is full"
    );

    gate.add_permits(1);
    tokio::time::timeout(DEADLINE, waiting_send)
        .await
        .expect("send completes once the actor drains")
        .unwrap();
    assert_eq!(get(&service, 0).await, vec![1, 2, 3, 4]);
}

// Goal: send_batch is one mailbox message and one handle_batch call, with its ops in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_batch_is_one_message_handled_in_order() {
    let (_system, service, store) = ledger(2, 2, None);
    let ops: Vec<Msg> = (0..1000).map(Msg::Append).collect();
    service.send_batch(0, ops).await.unwrap();
    let state = get(&service, 0).await;
    assert_eq!(state, (0..1000).collect::<Vec<i64>>());
    assert_eq!(store.n_batches.load(Ordering::SeqCst), 1);
}

// Goal: entity keys reach the partition the stable hash names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_to_key_routes_by_stable_hash() {
    let (_system, service, _store) = ledger(32, 8, None);
    let partition = partition_of("alice", 32);
    assert_eq!(service.partition_of_key("alice"), partition);
    service.send_to_key("alice", Msg::Append(1)).await.unwrap();
    assert_eq!(service.n_active(), 1);
    assert!(service.is_active(partition));
    assert_eq!(get(&service, partition).await, vec![1]);
}

// Goal: bad addresses and names are errors that name the service, not panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_partition_and_duplicate_service_are_errors() {
    let (system, service, store) = ledger(4, 8, None);
    let error = service.send(4, Msg::Append(1)).await.unwrap_err();
    assert_eq!(
        error,
        ActorError::UnknownPartition {
            service: "ledger".to_owned(),
            partition: 4,
            n_partitions: 4
        }
    );
    assert!(error.to_string().contains("ledger"));
    let duplicate = system.register("ledger", ServiceConfig::default(), Ledger { store });
    assert!(matches!(
        duplicate,
        Err(ActorError::DuplicateService { ref service }) if service == "ledger"
    ));
    let store = Arc::new(Store::default());
    let zero = ServiceConfig {
        n_partitions: 0,
        ..ServiceConfig::default()
    };
    assert!(matches!(
        system.register("empty", zero, Ledger { store }),
        Err(ActorError::InvalidConfig { .. })
    ));
    assert_eq!(system.actor_label(service.actor_id(3)), "ledger/3");
}

// Goal: a failed activation is reported to the caller and retried by the next message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_activation_is_reported_and_retried() {
    let (_system, service, store) = ledger(4, 8, None);
    let id = service.actor_id(2);
    *store.fail_activation.lock() = Some(id);
    let error = service.call(2, Msg::Get).await.unwrap_err();
    assert!(
        matches!(error, ActorError::ActivationFailed { actor, .. } if actor == id),
        "{error:?}"
    );
    *store.fail_activation.lock() = None;
    service.send(2, Msg::Append(1)).await.unwrap();
    assert_eq!(get(&service, 2).await, vec![1]);
    assert_eq!(store.n_activations(id), 2);
}

// Goal: a handler that drops the reply sender yields NoReply instead of hanging the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_reply_is_no_reply() {
    let (_system, service, _store) = ledger(1, 8, None);
    let error = service.call(0, Msg::Ignore).await.unwrap_err();
    assert_eq!(
        error,
        ActorError::NoReply {
            actor: service.actor_id(0)
        }
    );
}

// Goal: shutdown lets queued messages finish, persists every active actor, then refuses sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_passivates_every_active_actor() {
    let (system, service, store) = ledger(16, 8, None);
    for partition in 0..10 {
        service
            .send(partition, Msg::Append(i64::from(partition)))
            .await
            .unwrap();
        service.send(partition, Msg::Append(100)).await.unwrap();
    }
    tokio::time::timeout(DEADLINE, system.shutdown())
        .await
        .expect("shutdown completes");
    for partition in 0..10 {
        assert_eq!(
            store.row(service.actor_id(partition)),
            Some(vec![i64::from(partition), 100])
        );
    }
    assert_eq!(store.n_passivations.load(Ordering::SeqCst), 10);
    assert_eq!(service.n_active(), 0);
    assert!(matches!(
        service.send(0, Msg::Append(1)).await,
        Err(ActorError::Stopped { .. })
    ));
    assert!(matches!(
        service.try_send(11, Msg::Append(1)),
        Err(ActorError::Stopped { .. })
    ));
}

// Goal: under constant passivate/re-activate churn, no message is lost or reordered per sender.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passivation_churn_loses_and_reorders_nothing() {
    let n_partitions = 4;
    let n_senders = 3;
    let n_messages_per_sender = 600;
    let (_system, service, store) = ledger(n_partitions, 8, Some(Duration::from_millis(1)));
    let mut senders = tokio::task::JoinSet::new();
    for sender in 0..n_senders {
        let (service, store) = (service.clone(), Arc::clone(&store));
        senders.spawn(async move {
            for i in 0..n_messages_per_sender {
                let value = sender * 1_000_000 + i;
                service
                    .send((i % n_partitions as i64) as u32, Msg::Append(value))
                    .await
                    .unwrap();
                if i % 20 == 0 {
                    // Let idle partitions passivate while messages keep flowing: wait until one
                    // more passivation than this sender saw last has happened.
                    let seen = store.n_passivations.load(Ordering::SeqCst);
                    wait_until("another partition passivates", || {
                        store.n_passivations.load(Ordering::SeqCst) > seen
                    })
                    .await;
                }
            }
        });
    }
    while let Some(joined) = senders.join_next().await {
        joined.unwrap();
    }
    let mut n_received = 0;
    for partition in 0..n_partitions {
        let state = get(&service, partition).await;
        n_received += state.len();
        for sender in 0..n_senders {
            let from_sender: Vec<i64> = state
                .iter()
                .copied()
                .filter(|value| value / 1_000_000 == sender)
                .collect();
            assert!(
                from_sender.is_sorted(),
                "partition {partition} reordered sender {sender}"
            );
        }
    }
    assert_eq!(n_received, (n_senders * n_messages_per_sender) as usize);
    // Every sender waited for a new passivation 30 times, one after another.
    assert!(
        store.n_passivations.load(Ordering::SeqCst) >= 30,
        "the test only means something if partitions passivated while messages flowed: {}",
        store.n_passivations.load(Ordering::SeqCst)
    );
}

// Goal: try_send from a thread outside Tokio still activates the partition (on the system's
// runtime) instead of panicking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_send_from_a_plain_thread_activates() {
    let (_system, service, _store) = ledger(2, 8, None);
    let sender = service.clone();
    std::thread::spawn(move || sender.try_send(1, Msg::Append(9)))
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(get(&service, 1).await, vec![9]);
}

// Goal: handles and their futures can move between tasks even when the message type is not
// `Sync` (the transaction layer sends from spawned tasks). Fails to compile otherwise.
#[test]
fn handles_and_send_futures_are_send_and_sync() {
    struct NotSyncActor;
    impl VirtualActor for NotSyncActor {
        type Msg = std::cell::Cell<u32>;
        type State = ();
        async fn activate(&self, _id: ActorId) -> Result<(), ActorError> {
            Ok(())
        }
        async fn handle(&self, _id: ActorId, _state: &mut (), _msg: std::cell::Cell<u32>) {}
    }
    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    fn assert_send<T: Send>(_: T) {}
    let system = ActorSystem::new(SystemConfig::embedded());
    let service = system
        .register("not-sync", ServiceConfig::default(), NotSyncActor)
        .unwrap();
    assert_send_sync(&service);
    assert_send_sync(&system);
    assert_send(service.send(0, std::cell::Cell::new(1)));
    assert_send(service.send_batch(0, Vec::new()));
    assert_send(service.call(0, |_reply: oneshot::Sender<u32>| std::cell::Cell::new(1)));
    assert_send(system.shutdown());
    assert_eq!(
        service.n_active(),
        0,
        "nothing was sent: the futures were never polled"
    );
}
