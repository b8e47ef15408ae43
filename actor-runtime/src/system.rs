//! The actor system: the registry of services, the placement directory and shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::RwLock;

use crate::directory::Directory;
use crate::error::ActorError;
use crate::id::{ActorId, NodeId, ServiceId};
use crate::limits;
use crate::service::{ServiceConfig, ServiceControl, ServiceHandle, ServiceShared};
use crate::virtual_actor::VirtualActor;

/// Which node this process is and which nodes exist at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemConfig {
    /// This process's node.
    pub node_id: NodeId,
    /// The initial live node set; `node_id` is added if missing.
    pub nodes: Vec<NodeId>,
}

impl SystemConfig {
    /// One process, node 0: the embedded default.
    pub fn embedded() -> Self {
        Self {
            node_id: NodeId(0),
            nodes: vec![NodeId(0)],
        }
    }
}

impl Default for SystemConfig {
    fn default() -> Self {
        Self::embedded()
    }
}

/// State shared by the system and every service it registered.
pub(crate) struct SystemShared {
    pub(crate) node_id: NodeId,
    pub(crate) directory: Directory,
    /// Captured at `ActorSystem::new` so that `try_send` from a thread outside Tokio can still
    /// start actors.
    pub(crate) runtime: Option<tokio::runtime::Handle>,
}

/// Owns the services, the directory and placement. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct ActorSystem {
    shared: Arc<SystemShared>,
    services: Arc<RwLock<Vec<Arc<dyn ServiceControl>>>>,
    shut_down: Arc<AtomicBool>,
}

impl std::fmt::Debug for ActorSystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let services = self.services.read();
        f.debug_struct("ActorSystem")
            .field("node_id", &self.shared.node_id)
            .field(
                "services",
                &services.iter().map(|s| s.name()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl ActorSystem {
    /// A system with no services. Actors are started on the Tokio runtime current at the time of
    /// the first message, or else the one current here.
    pub fn new(config: SystemConfig) -> Self {
        Self {
            shared: Arc::new(SystemShared {
                node_id: config.node_id,
                directory: Directory::new(config.node_id, config.nodes),
                runtime: tokio::runtime::Handle::try_current().ok(),
            }),
            services: Arc::new(RwLock::new(Vec::new())),
            shut_down: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Registers a service; its id is its registration index. Partitions start inactive.
    ///
    /// Fails with `DuplicateService` if the name is taken, `InvalidConfig` for a bad name or
    /// config, and `Stopped` after `shutdown`.
    pub fn register<A: VirtualActor>(
        &self,
        name: &str,
        config: ServiceConfig,
        behaviour: A,
    ) -> Result<ServiceHandle<A>, ActorError> {
        config.validate(name)?;
        let mut services = self.services.write();
        if self.shut_down.load(Ordering::Acquire) {
            return Err(ActorError::Stopped {
                service: name.to_owned(),
            });
        }
        if services.iter().any(|service| service.name() == name) {
            return Err(ActorError::DuplicateService {
                service: name.to_owned(),
            });
        }
        if services.len() >= limits::N_SERVICES_MAX {
            return Err(ActorError::InvalidConfig {
                service: name.to_owned(),
                reason: format!(
                    "the system already has the maximum of {} services",
                    limits::N_SERVICES_MAX
                ),
            });
        }
        let id = ServiceId(services.len() as u32);
        let shared = Arc::new(ServiceShared::new(
            id,
            name,
            config,
            behaviour,
            Arc::clone(&self.shared),
        ));
        services.push(Arc::clone(&shared) as Arc<dyn ServiceControl>);
        tracing::info!(service = name, %id, "service registered");
        Ok(ServiceHandle::new(shared))
    }

    /// Placement of actors over the live nodes.
    pub fn directory(&self) -> &Directory {
        &self.shared.directory
    }

    /// This process's node.
    pub fn node_id(&self) -> NodeId {
        self.shared.node_id
    }

    /// The name `id` was registered under.
    pub fn service_name(&self, id: ServiceId) -> Option<String> {
        self.services
            .read()
            .get(id.0 as usize)
            .map(|service| service.name().to_owned())
    }

    /// `ledger/3` for partition 3 of the service named `ledger` (falls back to `s<id>/3`).
    pub fn actor_label(&self, id: ActorId) -> String {
        match self.service_name(id.service) {
            Some(name) => format!("{name}/{}", id.partition),
            None => id.to_string(),
        }
    }

    /// Stops accepting messages, lets every actor finish the messages already in its mailbox,
    /// hands every active actor's state to `passivate`, and stops the actors. Resolves when all
    /// have been passivated. Later sends fail with `Stopped`. Only the first call does the work;
    /// later calls return at once.
    pub async fn shutdown(&self) {
        if self.shut_down.swap(true, Ordering::AcqRel) {
            return;
        }
        let services: Vec<Arc<dyn ServiceControl>> = self.services.read().clone();
        // Close and signal every service first so all partitions passivate concurrently.
        let waits: Vec<_> = services.iter().map(|service| service.shutdown()).collect();
        for wait in waits {
            wait.await;
        }
        tracing::info!(n_services = services.len(), "actor system shut down");
    }
}
