//! Delivery of phase jobs to partition actors.
//!
//! Every partition of every service is a virtual actor of `actor-runtime`; the epoch driver
//! sends it one batch message per phase. The actor's state is the partition's shared handle,
//! so an actor restarted by supervision finds the committed state intact (committed rows are
//! only ever changed by the commit phase, never by user code). Partition actors never passivate:
//! the execute phase needs every partition's committed state in memory.

use crate::app::{App, AppDef};
use crate::epoch::Dispatch;
use crate::error::TxnError;
use crate::ids::GlobalPartition;
use crate::partition::{Job, SharedPartition, run_job};
use actor_runtime::{
    ActorError, ActorId, ActorSystem, ServiceConfig, ServiceHandle, SystemConfig, VirtualActor,
};
use std::sync::Arc;

/// Mailbox bound of a partition actor: the driver has at most one job per phase in flight per
/// partition, so a small bound is plenty.
const PARTITION_MAILBOX_CAPACITY: usize = 16;

/// The behaviour of the partition actors of one service.
struct PartitionActor<A: App> {
    app: Arc<AppDef<A>>,
    parts: Vec<SharedPartition<A>>,
}

impl<A: App> VirtualActor for PartitionActor<A> {
    type Msg = Job<A>;
    type State = SharedPartition<A>;

    async fn activate(&self, id: ActorId) -> Result<Self::State, ActorError> {
        self.parts
            .get(id.partition as usize)
            .cloned()
            .ok_or_else(|| ActorError::activation_failed(id, "no such partition"))
    }

    async fn handle(&self, _id: ActorId, state: &mut Self::State, msg: Self::Msg) {
        run_job(&self.app, state, msg);
    }
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
    pub fn start(app: Arc<AppDef<A>>, parts: Vec<SharedPartition<A>>) -> Result<Self, TxnError> {
        let system = ActorSystem::new(SystemConfig::embedded());
        let mut services = Vec::with_capacity(app.services.len());
        for def in &app.services {
            let first = def.service.first_gp as usize;
            let n = def.service.n_partitions as usize;
            let behaviour = PartitionActor {
                app: app.clone(),
                parts: parts[first..first + n].to_vec(),
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
