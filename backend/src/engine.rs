//! A box and its steps: forward applies the next step to the live helper,
//! backward destroys the box and replays the steps before on a fresh one.
//! Where the kernel refuses the lesson order, the box is rebuilt in the order
//! it accepts ([`steps::kernel_order`]) and the refusal kept for the page.
//! After every step the box is observed from the host and a snapshot made.
//!
//! The engine is synchronous; the server runs it on blocking threads.

use crate::cgroups::{BoxCgroup, CgroupError, Layout, Limits, LimitsCheck};
use crate::helper::parent::{HelperError, HelperExe, HelperProcess};
use crate::helper::{InsideFacts, Reply, Request};
use crate::image::{Image, ImageStore, LayerInfo, Reference, UnpackOptions, DEFAULT_IMAGE};
use crate::ledger::{process_start_time, Entry, Ledger, LedgerError};
use crate::mqueue;
use crate::network::{self, Attachment, NetworkConfig, NetworkError};
use crate::observe::{self, ObserveError, Target};
use crate::rootfs::{self, RootfsError};
use crate::steps::{self, BoxSpec, IdMap, OverlayPlan, Phase, Volume};
use damda_protocol::{
    CgroupFile, CgroupStats, CgroupView, Command, ImageView, IpcProbe, LayerView, LinkState,
    NetworkView, ProcFile, ProcessTree, Provenance, RebuildNote, Snapshot, StepError, StepId,
    Syscall, UpperEntry,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Helper(#[from] HelperError),
    #[error(transparent)]
    Observe(#[from] ObserveError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("preparing the box's root: {0}")]
    Rootfs(#[from] RootfsError),
    #[error("writing {path}: {source}")]
    IdMap {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("step {step}: {}", error.message)]
    StepFailed { step: StepId, error: StepError },
    #[error("step {0} is not available in this build")]
    NotAvailable(StepId),
    #[error("limits refused: {0}")]
    BadLimits(CgroupError),
    #[error("{0}")]
    NoSuchMove(&'static str),
    #[error("the box helper refused: {0}")]
    Refused(String),
    #[error("the image: {0}")]
    Image(Box<crate::image::StoreError>),
    #[error("preparing the overlay: {0}")]
    OverlayDirs(std::io::Error),
    #[error("{0}")]
    NotYet(&'static str),
    #[error("image {name}: {why}")]
    BadImage { name: String, why: String },
    #[error("committing: {0}")]
    Commit(Box<crate::image::BuildError>),
}

// Boxed: image errors are large, and every step's result carries this type.
impl From<crate::image::StoreError> for EngineError {
    fn from(err: crate::image::StoreError) -> Self {
        EngineError::Image(Box::new(err))
    }
}

impl From<crate::image::BuildError> for EngineError {
    fn from(err: crate::image::BuildError) -> Self {
        EngineError::Commit(Box::new(err))
    }
}

/// Where boxes come from; shared by every box of one server or walk.
pub struct EngineConfig {
    /// The prepared rootfs each box copies.
    pub rootfs: PathBuf,
    /// Where the boxes' directories go (data/boxes).
    pub boxes: PathBuf,
    pub hostname: String,
    pub ids: IdMap,
    /// The damda binary boxes are run from.
    pub helper_binary: PathBuf,
    /// The limits the `cgroups` step sets unless a page asks for others.
    pub limits: Limits,
    /// The bridge network the `network` step attaches boxes to.
    pub network: NetworkConfig,
    /// The image store (data/images) and the image the `overlay` step
    /// mounts.
    pub images: PathBuf,
    pub image: Reference,
    /// Host directories bound into every box at the `overlay` step.
    pub volumes: Vec<Volume>,
    /// The VM kernel and modules set-up unpacked (data/vm), for the
    /// VM-vs-container comparison.
    pub vm: PathBuf,
}

impl EngineConfig {
    /// The defaults: the prepared rootfs and data/boxes of `paths`.
    pub fn defaults(paths: &crate::paths::Paths) -> Self {
        EngineConfig {
            rootfs: paths.rootfs(),
            boxes: paths.boxes(),
            hostname: "damda-box".to_owned(),
            // Root in a box's user namespace is uid 100000 on the host, as
            // rootless runtimes map by default.
            ids: IdMap {
                outside: 100_000,
                count: 65_536,
            },
            helper_binary: PathBuf::from("/proc/self/exe"),
            limits: Limits::default(),
            network: NetworkConfig::default(),
            images: paths.images(),
            image: DEFAULT_IMAGE
                .parse()
                .expect("the default image's name is valid"),
            volumes: Vec::new(),
            vm: paths.vm(),
        }
    }

    /// The image store, its layers unpacked owned by the boxes' mapped ids.
    pub fn store(&self) -> Result<ImageStore, crate::image::StoreError> {
        ImageStore::open_with(
            &self.images,
            UnpackOptions {
                owner_offset: self.ids.outside,
                ..UnpackOptions::default()
            },
        )
    }
}

pub struct Engine {
    exe: HelperExe,
    ledger: Arc<Ledger>,
    config: EngineConfig,
    /// The host's cgroup layout, or why it could not be read.
    layout: Result<Layout, String>,
}

impl Engine {
    pub fn new(ledger: Arc<Ledger>, config: EngineConfig) -> Result<Self, EngineError> {
        Ok(Engine {
            exe: HelperExe::seal(&config.helper_binary)?,
            ledger,
            config,
            layout: Layout::detect().map_err(|e| e.to_string()),
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn default_limits(&self) -> &Limits {
        &self.config.limits
    }

    pub fn network_config(&self) -> &NetworkConfig {
        &self.config.network
    }

    /// At exit: removes what the ledger still holds, this instance's places
    /// on the bridge, and (on cgroup v2, where the first box moved this
    /// process into a leaf of its own) puts the process back. Returns every
    /// error; keeps going past each.
    pub fn shutdown(&self) -> Vec<String> {
        let mut errors = self.ledger.close().errors;
        // The boxes' processes are gone; their places on the bridge go next.
        errors.extend(crate::network::release_own(&self.config.network).1);
        if let Ok(layout) = &self.layout {
            if let Err(err) = crate::cgroups::restore_server_placement(layout) {
                errors.push(format!("restoring this process's cgroup: {err}"));
            }
        }
        errors
    }
}

impl Engine {
    /// Imports a `docker save` tarball or an OCI layout into the store, its
    /// layers unpacked for the boxes' mapped ids; returns the names stored.
    pub fn import(
        &self,
        path: &Path,
        progress: &mut dyn FnMut(crate::image::Progress),
    ) -> Result<Vec<String>, EngineError> {
        let store = self.config.store()?;
        let names = crate::image::import(&store, path, None, progress).map_err(|err| {
            EngineError::BadImage {
                name: path.display().to_string(),
                why: err.to_string(),
            }
        })?;
        Ok(names.iter().map(ToString::to_string).collect())
    }

    /// A command that runs in the box whose main process is `pid` (and in
    /// its cgroup, given the cgroup.procs files): `what` is a shell command
    /// line, the chroot escape, or a cgroup demonstration.
    pub fn box_command(
        &self,
        pid: u32,
        cgroup_procs: &[PathBuf],
        what: BoxCommand<'_>,
    ) -> std::process::Command {
        use crate::cgroups::demo::Workload;
        use crate::helper::enter::{DEMO_ARG, ENTER_ARG, ESCAPE_ARG};
        let pid = pid.to_string();
        let args: Vec<String> = match what {
            BoxCommand::Shell(line) => vec![ENTER_ARG.into(), pid, line.into()],
            BoxCommand::Escape => vec![ESCAPE_ARG.into(), pid],
            BoxCommand::Demo(demo) => {
                let workload = match demo {
                    // The hog stops 32 MiB past the box's limit, whatever this says.
                    damda_protocol::Demo::MemoryHog => Workload::HogMemory { bytes: 1 << 30 },
                    damda_protocol::Demo::ForkBomb => Workload::ForkBomb { seconds: 5.0 },
                    damda_protocol::Demo::CpuHog => Workload::BurnCpu { seconds: 5.0 },
                };
                let mut args = vec![DEMO_ARG.into(), pid];
                args.extend(workload.args());
                args
            }
        };
        let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut command = self.exe.command(&arg_refs, 2);
        let joined: Vec<String> = cgroup_procs
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        if !joined.is_empty() {
            command.env(crate::helper::enter::CGROUP_ENV, joined.join(":"));
        }
        command
    }
}

/// What a command in the box runs.
#[derive(Debug, Clone, Copy)]
pub enum BoxCommand<'a> {
    Shell(&'a str),
    Escape,
    Demo(damda_protocol::Demo),
}

fn random_id() -> String {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).expect("the kernel's random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A helper and everything made for it on the host, each recorded in the
/// ledger before it exists and removed when the box goes.
struct LiveBox {
    helper: Option<HelperProcess>,
    spec: BoxSpec,
    id: String,
    /// data/boxes/damda-ID: the copied root, or the overlay's directories.
    dir: PathBuf,
    cgroup: Option<BoxCgroup>,
    /// The box's place on the bridge, from the `network` step on.
    network: Option<Attachment>,
    /// The image whose layers the `overlay` step mounts, once prepared.
    image: Option<(Image, Vec<LayerInfo>)>,
    queue: String,
    owned: Vec<Entry>,
    ledger: Arc<Ledger>,
}

impl LiveBox {
    /// A fresh box; with `on_image`, built for the `overlay` step from the
    /// start: its root is the image's overlay, entered by pivot_root, and it
    /// has no copy of the rootfs and no chroot.
    fn start(
        engine: &Engine,
        user_first: bool,
        on_image: Option<&Reference>,
    ) -> Result<Self, EngineError> {
        let id = random_id();
        let dir = engine.config.boxes.join(format!("damda-{id}"));
        // A rootfs that is not there is not copied: the box points at it, and
        // the `chroot` step fails with the kernel's own ENOENT.
        let source_missing = !engine.config.rootfs.exists() && on_image.is_none();
        let root = if source_missing {
            engine.config.rootfs.clone()
        } else {
            dir.join("root")
        };
        let mut live = LiveBox {
            helper: None,
            spec: BoxSpec {
                root: root.clone(),
                hostname: engine.config.hostname.clone(),
                ids: engine.config.ids,
                network: None,
                overlay: None,
                command: Vec::new(),
            },
            queue: format!("/damda-{id}"),
            id,
            dir: dir.clone(),
            cgroup: None,
            network: None,
            image: None,
            owned: Vec::new(),
            ledger: engine.ledger.clone(),
        };
        if let Some(image) = on_image {
            live.prepare_overlay(engine, image)?;
        } else if !source_missing {
            live.own(Entry::Directory { path: dir.clone() })?;
            rootfs::create_box_dir(&dir)?;
            rootfs::copy_tree(&engine.config.rootfs, &root)?;
            rootfs::make_device_nodes(&root)?;
            if user_first {
                rootfs::shift_owner(&root, engine.config.ids.outside)?;
            }
            // The chroot step bind-mounts the root on the host (lesson order).
            live.own(Entry::Mount { path: root })?;
        }
        live.own(Entry::Queue {
            name: live.queue.clone(),
        })?;
        create_queue(&live.queue);
        let helper = HelperProcess::spawn(&engine.exe)?;
        live.own_process(helper.helper_pid())?;
        live.helper = Some(helper);
        Ok(live)
    }

    fn own(&mut self, entry: Entry) -> Result<(), EngineError> {
        self.ledger.record(entry.clone())?;
        self.owned.push(entry);
        Ok(())
    }

    fn own_process(&mut self, pid: u32) -> Result<(), EngineError> {
        let entry = Entry::Process {
            pid,
            start_time: process_start_time(pid).unwrap_or(0),
        };
        if self.owned.contains(&entry) {
            return Ok(());
        }
        self.own(entry)
    }

    fn helper(&mut self) -> &mut HelperProcess {
        self.helper.as_mut().expect("a live box has its helper")
    }

    fn pid(&self) -> u32 {
        self.helper.as_ref().map_or(0, |h| h.pid())
    }

    /// Sends a request; a new main process (the PID namespace's fork) is
    /// recorded as soon as it answers.
    fn request(&mut self, request: &Request) -> Result<Reply, EngineError> {
        let reply = self.helper().request(request)?;
        let pid = self.pid();
        self.own_process(pid)?;
        Ok(reply)
    }

    /// The box's own cgroup: each directory recorded before it is made, the
    /// limits written, the main process moved in.
    fn make_cgroup(&mut self, layout: &Layout, limits: &Limits) -> Result<(), EngineError> {
        let name = format!("damda-{}", self.id);
        let cgroup_step = |err: CgroupError| {
            host_step_failed(
                StepId::Cgroups,
                "cgroup setup",
                err.errno(),
                err.to_string(),
            )
        };
        for path in BoxCgroup::planned_dirs(layout, &name).map_err(cgroup_step)? {
            self.own(Entry::Cgroup { path })?;
        }
        let mut group = BoxCgroup::create(layout, &name, limits).map_err(cgroup_step)?;
        let moved = group.move_pid(self.pid());
        self.cgroup = Some(group);
        moved.map_err(cgroup_step)
    }

    /// The image's layers (unpacked once, owned by the box's mapped ids) and
    /// the box's own upper, work and mount directories in its directory
    /// (made here unless a copied root made it); the box mounts and enters
    /// them at the `overlay` step.
    fn prepare_overlay(
        &mut self,
        engine: &Engine,
        reference: &Reference,
    ) -> Result<(), EngineError> {
        use std::os::unix::fs::{chown, DirBuilderExt};
        let dir = self.dir.clone();
        let owner = self.spec.ids.outside;
        let store = engine.config.store()?;
        let image = store.image(reference)?;
        let layers = store.unpacked_layers(&image)?;
        if !dir.exists() {
            self.own(Entry::Directory { path: dir.clone() })?;
            rootfs::create_box_dir(&dir)?;
        }
        let (upper, work, merged) = (dir.join("upper"), dir.join("work"), dir.join("merged"));
        let made = (|| {
            for (path, mode) in [(&upper, 0o700), (&work, 0o700), (&merged, 0o755)] {
                std::fs::DirBuilder::new().mode(mode).create(path)?;
                chown(path, Some(owner), Some(owner))?;
            }
            // The mount points of the devices bound in from the host.
            let dev = upper.join("dev");
            std::fs::DirBuilder::new().mode(0o755).create(&dev)?;
            chown(&dev, Some(owner), Some(owner))?;
            for device in steps::DEVICES {
                let point = upper.join(device.trim_start_matches('/'));
                std::fs::File::create(&point)?;
                chown(&point, Some(owner), Some(owner))?;
            }
            for volume in &engine.config.volumes {
                // A volume damda makes is the box root's to write; one the
                // user named is left as it is, as Docker leaves it.
                if !volume.host.exists() {
                    std::fs::create_dir_all(&volume.host)?;
                    chown(&volume.host, Some(owner), Some(owner))?;
                }
                let point = upper.join(volume.target.strip_prefix("/").unwrap_or(&volume.target));
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(&point)?;
                chown(&point, Some(owner), Some(owner))?;
            }
            Ok(())
        })();
        made.map_err(EngineError::OverlayDirs)?;
        self.spec.root = merged.clone();
        self.spec.command = image.command();
        self.spec.overlay = Some(OverlayPlan {
            image: reference.to_string(),
            lowers: layers.iter().map(|l| l.dir.clone()).collect(),
            upper,
            work,
            merged,
            volumes: engine.config.volumes.clone(),
        });
        self.image = Some((image, layers));
        Ok(())
    }

    /// Attaches the box to the bridge; its helper configures its end next.
    fn attach_network(&mut self, config: &NetworkConfig) -> Result<Vec<String>, EngineError> {
        let pid = self.pid();
        let (attachment, log) =
            network::attach(config, &self.id, pid).map_err(|err: NetworkError| {
                host_step_failed(
                    StepId::Network,
                    "network setup",
                    err.errno(),
                    err.to_string(),
                )
            })?;
        self.spec.network = Some(attachment.plan.clone());
        self.network = Some(attachment);
        Ok(log)
    }

    /// Root inside the new user namespace is `ids.outside` on the host.
    fn write_id_maps(&self) -> Result<(), EngineError> {
        let line = self.spec.ids.map_line();
        for file in ["uid_map", "gid_map"] {
            let path = PathBuf::from(format!("/proc/{}/{file}", self.pid()));
            std::fs::write(&path, &line).map_err(|source| EngineError::IdMap { path, source })?;
        }
        Ok(())
    }
}

impl Drop for LiveBox {
    fn drop(&mut self) {
        // The processes first, so nothing holds the mounts; the network
        // namespace goes with them, and the veth pair with it.
        drop(self.helper.take());
        drop(self.network.take());
        let report = self.ledger.release(&self.owned);
        for error in report.errors {
            tracing::warn!("removing a box: {error}");
        }
    }
}

/// The IPC demonstration's queue, made on the host where the box can see it
/// until its `ipc` step. Failure only loses the demonstration.
fn create_queue(name: &str) {
    if let Err(errno) = mqueue::create(name) {
        tracing::warn!("mq_open({name}, O_CREAT): {errno}");
    }
}

/// The rebuilds a kernel's refusal can call for.
#[derive(Clone, Copy)]
enum Rebuild {
    /// A chrooted box cannot name the host's layers, and pivot_root refuses
    /// a root that came from chroot.
    WithoutChroot,
    /// The user namespace first: the kernel's order.
    UserFirst,
}

/// One learner's box.
pub struct BoxSession {
    engine: Arc<Engine>,
    live: LiveBox,
    applied: Vec<StepId>,
    /// Built with the user namespace first (the kernel's order), which every
    /// later step keeps; the note says why.
    rebuild: Option<RebuildNote>,
    /// What the `cgroups` step sets.
    limits: Limits,
    /// The box's interfaces at the last snapshot, for live network views.
    inside_links: Vec<LinkState>,
    /// Chains of other tables that drop forwarded traffic, at the last
    /// snapshot.
    forward_drops: Vec<String>,
    /// Set when the `overlay` step rebuilt the box without chroot.
    pivot_note: Option<RebuildNote>,
    /// The image the `overlay` step mounts.
    image: Reference,
}

impl BoxSession {
    fn new(engine: Arc<Engine>, live: LiveBox, limits: Limits) -> Self {
        let image = engine.config.image.clone();
        BoxSession {
            engine,
            live,
            applied: Vec::new(),
            rebuild: None,
            limits,
            inside_links: Vec::new(),
            forward_drops: Vec::new(),
            pivot_note: None,
            image,
        }
    }

    /// A fresh box at `host`.
    pub fn start(engine: Arc<Engine>) -> Result<(Self, Snapshot), EngineError> {
        let live = LiveBox::start(&engine, false, None)?;
        let limits = engine.config.limits.clone();
        let mut session = BoxSession::new(engine, live, limits);
        session.apply_phase(StepId::Host, Phase::Early)?;
        session.applied.push(StepId::Host);
        let snapshot = session.observe(StepId::Host, Vec::new(), false)?;
        Ok((session, snapshot))
    }

    /// A box built at the last step in one go, as a runtime's `run` builds
    /// one: in the kernel's order, on the image from the start, with
    /// `limits`, and nothing observed on the way. What the VM comparison
    /// times.
    pub fn launch(engine: Arc<Engine>, limits: Limits) -> Result<Self, EngineError> {
        let path = steps::path_to(*StepId::ALL.last().expect("steps exist"));
        let image = engine.config.image.clone();
        let live = LiveBox::start(&engine, true, Some(&image))?;
        let mut session = BoxSession::new(engine, live, limits);
        let plan = steps::kernel_order(&path);
        for index in 0..plan.len() {
            session.apply_in_plan(&plan, index)?;
        }
        Ok(session)
    }

    pub fn current(&self) -> StepId {
        *self.applied.last().unwrap_or(&StepId::Host)
    }

    pub fn pid(&self) -> u32 {
        self.live.pid()
    }

    fn user_first(&self) -> bool {
        self.rebuild.is_some()
    }

    /// Applies one phase; returns the calls made.
    fn apply_phase(&mut self, step: StepId, phase: Phase) -> Result<Vec<String>, EngineError> {
        if (step, phase) == (StepId::Overlay, Phase::Early) && self.live.spec.overlay.is_none() {
            // Tried on the live box first: the kernel says why it cannot be.
            let image = self.image.clone();
            self.live.prepare_overlay(&self.engine, &image)?;
        }
        let request = Request::Apply {
            step,
            phase,
            spec: Box::new(self.live.spec.clone()),
        };
        match self.live.request(&request)? {
            Reply::Applied { mut syscalls } => {
                match (step, phase) {
                    (StepId::User, Phase::Early) => self.live.write_id_maps()?,
                    (StepId::Network, Phase::Early) => {
                        syscalls.extend(self.live.attach_network(&self.engine.config.network)?);
                    }
                    (StepId::Cgroups, Phase::Early) => {
                        let layout = self.engine.layout.as_ref().map_err(|why| {
                            EngineError::Refused(format!("no cgroup filesystem to use: {why}"))
                        })?;
                        self.live.make_cgroup(layout, &self.limits)?;
                    }
                    _ => {}
                }
                Ok(syscalls)
            }
            Reply::Failed { error, .. } => Err(EngineError::StepFailed { step, error }),
            Reply::Refused { message } => Err(EngineError::Refused(message)),
            Reply::Inspected { .. } => Err(EngineError::Refused("unexpected reply".into())),
        }
    }

    /// Applies `plan` to the live box, snapshotting each step once its last
    /// phase is done — except the plan's last lesson step, whose snapshot is
    /// taken at the very end, so the final snapshot is always the whole box at
    /// that step (the kernel's order can finish it first).
    /// Applies the phase at `index` of `plan`; a step whose last phase in
    /// the plan this was is applied. Returns the calls made and whether the
    /// step finished.
    fn apply_in_plan(
        &mut self,
        plan: &[(StepId, Phase)],
        index: usize,
    ) -> Result<(Vec<String>, bool), EngineError> {
        let (step, phase) = plan[index];
        let made = self.apply_phase(step, phase)?;
        let finished = !plan[index + 1..].iter().any(|(s, _)| *s == step);
        if finished {
            self.applied.push(step);
            self.applied.sort();
        }
        Ok((made, finished))
    }

    fn run_plan(
        &mut self,
        plan: &[(StepId, Phase)],
        rebuilt: bool,
    ) -> Result<Vec<Snapshot>, EngineError> {
        let target = plan.iter().map(|(step, _)| *step).max();
        let mut snapshots = Vec::new();
        let mut calls: Vec<(StepId, String)> = Vec::new();
        for (index, (step, _)) in plan.iter().enumerate() {
            let (made, finished) = self.apply_in_plan(plan, index)?;
            calls.extend(made.into_iter().map(|call| (*step, call)));
            if finished && Some(*step) != target {
                let own = take_calls(&mut calls, *step);
                snapshots.push(self.observe(*step, own, rebuilt)?);
            }
        }
        if let Some(target) = target {
            let own = take_calls(&mut calls, target);
            snapshots.push(self.observe(target, own, rebuilt)?);
        }
        // Shown in the lesson order whatever order the kernel needed (the
        // user namespace first finishes before `host`).
        snapshots.sort_by_key(|s| s.step);
        Ok(snapshots)
    }

    fn observe(
        &mut self,
        step: StepId,
        syscalls: Vec<String>,
        rebuilt: bool,
    ) -> Result<Snapshot, EngineError> {
        let inspect = Request::Inspect {
            queue: Some(self.live.queue.clone()),
        };
        let (inside, box_total) = match self.live.request(&inspect)? {
            Reply::Inspected { inside, total } => (inside, total),
            _ => return Err(EngineError::Refused("unexpected reply".into())),
        };
        let pid = self.pid();
        let mut box_process = observe::read_process(Target::Pid(pid))?;
        box_process.hostname = inside.hostname.clone();
        let mut host_process = observe::read_process(Target::Myself)?;
        host_process.hostname = observe::own_hostname();
        let mut commands = steps::find(step)
            .map(|s| s.commands(&self.live.spec, pid))
            .unwrap_or_default();
        let layout = self.engine.layout.as_ref().map(Layout::describe);
        let cgroup = self
            .live
            .cgroup
            .as_ref()
            .map(|group| cgroup_view(group, layout.clone().unwrap_or_default()));
        if let (StepId::Cgroups, Some(view)) = (step, &cgroup) {
            commands.extend(view.commands.iter().cloned());
        }
        let network = self.network_view(&inside.links, true);
        if let Some(view) = &network {
            self.forward_drops = view.forward_drops.clone();
        }
        let InsideFacts {
            queue_visible,
            links,
            processes,
            files,
            ..
        } = inside;
        self.inside_links = links.clone();
        Ok(Snapshot {
            step,
            pid,
            namespaces: observe::read_namespaces(pid)?,
            rebuilt,
            box_process,
            host_process,
            commands: commands
                .into_iter()
                .map(|shell| Command { shell })
                .collect(),
            syscalls: syscalls.into_iter().map(|call| Syscall { call }).collect(),
            links,
            tree: ProcessTree {
                host_view: observe::box_tree(pid),
                box_view: processes,
                box_total,
            },
            proc_files: files
                .into_iter()
                .map(|(path, boxed)| ProcFile {
                    host: observe::read_proc_file(&path),
                    path,
                    boxed,
                })
                .collect(),
            ipc_probe: queue_visible.map(|in_box| IpcProbe {
                name: self.live.queue.clone(),
                on_host: mqueue::exists(&self.live.queue),
                in_box,
            }),
            rebuild: self.pivot_note.clone().or_else(|| self.rebuild.clone()),
            cgroup,
            network,
            image: self.image_view(pid),
        })
    }

    /// The box's layers and changes, once its root is the image's overlay.
    fn image_view(&self, pid: u32) -> Option<ImageView> {
        if !self.applied.contains(&StepId::Overlay) {
            return None;
        }
        let (image, layers) = self.live.image.as_ref()?;
        let plan = self.live.spec.overlay.as_ref()?;
        let mountinfo =
            std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
        Some(ImageView {
            name: image.reference.to_string(),
            id: crate::image::short_id(&image.config_digest),
            command: image.command(),
            layers: layers.iter().map(layer_view).collect(),
            upper: self.changes().unwrap_or_default(),
            mount: mountinfo
                .lines()
                .find(|l| l.split_whitespace().nth(4) == Some("/"))
                .unwrap_or_default()
                .to_owned(),
            volumes: plan
                .volumes
                .iter()
                .map(|v| format!("{}:{}", v.host.display(), v.target.display()))
                .collect(),
            available: self
                .engine
                .config
                .store()
                .and_then(|store| store.images())
                .map(|images| images.iter().map(|i| i.reference.to_string()).collect())
                .unwrap_or_default(),
            upper_dir: plan.upper.display().to_string(),
            work_dir: plan.work.display().to_string(),
            service_pid: self
                .applied
                .contains(&StepId::Run)
                .then(|| self.service_pid(pid))
                .flatten(),
            docker: steps::run::docker_line(&self.live.spec),
        })
    }

    /// The image's command running under the box's main process.
    fn service_pid(&self, pid: u32) -> Option<u32> {
        let wanted = self.live.spec.command.join("\0");
        crate::observe::children(pid).into_iter().find(|child| {
            std::fs::read(format!("/proc/{child}/cmdline"))
                .is_ok_and(|line| String::from_utf8_lossy(&line).trim_end_matches('\0') == wanted)
        })
    }

    /// The box's upper directory, from the `overlay` step on: what it
    /// changed in its root.
    pub fn changes(&self) -> Option<Vec<UpperEntry>> {
        if !self.applied.contains(&StepId::Overlay) {
            return None;
        }
        let plan = self.live.spec.overlay.as_ref()?;
        Some(crate::image::upper::list(
            &plan.upper,
            &plan.lowers,
            &plan.own_entries(),
        ))
    }

    /// `docker commit`: the box's upper directory saved as a new layer on
    /// its image, tagged `name`. Returns the new image's name, id and layers.
    pub fn commit(&self, name: &str) -> Result<(String, String, Vec<LayerView>), EngineError> {
        let bad = |why: String| EngineError::BadImage {
            name: name.to_owned(),
            why,
        };
        let reference: Reference = name
            .parse()
            .map_err(|e: crate::image::ReferenceError| bad(e.to_string()))?;
        if reference == self.image {
            return Err(bad(
                "is the box's own image; choose a new name or tag".into()
            ));
        }
        let plan = self
            .live
            .spec
            .overlay
            .as_ref()
            .filter(|_| self.applied.contains(&StepId::Overlay))
            .ok_or(EngineError::NotYet(
                "commit saves the box's upper directory: go to the overlay step first",
            ))?;
        let store = self.engine.config.store()?;
        let (image, layers) = crate::image::commit::commit(
            &store,
            &self.image,
            &plan.upper,
            &plan.own_entries(),
            &reference,
        )?;
        Ok((
            reference.to_string(),
            crate::image::short_id(&image.config_digest),
            layers.iter().map(layer_view).collect(),
        ))
    }

    /// Builds the box again from the image `name`: its `overlay` step and
    /// after mount that image.
    pub fn use_image(&mut self, name: &str) -> Result<Vec<Snapshot>, EngineError> {
        let reference: Reference =
            name.parse()
                .map_err(|e: crate::image::ReferenceError| EngineError::BadImage {
                    name: name.to_owned(),
                    why: e.to_string(),
                })?;
        self.engine.config.store()?.image(&reference)?;
        self.image = reference;
        if self.applied.contains(&StepId::Overlay) {
            let path = self.applied.clone();
            return self.rebuild_at(&path);
        }
        Ok(Vec::new())
    }

    /// Which layer of the box's root provides `path`.
    pub fn which(&self, path: &str) -> Option<Provenance> {
        if !self.applied.contains(&StepId::Overlay) {
            return None;
        }
        let plan = self.live.spec.overlay.as_ref()?;
        Some(crate::image::upper::which(&plan.lowers, &plan.upper, path))
    }

    /// The box's network, once attached; `full` reads the rules too.
    fn network_view(&self, inside: &[LinkState], full: bool) -> Option<NetworkView> {
        let attachment = self.live.network.as_ref()?;
        Some(network::view::observe(
            &self.engine.config.network,
            &attachment.plan,
            &self.live.id,
            self.pid(),
            inside,
            full,
        ))
    }

    /// The network with fresh counters, for the page's live drawing: the
    /// rules left out, the interfaces as the last snapshot listed them.
    pub fn network_traffic(&self) -> Option<NetworkView> {
        let mut view = self.network_view(&self.inside_links, false)?;
        view.forward_drops = self.forward_drops.clone();
        Some(view)
    }

    /// The host's address for the box's port 80, once attached.
    pub fn forwarded_address(&self) -> Option<std::net::SocketAddr> {
        self.live
            .network
            .as_ref()
            .map(network::Attachment::proxy_address)
    }

    /// Live usage of the box's cgroup, once it has one.
    pub fn usage(&self) -> Option<CgroupStats> {
        self.live.cgroup.as_ref().map(BoxCgroup::stats)
    }

    /// Whether the groups above the box leave room for the memory hog to
    /// reach the box's own limit (on v1 the box is charged to the server's
    /// group too): an error saying how much is missing if not.
    pub fn memory_demo_room(&self) -> Result<(), String> {
        let Some(group) = &self.live.cgroup else {
            return Ok(());
        };
        let needed = group.limits().memory_bytes.unwrap_or(0) + crate::cgroups::demo::HOG_EXCESS;
        match group.memory_headroom() {
            Some(room) if room < needed => Err(format!(
                "the groups above the box leave {} MiB, and the memory hog needs {} MiB: \
                 the host itself would reclaim or OOM-kill first; lower the box's memory limit",
                room >> 20,
                needed >> 20
            )),
            _ => Ok(()),
        }
    }

    /// The cgroup.procs files a process joins to be in the box's cgroup.
    pub fn cgroup_procs(&self) -> Vec<PathBuf> {
        self.live
            .cgroup
            .iter()
            .flat_map(|group| group.dirs().iter().map(|d| d.path.join("cgroup.procs")))
            .collect()
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// New limits for the `cgroups` step; a box already past it is rebuilt
    /// with them.
    pub fn set_limits(&mut self, limits: Limits) -> Result<Vec<Snapshot>, EngineError> {
        limits.validate().map_err(EngineError::BadLimits)?;
        self.limits = limits;
        if self.applied.contains(&StepId::Cgroups) {
            let path = self.applied.clone();
            return self.rebuild_at(&path);
        }
        Ok(Vec::new())
    }

    /// Observes the box again at its current step (for a resumed page).
    pub fn snapshot(&mut self) -> Result<Snapshot, EngineError> {
        self.observe(self.current(), Vec::new(), false)
    }

    /// Applies the next available step to the live box.
    pub fn step_forward(&mut self) -> Result<Vec<Snapshot>, EngineError> {
        let step = steps::next_after(self.current()).ok_or(EngineError::NoSuchMove(
            "already at the last available step",
        ))?;
        self.forward(step)
    }

    /// Applies `step` to the live box in the lesson order. If the kernel
    /// refuses and accepts another order, the box is rebuilt in that order
    /// and the refusal kept; otherwise the box is rebuilt at the step before,
    /// so it stays usable, and the error returned.
    fn forward(&mut self, step: StepId) -> Result<Vec<Snapshot>, EngineError> {
        let plan = [(step, Phase::Early), (step, Phase::Late)];
        let refused = match self.run_plan(&plan, false) {
            Err(EngineError::StepFailed { step, error }) => (step, error),
            other => return other,
        };
        let mut path = self.applied.clone();
        path.retain(|s| *s != step);
        let kept = path.clone();
        path.push(step);
        // Which kind of rebuild the kernel's refusal calls for, if any.
        let rebuild = if step == StepId::Overlay && self.pivot_note.is_none() {
            Some(Rebuild::WithoutChroot)
        } else if !self.user_first() && steps::kernel_order(&path) != steps::lesson_order(&path) {
            Some(Rebuild::UserFirst)
        } else {
            None
        };
        if let Some(rebuild) = rebuild {
            *self.note_of(rebuild) = Some(RebuildNote {
                step,
                refused: refused.1.clone(),
                order: order_of(&steps::kernel_order(&path)),
            });
            return match self.rebuild_at(&path) {
                Err(EngineError::StepFailed { step, error }) => {
                    // The kernel's order failed too: back to where we were.
                    *self.note_of(rebuild) = None;
                    self.rebuild_at(&kept)?;
                    Err(EngineError::StepFailed { step, error })
                }
                other => other,
            };
        }
        self.rebuild_at(&kept)?;
        Err(EngineError::StepFailed {
            step: refused.0,
            error: refused.1,
        })
    }

    /// Where the note of a rebuild of this kind is kept.
    fn note_of(&mut self, rebuild: Rebuild) -> &mut Option<RebuildNote> {
        match rebuild {
            Rebuild::WithoutChroot => &mut self.pivot_note,
            Rebuild::UserFirst => &mut self.rebuild,
        }
    }

    /// Destroys the box and builds `path` on a fresh one, in the kernel's
    /// order if the box is built user-first, else in the lesson order.
    fn rebuild_at(&mut self, path: &[StepId]) -> Result<Vec<Snapshot>, EngineError> {
        if !path.contains(&StepId::User) {
            self.rebuild = None;
        }
        let user_first = self.user_first();
        let on_image = path.contains(&StepId::Overlay).then(|| self.image.clone());
        if on_image.is_none() {
            self.pivot_note = None;
        }
        self.live = LiveBox::start(&self.engine, user_first, on_image.as_ref())?;
        self.applied.clear();
        let plan = if user_first {
            steps::kernel_order(path)
        } else {
            steps::lesson_order(path)
        };
        self.run_plan(&plan, true)
    }

    /// One step back: replay up to the step before the current one.
    pub fn back(&mut self) -> Result<Vec<Snapshot>, EngineError> {
        if self.applied.len() <= 1 {
            return Err(EngineError::NoSuchMove("already at the first step"));
        }
        let path = self.applied[..self.applied.len() - 1].to_vec();
        self.rebuild_at(&path)
    }

    /// A fresh box at `host`.
    pub fn reset(&mut self) -> Result<Vec<Snapshot>, EngineError> {
        self.rebuild_at(&[StepId::Host])
    }

    /// Forward by applying, backward by replaying.
    pub fn goto(&mut self, target: StepId) -> Result<Vec<Snapshot>, EngineError> {
        if !steps::is_available(target) {
            return Err(EngineError::NotAvailable(target));
        }
        let current = self.current();
        if target == current {
            return Ok(vec![self.snapshot()?]);
        }
        if target < current {
            return self.rebuild_at(&steps::path_to(target));
        }
        let mut snapshots = Vec::new();
        for step in steps::path_to(target)
            .into_iter()
            .filter(|step| *step > current)
        {
            snapshots.extend(self.forward(step)?);
        }
        Ok(snapshots)
    }
}

/// `v1` or `v2`, as the protocol names them.
fn version_id(version: crate::cgroups::CgroupVersion) -> &'static str {
    match version {
        crate::cgroups::CgroupVersion::V1 => "v1",
        crate::cgroups::CgroupVersion::V2 => "v2",
    }
}

/// What the page shows of a box's cgroup.
fn cgroup_view(group: &BoxCgroup, layout: String) -> CgroupView {
    let files = |writes: Vec<crate::cgroups::FileWrite>| {
        writes
            .into_iter()
            .map(|w| CgroupFile {
                path: w.path.display().to_string(),
                value: w.value,
            })
            .collect()
    };
    let version = group.version();
    let other = version.other();
    CgroupView {
        version: version_id(version).into(),
        layout,
        dirs: group
            .dirs()
            .iter()
            .map(|d| d.path.display().to_string())
            .collect(),
        limits: group.limits().clone(),
        written: files(group.written()),
        commands: group.equivalent_commands(version),
        other_version: version_id(other).into(),
        other_files: files(group.files_for(other)),
        other_commands: group.equivalent_commands(other),
        docker: crate::cgroups::docker_command(group.limits()),
        skipped: group
            .skipped()
            .iter()
            .map(|s| format!("{}: {}", s.path.display(), s.reason))
            .collect(),
        usage: group.stats(),
    }
}

/// A layer as the page shows it.
fn layer_view(layer: &LayerInfo) -> LayerView {
    LayerView {
        digest: layer.digest.to_string(),
        diff_id: layer.diff_id.to_string(),
        size: layer.size,
        created_by: layer.created_by.clone().unwrap_or_default(),
        dir: layer.dir.display().to_string(),
    }
}

/// A step whose host side failed, as the page reports a refused step.
fn host_step_failed(step: StepId, what: &str, errno: Option<i32>, message: String) -> EngineError {
    EngineError::StepFailed {
        step,
        error: StepError {
            syscall: what.into(),
            errno: errno.unwrap_or(0),
            errno_name: errno
                .map(|e| format!("{:?}", nix::errno::Errno::from_raw(e)))
                .unwrap_or_default(),
            message,
        },
    }
}

/// Removes and returns the calls `step` made.
fn take_calls(calls: &mut Vec<(StepId, String)>, step: StepId) -> Vec<String> {
    let (own, rest): (Vec<_>, Vec<_>) = calls.drain(..).partition(|(s, _)| *s == step);
    *calls = rest;
    own.into_iter().map(|(_, call)| call).collect()
}

/// The steps of a plan in the order they start.
fn order_of(plan: &[(StepId, Phase)]) -> Vec<StepId> {
    let mut order: Vec<StepId> = Vec::new();
    for (step, _) in plan {
        if !order.contains(step) {
            order.push(*step);
        }
    }
    order
}
