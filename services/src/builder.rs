//! [`NodeBuilder`]: a node with services of your own besides the standard ones.
//!
//! A service is a sans-IO state machine ([`p2ps_overlay::service::Service`]) that emits events
//! for its application ([`p2ps_overlay::service::Emits`]). Registering it on the builder gives a
//! [`ServiceHandle`]: the application runs the service's commands through it
//! ([`ServiceHandle::call`]) and reads what the service emits ([`ServiceHandle::next_event`]).
//! See `services/examples/replicated_counter.rs`.

use crate::advertise::advertised;
use crate::config::NodeConfig;
use crate::error::StartError;
use crate::id::{KeySigner, OverlayId};
use crate::node::Node;
use crate::runtime::commands::Command;
use crate::runtime::{Actor, Drainer, Nat, Parts};
use crate::service_handle::ServiceHandle;
use crate::wire::Wire;
use p2ps_overlay::service::{Emits, Service};
use p2ps_overlay::{Node as Overlay, RegisterError};
use p2ps_transport::{Transport, TransportConfig};
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, mpsc};

/// Events a user service may have waiting for its application before new ones are dropped.
const SERVICE_EVENTS: usize = 1024;

/// Registers one user service on the overlay.
type Registration = Box<dyn FnOnce(&mut Overlay<OverlayId>) -> Result<(), RegisterError> + Send>;

/// Builds a [`Node`] with the standard services and any number of your own.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use p2ps::{Node, NodeConfig};
/// use p2ps_transport::Identity;
/// # use p2ps_overlay::service::{Emits, Service};
/// # #[derive(Default)] struct Chat;
/// # impl Service<p2ps::OverlayId> for Chat { fn name(&self) -> &'static str { "myapp/chat" } }
/// # impl Emits for Chat { type Event = String; fn poll_event(&mut self) -> Option<String> { None } }
///
/// let config = NodeConfig::new(Identity::generate()?, "127.0.0.1:0".parse()?);
/// let mut builder = Node::builder(config);
/// let chat = builder.service(Chat::default());
/// let node = builder.start().await?;
/// node.create().await?;
/// let said = chat.call(|_chat, ctx| ctx.is_joined()).await?;
/// # Ok(()) }
/// ```
pub struct NodeBuilder {
    config: NodeConfig,
    commands: (mpsc::Sender<Command>, mpsc::Receiver<Command>),
    registrations: Vec<Registration>,
    drainers: Vec<Drainer>,
}

impl std::fmt::Debug for NodeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeBuilder")
            .field("services", &self.registrations.len())
            .finish()
    }
}

impl NodeBuilder {
    /// A builder for a node with settings `config` and the standard services.
    pub fn new(config: NodeConfig) -> Self {
        NodeBuilder {
            config,
            commands: mpsc::channel(1024),
            registrations: Vec::new(),
            drainers: Vec::new(),
        }
    }

    /// Registers `service` on the node to be started, and returns its handle. Every node of a
    /// network that takes part in the service must register it (under the same name).
    /// Starting fails with [`StartError::Service`] if two services share a name.
    pub fn service<S>(&mut self, service: S) -> ServiceHandle<S>
    where
        S: Service<OverlayId> + Emits,
    {
        let (tx, rx) = mpsc::channel::<S::Event>(SERVICE_EVENTS);
        let dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));
        self.registrations
            .push(Box::new(move |overlay: &mut Overlay<OverlayId>| {
                overlay.register(service)
            }));
        let lost = dropped.clone();
        self.drainers
            .push(Box::new(move |overlay: &mut Overlay<OverlayId>| {
                let Some(svc) = overlay.service_mut::<S>() else {
                    return;
                };
                while let Some(e) = svc.poll_event() {
                    if tx.try_send(e).is_err() {
                        // The application does not keep up (or dropped the handle).
                        lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }));
        ServiceHandle::new(
            self.commands.0.clone(),
            Arc::new(Mutex::new(Some(rx))),
            dropped,
        )
    }

    /// Binds the node's socket and starts its actor. The node is not part of a network yet:
    /// call [`Node::create`] or [`Node::join`]. Must run inside a tokio runtime.
    pub async fn start(self) -> Result<Node, StartError> {
        let NodeBuilder {
            config,
            commands,
            registrations,
            drainers,
        } = self;
        config.overlay.validate()?;
        config.cast.validate()?;
        config.groups.validate()?;
        config.census.validate()?;
        // The dictionary's file first: a node that cannot have its records does not start.
        let store = dict_store(&config)?;
        let metrics = crate::metrics::Metrics::new(config.metrics);
        let mut tc = TransportConfig::new(config.identity.clone(), config.listen);
        tc.idle_timeout = config.idle_timeout;
        tc.keep_alive = config.keep_alive;
        tc.protocol_version = config.protocol_version;
        // Room for the routing envelope around the largest payload.
        tc.max_frame_size = config.max_message_size.saturating_add(1024);
        tc.relay.serve = config.relay_serve;
        tc.admission = config.admission.clone();
        tc.memory = config.memory.clone();
        tc.network_key = config.network_key.clone();
        // A dial that gets no answer may be blocked by a NAT: give up soon enough for the
        // fallback (hole punching, relay) to run within the overlay's timeouts.
        tc.connect_timeout = std::time::Duration::from_secs(4);
        let (transport, events) = Transport::<Wire>::bind(tc)?;
        let id = transport.node_id();
        let bound = transport.local_addr().map_err(|source| {
            StartError::Bind(p2ps_transport::BindError::Io {
                addr: config.listen,
                source,
            })
        })?;
        let addrs = if config.advertise.is_empty() {
            vec![advertised(bound)]
        } else {
            config.advertise.clone()
        };
        let signing_key =
            || p2ps_transport::SigningKey::new(&config.identity).map_err(StartError::Signing);
        let signer = KeySigner(signing_key()?);
        // Request ids and message numbers must be unpredictable: key them from the OS.
        let mut overlay_config = config.overlay.clone();
        overlay_config.seed ^= p2ps_transport::random_u64();
        let mut overlay = Overlay::new(signer, overlay_config);
        p2ps_overlay::standard::register_with(
            &mut overlay,
            config.cast.clone(),
            config.groups.clone(),
        )
        .map_err(StartError::Service)?;
        let dict = p2ps_dict::Dict::<OverlayId, _>::new(config.dict.clone(), store);
        overlay.register(dict).map_err(StartError::Service)?;
        let watcher = p2ps_watcher::Watcher::<OverlayId>::new(config.watcher.clone());
        overlay.register(watcher).map_err(StartError::Service)?;
        overlay
            .register(p2ps_census::Census::<OverlayId>::new(config.census.clone()))
            .map_err(StartError::Service)?;
        for register in registrations {
            register(&mut overlay).map_err(StartError::Service)?;
        }
        overlay.set_local_addrs(addrs.clone());
        let mapper = if config.upnp {
            match p2ps_transport::PortMapper::start(
                p2ps_transport::PortMapConfig::default(),
                bound.port(),
            ) {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::warn!(error = %e, "UPnP port mapping not started");
                    None
                }
            }
        } else {
            None
        };
        let nat = Nat {
            mapper,
            relay: config.relay.as_ref().map(|t| (t.id, t.addrs.clone())),
            fixed_addrs: !config.advertise.is_empty(),
        };
        let shared_addrs = Arc::new(std::sync::RwLock::new(addrs));
        let (cmd_tx, cmd_rx) = commands;
        let (inbox_tx, inbox_rx) = mpsc::channel(config.inbox_capacity.max(1));
        let (ev_tx, _) = broadcast::channel(config.event_capacity.max(1));
        let actor = Actor::new(Parts {
            overlay,
            transport,
            events,
            commands: cmd_rx,
            inbox: inbox_tx,
            subscribers: ev_tx.clone(),
            addrs: shared_addrs.clone(),
            nat,
            max_payload: config.max_message_size,
            protocol_version: config.protocol_version,
            signer: signing_key()?,
            drainers,
        });
        tokio::spawn(actor.run());
        Ok(Node::from_parts(
            id,
            config
                .network_key
                .as_ref()
                .map(p2ps_transport::NetworkKey::name),
            shared_addrs,
            cmd_tx,
            inbox_rx,
            ev_tx,
            metrics,
        ))
    }
}

/// The dictionary's store: in memory, or the redb file the configuration names (records
/// expired by the wall clock are dropped as it opens).
fn dict_store(config: &NodeConfig) -> Result<p2ps_dict::NodeStore<OverlayId>, StartError> {
    let quotas = config.dict.quotas;
    match &config.dict_path {
        None => Ok(p2ps_dict::MemStore::new(quotas).into()),
        Some(path) => {
            let now = crate::runtime::wall_clock();
            p2ps_dict::RedbStore::open(path, quotas, now)
                .map(Into::into)
                .map_err(|source| StartError::DictStore {
                    path: path.clone(),
                    source,
                })
        }
    }
}
