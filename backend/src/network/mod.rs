//! The `network` step's host side: what Docker's default bridge network
//! builds, made for real.
//!
//! - a bridge (`damda0`, like docker0) with the gateway address of a private
//!   subnet that is checked against the host's routes first;
//! - per box a veth pair: the host end (`damda-hN`) on the bridge, the other
//!   (`damda-cN`) moved into the box's network namespace, where the box's
//!   own helper renames it `eth0`, gives it its address and default route
//!   (the `network` step's late phase, through the `Kernel` door);
//! - NAT in an nftables table of its own ([`nat`]) and a userland proxy for
//!   the host's own 127.0.0.1 ([`proxy`]);
//! - ip_forward, recorded with its old value and restored when the last box
//!   leaves ([`registry`]).
//!
//! Links, addresses and routes go through netlink ([`crate::netlink`]), never
//! through `ip`. Every object is named `damda…` and recorded (a lease) before
//! it is made; teardown keeps going past a failure and reports every error.

pub mod nat;
pub mod proxy;
pub mod registry;
pub mod subnet;
pub mod view;

use crate::netlink::{Netlink, NetlinkError};
use registry::{Lease, Locked, Registry};
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use subnet::Subnet;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("subnet {subnet}: {why}")]
    BadSubnet { subnet: String, why: String },
    #[error("subnet {subnet} overlaps the host's route {route} on {device}; choose another with --subnet")]
    SubnetInUse {
        subnet: String,
        route: String,
        device: String,
    },
    #[error(
        "bridge {bridge} already has {found}, not {expected}: another damda uses another subnet"
    )]
    BridgeMismatch {
        bridge: String,
        found: String,
        expected: String,
    },
    #[error("no free address left in {0}")]
    Full(String),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("netlink {0}")]
    Netlink(#[from] NetlinkError),
    #[error("nft: {0}")]
    Nft(String),
    #[error("the port forward's proxy: {0}")]
    Proxy(std::io::Error),
}

impl NetworkError {
    /// The errno the kernel gave, where it gave one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetworkError::Netlink(
                NetlinkError::Kernel { errno, .. } | NetlinkError::Socket { errno, .. },
            ) => Some(*errno as i32),
            NetworkError::Io { source, .. } | NetworkError::Proxy(source) => source.raw_os_error(),
            _ => None,
        }
    }
}

const IP_FORWARD: &str = "net.ipv4.ip_forward";

/// The bridge's own, fixed address (locally administered: the 02 bit), so
/// it does not change with its ports and the boxes' ARP entries for the
/// gateway stay right.
pub const BRIDGE_MAC: [u8; 6] = [0x02, 0xda, 0x4d, 0xa0, 0x00, 0x01];

pub fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn sysctl_path(name: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(name.replace('.', "/"))
}

/// A host-wide setting's value now.
pub fn sysctl(name: &str) -> Option<String> {
    std::fs::read_to_string(sysctl_path(name))
        .ok()
        .map(|v| v.trim().to_owned())
}

fn set_sysctl(name: &str, value: &str) -> Result<(), NetworkError> {
    let path = sysctl_path(name);
    std::fs::write(&path, value).map_err(|source| NetworkError::Io {
        action: "writing",
        path,
        source,
    })
}

/// Where boxes are attached.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    pub bridge: String,
    pub subnet: Subnet,
    /// The first host port tried for a box's forward (8081, as in the
    /// lesson's `docker run -p 8081:80`).
    pub first_port: u16,
    pub registry: PathBuf,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            bridge: "damda0".into(),
            subnet: subnet::DEFAULT_SUBNET
                .parse()
                .expect("the default subnet is valid"),
            first_port: 8081,
            registry: registry::DEFAULT_DIR.into(),
        }
    }
}

/// One box's place on the bridge: what its helper configures inside and
/// what the commands name.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct BoxNetwork {
    pub bridge: String,
    pub subnet: String,
    pub gateway: Ipv4Addr,
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub host_veth: String,
    pub peer: String,
    pub host_port: u16,
}

impl BoxNetwork {
    /// The first box of the default network: what the commands show before
    /// a box is attached.
    pub fn example() -> Self {
        let config = NetworkConfig::default();
        config.plan(2, config.first_port)
    }

    /// The name the box's end has once inside.
    pub const INSIDE_NAME: &'static str = "eth0";

    /// The box's MAC, made from its address as Docker makes its (02:42 and
    /// the four bytes). A box that takes a freed address then has the MAC
    /// the host's neighbour table still holds for that address; a random
    /// one goes unanswered until the host probes its stale entry again,
    /// which takes seconds (while the entry is REACHABLE, up to a minute).
    pub fn mac(&self) -> [u8; 6] {
        let [a, b, c, d] = self.address.octets();
        [0x02, 0xda, a, b, c, d]
    }
}

impl NetworkConfig {
    fn plan(&self, host: u32, host_port: u16) -> BoxNetwork {
        BoxNetwork {
            bridge: self.bridge.clone(),
            subnet: self.subnet.to_string(),
            gateway: self.subnet.gateway(),
            address: self.subnet.host(host).unwrap_or(self.subnet.gateway()),
            prefix: self.subnet.prefix(),
            host_veth: format!("damda-h{host}"),
            peer: format!("damda-c{host}"),
            host_port,
        }
    }
}

/// A box attached to the bridge; detaches on drop.
pub struct Attachment {
    pub plan: BoxNetwork,
    config: NetworkConfig,
    proxy: proxy::Proxy,
}

impl Attachment {
    /// Where the host reaches the box's port 80: the proxy on 127.0.0.1.
    pub fn proxy_address(&self) -> SocketAddr {
        self.proxy.address()
    }
}

/// What a host-side operation did, as the syscall panel lists it.
fn done(log: &mut Vec<String>, call: String) {
    log.push(format!("{call} = 0"));
}

/// Attaches the box whose main process is `pid` to the bridge, making the
/// bridge, the rules and the host settings first if it is the first box.
/// Returns the operations made, for the page.
pub fn attach(
    config: &NetworkConfig,
    box_id: &str,
    pid: u32,
) -> Result<(Attachment, Vec<String>), NetworkError> {
    let registry = Registry::at(&config.registry);
    let locked = registry.lock()?;
    sweep_locked(config, &locked, true, |lease| !lease.owner_alive());
    let mut netlink = Netlink::open()?;
    let mut log = Vec::new();
    let bridge = prepare_bridge(config, &mut netlink, &locked, &mut log)?;

    let leases = locked.leases();
    let taken_ports: Vec<u16> = leases.iter().map(|l| l.host_port).collect();
    let host = free_host(config, &leases, &mut netlink)?;
    let listener = proxy::reserve(config.first_port, &taken_ports).map_err(NetworkError::Proxy)?;
    let port = listener.local_addr().map_err(NetworkError::Proxy)?.port();
    let plan = config.plan(host, port);
    let target = SocketAddr::V4(SocketAddrV4::new(plan.address, nat::BOX_PORT));
    let proxy = proxy::Proxy::start(listener, target).map_err(NetworkError::Proxy)?;
    let (owner_pid, owner_start) = owner();
    locked.record(&Lease {
        owner_pid,
        owner_start,
        box_id: box_id.to_owned(),
        address: plan.address,
        host_veth: plan.host_veth.clone(),
        peer: plan.peer.clone(),
        host_port: port,
    })?;
    // From here on a failure detaches, which removes the lease and whatever
    // was made (after the lock is let go: detaching takes it again).
    let attachment = Attachment {
        plan: plan.clone(),
        config: config.clone(),
        proxy,
    };
    let made = (|| {
        netlink.create_veth(&plan.host_veth, &plan.peer)?;
        done(
            &mut log,
            format!(
                "RTM_NEWLINK {} type veth peer name {}",
                plan.host_veth, plan.peer
            ),
        );
        let host_end = existing(&mut netlink, &plan.host_veth)?;
        netlink.set_master(host_end, bridge)?;
        netlink.set_up(host_end)?;
        done(
            &mut log,
            format!("RTM_NEWLINK {} master {} up", plan.host_veth, plan.bridge),
        );
        let peer = existing(&mut netlink, &plan.peer)?;
        netlink.set_mac(peer, plan.mac())?;
        done(
            &mut log,
            format!("RTM_NEWLINK {} address {}", plan.peer, mac_text(plan.mac())),
        );
        netlink.move_to_netns_of_pid(peer, pid)?;
        done(
            &mut log,
            format!("RTM_NEWLINK {} IFLA_NET_NS_PID {pid}", plan.peer),
        );
        nat::apply(&config.bridge, &config.subnet, &locked.leases())?;
        done(
            &mut log,
            format!(
                "nft -j -f -   # table ip {}: DNAT :{port} → {}:{}",
                nat::TABLE,
                plan.address,
                nat::BOX_PORT
            ),
        );
        Ok::<(), NetworkError>(())
    })();
    drop(locked);
    made?;
    Ok((attachment, log))
}

/// The index of a link just made.
fn existing(netlink: &mut Netlink, name: &str) -> Result<u32, NetworkError> {
    netlink.link_index(name)?.ok_or_else(|| {
        NetworkError::Netlink(NetlinkError::Kernel {
            op: format!("RTM_GETLINK {name}"),
            errno: nix::errno::Errno::ENODEV,
        })
    })
}

/// The pid and start time this instance's leases carry.
fn owner() -> (u32, u64) {
    let pid = std::process::id();
    (pid, crate::ledger::process_start_time(pid).unwrap_or(0))
}

/// The bridge with its gateway address, up, and ip_forward on; made (and
/// the old ip_forward recorded) if this is the first box. Returns its index.
fn prepare_bridge(
    config: &NetworkConfig,
    netlink: &mut Netlink,
    locked: &Locked<'_>,
    log: &mut Vec<String>,
) -> Result<u32, NetworkError> {
    let gateway = format!("{}/{}", config.subnet.gateway(), config.subnet.prefix());
    let index = match netlink.link_index(&config.bridge)? {
        Some(index) => {
            let found: Vec<String> = netlink
                .addresses()?
                .into_iter()
                .filter(|a| a.index == index)
                .map(|a| format!("{}/{}", a.address, a.prefix))
                .collect();
            if !found.is_empty() && !found.contains(&gateway) {
                return Err(NetworkError::BridgeMismatch {
                    bridge: config.bridge.clone(),
                    found: found.join(", "),
                    expected: gateway,
                });
            }
            if found.is_empty() {
                netlink.add_address(index, config.subnet.gateway(), config.subnet.prefix())?;
            }
            index
        }
        None => {
            let routes: Vec<(Subnet, String)> = {
                let links = netlink.links()?;
                netlink
                    .routes()?
                    .into_iter()
                    .map(|r| {
                        let device = links
                            .iter()
                            .find(|l| Some(l.index) == r.oif)
                            .map_or_else(String::new, |l| l.name.clone());
                        (
                            Subnet::of(r.destination.unwrap_or(Ipv4Addr::UNSPECIFIED), r.prefix),
                            device,
                        )
                    })
                    .collect()
            };
            config.subnet.check_free(&routes, &config.bridge)?;
            netlink.create_bridge(&config.bridge)?;
            done(log, format!("RTM_NEWLINK {} type bridge", config.bridge));
            let index = existing(netlink, &config.bridge)?;
            netlink.set_mac(index, BRIDGE_MAC)?;
            done(
                log,
                format!(
                    "RTM_NEWLINK {} address {}",
                    config.bridge,
                    mac_text(BRIDGE_MAC)
                ),
            );
            netlink.add_address(index, config.subnet.gateway(), config.subnet.prefix())?;
            done(log, format!("RTM_NEWADDR {gateway} dev {}", config.bridge));
            index
        }
    };
    netlink.set_up(index)?;
    if sysctl(IP_FORWARD).as_deref() != Some("1") {
        locked.record_setting(
            IP_FORWARD,
            &sysctl(IP_FORWARD).unwrap_or_else(|| "0".into()),
        )?;
        set_sysctl(IP_FORWARD, "1")?;
        done(log, "write(/proc/sys/net/ipv4/ip_forward, \"1\")".into());
    }
    Ok(index)
}

/// The lowest host number free in the leases whose veth name is not still
/// going away from an earlier box (a namespace's links go asynchronously).
fn free_host(
    config: &NetworkConfig,
    leases: &[Lease],
    netlink: &mut Netlink,
) -> Result<u32, NetworkError> {
    let taken: Vec<Ipv4Addr> = leases.iter().map(|l| l.address).collect();
    let mut n = 2;
    while let Some(address) = config.subnet.host(n) {
        if !taken.contains(&address) && netlink.link_index(&format!("damda-h{n}"))?.is_none() {
            return Ok(n);
        }
        n += 1;
    }
    Err(NetworkError::Full(config.subnet.to_string()))
}

impl Drop for Attachment {
    fn drop(&mut self) {
        for error in detach(&self.config, &self.plan) {
            tracing::warn!("detaching {}: {error}", self.plan.host_veth);
        }
    }
}

/// Removes one box's veth pair and lease, then the shared objects if no box
/// is left. Keeps going past failures; returns every error.
fn detach(config: &NetworkConfig, plan: &BoxNetwork) -> Vec<String> {
    let registry = Registry::at(&config.registry);
    let locked = match registry.lock() {
        Ok(locked) => locked,
        Err(err) => return vec![err.to_string()],
    };
    let mut errors = remove_links(&[plan.host_veth.as_str()]);
    if let Err(err) = locked.forget(plan.address) {
        errors.push(err.to_string());
    }
    errors.extend(settle_shared(config, &locked));
    errors
}

/// Deletes these links if they exist (deleting a veth end deletes the pair).
fn remove_links(names: &[&str]) -> Vec<String> {
    let mut netlink = match Netlink::open() {
        Ok(netlink) => netlink,
        Err(err) => return vec![err.to_string()],
    };
    let mut errors = Vec::new();
    for name in names {
        match netlink.link_index(name) {
            Ok(Some(index)) => match netlink.delete_link(index) {
                Ok(())
                | Err(NetlinkError::Kernel {
                    errno: nix::errno::Errno::ENODEV,
                    ..
                }) => {}
                Err(err) => errors.push(err.to_string()),
            },
            Ok(None) => {}
            Err(err) => errors.push(err.to_string()),
        }
    }
    errors
}

/// The rules for the boxes left; with none left, the table and the bridge
/// go and the host settings are restored.
fn settle_shared(config: &NetworkConfig, locked: &Locked<'_>) -> Vec<String> {
    let leases = locked.leases();
    let mut errors = Vec::new();
    if let Err(err) = nat::apply(&config.bridge, &config.subnet, &leases) {
        errors.push(err.to_string());
    }
    if !leases.is_empty() {
        return errors;
    }
    errors.extend(remove_links(&[config.bridge.as_str()]));
    match locked.take_settings() {
        Ok(settings) => {
            for (name, value) in settings {
                if let Err(err) = set_sysctl(&name, &value) {
                    errors.push(err.to_string());
                }
            }
        }
        Err(err) => errors.push(err.to_string()),
    }
    errors
}

/// Detaches the boxes of dead instances (a server killed mid-step), then
/// settles the shared objects. Called at start-up and by `damda sweep`.
pub fn sweep(config: &NetworkConfig) -> (Vec<String>, Vec<String>) {
    sweep_where(config, |lease| !lease.owner_alive())
}

/// Detaches every box of this instance that is still attached: at exit,
/// where the boxes may not be dropped one by one.
pub fn release_own(config: &NetworkConfig) -> (Vec<String>, Vec<String>) {
    let (pid, start) = owner();
    sweep_where(config, |lease| {
        !lease.owner_alive() || (lease.owner_pid, lease.owner_start) == (pid, start)
    })
}

fn sweep_where(
    config: &NetworkConfig,
    gone: impl Fn(&Lease) -> bool,
) -> (Vec<String>, Vec<String>) {
    let registry = Registry::at(&config.registry);
    match registry.lock() {
        Ok(locked) => sweep_locked(config, &locked, false, gone),
        Err(err) => (Vec::new(), vec![err.to_string()]),
    }
}

/// Removes the boxes of `gone` leases; unless `keep_shared` (a box is about
/// to be attached), also the shared objects when no box is left.
fn sweep_locked(
    config: &NetworkConfig,
    locked: &Locked<'_>,
    keep_shared: bool,
    gone: impl Fn(&Lease) -> bool,
) -> (Vec<String>, Vec<String>) {
    let mut removed = Vec::new();
    let mut errors = Vec::new();
    let dead: Vec<Lease> = locked.leases().into_iter().filter(|l| gone(l)).collect();
    for lease in &dead {
        errors.extend(remove_links(&[lease.host_veth.as_str()]));
        match locked.forget(lease.address) {
            Ok(()) => removed.push(format!(
                "network lease {} ({})",
                lease.address, lease.host_veth
            )),
            Err(err) => errors.push(err.to_string()),
        }
    }
    // With boxes left, their rules without the dead ones'; with none, the
    // shared objects go (unless one is about to be attached, which makes
    // the rules anew).
    let settle = if locked.leases().is_empty() {
        !keep_shared && (bridge_exists(config) || !leftovers(config).is_empty())
    } else {
        !dead.is_empty()
    };
    if settle {
        errors.extend(settle_shared(config, locked));
    }
    (removed, errors)
}

fn bridge_exists(config: &NetworkConfig) -> bool {
    std::path::Path::new("/sys/class/net")
        .join(&config.bridge)
        .exists()
}

/// What is left of the shared network: the registry's files and the table
/// (links are found by name with every other damda link).
pub fn leftovers(config: &NetworkConfig) -> Vec<String> {
    let mut found = Registry::at(&config.registry).leftovers();
    if nat::listing().is_some() {
        found.push(format!("nftables table ip {}", nat::TABLE));
    }
    found
}
