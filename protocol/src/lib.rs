//! The messages damda's server and page exchange, and the lines `damda walk`
//! prints. They live here once, compiled for the host and for wasm, so the two
//! sides cannot drift apart.
//!
//! Every message is a JSON object tagged by `type`. A snapshot is what the
//! kernel showed after a step; the page renders snapshots and never invents
//! state.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One kernel primitive in the lesson order of DESIGN.md. The order of the
/// variants is the lesson order.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
#[serde(rename_all = "lowercase")]
pub enum StepId {
    Host,
    Chroot,
    Uts,
    Pid,
    Mnt,
    Ipc,
    Net,
    User,
    Cgroupns,
    Cgroups,
    Network,
    Overlay,
    Run,
}

impl StepId {
    pub const ALL: [StepId; 13] = [
        StepId::Host,
        StepId::Chroot,
        StepId::Uts,
        StepId::Pid,
        StepId::Mnt,
        StepId::Ipc,
        StepId::Net,
        StepId::User,
        StepId::Cgroupns,
        StepId::Cgroups,
        StepId::Network,
        StepId::Overlay,
        StepId::Run,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StepId::Host => "host",
            StepId::Chroot => "chroot",
            StepId::Uts => "uts",
            StepId::Pid => "pid",
            StepId::Mnt => "mnt",
            StepId::Ipc => "ipc",
            StepId::Net => "net",
            StepId::User => "user",
            StepId::Cgroupns => "cgroupns",
            StepId::Cgroups => "cgroups",
            StepId::Network => "network",
            StepId::Overlay => "overlay",
            StepId::Run => "run",
        }
    }

    /// Position in the lesson order, starting at 0 for `host`.
    pub fn index(self) -> usize {
        StepId::ALL.iter().position(|s| *s == self).unwrap_or(0)
    }
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for StepId {
    type Err = UnknownStep;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StepId::ALL
            .into_iter()
            .find(|id| id.as_str() == s)
            .ok_or_else(|| UnknownStep(s.to_owned()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownStep(pub String);

impl fmt::Display for UnknownStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known: Vec<&str> = StepId::ALL.iter().map(|s| s.as_str()).collect();
        write!(
            f,
            "unknown step {:?}; steps are {}",
            self.0,
            known.join(", ")
        )
    }
}

impl std::error::Error for UnknownStep {}

/// The namespace types of Linux, as named under /proc/PID/ns.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[serde(rename_all = "lowercase")]
pub enum NsKind {
    Uts,
    Pid,
    Mnt,
    Ipc,
    Net,
    User,
    Cgroup,
    Time,
}

impl NsKind {
    pub const ALL: [NsKind; 8] = [
        NsKind::Uts,
        NsKind::Pid,
        NsKind::Mnt,
        NsKind::Ipc,
        NsKind::Net,
        NsKind::User,
        NsKind::Cgroup,
        NsKind::Time,
    ];

    /// The file name under /proc/PID/ns/.
    pub fn proc_name(self) -> &'static str {
        match self {
            NsKind::Uts => "uts",
            NsKind::Pid => "pid",
            NsKind::Mnt => "mnt",
            NsKind::Ipc => "ipc",
            NsKind::Net => "net",
            NsKind::User => "user",
            NsKind::Cgroup => "cgroup",
            NsKind::Time => "time",
        }
    }
}

/// The inode of one namespace type for the host (the observing process) and
/// the box. Equal inodes mean the namespace is shared.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct NsPair {
    pub host: u64,
    #[serde(rename = "box")]
    pub boxed: u64,
}

impl NsPair {
    pub fn is_shared(&self) -> bool {
        self.host == self.boxed
    }
}

/// All eight namespace types, always present.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Namespaces {
    pub uts: NsPair,
    pub pid: NsPair,
    pub mnt: NsPair,
    pub ipc: NsPair,
    pub net: NsPair,
    pub user: NsPair,
    pub cgroup: NsPair,
    pub time: NsPair,
}

impl Namespaces {
    pub fn get(&self, kind: NsKind) -> NsPair {
        match kind {
            NsKind::Uts => self.uts,
            NsKind::Pid => self.pid,
            NsKind::Mnt => self.mnt,
            NsKind::Ipc => self.ipc,
            NsKind::Net => self.net,
            NsKind::User => self.user,
            NsKind::Cgroup => self.cgroup,
            NsKind::Time => self.time,
        }
    }

    pub fn set(&mut self, kind: NsKind, pair: NsPair) {
        let slot = match kind {
            NsKind::Uts => &mut self.uts,
            NsKind::Pid => &mut self.pid,
            NsKind::Mnt => &mut self.mnt,
            NsKind::Ipc => &mut self.ipc,
            NsKind::Net => &mut self.net,
            NsKind::User => &mut self.user,
            NsKind::Cgroup => &mut self.cgroup,
            NsKind::Time => &mut self.time,
        };
        *slot = pair;
    }
}

/// One line of /proc/PID/cgroup: `hierarchy-id:controllers:path`.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct CgroupEntry {
    pub hierarchy: u32,
    /// Empty for the cgroup v2 line (`0::/path`).
    pub controllers: Vec<String>,
    pub path: String,
}

/// Facts about one process, read from /proc/PID on the host.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug, Default)]
pub struct ProcessInfo {
    pub pid: u32,
    pub ppid: u32,
    /// The command name (/proc/PID/comm).
    pub comm: String,
    /// Real, effective, saved and filesystem uid (the `Uid:` line of status).
    pub uid: [u32; 4],
    pub gid: [u32; 4],
    /// The process's pid in each PID namespace it belongs to, outermost first
    /// (the `NSpid:` line of status).
    pub nspid: Vec<u32>,
    /// Where /proc/PID/root points, as the host sees it.
    pub root: String,
    /// Where /proc/PID/cwd points, as the host sees it.
    pub cwd: String,
    /// The hostname in the process's UTS namespace, read from inside it.
    pub hostname: String,
    pub cgroups: Vec<CgroupEntry>,
    /// Capability sets from status, as the kernel prints them (hex). They
    /// count in the process's own user namespace only.
    #[serde(default)]
    pub caps: Capabilities,
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug, Default)]
pub struct Capabilities {
    pub effective: String,
    pub permitted: String,
    pub bounding: String,
}

/// A network interface as seen from inside the box.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct LinkState {
    pub name: String,
    pub up: bool,
    pub addresses: Vec<String>,
}

/// One process as a PID namespace lists it.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct ProcessRow {
    pub pid: u32,
    pub comm: String,
}

/// One process of the box seen from the host: its pid in every PID
/// namespace it belongs to, outermost (the host's) first.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct BoxProcessRow {
    pub nspid: Vec<u32>,
    pub ppid: u32,
    pub comm: String,
}

/// The same processes from both sides.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug, Default)]
pub struct ProcessTree {
    /// The box's processes as the host sees them (the main process and its
    /// descendants).
    pub host_view: Vec<BoxProcessRow>,
    /// Everything `ps` inside the box lists (bounded).
    pub box_view: Vec<ProcessRow>,
    /// How many processes the box's /proc lists in all.
    pub box_total: usize,
}

/// One /proc file read by the host and by the box. Many resolve to the
/// reader's own namespaces, so the two differ once a namespace is separate.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct ProcFile {
    pub path: String,
    pub host: String,
    #[serde(rename = "box")]
    pub boxed: String,
}

/// The IPC demonstration: a POSIX message queue damda made on the host.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct IpcProbe {
    pub name: String,
    pub on_host: bool,
    pub in_box: bool,
}

/// Why the box was rebuilt in another order than the lesson's.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct RebuildNote {
    /// The step the kernel refused in the lesson order.
    pub step: StepId,
    /// What the kernel said when the step was tried on the live box.
    pub refused: StepError,
    /// The order the box was rebuilt in.
    pub order: Vec<StepId>,
}

/// A shell command that does by hand what a step did.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct Command {
    pub shell: String,
}

/// A system call the engine made for a step, with its arguments as written.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct Syscall {
    pub call: String,
}

/// What the kernel showed after one step.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
pub struct Snapshot {
    pub step: StepId,
    /// The host pid of the box's main process.
    pub pid: u32,
    pub namespaces: Namespaces,
    /// True when the box was rebuilt and this step replayed (Back, or an order
    /// the kernel required).
    #[serde(default)]
    pub rebuilt: bool,
    /// The box's main process as the host sees it.
    #[serde(rename = "process")]
    pub box_process: ProcessInfo,
    /// The observing process (the server or the walk) — "the host" of every
    /// comparison. Never PID 1, whose namespaces are not ours to read.
    pub host_process: ProcessInfo,
    pub commands: Vec<Command>,
    pub syscalls: Vec<Syscall>,
    /// The box's network interfaces, from inside.
    #[serde(default)]
    pub links: Vec<LinkState>,
    #[serde(default)]
    pub tree: ProcessTree,
    #[serde(default)]
    pub proc_files: Vec<ProcFile>,
    #[serde(default)]
    pub ipc_probe: Option<IpcProbe>,
    /// Set when the kernel refused the lesson order and the box was rebuilt.
    #[serde(default)]
    pub rebuild: Option<RebuildNote>,
    /// The box's cgroup, from the `cgroups` step on.
    #[serde(default)]
    pub cgroup: Option<CgroupView>,
    /// The bridge, the veth pair and the NAT rules, from the `network` step on.
    #[serde(default)]
    pub network: Option<NetworkView>,
    /// The image the box's root is an overlay of, from the `overlay` step on.
    #[serde(default)]
    pub image: Option<ImageView>,
}

/// The box's root as Docker's overlay2 makes it: the image's read-only
/// layers under a writable upper directory of the box's own.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug, Default)]
pub struct ImageView {
    /// registry/repository:tag.
    pub name: String,
    /// The first 12 hex digits of the config's digest, as `docker images`.
    pub id: String,
    /// The image's Entrypoint and Cmd: what the `run` step starts.
    pub command: Vec<String>,
    /// Bottom layer first.
    pub layers: Vec<LayerView>,
    /// What the box changed: files copied up, created, or whited out.
    pub upper: Vec<UpperEntry>,
    /// The overlay mount as the box's mountinfo lists it.
    pub mount: String,
    /// The upper and work directories on the host.
    pub upper_dir: String,
    pub work_dir: String,
    /// Host directories bound into the box, as `HOST:BOX` (docker run -v).
    #[serde(default)]
    pub volumes: Vec<String>,
    /// The images in the store a box can be built from, by name.
    #[serde(default)]
    pub available: Vec<String>,
    /// The image's service, once the `run` step started it: its pid on the
    /// host.
    #[serde(default)]
    pub service_pid: Option<u32>,
    /// The `docker run` that starts the same service (port and volumes).
    #[serde(default)]
    pub docker: String,
}

/// One read-only layer.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct LayerView {
    /// sha256:… of the compressed blob, as the manifest names it.
    pub digest: String,
    /// sha256:… of the uncompressed tar, as the config's rootfs lists it.
    pub diff_id: String,
    /// Bytes of the stored (compressed) blob.
    pub size: u64,
    /// The build instruction that made it (`docker history`'s CREATED BY).
    pub created_by: String,
    /// Where it is unpacked on the host: one of the overlay's lowerdirs.
    pub dir: String,
}

/// What a path in the upper directory is.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub enum UpperKind {
    File,
    Dir,
    Symlink,
    /// A 0:0 character device: the path is deleted in the merged view.
    Whiteout,
    /// A directory marked opaque: the lower layers' contents are hidden.
    OpaqueDir,
}

/// An import's stage.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub enum ImportStage {
    /// Reading the archive and storing its blobs.
    Reading,
    /// Unpacking the layers.
    Unpacking,
}

impl ImportStage {
    /// The wire name (`unpacking`).
    pub fn as_str(self) -> &'static str {
        match self {
            ImportStage::Reading => "reading",
            ImportStage::Unpacking => "unpacking",
        }
    }
}

/// How far an import is: `done` of `total` bytes of its stage (the blobs
/// read, or the layers' bytes unpacked).
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub struct ImportProgress {
    pub stage: ImportStage,
    pub done: u64,
    pub total: u64,
}

impl ImportProgress {
    /// Done in % of the stage (100 for an empty one).
    pub fn percent(&self) -> u64 {
        (self.done.min(self.total) * 100)
            .checked_div(self.total)
            .unwrap_or(100)
    }
}

impl UpperKind {
    /// The wire name (`opaque_dir`).
    pub fn as_str(self) -> &'static str {
        match self {
            UpperKind::File => "file",
            UpperKind::Dir => "dir",
            UpperKind::Symlink => "symlink",
            UpperKind::Whiteout => "whiteout",
            UpperKind::OpaqueDir => "opaque_dir",
        }
    }
}

/// One entry of the box's upper directory.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct UpperEntry {
    /// As the box sees it, from /.
    pub path: String,
    pub kind: UpperKind,
    pub size: u64,
    /// The lower layer (index, bottom first) that has this path too: a
    /// copy-up or a whiteout hides that layer's version.
    pub hides_layer: Option<usize>,
}

/// Which layer a path of the box's root comes from.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum Provenance {
    /// The box's own upper directory (written or copied up).
    Upper,
    /// A read-only layer, by index (bottom first).
    Layer { index: usize },
    /// Deleted: a whiteout in the upper directory or a layer.
    Deleted,
    /// Nowhere in the root.
    Missing,
}

impl Provenance {
    /// The wire name, the `from` tag (`layer`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Provenance::Upper => "upper",
            Provenance::Layer { .. } => "layer",
            Provenance::Deleted => "deleted",
            Provenance::Missing => "missing",
        }
    }
}

/// The network the `network` step builds, as Docker's default bridge network,
/// read back from the kernel: links and counters by netlink and
/// /proc/PID/net, rules from nftables.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug, Default)]
pub struct NetworkView {
    /// The host's bridge (damda0), like docker0.
    pub bridge: BridgeView,
    /// Every box on the bridge, this one and any other learner's.
    pub ports: Vec<BridgePort>,
    /// The box's interfaces as its own network namespace has them.
    pub inside: Vec<InterfaceView>,
    /// The box's routing table (main), from /proc/PID/net/route.
    pub routes: Vec<RouteView>,
    /// TCP sockets listening in the box, from /proc/PID/net/tcp.
    pub listening: Vec<Listener>,
    /// The forwarded port, like `docker run -p 8081:80`.
    pub forward: Option<PortForward>,
    /// `nft list table ip damda` as the kernel returns it. Live updates leave
    /// it out (`None`): the rules change only with the steps.
    #[serde(default)]
    pub rules: Option<String>,
    /// Host-wide settings the step needs, with the values damda found.
    pub host_settings: Vec<HostSetting>,
    /// Base chains of other tables (Docker's FORWARD policy DROP) that drop
    /// forwarded packets whatever damda's own chains accept.
    pub forward_drops: Vec<String>,
}

/// The host's bridge.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug, Default)]
pub struct BridgeView {
    pub name: String,
    /// The gateway address with its prefix, e.g. 10.221.0.1/24.
    pub address: String,
    /// The subnet boxes get addresses from, e.g. 10.221.0.0/24.
    pub subnet: String,
    pub up: bool,
    pub mac: String,
    pub counters: Counters,
}

/// Bytes and packets through an interface, as the kernel counts them.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Counters {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
}

/// A box's veth pair: the host end on the bridge and the box's address.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct BridgePort {
    /// The host end's name (damda-h…).
    pub veth: String,
    /// The box's address on the bridge.
    pub box_address: String,
    /// The host port forwarded to this box's port 80, if any.
    pub host_port: Option<u16>,
    /// True for the box this snapshot is about.
    pub this_box: bool,
    pub up: bool,
    pub counters: Counters,
}

/// One interface inside the box.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct InterfaceView {
    pub name: String,
    pub addresses: Vec<String>,
    pub counters: Counters,
}

/// One route: `default` or a subnet, through a gateway or on the link.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct RouteView {
    pub destination: String,
    pub gateway: Option<String>,
    pub device: String,
}

/// A listening TCP socket.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct Listener {
    pub address: String,
    pub port: u16,
}

/// A host port forwarded to the box: DNAT for traffic that crosses the
/// bridge or leaves the host itself, the userland proxy for 127.0.0.1.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct PortForward {
    pub host_port: u16,
    pub box_address: String,
    pub box_port: u16,
    /// Where the userland proxy listens (127.0.0.1:PORT).
    pub proxy: String,
}

/// A host-wide setting: its value now and before damda changed it.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct HostSetting {
    /// The sysctl name, e.g. net.ipv4.ip_forward.
    pub name: String,
    pub value: String,
    /// What damda found and restores when its last box leaves the bridge;
    /// `None` when damda did not change it.
    pub before: Option<String>,
}

/// What a box may use. `None` leaves that resource unlimited.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct CgroupLimits {
    /// Memory the box's processes may use (v1 memory.limit_in_bytes, v2
    /// memory.max).
    pub memory_bytes: Option<u64>,
    /// Swap on top of memory (v1 memory.memsw.limit_in_bytes = memory +
    /// swap, v2 memory.swap.max). `Some(0)`: no swap, so a memory hog is
    /// killed rather than swapped out.
    pub swap_bytes: Option<u64>,
    /// CPU time per period, in µs (v1 cpu.cfs_quota_us, v2 the first field of
    /// cpu.max). 50000 of 100000 is half a core.
    pub cpu_quota_us: Option<u64>,
    pub cpu_period_us: u64,
    /// Processes and threads at once (pids.max on both versions).
    pub pids_max: Option<u64>,
    /// Proportional I/O weight, 1..=10000 with 100 the default (v2 io.weight;
    /// v1 blkio.weight, 10..=1000 with 500 the default, is ×5).
    pub io_weight: Option<u16>,
}

impl Default for CgroupLimits {
    /// 64 MiB without swap, half a core, 64 processes.
    fn default() -> Self {
        CgroupLimits {
            memory_bytes: Some(64 << 20),
            swap_bytes: Some(0),
            cpu_quota_us: Some(50_000),
            cpu_period_us: 100_000,
            pids_max: Some(64),
            io_weight: None,
        }
    }
}

impl CgroupLimits {
    /// The CPU limit in cores (`docker run --cpus`), if there is one.
    pub fn cpus(&self) -> Option<f64> {
        self.cpu_quota_us
            .map(|quota| quota as f64 / self.cpu_period_us as f64)
    }
}

/// Usage and limits of one group. A field is `None` where this version or
/// this kernel has no such counter; a `_max` field is also `None` when there
/// is no limit (`max`).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// Bytes charged now (v1 memory.usage_in_bytes, v2 memory.current).
    pub memory_current: Option<u64>,
    pub memory_max: Option<u64>,
    /// Processes the kernel's OOM killer killed in this group (v1
    /// memory.oom_control `oom_kill`, v2 memory.events `oom_kill`).
    pub memory_events_oom_kill: Option<u64>,
    /// v1 only: how often usage hit the limit (memory.failcnt).
    pub memory_failcnt: Option<u64>,
    /// CPU time used, in µs (v1 cpuacct.usage in ns, v2 cpu.stat usage_usec).
    pub cpu_usage_usec: Option<u64>,
    /// CFS bandwidth periods that had runnable tasks, and how many of them
    /// ran out of quota (cpu.stat on both versions).
    pub nr_periods: Option<u64>,
    pub nr_throttled: Option<u64>,
    pub throttled_usec: Option<u64>,
    pub pids_current: Option<u64>,
    pub pids_max: Option<u64>,
    /// Forks refused because pids.max was reached (pids.events `max`).
    pub pids_events_max: Option<u64>,
    /// Bytes read and written on block devices (v1
    /// blkio.throttle.io_service_bytes_recursive, v2 io.stat).
    pub io_read_bytes: Option<u64>,
    pub io_write_bytes: Option<u64>,
}

/// One file written into cgroupfs, with the value written.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct CgroupFile {
    pub path: String,
    pub value: String,
}

/// The box's cgroup after the `cgroups` step: where it is, what was written,
/// and how to do the same by hand on either version.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
pub struct CgroupView {
    /// `v1` or `v2`: the version the box's limits are on.
    pub version: String,
    /// The host's layout in one line (v1, v2, or hybrid).
    pub layout: String,
    /// The box's cgroup directories (one per v1 hierarchy, one on v2).
    pub dirs: Vec<String>,
    pub limits: CgroupLimits,
    pub written: Vec<CgroupFile>,
    /// The equivalent commands on the version in use.
    pub commands: Vec<String>,
    /// The same limits on the other version, as files and commands.
    pub other_version: String,
    pub other_files: Vec<CgroupFile>,
    pub other_commands: Vec<String>,
    /// `docker run --memory … --cpus … --pids-limit …`.
    pub docker: String,
    /// Limits this kernel could not take, with the reason.
    pub skipped: Vec<String>,
    pub usage: CgroupStats,
}

/// A demonstration that makes a limit felt, bounded in time and size.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub enum Demo {
    /// Allocates past the memory limit: the kernel OOM-kills it.
    MemoryHog,
    /// Forks until pids.max refuses.
    ForkBomb,
    /// Spins: throttled to its CPU quota.
    CpuHog,
}

impl Demo {
    /// The wire name (`fork_bomb`).
    pub fn as_str(self) -> &'static str {
        match self {
            Demo::MemoryHog => "memory_hog",
            Demo::ForkBomb => "fork_bomb",
            Demo::CpuHog => "cpu_hog",
        }
    }
}

/// A step the kernel refused, with the real errno.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct StepError {
    pub syscall: String,
    pub errno: i32,
    /// The errno's symbolic name, such as `EPERM`.
    pub errno_name: String,
    pub message: String,
}

/// What `damda walk` prints for a step that failed.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct StepFailure {
    pub step: StepId,
    pub error: StepError,
}

/// A step in the lesson order, as `GET /api/steps` lists it.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct StepInfo {
    pub id: StepId,
    pub title_ko: String,
    pub title_en: String,
    /// False for steps this build cannot apply yet; `goto` refuses them.
    pub available: bool,
}

/// The most runs one comparison makes (each boots a VM: seconds apiece
/// under software emulation).
pub const MAX_COMPARE_RUNS: u32 = 5;

/// How qemu ran the comparison's VM.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum Accelerator {
    /// Hardware virtualization: the guest's code runs on the CPU.
    Kvm,
    /// Software emulation: qemu translates every guest instruction, so the
    /// VM's CPU figures measure the emulator, not virtualization.
    Tcg,
}

/// Where a comparison is.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub enum CompareStage {
    /// Building the VM's initramfs from the image.
    Preparing,
    /// The short boot that decides between KVM and TCG.
    KvmTrial,
    /// Run `run` of the container side.
    Container,
    /// Run `run` of the VM side.
    Vm,
}

impl CompareStage {
    /// The wire name (`kvm_trial`).
    pub fn as_str(self) -> &'static str {
        match self {
            CompareStage::Preparing => "preparing",
            CompareStage::KvmTrial => "kvm_trial",
            CompareStage::Container => "container",
            CompareStage::Vm => "vm",
        }
    }
}

/// What a figure measures; the page and the CLI name it.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub enum FigureId {
    /// From launch to the workload's first line of output.
    FirstOutput,
    /// From launch to the workload's exit.
    Exit,
    /// The VM's qemu RSS vs the box's cgroup memory usage, with the
    /// server idle after the workload.
    Memory,
    /// Kernel + initramfs vs the image's layers.
    Disk,
    /// Hashing data: CPU-bound.
    Cpu,
    /// Opening, reading and closing a small file: syscall-heavy.
    Files,
    /// Starting short processes: fork, exec, exit, wait.
    Forks,
    /// One HTTP request through a forwarded host port to a small server.
    Request,
    /// From asking it to stop to the VM or box being gone.
    Teardown,
}

impl FigureId {
    /// Every figure, in the order a comparison reports them.
    pub const ALL: [FigureId; 9] = [
        FigureId::FirstOutput,
        FigureId::Exit,
        FigureId::Memory,
        FigureId::Disk,
        FigureId::Cpu,
        FigureId::Files,
        FigureId::Forks,
        FigureId::Request,
        FigureId::Teardown,
    ];

    /// The wire name (`first_output`).
    pub fn as_str(self) -> &'static str {
        match self {
            FigureId::FirstOutput => "first_output",
            FigureId::Exit => "exit",
            FigureId::Memory => "memory",
            FigureId::Disk => "disk",
            FigureId::Cpu => "cpu",
            FigureId::Files => "files",
            FigureId::Forks => "forks",
            FigureId::Request => "request",
            FigureId::Teardown => "teardown",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub enum FigureUnit {
    Milliseconds,
    Bytes,
}

impl FigureUnit {
    /// `value` in this unit, for people: milliseconds with the precision
    /// their size warrants (seconds from 10 s), bytes in binary units. The
    /// command line's table and the page's charts both write it so.
    pub fn text(self, value: f64) -> String {
        match self {
            FigureUnit::Milliseconds if value >= 10_000.0 => format!("{:.1} s", value / 1000.0),
            FigureUnit::Milliseconds if value >= 100.0 => format!("{value:.0} ms"),
            FigureUnit::Milliseconds if value >= 10.0 => format!("{value:.1} ms"),
            FigureUnit::Milliseconds => format!("{value:.2} ms"),
            FigureUnit::Bytes => binary_size(value.max(0.0).round() as u64),
        }
    }
}

/// Bytes in the largest binary unit that keeps the number at 1 or more.
pub fn binary_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// One figure's samples over the runs.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug, Default)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub samples: Vec<f64>,
}

/// A named part of a figure (the disk's files).
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct FigurePart {
    pub name: String,
    pub bytes: u64,
}

/// One measured figure on both sides.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
pub struct Figure {
    pub id: FigureId,
    pub unit: FigureUnit,
    pub container: Spread,
    pub vm: Spread,
    /// True where the VM's figure depends on the accelerator (times of
    /// guest code): under TCG it measures the emulator.
    pub emulated: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_parts: Vec<FigurePart>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vm_parts: Vec<FigurePart>,
}

/// A VM-vs-container comparison, as `damda compare --json` prints it.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
pub struct Comparison {
    pub accelerator: Accelerator,
    /// What the KVM trial boot showed (why TCG ran, when it did).
    pub kvm_trial: String,
    pub runs: u32,
    pub host_kernel: String,
    pub guest_kernel: String,
    /// The first line the guest's /init printed in the last run: its uptime
    /// and `uname -r`, proof the workload ran inside the VM.
    pub guest_init: String,
    pub vm_memory_mib: u32,
    pub vm_cpus: u32,
    /// The box's CPU limit, in CPUs.
    pub container_cpus: f64,
    pub image: String,
    /// The workload both ran, as a shell script.
    pub workload: String,
    /// How to do each side by hand.
    pub vm_command: String,
    pub container_command: String,
    pub figures: Vec<Figure>,
}

/// A lesson rendered to HTML, as `GET /api/lessons/{lang}/{id}` returns it.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct Lesson {
    pub id: String,
    pub lang: String,
    pub title: String,
    pub html: String,
}

/// From the page to the server.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ClientMessage {
    /// Apply the next step to the live box.
    Next,
    /// Go one step back: the box is rebuilt and steps replayed.
    Back,
    /// Start again at `host` with a fresh box.
    Reset,
    /// Go to any available step, forward (apply) or backward (replay).
    Goto { step: StepId },
    /// Take over the box of an earlier connection of this tab (after a reload).
    Resume { session: String },
    /// Run one shell command inside the box (as `nsenter -t PID -a sh -c`),
    /// streaming its output back.
    Exec { command: String },
    /// Ctrl-C: SIGINT to the running command.
    Interrupt,
    /// The chroot escape demonstration: a root process in the box climbs out
    /// of its chroot; its output comes back like a command's.
    Escape,
    /// A cgroup demonstration in the box; output comes back like a command's.
    Demo { demo: Demo },
    /// Limits for the `cgroups` step (applied now if the box is past it).
    Limits { limits: CgroupLimits },
    /// Whether the page shows live usage (it stops sampling when hidden).
    Watch { on: bool },
    /// Which layer provides `path` of the box's root (from `overlay` on).
    Which { path: String },
    /// Saves the box's upper directory as a new layer on top of its image,
    /// tagged `name` (registry/repository:tag), as `docker commit`.
    Commit { name: String },
    /// Builds the box again from the image `name` (its `overlay` step and
    /// after mount that image).
    Image { name: String },
    /// Imports an image from a file or directory on the server's host (a
    /// `docker save` tarball or an OCI layout), as `damda import PATH`.
    /// Loopback pages only.
    Import { path: String },
    /// Runs the same workload in a fresh box and in a VM on this host,
    /// `runs` times (1..=MAX_COMPARE_RUNS), and reports both. One
    /// comparison at a time per server.
    Compare { runs: u32 },
}

/// Which output stream a chunk came from.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// A word of a command line as the server and the page show it: as is when
/// a shell reads it unchanged, else in single quotes.
pub fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/-_.:=,@%+".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The longest command the terminal accepts, in bytes.
pub const MAX_COMMAND_BYTES: usize = 4096;

/// Why the server refused a request. The page shows `message` and keeps the
/// connection; nothing about the box changes.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, or not a message this server knows.
    BadMessage,
    /// Larger than the server accepts.
    TooLarge,
    /// A step id the server does not know or cannot apply yet.
    UnknownStep,
    /// Back at the first step, Next at the last.
    NoSuchMove,
    /// The kernel refused a step; `error` holds the syscall and errno.
    StepFailed,
    /// Resume named a session that no longer exists.
    NoSuchSession,
    /// The server already runs as many boxes as it allows.
    TooManyBoxes,
    /// The box could not be started or observed.
    BoxFailed,
    /// A command is already running in this terminal.
    CommandRunning,
    /// Nothing to interrupt.
    NoCommand,
    /// Not allowed on this server (the terminal outside loopback).
    NotAllowed,
    /// Limits the kernel would refuse or that make no sense here.
    BadLimits,
    /// The demonstration needs a step the box has not reached.
    NotYet,
    /// A comparison is already running on this server.
    CompareRunning,
    /// The comparison could not finish (the VM did not boot, …).
    CompareFailed,
}

impl ErrorCode {
    /// The wire name (`bad_limits`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadMessage => "bad_message",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::UnknownStep => "unknown_step",
            ErrorCode::NoSuchMove => "no_such_move",
            ErrorCode::StepFailed => "step_failed",
            ErrorCode::NoSuchSession => "no_such_session",
            ErrorCode::TooManyBoxes => "too_many_boxes",
            ErrorCode::BoxFailed => "box_failed",
            ErrorCode::CommandRunning => "command_running",
            ErrorCode::NoCommand => "no_command",
            ErrorCode::NotAllowed => "not_allowed",
            ErrorCode::BadLimits => "bad_limits",
            ErrorCode::NotYet => "not_yet",
            ErrorCode::CompareRunning => "compare_running",
            ErrorCode::CompareFailed => "compare_failed",
        }
    }
}

/// From the server to the page.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerMessage {
    /// Sent first on every connection: the id to keep for `resume`.
    Session {
        id: String,
    },
    Snapshot(Box<Snapshot>),
    /// Work that takes a while (a replay) has started.
    Busy {
        message: String,
    },
    /// A chunk of the running command's output.
    Output {
        stream: OutputStream,
        data: String,
    },
    /// Live usage of the box's cgroup, about once a second while watched.
    Usage(Box<CgroupStats>),
    /// The box's network with fresh counters, about once a second while
    /// watched, from the `network` step on (`rules` left out).
    Network(Box<NetworkView>),
    /// The box's upper directory (copy-ups and whiteouts) when it changed,
    /// checked about once a second while watched, from the `overlay` step on.
    Changes {
        upper: Vec<UpperEntry>,
    },
    /// The answer to `which`.
    Which {
        path: String,
        provenance: Provenance,
    },
    /// How far an `import` is.
    Progress(ImportProgress),
    /// How far a `compare` is: at `stage` of run `run` of `runs`.
    Comparing {
        stage: CompareStage,
        run: u32,
        runs: u32,
    },
    /// The finished comparison.
    Compared(Box<Comparison>),
    /// `import` stored these images.
    Imported {
        names: Vec<String>,
    },
    /// `commit` made this image: its name, id and layers (the base image's,
    /// shared, then the new one).
    Committed {
        name: String,
        id: String,
        layers: Vec<LayerView>,
    },
    /// The command ended: its exit code, or the signal that ended it.
    Exited {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<i32>,
    },
    Error {
        code: ErrorCode,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<StepId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<StepError>,
    },
}

/// The largest message the server accepts from a page, in bytes.
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 16 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_are_tagged_by_type() {
        let goto: ClientMessage = serde_json::from_str(r#"{"type":"goto","step":"uts"}"#).unwrap();
        assert_eq!(goto, ClientMessage::Goto { step: StepId::Uts });
        let next: ClientMessage = serde_json::from_str(r#"{"type":"next"}"#).unwrap();
        assert_eq!(next, ClientMessage::Next);
        let resume: ClientMessage =
            serde_json::from_str(r#"{"type":"resume","session":"abc"}"#).unwrap();
        assert_eq!(
            resume,
            ClientMessage::Resume {
                session: "abc".into()
            }
        );
    }

    #[test]
    fn figures_read_well_at_any_size() {
        let ms = FigureUnit::Milliseconds;
        assert_eq!(ms.text(0.4213), "0.42 ms");
        assert_eq!(ms.text(52.14), "52.1 ms");
        assert_eq!(ms.text(5130.4), "5130 ms");
        assert_eq!(ms.text(12_345.0), "12.3 s");
        assert_eq!(FigureUnit::Bytes.text(8_283_750.0), "7.9 MiB");
        assert_eq!(binary_size(1023), "1023 B");
        assert_eq!(binary_size(1536), "1.5 KiB");
    }

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_word("/www"), "/www");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn unknown_step_is_refused_by_name() {
        let err = serde_json::from_str::<ClientMessage>(r#"{"type":"goto","step":"vm"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("vm"), "{err}");
        let parse = "vm".parse::<StepId>().unwrap_err().to_string();
        assert!(parse.contains("host, chroot, uts"), "{parse}");
    }

    #[test]
    fn step_ids_round_trip_in_lesson_order() {
        for (i, id) in StepId::ALL.iter().enumerate() {
            assert_eq!(id.index(), i);
            assert_eq!(id.as_str().parse::<StepId>().unwrap(), *id);
            let json = serde_json::to_string(id).unwrap();
            assert_eq!(json, format!("\"{}\"", id.as_str()));
        }
        assert!(StepId::Host < StepId::Uts);
    }

    /// The name serde writes for a unit variant (or an internally tagged
    /// enum's tag), to compare with `as_str`.
    fn wire_name<T: Serialize>(value: &T, tag: Option<&str>) -> String {
        let json = serde_json::to_value(value).unwrap();
        let name = match tag {
            Some(tag) => &json[tag],
            None => &json,
        };
        name.as_str().unwrap().to_owned()
    }

    #[test]
    fn as_str_is_the_wire_name() {
        // One of each variant (a new one belongs here too).
        let stages = [
            CompareStage::Preparing,
            CompareStage::KvmTrial,
            CompareStage::Container,
            CompareStage::Vm,
        ];
        for stage in stages {
            assert_eq!(wire_name(&stage, None), stage.as_str());
        }
        for id in FigureId::ALL {
            assert_eq!(wire_name(&id, None), id.as_str());
        }
        let kinds = [
            UpperKind::File,
            UpperKind::Dir,
            UpperKind::Symlink,
            UpperKind::Whiteout,
            UpperKind::OpaqueDir,
        ];
        for kind in kinds {
            assert_eq!(wire_name(&kind, None), kind.as_str());
        }
        let sources = [
            Provenance::Upper,
            Provenance::Layer { index: 2 },
            Provenance::Deleted,
            Provenance::Missing,
        ];
        for source in sources {
            assert_eq!(wire_name(&source, Some("from")), source.as_str());
        }
        for demo in [Demo::MemoryHog, Demo::ForkBomb, Demo::CpuHog] {
            assert_eq!(wire_name(&demo, None), demo.as_str());
        }
        for stage in [ImportStage::Reading, ImportStage::Unpacking] {
            assert_eq!(wire_name(&stage, None), stage.as_str());
        }
        let codes = [
            ErrorCode::BadMessage,
            ErrorCode::TooLarge,
            ErrorCode::UnknownStep,
            ErrorCode::NoSuchMove,
            ErrorCode::StepFailed,
            ErrorCode::NoSuchSession,
            ErrorCode::TooManyBoxes,
            ErrorCode::BoxFailed,
            ErrorCode::CommandRunning,
            ErrorCode::NoCommand,
            ErrorCode::NotAllowed,
            ErrorCode::BadLimits,
            ErrorCode::NotYet,
            ErrorCode::CompareRunning,
            ErrorCode::CompareFailed,
        ];
        for code in codes {
            assert_eq!(wire_name(&code, None), code.as_str());
        }
    }

    #[test]
    fn namespaces_serialise_all_eight_with_host_and_box() {
        let mut ns = Namespaces::default();
        ns.set(NsKind::Uts, NsPair { host: 1, boxed: 2 });
        let value: serde_json::Value = serde_json::to_value(ns).unwrap();
        for kind in NsKind::ALL {
            let pair = &value[kind.proc_name()];
            assert!(pair["host"].is_u64() && pair["box"].is_u64(), "{kind:?}");
        }
        assert_eq!(value["uts"]["box"], 2);
        assert!(!ns.uts.is_shared());
        assert!(ns.pid.is_shared());
    }

    #[test]
    fn server_error_omits_empty_fields() {
        let msg = ServerMessage::Error {
            code: ErrorCode::NoSuchMove,
            message: "already at the first step".into(),
            step: None,
            error: None,
        };
        let json = serde_json::to_string(&msg).unwrap();
        assert_eq!(
            json,
            r#"{"type":"error","code":"no_such_move","message":"already at the first step"}"#
        );
    }
}
