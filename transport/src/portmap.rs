//! UPnP port mapping: asks the home router (an Internet Gateway Device) to forward the node's
//! UDP port from the internet, so that peers can reach a node behind a NAT directly.
//!
//! A [`PortMapper`] runs as a tokio task: it discovers the gateway by SSDP, finds the local
//! address that reaches it, learns the gateway's external address, maps the node's port (the
//! same external port if free, else any), renews the mapping before its lease ends and removes
//! it on [`PortMapper::shutdown`]. Its progress is observable as a [`MappingState`] through a
//! `tokio::sync::watch` channel.
//!
//! A mapping is only worth advertising when the gateway's external address is public. Behind a
//! carrier-grade NAT (double NAT) the home router's "external" address is private or reserved
//! (for example 100.64.0.0/10), and a mapping on it cannot be reached from the internet; the
//! state is then [`MappingState::Useless`] with the reason, and the node must rely on hole
//! punching or a relay. The same holds when the gateway refuses the mapping.
//!
//! Every gateway call has its own time limit ([`PortMapConfig::call_timeout`]), discovery has
//! [`PortMapConfig::discovery_timeout`], and shutdown is bounded as well. When no gateway or no
//! useful mapping was found, the mapper tries again after [`PortMapConfig::retry_interval`].

use igd_next::aio::tokio::{search_gateway, Tokio};
use igd_next::aio::Gateway;
use igd_next::{
    AddAnyPortError, AddPortError, GetExternalIpError, PortMappingProtocol, RemovePortError,
    SearchOptions,
};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// How often a permanent mapping (lease 0, for gateways that only grant those) is re-added, in
/// case the gateway restarted and forgot it.
pub const PERMANENT_RECHECK: Duration = Duration::from_secs(20 * 60);
/// The shortest delay between two renewals, whatever the lease.
pub const MIN_RENEWAL_DELAY: Duration = Duration::from_secs(1);

/// Settings of the port mapper. Start from `PortMapConfig::default()` and change what you
/// need with the `with_*` setters or by assigning the public fields.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PortMapConfig {
    /// Whether to map at all; when false the state stays [`MappingState::Disabled`].
    pub enabled: bool,
    /// Lease asked for each mapping; renewed at half of it. Zero asks for a permanent mapping
    /// (discouraged: it outlives a crashed node).
    pub lease: Duration,
    /// How long to wait for a gateway to answer the SSDP search.
    pub discovery_timeout: Duration,
    /// Time limit of every single call to the gateway.
    pub call_timeout: Duration,
    /// How long to wait before trying again after no gateway, a useless or a failed mapping.
    pub retry_interval: Duration,
    /// Description of the mapping shown in the router's UI.
    pub description: String,
}

impl Default for PortMapConfig {
    fn default() -> Self {
        PortMapConfig {
            enabled: true,
            lease: Duration::from_secs(60 * 60),
            discovery_timeout: Duration::from_secs(3),
            call_timeout: Duration::from_secs(3),
            retry_interval: Duration::from_secs(5 * 60),
            description: "p2ps".to_string(),
        }
    }
}

impl PortMapConfig {
    /// Sets [`enabled`](Self::enabled).
    #[must_use]
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Sets [`lease`](Self::lease).
    #[must_use]
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Sets [`discovery_timeout`](Self::discovery_timeout).
    #[must_use]
    pub fn with_discovery_timeout(mut self, discovery_timeout: Duration) -> Self {
        self.discovery_timeout = discovery_timeout;
        self
    }

    /// Sets [`call_timeout`](Self::call_timeout).
    #[must_use]
    pub fn with_call_timeout(mut self, call_timeout: Duration) -> Self {
        self.call_timeout = call_timeout;
        self
    }

    /// Sets [`retry_interval`](Self::retry_interval).
    #[must_use]
    pub fn with_retry_interval(mut self, retry_interval: Duration) -> Self {
        self.retry_interval = retry_interval;
        self
    }

    /// Sets [`description`](Self::description).
    #[must_use]
    pub fn with_description(mut self, description: String) -> Self {
        self.description = description;
        self
    }
}

/// Where the port mapper stands.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MappingState {
    /// Port mapping is switched off in the configuration.
    Disabled,
    /// Looking for a gateway and asking it for a mapping.
    Searching,
    /// No UPnP gateway answered.
    NoGateway {
        /// What happened.
        reason: String,
    },
    /// The node's port is reachable from the internet at `external`.
    Mapped {
        /// The gateway's external address and the mapped port.
        external: SocketAddr,
        /// The gateway's control address.
        gateway: SocketAddr,
        /// The lease granted (zero: permanent).
        lease: Duration,
        /// How many times the mapping was renewed.
        renewals: u64,
    },
    /// A gateway answered but a mapping on it cannot help (double NAT, refused mapping).
    Useless {
        /// The gateway's control address.
        gateway: SocketAddr,
        /// The external address the gateway reported, if it did.
        external_ip: Option<IpAddr>,
        /// Why the mapping is of no use.
        reason: String,
    },
    /// Talking to the gateway failed (timeout, protocol error); will be retried.
    Failed {
        /// What happened.
        reason: String,
    },
    /// [`PortMapper::shutdown`] ran (or the mapper was dropped); no mapping is held.
    Stopped,
}

impl MappingState {
    /// The external address peers can use, when mapped.
    pub fn external(&self) -> Option<SocketAddr> {
        match self {
            MappingState::Mapped { external, .. } => Some(*external),
            _ => None,
        }
    }

    /// Whether the mapper has come to a conclusion (anything but `Searching`).
    pub fn is_settled(&self) -> bool {
        !matches!(self, MappingState::Searching)
    }
}

/// Errors of starting or stopping the port mapper.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PortMapError {
    /// The node's port must be known (not 0) to be mapped.
    #[error("cannot map port 0: bind the node's socket first")]
    PortZero,
    /// [`PortMapper::start`] must be called inside a tokio runtime.
    #[error("the port mapper needs a tokio runtime")]
    NoRuntime,
    /// The gateway did not remove the mapping.
    #[error("removing the mapping of external port {port} failed: {reason}")]
    Remove {
        /// The external port.
        port: u16,
        /// What the gateway or the network said.
        reason: String,
    },
    /// The mapper did not stop in time and was aborted.
    #[error("the port mapper did not stop within {0:?}")]
    ShutdownTimeout(Duration),
    /// The mapper task panicked or was cancelled.
    #[error("the port mapper task ended abnormally: {0}")]
    Task(String),
}

/// Maintains one UDP port mapping on the UPnP gateway; see the [module docs](self).
///
/// Dropping it without [`shutdown`](Self::shutdown) still removes the mapping in the
/// background while the runtime lives.
#[derive(Debug)]
pub struct PortMapper {
    state: watch::Receiver<MappingState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), PortMapError>>>,
    shutdown_limit: Duration,
}

impl PortMapper {
    /// Starts mapping UDP port `local_port` of this host on the current tokio runtime.
    pub fn start(config: PortMapConfig, local_port: u16) -> Result<PortMapper, PortMapError> {
        if local_port == 0 {
            return Err(PortMapError::PortZero);
        }
        let shutdown_limit = config.call_timeout.saturating_mul(2) + Duration::from_secs(1);
        if !config.enabled {
            let (_tx, state) = watch::channel(MappingState::Disabled);
            return Ok(PortMapper {
                state,
                stop: None,
                task: None,
                shutdown_limit,
            });
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| PortMapError::NoRuntime)?;
        let (tx, state) = watch::channel(MappingState::Searching);
        let (stop, stop_rx) = oneshot::channel();
        let task = runtime.spawn(run(config, local_port, tx, stop_rx));
        Ok(PortMapper {
            state,
            stop: Some(stop),
            task: Some(task),
            shutdown_limit,
        })
    }

    /// A receiver of every state change.
    pub fn watch(&self) -> watch::Receiver<MappingState> {
        self.state.clone()
    }

    /// The current state.
    pub fn state(&self) -> MappingState {
        self.state.borrow().clone()
    }

    /// The mapped external address, if any.
    pub fn external(&self) -> Option<SocketAddr> {
        self.state.borrow().external()
    }

    /// Stops the mapper and removes the mapping from the gateway, within about two call
    /// timeouts (a renewal in flight is let finish first).
    pub async fn shutdown(mut self) -> Result<(), PortMapError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(mut task) = self.task.take() else {
            return Ok(());
        };
        match timeout(self.shutdown_limit, &mut task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(PortMapError::Task(e.to_string())),
            Err(_) => {
                task.abort();
                Err(PortMapError::ShutdownTimeout(self.shutdown_limit))
            }
        }
    }
}

/// Whether `ip` is in a private, shared (CGNAT) or reserved range: a mapping on a gateway with
/// such an external address cannot be reached from the internet. Returns the range's name.
pub fn reserved_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => reserved_range_v4(v4),
        IpAddr::V6(v6) => reserved_range_v6(v6),
    }
}

fn reserved_range_v4(ip: Ipv4Addr) -> Option<&'static str> {
    const RANGES: &[([u8; 4], u8, &str)] = &[
        ([0, 0, 0, 0], 8, "\"this network\" 0.0.0.0/8"),
        ([10, 0, 0, 0], 8, "private 10.0.0.0/8"),
        ([100, 64, 0, 0], 10, "carrier-grade NAT 100.64.0.0/10"),
        ([127, 0, 0, 0], 8, "loopback 127.0.0.0/8"),
        ([169, 254, 0, 0], 16, "link-local 169.254.0.0/16"),
        ([172, 16, 0, 0], 12, "private 172.16.0.0/12"),
        ([192, 0, 0, 0], 24, "IETF protocol assignments 192.0.0.0/24"),
        ([192, 0, 2, 0], 24, "documentation 192.0.2.0/24"),
        ([192, 88, 99, 0], 24, "6to4 relay anycast 192.88.99.0/24"),
        ([192, 168, 0, 0], 16, "private 192.168.0.0/16"),
        ([198, 18, 0, 0], 15, "benchmarking 198.18.0.0/15"),
        ([198, 51, 100, 0], 24, "documentation 198.51.100.0/24"),
        ([203, 0, 113, 0], 24, "documentation 203.0.113.0/24"),
        ([224, 0, 0, 0], 4, "multicast 224.0.0.0/4"),
        ([240, 0, 0, 0], 4, "reserved 240.0.0.0/4"),
    ];
    let bits = u32::from(ip);
    RANGES.iter().find_map(|&(net, len, name)| {
        let mask = u32::MAX << (32 - u32::from(len));
        (bits & mask == u32::from(Ipv4Addr::from(net))).then_some(name)
    })
}

fn reserved_range_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return reserved_range_v4(v4);
    }
    let s = ip.segments();
    if ip.is_unspecified() {
        Some("unspecified ::")
    } else if ip.is_loopback() {
        Some("loopback ::1")
    } else if s[0] & 0xfe00 == 0xfc00 {
        Some("unique local fc00::/7")
    } else if s[0] & 0xffc0 == 0xfe80 {
        Some("link-local fe80::/10")
    } else if s[0] & 0xff00 == 0xff00 {
        Some("multicast ff00::/8")
    } else if s[0] == 0x2001 && s[1] == 0x0db8 {
        Some("documentation 2001:db8::/32")
    } else {
        None
    }
}

/// How long after (re)adding a mapping with `lease` to renew it: half the lease (at least
/// [`MIN_RENEWAL_DELAY`]), or [`PERMANENT_RECHECK`] for a permanent mapping.
pub fn renewal_delay(lease: Duration) -> Duration {
    if lease.is_zero() {
        PERMANENT_RECHECK
    } else {
        (lease / 2).max(MIN_RENEWAL_DELAY)
    }
}

/// The lease in the whole seconds UPnP takes: at least 1 s unless permanent, at most `u32`.
fn lease_secs(lease: Duration) -> u32 {
    if lease.is_zero() {
        0
    } else {
        u32::try_from(lease.as_secs()).unwrap_or(u32::MAX).max(1)
    }
}

/// The local address this host uses towards `gateway` (connecting a UDP socket sends nothing).
fn local_ip_towards(gateway: SocketAddr) -> std::io::Result<IpAddr> {
    let any: SocketAddr = if gateway.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(any)?;
    socket.connect(gateway)?;
    Ok(socket.local_addr()?.ip())
}

/// `fut` within `limit`, with a readable error either way.
async fn call<T, E: std::fmt::Display>(
    limit: Duration,
    what: &str,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {limit:?}")),
    }
}

/// A live mapping.
struct Held {
    gateway: Gateway<Tokio>,
    local: SocketAddr,
    external: SocketAddr,
    lease: Duration,
}

/// How one attempt to map ended.
enum Attempt {
    Mapped(Held),
    Settled(MappingState),
}

/// The mapper task: attempt, hold (renew) while mapped, wait and retry otherwise, until told to
/// stop (or the [`PortMapper`] is dropped).
async fn run(
    config: PortMapConfig,
    local_port: u16,
    state: watch::Sender<MappingState>,
    mut stop: oneshot::Receiver<()>,
) -> Result<(), PortMapError> {
    let mut retry_now = false;
    loop {
        state.send_replace(MappingState::Searching);
        // A stop during an attempt may leave a just-added mapping behind; its lease ends it.
        let attempt = tokio::select! {
            a = attempt(&config, local_port) => a,
            _ = &mut stop => break,
        };
        match attempt {
            Attempt::Mapped(held) => {
                tracing::info!(external = %held.external, gateway = %held.gateway.addr, "UPnP port mapping added");
                match hold(&config, held, &state, &mut stop).await {
                    Ok(result) => {
                        state.send_replace(MappingState::Stopped);
                        return result;
                    }
                    Err((reason, renewals)) => {
                        tracing::warn!(%reason, "UPnP port mapping lost");
                        state.send_replace(MappingState::Failed { reason });
                        // A lost mapping (gateway restarted, address changed) is sought again at
                        // once, unless it was itself just re-made by such a retry and already
                        // failed at its first renewal: then wait for the retry interval.
                        retry_now = renewals > 0 || !retry_now;
                    }
                }
            }
            Attempt::Settled(settled) => {
                tracing::debug!(state = ?settled, "UPnP port mapping not available");
                state.send_replace(settled);
                retry_now = false;
            }
        }
        if !retry_now {
            tokio::select! {
                _ = tokio::time::sleep(config.retry_interval) => {}
                _ = &mut stop => break,
            }
        }
    }
    state.send_replace(MappingState::Stopped);
    Ok(())
}

/// Discover the gateway, check its external address, add the mapping.
async fn attempt(config: &PortMapConfig, local_port: u16) -> Attempt {
    let mut options = SearchOptions::default();
    options.timeout = Some(config.discovery_timeout);
    options.single_search_timeout = Some(config.discovery_timeout);
    let gateway = match timeout(config.discovery_timeout, search_gateway(options)).await {
        Ok(Ok(gateway)) => gateway,
        Ok(Err(e)) => {
            return Attempt::Settled(MappingState::NoGateway {
                reason: format!("no UPnP gateway found: {e}"),
            })
        }
        Err(_) => {
            return Attempt::Settled(MappingState::NoGateway {
                reason: format!(
                    "no UPnP gateway answered within {:?}",
                    config.discovery_timeout
                ),
            })
        }
    };
    let gw_addr = gateway.addr;
    let local_ip = match local_ip_towards(gw_addr) {
        Ok(ip) => ip,
        Err(e) => {
            return Attempt::Settled(MappingState::Failed {
                reason: format!("no local address reaches the gateway {gw_addr}: {e}"),
            })
        }
    };
    // What the gateway says its external address is. miniupnpd answers with an empty address
    // when its own WAN address is private or reserved (and then refuses mappings too).
    let (external_ip, no_ip) = match timeout(config.call_timeout, gateway.get_external_ip()).await {
        Ok(Ok(ip)) => match unusable_external(ip) {
            Some(reason) => {
                return Attempt::Settled(MappingState::Useless {
                    gateway: gw_addr,
                    external_ip: Some(ip),
                    reason,
                })
            }
            None => (Some(ip), None),
        },
        Ok(Err(e)) => match external_ip_refusal(&e) {
            Some(why) => (None, Some(why)),
            None => {
                return Attempt::Settled(MappingState::Failed {
                    reason: format!("GetExternalIPAddress: {e}"),
                })
            }
        },
        Err(_) => {
            return Attempt::Settled(MappingState::Failed {
                reason: format!(
                    "GetExternalIPAddress: no answer within {:?}",
                    config.call_timeout
                ),
            })
        }
    };
    let local = SocketAddr::new(local_ip, local_port);
    let no_ip = no_ip.unwrap_or_default();
    match (add_mapping(config, &gateway, local).await, external_ip) {
        (Ok((port, lease)), Some(ip)) => Attempt::Mapped(Held {
            gateway,
            local,
            external: SocketAddr::new(ip, port),
            lease,
        }),
        (Ok((port, _)), None) => {
            // Nobody could be told where the mapping is: take it back.
            let _ = remove_port(config, &gateway, port).await;
            Attempt::Settled(MappingState::Useless {
                gateway: gw_addr,
                external_ip: None,
                reason: format!(
                    "the gateway accepted the mapping but reports {no_ip}, so its address \
                     on the internet is unknown"
                ),
            })
        }
        (Err(AddFailure::Refused(refusal)), None) => Attempt::Settled(MappingState::Useless {
            gateway: gw_addr,
            external_ip: None,
            reason: format!(
                "the gateway reports {no_ip} and refused the mapping ({refusal}): it is most \
                 likely behind another NAT (double NAT / carrier-grade NAT)"
            ),
        }),
        (Err(AddFailure::Refused(refusal)), Some(ip)) => Attempt::Settled(MappingState::Useless {
            gateway: gw_addr,
            external_ip: Some(ip),
            reason: format!("the gateway refused the mapping: {refusal}"),
        }),
        (Err(AddFailure::Failed(reason)), _) => Attempt::Settled(MappingState::Failed { reason }),
    }
}

/// When the gateway answered GetExternalIPAddress but gave no usable address (as opposed to
/// not answering), a description of that answer.
fn external_ip_refusal(e: &GetExternalIpError) -> Option<String> {
    match e {
        GetExternalIpError::ActionNotAuthorized => {
            Some("that it may not tell its external address".into())
        }
        GetExternalIpError::RequestError(igd_next::RequestError::ErrorCode(code, msg)) => Some(
            format!("UPnP error {code} ({msg}) for its external address"),
        ),
        GetExternalIpError::RequestError(igd_next::RequestError::InvalidResponse(body)) => Some(
            if body.contains("<NewExternalIPAddress></NewExternalIPAddress>") {
                "an empty external address".into()
            } else {
                "no valid external address".into()
            },
        ),
        _ => None,
    }
}

/// Why a mapping on a gateway with external address `ip` cannot be reached, if it cannot.
fn unusable_external(ip: IpAddr) -> Option<String> {
    if ip.is_unspecified() {
        return Some(
            "the gateway reports no usable external address (it may be behind another NAT)"
                .to_string(),
        );
    }
    reserved_range(ip).map(|range| {
        format!(
            "the gateway's external address {ip} is in the {range} range: it is behind another \
             NAT (double NAT / carrier-grade NAT), so a mapping on it cannot be reached from the \
             internet"
        )
    })
}

/// Why adding a mapping did not work.
enum AddFailure {
    /// The gateway said no.
    Refused(String),
    /// Timeout or transport error.
    Failed(String),
}

/// Maps `local` on the same external port if the gateway allows, else on any port; a gateway
/// that only grants permanent leases gets asked for one. Returns the external port and lease.
async fn add_mapping(
    config: &PortMapConfig,
    gateway: &Gateway<Tokio>,
    local: SocketAddr,
) -> Result<(u16, Duration), AddFailure> {
    let limit = config.call_timeout;
    let desc = config.description.as_str();
    let mut lease = config.lease;
    let same_port =
        |lease_s| gateway.add_port(PortMappingProtocol::UDP, local.port(), local, lease_s, desc);
    let mut result = timeout(limit, same_port(lease_secs(lease))).await;
    if let Ok(Err(AddPortError::OnlyPermanentLeasesSupported)) = result {
        lease = Duration::ZERO;
        result = timeout(limit, same_port(0)).await;
    }
    match result {
        Ok(Ok(())) => return Ok((local.port(), lease)),
        Err(_) => {
            return Err(AddFailure::Failed(format!(
                "AddPortMapping: no answer within {limit:?}"
            )))
        }
        Ok(Err(AddPortError::PortInUse)) => {}
        Ok(Err(AddPortError::RequestError(e))) => return Err(request_failure("AddPortMapping", e)),
        Ok(Err(e)) => return Err(AddFailure::Refused(format!("AddPortMapping: {e}"))),
    }
    // The same external port is taken (another host of the lan uses it): any port will do.
    match timeout(
        limit,
        gateway.add_any_port(PortMappingProtocol::UDP, local, lease_secs(lease), desc),
    )
    .await
    {
        Ok(Ok(port)) => Ok((port, lease)),
        Ok(Err(AddAnyPortError::RequestError(e))) => Err(request_failure("AddAnyPortMapping", e)),
        Ok(Err(e)) => Err(AddFailure::Refused(format!("AddAnyPortMapping: {e}"))),
        Err(_) => Err(AddFailure::Failed(format!(
            "AddAnyPortMapping: no answer within {limit:?}"
        ))),
    }
}

/// A UPnP error code is the gateway's refusal; anything else (HTTP, I/O) is a failure.
fn request_failure(action: &str, e: igd_next::RequestError) -> AddFailure {
    match e {
        igd_next::RequestError::ErrorCode(code, msg) => {
            AddFailure::Refused(format!("{action}: UPnP error {code}: {msg}"))
        }
        other => AddFailure::Failed(format!("{action}: {other}")),
    }
}

/// Keeps the mapping alive until told to stop (then removes it: `Ok(result of the removal)`)
/// or until a renewal fails (`Err((reason, renewals that succeeded before))`).
async fn hold(
    config: &PortMapConfig,
    held: Held,
    state: &watch::Sender<MappingState>,
    stop: &mut oneshot::Receiver<()>,
) -> Result<Result<(), PortMapError>, (String, u64)> {
    let mut renewals = 0u64;
    let mut external = held.external;
    let publish = |external, renewals| {
        state.send_replace(MappingState::Mapped {
            external,
            gateway: held.gateway.addr,
            lease: held.lease,
            renewals,
        });
    };
    publish(external, renewals);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(renewal_delay(held.lease)) => {}
            _ = &mut *stop => return Ok(remove(config, &held).await),
        }
        call(
            config.call_timeout,
            "renewing the mapping",
            held.gateway.add_port(
                PortMappingProtocol::UDP,
                external.port(),
                held.local,
                lease_secs(held.lease),
                &config.description,
            ),
        )
        .await
        .map_err(|reason| (reason, renewals))?;
        renewals += 1;
        // The external address may have changed (new DHCP lease on the WAN side).
        let ip = call(
            config.call_timeout,
            "GetExternalIPAddress",
            held.gateway.get_external_ip(),
        )
        .await
        .map_err(|reason| (reason, renewals))?;
        if let Some(reason) = unusable_external(ip) {
            // Best effort: the mapping is of no use any more.
            let _ = remove(config, &held).await;
            return Err((reason, renewals));
        }
        external.set_ip(ip);
        tracing::debug!(%external, renewals, "UPnP port mapping renewed");
        publish(external, renewals);
    }
}

/// Removes the held mapping, within the call timeout.
async fn remove(config: &PortMapConfig, held: &Held) -> Result<(), PortMapError> {
    remove_port(config, &held.gateway, held.external.port()).await?;
    tracing::info!(external = %held.external, "UPnP port mapping removed");
    Ok(())
}

/// Removes the mapping of external UDP `port`, within the call timeout. A mapping the gateway
/// no longer has is fine.
async fn remove_port(
    config: &PortMapConfig,
    gateway: &Gateway<Tokio>,
    port: u16,
) -> Result<(), PortMapError> {
    match timeout(
        config.call_timeout,
        gateway.remove_port(PortMappingProtocol::UDP, port),
    )
    .await
    {
        Ok(Ok(())) | Ok(Err(RemovePortError::NoSuchPortMapping)) => Ok(()),
        Ok(Err(e)) => Err(PortMapError::Remove {
            port,
            reason: e.to_string(),
        }),
        Err(_) => Err(PortMapError::Remove {
            port,
            reason: format!("no answer within {:?}", config.call_timeout),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse().unwrap_or(Ipv4Addr::UNSPECIFIED))
    }

    #[test]
    fn reserved_ranges_are_recognised() {
        for (ip, range) in [
            ("0.0.0.0", "\"this network\" 0.0.0.0/8"),
            ("10.1.2.3", "private 10.0.0.0/8"),
            ("100.64.0.1", "carrier-grade NAT 100.64.0.0/10"),
            ("100.127.255.254", "carrier-grade NAT 100.64.0.0/10"),
            ("127.0.0.1", "loopback 127.0.0.0/8"),
            ("169.254.9.9", "link-local 169.254.0.0/16"),
            ("172.31.255.1", "private 172.16.0.0/12"),
            ("192.0.0.8", "IETF protocol assignments 192.0.0.0/24"),
            ("192.0.2.1", "documentation 192.0.2.0/24"),
            ("192.168.1.1", "private 192.168.0.0/16"),
            ("198.19.0.1", "benchmarking 198.18.0.0/15"),
            ("198.51.100.7", "documentation 198.51.100.0/24"),
            ("203.0.113.7", "documentation 203.0.113.0/24"),
            ("239.255.255.250", "multicast 224.0.0.0/4"),
            ("255.255.255.255", "reserved 240.0.0.0/4"),
        ] {
            assert_eq!(reserved_range(v4(ip)), Some(range), "{ip}");
        }
    }

    #[test]
    fn public_addresses_are_not_reserved() {
        for ip in [
            "1.1.1.1",
            "25.0.0.11",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.169.0.1",
            "198.20.0.1",
            "223.255.255.255",
        ] {
            assert_eq!(reserved_range(v4(ip)), None, "{ip}");
        }
        let public6: IpAddr = "2a00:1450::1"
            .parse()
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(reserved_range(public6), None);
        let ula: IpAddr = "fd00::1".parse().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert!(reserved_range(ula).is_some());
        let mapped: IpAddr = "::ffff:10.0.0.1"
            .parse()
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(reserved_range(mapped), Some("private 10.0.0.0/8"));
    }

    #[test]
    fn unusable_external_explains_double_nat() {
        let why = unusable_external(v4("100.64.3.2")).unwrap_or_default();
        assert!(
            why.contains("100.64.3.2") && why.contains("double NAT"),
            "{why}"
        );
        assert!(unusable_external(v4("0.0.0.0")).is_some());
        assert_eq!(unusable_external(v4("25.0.0.19")), None);
    }

    #[test]
    fn renewal_happens_at_half_the_lease() {
        assert_eq!(
            renewal_delay(Duration::from_secs(3600)),
            Duration::from_secs(1800)
        );
        assert_eq!(
            renewal_delay(Duration::from_secs(4)),
            Duration::from_secs(2)
        );
        assert_eq!(renewal_delay(Duration::from_millis(500)), MIN_RENEWAL_DELAY);
        assert_eq!(renewal_delay(Duration::ZERO), PERMANENT_RECHECK);
    }

    #[test]
    fn leases_are_whole_seconds_in_range() {
        assert_eq!(lease_secs(Duration::ZERO), 0);
        assert_eq!(lease_secs(Duration::from_millis(300)), 1);
        assert_eq!(lease_secs(Duration::from_secs(90)), 90);
        assert_eq!(lease_secs(Duration::from_secs(u64::MAX)), u32::MAX);
    }

    #[tokio::test]
    async fn disabled_mapper_stays_disabled() {
        let config = PortMapConfig {
            enabled: false,
            ..PortMapConfig::default()
        };
        let mapper = PortMapper::start(config, 4433).map_err(|e| e.to_string());
        let Ok(mapper) = mapper else {
            panic!("{mapper:?}")
        };
        assert_eq!(mapper.state(), MappingState::Disabled);
        assert!(mapper.shutdown().await.is_ok());
    }

    #[test]
    fn port_zero_is_refused() {
        assert!(matches!(
            PortMapper::start(PortMapConfig::default(), 0),
            Err(PortMapError::PortZero)
        ));
    }
}
