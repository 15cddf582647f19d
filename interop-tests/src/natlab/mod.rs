//! A NAT lab: an emulated internet with home routers, carrier-grade NAT and a real UPnP gateway,
//! built from Linux network namespaces, for testing NAT traversal with real packets.
//!
//! ```text
//!                       namespace "<lab>-inet": bridge br0, 25.0.0.0/24
//!        ┌───────────────────┬──────────────────┬───────────────────────────┐
//!   public host         router (NAT)        router (NAT) + miniupnpd     carrier NAT (CGNAT)
//!   25.0.0.(10+n)       wan0 25.0.0.(10+n)  wan0 25.0.0.(10+n)           wan0 25.0.0.(10+n)
//!                       lan0 192.168.n.1    lan0 192.168.n.1             lan0 100.64.n.1
//!                            │                   │                             │
//!                       host 192.168.n.100   host 192.168.n.100          home router + miniupnpd
//!                                                                        wan0 100.64.n.2
//!                                                                        lan0 192.168.n.1
//!                                                                              │
//!                                                                        host 192.168.n.100
//! ```
//!
//! A double-NAT site may get a second customer of its carrier ([`NatLab::add_carrier_customer`]):
//! a host at 100.65.n.2 on the carrier's `lan1`, reachable from the home router over carrier
//! addresses.
//!
//! The public segment uses 25.0.0.0/24, ordinary public address space (miniupnpd refuses to map
//! on a router whose outer address is private or reserved, which is exactly the CGNAT case
//! [`NatKind::DoubleNat`] models). These addresses exist only inside the lab's namespaces:
//! nothing links the lab to a real interface and the host namespace has no route into it, so
//! no packet leaves the machine. Every lab has its own namespaces (names prefixed with
//! `p2nl<pid>-<counter>`), so concurrent tests never collide; interface names are fixed and
//! short (`wan0`, `lan0`, `eth0`, `s<n>`) because each lives in its own namespace.
//!
//! Code of the test process runs inside a namespace on a thread that entered it
//! ([`NatLab::run_in`], [`NatLab::spawn_in`], [`NatLab::block_on`]); sockets made there stay in
//! that namespace ([`NatLab::udp_socket`]). Programs run there through [`NatLab::command`].
//!
//! Dropping the lab (also while a test panics) kills miniupnpd and every process left in its
//! namespaces and deletes the namespaces, which removes their interfaces. Labs left behind by
//! a killed test process are removed by the next [`NatLab::new`]. Every command has a time
//! limit. Needs root: see [`require_root`].

mod cmd;
mod error;
mod mapper;
mod netns;
mod rules;
mod runtime;
mod upnpd;

pub use error::{NatLabError, Result};
pub use mapper::NsPortMapper;
pub use runtime::NsRuntime;

use rules::Behaviour;
use std::fmt;
use std::fs::File;
use std::future::Future;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The first three octets of the lab's public segment (a /24).
pub const PUBLIC_NET: [u8; 3] = [25, 0, 0];
/// Address of the lan host behind every router (`192.168.<site>.100`).
const LAN_HOST: u8 = 100;
/// At most this many sites (routers or public hosts) per lab.
const MAX_SITES: u8 = 200;
/// How long miniupnpd may take to come up.
const UPNPD_START_TIMEOUT: Duration = Duration::from_secs(5);
/// Namespace names of every lab start with this.
const NS_PREFIX: &str = "p2nl";

/// What stands between a site's host and the lab's internet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NatKind {
    /// No NAT: the host sits directly on the public segment.
    None,
    /// Endpoint-independent mapping and filtering: once the host has sent from a port, anyone
    /// can reach it there (port-preserving masquerade + inbound DNAT of the mapped ports).
    FullCone,
    /// Endpoint-independent mapping; inbound allowed from any port of an address the host has
    /// sent to (an nftables set of contacted addresses, with a timeout).
    AddressRestricted,
    /// Endpoint-independent mapping; inbound only from the exact address and port the host
    /// has sent to (plain conntrack masquerade).
    PortRestricted,
    /// A new random outer port per destination (`masquerade fully-random`), port-restricted
    /// filtering.
    Symmetric,
    /// A home router (port-restricted, running miniupnpd) whose outer address is in the CGNAT
    /// range 100.64.0.0/10, behind a carrier NAT (port-restricted) with a public address. The
    /// home router's UPnP works but is useless: its "external" address is not public.
    DoubleNat,
    /// A home router running miniupnpd (port-restricted masquerade; UPnP clients add inbound
    /// mappings), with a public outer address.
    Upnp,
}

impl NatKind {
    /// Every kind, in the order of the enum.
    pub const ALL: [NatKind; 7] = [
        NatKind::None,
        NatKind::FullCone,
        NatKind::AddressRestricted,
        NatKind::PortRestricted,
        NatKind::Symmetric,
        NatKind::DoubleNat,
        NatKind::Upnp,
    ];

    /// Whether the site's home router runs miniupnpd.
    pub fn has_upnp(self) -> bool {
        matches!(self, NatKind::Upnp | NatKind::DoubleNat)
    }
}

impl fmt::Display for NatKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NatKind::None => "none",
            NatKind::FullCone => "full-cone",
            NatKind::AddressRestricted => "address-restricted",
            NatKind::PortRestricted => "port-restricted",
            NatKind::Symmetric => "symmetric",
            NatKind::DoubleNat => "double-nat",
            NatKind::Upnp => "upnp",
        })
    }
}

/// One site of the lab: a host and what connects it to the internet.
///
/// `&Site` can be passed wherever a namespace name is expected: it stands for the host's
/// namespace.
#[derive(Clone, Debug)]
pub struct Site {
    /// The NAT in front of the host.
    pub kind: NatKind,
    /// The host's network namespace.
    pub ns: String,
    /// The host's own address (on its lan, or on the public segment for [`NatKind::None`]).
    pub host_ip: Ipv4Addr,
    /// The address the internet sees the host's traffic come from: the outermost router's
    /// outer address, or `host_ip` without NAT.
    pub public_ip: Ipv4Addr,
    /// The home router's namespace (none without NAT).
    pub router_ns: Option<String>,
    /// The home router's lan address, the host's default gateway (none without NAT).
    pub gateway_ip: Option<Ipv4Addr>,
    /// The home router's outer address: `public_ip`, except behind a carrier NAT, where it
    /// is the router's 100.64.0.0/10 address (none without NAT).
    pub router_outer_ip: Option<Ipv4Addr>,
    /// The carrier NAT's namespace ([`NatKind::DoubleNat`] only).
    pub carrier_ns: Option<String>,
}

impl AsRef<str> for Site {
    fn as_ref(&self) -> &str {
        &self.ns
    }
}

/// miniupnpd running in a router namespace.
struct Upnpd {
    ns: String,
    child: Child,
    log: PathBuf,
}

/// An emulated internet in network namespaces; see the [module docs](self).
pub struct NatLab {
    prefix: String,
    inet: String,
    /// Namespaces created so far, deleted in reverse order on drop.
    namespaces: Vec<String>,
    sites: u8,
    upnpds: Vec<Upnpd>,
    /// Configuration, pid and log files of the lab's daemons.
    dir: tempfile::TempDir,
    ip: PathBuf,
    nft: PathBuf,
}

impl fmt::Debug for NatLab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatLab")
            .field("prefix", &self.prefix)
            .field("namespaces", &self.namespaces)
            .finish_non_exhaustive()
    }
}

/// Whether the NAT lab can run here. When it cannot (not root, or `ip`/`nft`/`miniupnpd`
/// missing), prints why and returns `false` so the test can skip itself — unless the
/// environment variable `CI` is `true`, where the lab is required and this panics.
pub fn require_root() -> bool {
    match check_environment() {
        Ok(()) => true,
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("NAT lab test cannot run under CI=true: {e}");
            }
            eprintln!("NAT lab test SKIPPED: {e} (run as root with the packages installed; under CI=true this is a failure)");
            false
        }
    }
}

fn check_environment() -> Result<()> {
    let euid = rustix::process::geteuid();
    if !euid.is_root() {
        return Err(NatLabError::NotRoot(euid.as_raw()));
    }
    cmd::program("ip")?;
    cmd::program("nft")?;
    cmd::program("miniupnpd")?;
    Ok(())
}

impl NatLab {
    /// Creates an empty lab: the internet namespace with its bridge. Removes first the
    /// namespaces of labs whose test process died without cleaning up.
    pub fn new() -> Result<NatLab> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let euid = rustix::process::geteuid();
        if !euid.is_root() {
            return Err(NatLabError::NotRoot(euid.as_raw()));
        }
        let ip = cmd::program("ip")?;
        let nft = cmd::program("nft")?;
        remove_stale_labs(&ip);
        let prefix = format!(
            "{NS_PREFIX}{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let dir = tempfile::Builder::new()
            .prefix("p2ps-natlab")
            .tempdir()
            .map_err(|source| NatLabError::Io {
                what: "creating the lab's directory".into(),
                source,
            })?;
        let mut lab = NatLab {
            inet: format!("{prefix}-inet"),
            prefix,
            namespaces: Vec::new(),
            sites: 0,
            upnpds: Vec::new(),
            dir,
            ip,
            nft,
        };
        // From here on, an error drops `lab`, which removes what was made.
        let inet = lab.inet.clone();
        lab.add_ns(&inet)?;
        lab.ip(&inet, &["link", "add", "br0", "type", "bridge"])?;
        lab.ip(&inet, &["link", "set", "br0", "up"])?;
        Ok(lab)
    }

    /// The prefix of this lab's namespace names.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The internet namespace (holding the bridge of the public segment).
    pub fn internet_ns(&self) -> &str {
        &self.inet
    }

    /// Adds a site whose host is behind `kind` of NAT.
    pub fn add_site(&mut self, kind: NatKind) -> Result<Site> {
        if self.sites >= MAX_SITES {
            return Err(NatLabError::Full(MAX_SITES));
        }
        self.sites += 1;
        let n = self.sites;
        let public_ip = public_ip(n);
        let host = format!("{}-{n}h", self.prefix);
        let lan_host = Ipv4Addr::new(192, 168, n, LAN_HOST);
        let gateway = Ipv4Addr::new(192, 168, n, 1);
        let mut site = Site {
            kind,
            ns: host.clone(),
            host_ip: lan_host,
            public_ip,
            router_ns: Some(format!("{}-{n}r", self.prefix)),
            gateway_ip: Some(gateway),
            router_outer_ip: Some(public_ip),
            carrier_ns: None,
        };
        let router = format!("{}-{n}r", self.prefix);
        match kind {
            NatKind::None => {
                self.add_ns(&host)?;
                self.attach_public(n, &host, "eth0", public_ip)?;
                site.host_ip = public_ip;
                site.router_ns = None;
                site.gateway_ip = None;
                site.router_outer_ip = None;
            }
            NatKind::FullCone
            | NatKind::AddressRestricted
            | NatKind::PortRestricted
            | NatKind::Symmetric
            | NatKind::Upnp => {
                self.add_ns(&router)?;
                self.attach_public(n, &router, "wan0", public_ip)?;
                self.add_lan(n, &router, &host)?;
                let behaviour = match kind {
                    NatKind::FullCone => Behaviour::FullCone,
                    NatKind::AddressRestricted => Behaviour::AddressRestricted,
                    NatKind::Symmetric => Behaviour::Symmetric,
                    _ => Behaviour::PortRestricted,
                };
                self.make_router(&router, behaviour, lan_host)?;
                if kind == NatKind::Upnp {
                    self.start_upnpd(&router, n)?;
                }
            }
            NatKind::DoubleNat => {
                let carrier = format!("{}-{n}c", self.prefix);
                let carrier_inner = Ipv4Addr::new(100, 64, n, 1);
                let home_outer = Ipv4Addr::new(100, 64, n, 2);
                self.add_ns(&carrier)?;
                self.attach_public(n, &carrier, "wan0", public_ip)?;
                self.add_ns(&router)?;
                self.veth(&carrier, "lan0", carrier_inner, &router, "wan0", home_outer)?;
                self.ip(
                    &router,
                    &["route", "add", "default", "via", &carrier_inner.to_string()],
                )?;
                self.add_lan(n, &router, &host)?;
                // The carrier NAT forwards everything of its customer (the home router).
                self.make_router(&carrier, Behaviour::PortRestricted, home_outer)?;
                self.make_router(&router, Behaviour::PortRestricted, lan_host)?;
                self.start_upnpd(&router, n)?;
                site.carrier_ns = Some(carrier);
                site.router_outer_ip = Some(home_outer);
            }
        }
        Ok(site)
    }

    /// Adds another customer of the carrier NAT of `site` (a [`NatKind::DoubleNat`] site): a
    /// host without a home router on its own carrier segment, `100.65.<n>.2/24` (gateway
    /// `.1`), behind the carrier's port-restricted NAT only. The carrier routes between its
    /// customers without translation, as carriers commonly do, so this host and the double-NAT
    /// host reach each other over carrier addresses: it sees the double-NAT host at its home
    /// router's carrier-side address (`100.64.<n>.2`), where the rest of the internet sees the
    /// carrier's public one. At most one per double-NAT site. The returned site's kind is
    /// [`NatKind::PortRestricted`] (what stands between it and the internet), its router the
    /// carrier.
    pub fn add_carrier_customer(&mut self, site: &Site) -> Result<Site> {
        let carrier = site
            .carrier_ns
            .clone()
            .ok_or_else(|| NatLabError::NoCarrier(site.ns.clone()))?;
        let [.., last] = site.public_ip.octets();
        let n = last.saturating_sub(10);
        let host = format!("{}-{n}k", self.prefix);
        let gateway = Ipv4Addr::new(100, 65, n, 1);
        let host_ip = Ipv4Addr::new(100, 65, n, 2);
        self.add_ns(&host)?;
        self.veth(&carrier, "lan1", gateway, &host, "eth0", host_ip)?;
        self.ip(
            &host,
            &["route", "add", "default", "via", &gateway.to_string()],
        )?;
        // New flows from the new segment (to the internet or the home router) and from the
        // home router to it; the carrier's masquerade covers everything leaving on wan0.
        let rules = "add rule inet filter forward iifname \"lan1\" accept\n\
                     add rule inet filter forward iifname \"lan0\" oifname \"lan1\" accept\n";
        let mut c = self.command(&carrier, &self.nft);
        c.args(["-f", "-"]);
        cmd::run(&mut c, Some(rules))?;
        Ok(Site {
            kind: NatKind::PortRestricted,
            ns: host,
            host_ip,
            public_ip: site.public_ip,
            router_ns: Some(carrier),
            gateway_ip: Some(gateway),
            router_outer_ip: Some(site.public_ip),
            carrier_ns: None,
        })
    }

    /// Adds a host directly on the public segment (a [`NatKind::None`] site), e.g. a probe or
    /// a rendezvous server.
    pub fn add_public_host(&mut self) -> Result<Site> {
        self.add_site(NatKind::None)
    }

    /// A command that runs `program` inside namespace `ns` (`ip netns exec`, which execs the
    /// program, so killing the child kills the program). Whatever is still running in the
    /// lab's namespaces when the lab is dropped is killed.
    pub fn command(&self, ns: impl AsRef<str>, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(&self.ip);
        c.args(["netns", "exec", ns.as_ref()]).arg(program);
        c
    }

    /// Runs `f` on a thread inside namespace `ns` and returns its result.
    pub fn run_in<T: Send>(&self, ns: impl AsRef<str>, f: impl FnOnce() -> T + Send) -> Result<T> {
        netns::run_in(ns.as_ref(), f)
    }

    /// Starts `f` on a thread inside namespace `ns`; join the handle for its result.
    pub fn spawn_in<T: Send + 'static>(
        &self,
        ns: impl AsRef<str>,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<std::thread::JoinHandle<Result<T>>> {
        netns::spawn_in(ns.as_ref(), f)
    }

    /// Runs `fut` to completion on a current-thread tokio runtime (time and I/O enabled) on a
    /// thread inside namespace `ns`: every socket the future opens is in that namespace.
    pub fn block_on<F>(&self, ns: impl AsRef<str>, fut: F) -> Result<F::Output>
    where
        F: Future + Send,
        F::Output: Send,
    {
        let ns = ns.as_ref();
        netns::run_in(ns, || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| rt.block_on(fut))
        })?
        .map_err(|source| NatLabError::Io {
            what: format!("building a tokio runtime in {ns}"),
            source,
        })
    }

    /// Starts a tokio runtime on a thread inside namespace `ns`, for async code that keeps
    /// running (a node) while the test thread does other things.
    pub fn runtime(&self, ns: impl AsRef<str>) -> Result<NsRuntime> {
        NsRuntime::start(ns.as_ref())
    }

    /// A UDP socket bound to `0.0.0.0:port` inside namespace `ns` (port 0: any).
    pub fn udp_socket(&self, ns: impl AsRef<str>, port: u16) -> Result<UdpSocket> {
        let ns = ns.as_ref();
        netns::run_in(ns, || {
            UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
        })?
        .map_err(|source| NatLabError::Io {
            what: format!("binding UDP port {port} in {ns}"),
            source,
        })
    }

    /// What the miniupnpd of `site` has printed so far (none if the site has no UPnP).
    pub fn upnpd_log(&self, site: &Site) -> Option<String> {
        let router = site.router_ns.as_deref()?;
        let u = self.upnpds.iter().find(|u| u.ns == router)?;
        let mut s = String::new();
        File::open(&u.log).ok()?.read_to_string(&mut s).ok()?;
        Some(s)
    }

    /// Cuts host `site` off from the addresses `others` (a network partition): its namespace
    /// drops every packet to or from them until [`NatLab::reconnect`].
    pub fn cut_off(&self, site: &Site, others: &[Ipv4Addr]) -> Result<()> {
        let set: Vec<String> = others.iter().map(|a| a.to_string()).collect();
        let set = set.join(", ");
        let rules = format!(
            "table inet p2cut {{\n\
             chain input {{ type filter hook input priority 0; policy accept; \
             ip saddr {{ {set} }} drop; }}\n\
             chain output {{ type filter hook output priority 0; policy accept; \
             ip daddr {{ {set} }} drop; }}\n}}\n"
        );
        let mut c = self.command(&site.ns, &self.nft);
        c.args(["-f", "-"]);
        cmd::run(&mut c, Some(&rules)).map(|_| ())
    }

    /// Ends [`NatLab::cut_off`] for `site`.
    pub fn reconnect(&self, site: &Site) -> Result<()> {
        let mut c = self.command(&site.ns, &self.nft);
        c.args(["delete", "table", "inet", "p2cut"]);
        cmd::run(&mut c, None).map(|_| ())
    }

    /// The ruleset of router namespace `ns` as `nft list ruleset` prints it (for diagnostics).
    pub fn nft_ruleset(&self, ns: &str) -> Result<String> {
        let mut c = self.command(ns, &self.nft);
        c.args(["list", "ruleset"]);
        cmd::run(&mut c, None)
    }

    fn ip(&self, ns: &str, args: &[&str]) -> Result<String> {
        let mut c = Command::new(&self.ip);
        c.args(["-n", ns]).args(args);
        cmd::run(&mut c, None)
    }

    /// Creates namespace `name` (recorded for removal) with loopback up and IPv6 off (the lab
    /// is IPv4; this keeps router solicitations and the like off the wires).
    fn add_ns(&mut self, name: &str) -> Result<()> {
        let mut c = Command::new(&self.ip);
        c.args(["netns", "add", name]);
        cmd::run(&mut c, None)?;
        self.namespaces.push(name.to_string());
        self.ip(name, &["link", "set", "lo", "up"])?;
        netns::run_in(name, || {
            // Kernels without IPv6 have no such file; nothing to switch off then.
            let _ = netns::write_sysctl("net.ipv6.conf.all.disable_ipv6", "1");
            let _ = netns::write_sysctl("net.ipv6.conf.default.disable_ipv6", "1");
        })
    }

    /// Connects `ns` (interface `ifname`, address `addr`/24) to the public bridge.
    fn attach_public(&self, n: u8, ns: &str, ifname: &str, addr: Ipv4Addr) -> Result<()> {
        let port = format!("s{n}");
        self.ip(
            &self.inet,
            &[
                "link", "add", &port, "type", "veth", "peer", "name", ifname, "netns", ns,
            ],
        )?;
        self.ip(&self.inet, &["link", "set", &port, "master", "br0", "up"])?;
        self.ip(ns, &["addr", "add", &format!("{addr}/24"), "dev", ifname])?;
        self.ip(ns, &["link", "set", ifname, "up"])?;
        Ok(())
    }

    /// A veth pair between two namespaces, each end with a /24 address.
    fn veth(
        &self,
        a_ns: &str,
        a_if: &str,
        a_addr: Ipv4Addr,
        b_ns: &str,
        b_if: &str,
        b_addr: Ipv4Addr,
    ) -> Result<()> {
        self.ip(
            a_ns,
            &[
                "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b_ns,
            ],
        )?;
        self.ip(a_ns, &["addr", "add", &format!("{a_addr}/24"), "dev", a_if])?;
        self.ip(b_ns, &["addr", "add", &format!("{b_addr}/24"), "dev", b_if])?;
        self.ip(a_ns, &["link", "set", a_if, "up"])?;
        self.ip(b_ns, &["link", "set", b_if, "up"])?;
        Ok(())
    }

    /// The host namespace behind `router`: lan 192.168.n.0/24, default route via the router.
    fn add_lan(&mut self, n: u8, router: &str, host: &str) -> Result<()> {
        self.add_ns(host)?;
        let gateway = Ipv4Addr::new(192, 168, n, 1);
        self.veth(
            router,
            "lan0",
            gateway,
            host,
            "eth0",
            Ipv4Addr::new(192, 168, n, LAN_HOST),
        )?;
        self.ip(
            host,
            &["route", "add", "default", "via", &gateway.to_string()],
        )?;
        Ok(())
    }

    /// Turns on forwarding in `router` and loads the rules of `behaviour`.
    fn make_router(&self, router: &str, behaviour: Behaviour, lan_host: Ipv4Addr) -> Result<()> {
        netns::run_in(router, || netns::write_sysctl("net.ipv4.ip_forward", "1"))??;
        let mut c = self.command(router, &self.nft);
        c.args(["-f", "-"]);
        cmd::run(&mut c, Some(&rules::router_rules(behaviour, lan_host)))?;
        Ok(())
    }

    /// Starts miniupnpd in `router` and waits until it serves HTTP.
    fn start_upnpd(&mut self, router: &str, n: u8) -> Result<()> {
        let program = cmd::program("miniupnpd")?;
        let io_err = |what: &str, source| NatLabError::Io {
            what: format!("{what} for miniupnpd in {router}"),
            source,
        };
        let conf = self.dir.path().join(format!("miniupnpd-{n}.conf"));
        let pid = self.dir.path().join(format!("miniupnpd-{n}.pid"));
        let log = self.dir.path().join(format!("miniupnpd-{n}.log"));
        let lan_net = Ipv4Addr::new(192, 168, n, 0);
        std::fs::write(
            &conf,
            upnpd::config(lan_net, (std::process::id() << 8) | u32::from(n)),
        )
        .map_err(|e| io_err("writing the configuration", e))?;
        let out = File::create(&log).map_err(|e| io_err("creating the log", e))?;
        let err = out.try_clone().map_err(|e| io_err("creating the log", e))?;
        let mut c = self.command(router, program);
        // -d: foreground, log to stderr; -P: a pid file of its own (the default path is shared
        // by every miniupnpd on the machine and makes a second instance refuse to start).
        c.arg("-f")
            .arg(&conf)
            .arg("-d")
            .arg("-P")
            .arg(&pid)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = c.spawn().map_err(|source| NatLabError::Spawn {
            command: cmd::describe(&c),
            source,
        })?;
        self.upnpds.push(Upnpd {
            ns: router.to_string(),
            child,
            log: log.clone(),
        });
        let deadline = Instant::now() + UPNPD_START_TIMEOUT;
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("HTTP listening on port") {
                return Ok(());
            }
            let exited = self
                .upnpds
                .last_mut()
                .map(|u| matches!(u.child.try_wait(), Ok(Some(_))))
                .unwrap_or(true);
            if exited || Instant::now() >= deadline {
                return Err(NatLabError::Upnpd {
                    ns: router.to_string(),
                    log: if exited {
                        text
                    } else {
                        format!("not serving after {UPNPD_START_TIMEOUT:?}: {text}")
                    },
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The public address of site `n`.
fn public_ip(n: u8) -> Ipv4Addr {
    let [a, b, c] = PUBLIC_NET;
    Ipv4Addr::new(a, b, c, 10 + n)
}

/// Waits up to `timeout` for a datagram carrying exactly `token`; returns its source. Other
/// datagrams (late answers of earlier steps) are skipped.
pub fn recv_token(sock: &UdpSocket, token: &str, timeout: Duration) -> Option<SocketAddr> {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1500];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .ok()?;
        match sock.recv_from(&mut buf) {
            Ok((n, from)) if &buf[..n] == token.as_bytes() => return Some(from),
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None
            }
            // ICMP errors of earlier sends surface as ConnectionRefused on Linux: ignore.
            Err(_) => continue,
        }
    }
}

/// A public endpoint of the lab.
pub fn public_addr(site: &Site, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(site.public_ip, port))
}

impl Drop for NatLab {
    fn drop(&mut self) {
        for u in &mut self.upnpds {
            let _ = u.child.kill();
            let _ = u.child.wait();
        }
        for ns in self.namespaces.iter().rev() {
            kill_processes_in(&self.ip, ns);
        }
        for ns in self.namespaces.iter().rev() {
            let mut c = Command::new(&self.ip);
            c.args(["netns", "del", ns]);
            if let Err(e) = cmd::run(&mut c, None) {
                eprintln!("NAT lab: could not remove namespace {ns}: {e}");
            }
        }
    }
}

/// Kills every process whose network namespace is `ns`.
fn kill_processes_in(ip: &PathBuf, ns: &str) {
    let mut c = Command::new(ip);
    c.args(["netns", "pids", ns]);
    if let Ok(out) = cmd::run(&mut c, None) {
        for pid in out.split_whitespace().filter_map(|p| p.parse().ok()) {
            cmd::kill(pid);
        }
    }
}

/// Removes the namespaces of labs whose process no longer exists (a test killed before its
/// lab's drop ran).
fn remove_stale_labs(ip: &PathBuf) {
    let Ok(entries) = std::fs::read_dir(netns::NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        kill_processes_in(ip, &name);
        let mut c = Command::new(ip);
        c.args(["netns", "del", &name]);
        let _ = cmd::run(&mut c, None);
    }
}
