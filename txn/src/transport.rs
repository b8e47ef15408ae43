//! Delivery of phase jobs to the owners of the partitions: the partition actors, or a direct
//! dispatcher that runs each job at once.
//!
//! Every partition of every service is a virtual actor of `actor-runtime` that owns its
//! `PartitionState` outright (built in `activate`); nothing else holds it, and everything that
//! touches it is a `Job`: the epoch phases, checkpoint rows, recovery loading, conflict counts,
//! and the lend of the state to the epoch driver for the serial pass, which moves ownership to
//! the driver and back (`Job::Lend`, `Job::Return`). Partition actors never passivate: the
//! execute phase needs every partition's committed state in memory.
//!
//! **Supervision.** A handler panic never reaches the actor: it aborts its transaction
//! (`PartitionState::execute_step`). A panic outside any handler (a bug in a phase) drops the
//! state, which may be half applied, and committed state cannot be rebuilt from one partition
//! alone (replay needs every partition). So the restarted actor holds `Slot::Lost` and refuses
//! every job; the dropped reply fails the driver's phase barrier, the runtime stops accepting
//! writes, and a restart recovers from the log (see `docs/runtime-semantics.md`).

use crate::app::{App, AppDef};
use crate::epoch::{Dispatch, off_worker};
use crate::error::TxnError;
use crate::ids::GlobalPartition;
use crate::partition::{Job, PartitionState, Partitions, Slot, run_job};
use actor_runtime::{
    ActorError, ActorId, ActorSystem, ServiceConfig, ServiceHandle, SystemConfig, VirtualActor,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Mailbox bound of a partition actor: the driver has at most one job per phase in flight per
/// partition, so a small bound is plenty.
const PARTITION_MAILBOX_CAPACITY: usize = 16;

/// The behaviour of the partition actors of one service.
struct PartitionActor<A: App> {
    app: Arc<AppDef<A>>,
    /// The service's first global partition.
    first_gp: GlobalPartition,
    /// Whether changed rows are remembered for checkpoints.
    track_dirty: bool,
    /// Per partition of the service: whether it was activated before. A second activation is
    /// a restart after a panic outside any handler, which finds the state lost.
    activated: Vec<AtomicBool>,
}

impl<A: App> VirtualActor for PartitionActor<A> {
    type Msg = Job<A>;
    type State = Slot<A>;

    async fn activate(&self, id: ActorId) -> Result<Self::State, ActorError> {
        let Some(activated) = self.activated.get(id.partition as usize) else {
            return Err(ActorError::activation_failed(id, "no such partition"));
        };
        let gp = self.first_gp + id.partition;
        if activated.swap(true, Ordering::AcqRel) {
            tracing::error!(
                partition = gp,
                "partition restarted after a panic outside any handler: its state is lost, it \
                 refuses every job until the runtime restarts"
            );
            return Ok(Slot::Lost);
        }
        let mut state = Box::new(PartitionState::new(&self.app, gp));
        state.set_track_dirty(self.track_dirty);
        Ok(Slot::Owned(state))
    }

    async fn handle(&self, id: ActorId, slot: &mut Self::State, msg: Self::Msg) {
        let gp = self.first_gp + id.partition;
        if visits_every_row(&msg) {
            off_worker(|| run_job(&self.app, gp, slot, msg));
        } else {
            run_job(&self.app, gp, slot, msg);
        }
    }

    async fn passivate(&self, _id: ActorId, slot: Self::State) -> Result<(), ActorError> {
        // Freeing a partition of millions of rows (a replay's private copy) takes long too.
        off_worker(|| drop(slot));
        Ok(())
    }
}

/// Whether `job` may visit every row of its partition (hashing, encoding, loading or applying
/// rows between epochs) and so take far longer than an epoch's phase.
fn visits_every_row<A: App>(job: &Job<A>) -> bool {
    matches!(
        job,
        Job::StateHash { .. }
            | Job::Checkpoint { .. }
            | Job::Load { .. }
            | Job::Apply { .. }
            | Job::Erase { .. }
    )
}

/// The partition actors of one runtime, one actor-runtime service per application service.
pub(crate) struct PartitionActors<A: App> {
    system: ActorSystem,
    services: Arc<Vec<ServiceHandle<PartitionActor<A>>>>,
    app: Arc<AppDef<A>>,
}

impl<A: App> Clone for PartitionActors<A> {
    fn clone(&self) -> Self {
        PartitionActors {
            system: self.system.clone(),
            services: self.services.clone(),
            app: self.app.clone(),
        }
    }
}

impl<A: App> PartitionActors<A> {
    /// Starts one actor per partition of `app`, each building its empty state on activation;
    /// `track_dirty` says whether they remember changed rows for checkpoints.
    pub fn start(app: Arc<AppDef<A>>, track_dirty: bool) -> Result<Self, TxnError> {
        let system = ActorSystem::new(SystemConfig::embedded());
        let mut services = Vec::with_capacity(app.services.len());
        for def in &app.services {
            let n = def.service.n_partitions as usize;
            let behaviour = PartitionActor {
                app: app.clone(),
                first_gp: def.service.first_gp,
                track_dirty,
                activated: (0..n).map(|_| AtomicBool::new(false)).collect(),
            };
            let config = ServiceConfig {
                n_partitions: def.service.n_partitions,
                mailbox_capacity: PARTITION_MAILBOX_CAPACITY,
                idle_timeout: None,
            };
            let handle = system
                .register(&def.name, config, behaviour)
                .map_err(|e| TxnError::Actor(e.to_string()))?;
            services.push(handle);
        }
        Ok(PartitionActors {
            system,
            services: Arc::new(services),
            app,
        })
    }

    pub async fn stop(&self) {
        self.system.shutdown().await;
    }
}

impl<A: App> Dispatch<A> for PartitionActors<A> {
    async fn dispatch(&self, gp: GlobalPartition, job: Job<A>) -> Result<(), TxnError> {
        let (service_idx, partition) = self.app.locate(gp);
        self.services[service_idx as usize]
            .send(partition, job)
            .await
            .map_err(|e| TxnError::Actor(e.to_string()))
    }
}

/// The one owner of every partition of a private replica or a test: runs each job at once, on
/// the caller's thread, with no actors. The lock is interior mutability inside this one owner
/// (`Dispatch` takes `&self`), never shared with anyone else.
pub(crate) struct DirectDispatch<A: App> {
    app: Arc<AppDef<A>>,
    slots: Vec<parking_lot::Mutex<Slot<A>>>,
}

impl<A: App> DirectDispatch<A> {
    /// Takes ownership of `states`, one per global partition in order.
    pub fn new(app: Arc<AppDef<A>>, states: Partitions<A>) -> Self {
        let slots = states
            .into_states()
            .map(|s| parking_lot::Mutex::new(Slot::Owned(s)))
            .collect();
        DirectDispatch { app, slots }
    }

    /// Runs `f` on partition `gp`'s state; `None` if it is lent or lost.
    pub fn inspect<R>(
        &self,
        gp: GlobalPartition,
        f: impl FnOnce(&PartitionState<A>) -> R,
    ) -> Option<R> {
        match &*self.slots[gp as usize].lock() {
            Slot::Owned(state) => Some(f(state)),
            Slot::Lent | Slot::Lost => None,
        }
    }
}

impl<A: App> Dispatch<A> for DirectDispatch<A> {
    fn dispatch(
        &self,
        gp: GlobalPartition,
        job: Job<A>,
    ) -> impl std::future::Future<Output = Result<(), TxnError>> + Send {
        run_job(&self.app, gp, &mut self.slots[gp as usize].lock(), job);
        std::future::ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::AppBuilder;
    use crate::epoch::run_phase;

    struct Counters;

    impl App for Counters {
        type Event = u64;
        type Output = ();
    }

    fn actors() -> PartitionActors<Counters> {
        let mut b = AppBuilder::<Counters>::new();
        let s = b.service("s", 2);
        let table = b.table::<u64, i64>(s, "kv");
        b.handler(s, move |ctx, key| {
            ctx.put(table, *key, 1)?;
            Ok(())
        });
        PartitionActors::start(b.build().expect("valid app"), false).expect("actors start")
    }

    /// Asks partition `gp` for its conflict counts: `Ok` if its owner ran the job.
    async fn answers(actors: &PartitionActors<Counters>, gp: GlobalPartition) -> bool {
        run_phase(actors, &[gp], |_, reply| Job::ConflictTally { reply })
            .await
            .is_ok()
    }

    // Goal: after a panic outside any handler, the restarted actor neither hangs the driver nor
    // runs jobs on a fresh, empty state (which would silently forget committed rows): every later
    // job, a lend included, fails the phase with an error; the other partitions go on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_partition_whose_owner_panicked_refuses_every_later_job() {
        let actors = actors();
        assert!(answers(&actors, 0).await && answers(&actors, 1).await);
        actors.dispatch(0, Job::Crash).await.unwrap();
        assert!(!answers(&actors, 0).await, "a lost partition ran a job");
        let lend = run_phase(&actors, &[0], |_, reply| Job::Lend { reply }).await;
        assert!(lend.is_err(), "a lost partition lent a state");
        assert!(answers(&actors, 1).await);
        actors.stop().await;
    }

    // Goal: ownership moves with a lend: while the driver holds the state its actor refuses
    // jobs (with an error, not a hang), and takes them again once the state is returned.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lent_partition_refuses_jobs_until_its_state_returns() {
        let actors = actors();
        let mut lent = run_phase(&actors, &[1], |_, reply| Job::Lend { reply })
            .await
            .unwrap();
        let state = lent.pop().unwrap();
        assert_eq!(state.gp, 1);
        assert!(!answers(&actors, 1).await, "a lent partition ran a job");
        actors.dispatch(1, Job::Return { state }).await.unwrap();
        assert!(answers(&actors, 1).await);
        actors.stop().await;
    }
}
