//! A box's own cgroup: placement, limits, moving processes in, live
//! statistics, and removal.

use super::layout::{CgroupVersion, Layout};
use super::limits::{docker_command, v1_writes, v2_writes, Limits, LimitsCheck, DEVICE_ALLOW_LIST};
use super::stats::{parse_stats, CgroupStats};
use super::{read_file, valid_name, write_file, CgroupError, FileWrite, Skipped};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The leaf a v2 server moves its own processes into, so that its group may
/// hand controllers to the boxes beside it.
pub const SERVER_LEAF: &str = "damda-server";

/// The v1 controllers a box gets a group in. cpuset is left out: a new v1
/// cpuset group starts with no CPUs and no memory nodes, and the box would
/// need them copied in before it could be moved there.
const V1_CONTROLLERS: [&str; 6] = ["memory", "cpu", "cpuacct", "pids", "blkio", "devices"];
/// The v2 controllers enabled for boxes (for their limits and their
/// statistics).
const V2_CONTROLLERS: [&str; 4] = ["memory", "pids", "cpu", "io"];

/// How long removal waits for a group's last processes to leave.
const REMOVE_PATIENCE: Duration = Duration::from_secs(2);

/// One directory of a box's group: one per hierarchy on v1, one on v2.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct GroupDir {
    pub controllers: Vec<String>,
    pub path: PathBuf,
}

/// A step of making the group, in the order it was taken.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Mkdir { path: PathBuf },
    Write(FileWrite),
}

impl Op {
    fn command(&self) -> String {
        match self {
            Op::Mkdir { path } => format!("mkdir {}", path.display()),
            Op::Write(write) => write.command(),
        }
    }
}

/// A box's group, made by [`BoxCgroup::create`].
#[derive(Debug)]
pub struct BoxCgroup {
    name: String,
    version: CgroupVersion,
    dirs: Vec<GroupDir>,
    limits: Limits,
    ops: Vec<Op>,
    skipped: Vec<Skipped>,
    moved: Vec<u32>,
}

/// Where a v2 box goes, given where the server stands.
#[derive(Debug, PartialEq, Eq)]
enum V2Placement {
    /// The server is in the real root group, which may hold processes and
    /// hand out controllers at once: boxes go straight beneath it.
    Root,
    /// The server already sits in its leaf: boxes go beside it.
    BesideLeaf,
    /// Move these processes into a new leaf, then put boxes beside it: the
    /// server and its own children, or everything in a container's root
    /// group (docker-in-docker does the same).
    IntoLeaf { pids: Vec<u32> },
    /// Others share the server's group (a terminal's session scope): leave
    /// them be and put boxes beside the server's group, in its parent, as
    /// container engines do under systemd.
    BesideOwn,
}

fn decide_v2(
    is_real_root: bool,
    own_name: Option<&str>,
    own_is_mount_root: bool,
    procs: &[u32],
    ours: &dyn Fn(u32) -> bool,
) -> V2Placement {
    if is_real_root {
        V2Placement::Root
    } else if own_name == Some(SERVER_LEAF) {
        V2Placement::BesideLeaf
    } else if procs.iter().all(|&pid| ours(pid)) || own_is_mount_root {
        V2Placement::IntoLeaf {
            pids: procs.to_vec(),
        }
    } else {
        V2Placement::BesideOwn
    }
}

/// The parent pid from /proc/PID/stat (field 4, counted after the last `)`).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Whether `pid` is this process or one of its descendants.
fn ours(pid: u32) -> bool {
    let me = std::process::id();
    let mut current = pid;
    for _ in 0..64 {
        if current == me {
            return true;
        }
        match parent_of(current) {
            Some(parent) if parent > 1 => current = parent,
            _ => return false,
        }
    }
    false
}

fn parse_pids(text: &str) -> Vec<u32> {
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// The processes directly in the group at `dir`.
fn procs_of(dir: &Path) -> Result<Vec<u32>, CgroupError> {
    read_file(&dir.join("cgroup.procs")).map(|text| parse_pids(&text))
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

/// Where v2 boxes go now, and what must happen first.
fn v2_base(layout: &Layout) -> Result<(PathBuf, V2Placement), CgroupError> {
    let unified = layout.unified().ok_or(CgroupError::NotMounted)?;
    let own = unified.own_dir()?;
    // Only the real root group lacks cgroup.type.
    let is_real_root = !own.join("cgroup.type").exists();
    let procs = if is_real_root {
        Vec::new()
    } else {
        procs_of(&own)?
    };
    let placement = decide_v2(
        is_real_root,
        own.file_name().and_then(|n| n.to_str()),
        own == unified.mount_point,
        &procs,
        &ours,
    );
    let base = match placement {
        V2Placement::Root | V2Placement::IntoLeaf { .. } => own,
        V2Placement::BesideLeaf | V2Placement::BesideOwn => own
            .parent()
            .filter(|parent| parent.starts_with(&unified.mount_point))
            .ok_or_else(|| {
                CgroupError::Placement(format!("{} has no parent group", own.display()))
            })?
            .to_owned(),
    };
    Ok((base, placement))
}

/// The v1 hierarchies a box gets a directory in.
fn v1_dirs(layout: &Layout, name: &str) -> Result<Vec<GroupDir>, CgroupError> {
    let mut dirs: Vec<GroupDir> = Vec::new();
    for hierarchy in layout.hierarchies() {
        if !hierarchy
            .controllers
            .iter()
            .any(|c| V1_CONTROLLERS.contains(&c.as_str()))
        {
            continue;
        }
        let path = hierarchy.own_dir()?.join(name);
        if dirs.iter().any(|d| d.path == path) {
            continue;
        }
        dirs.push(GroupDir {
            controllers: hierarchy.controllers.clone(),
            path,
        });
    }
    Ok(dirs)
}

/// Files a kernel may lack without anything being wrong, and why.
fn optional_reason(file: &str) -> Option<&'static str> {
    match file {
        "memory.memsw.limit_in_bytes" | "memory.swap.max" => {
            Some("swap accounting is off in this kernel (no swap limit to set)")
        }
        "blkio.weight" | "io.weight" => Some("no proportional I/O scheduler offers a weight here"),
        _ => None,
    }
}

fn rmdir_patiently(dir: &Path) -> Result<bool, CgroupError> {
    let deadline = Instant::now() + REMOVE_PATIENCE;
    let mut pause = Duration::from_millis(5);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(true),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            // Processes that were killed leave their group a moment later.
            Err(err) if err.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            Err(err) => return Err(CgroupError::io("removing", dir)(err)),
        }
    }
}

/// SIGKILLs every process in the group at `dir` (never the caller itself)
/// until it is empty: cgroup.kill where the kernel has it (v2, 5.14), else
/// the pids in cgroup.procs, again while a fork bomb keeps refilling it.
/// Returns how many kills were sent. A missing group has nothing to kill.
pub fn kill_processes(dir: &Path) -> Result<usize, CgroupError> {
    let me = std::process::id();
    let kill_file = dir.join("cgroup.kill");
    if kill_file.exists() && !procs_of(dir).unwrap_or_default().contains(&me) {
        write_file(&kill_file, "1")?;
    }
    let deadline = Instant::now() + REMOVE_PATIENCE;
    let mut sent = 0;
    loop {
        let pids = match procs_of(dir) {
            Ok(pids) => pids,
            Err(err) if err.errno() == Some(libc::ENOENT) => return Ok(sent),
            Err(err) => return Err(err),
        };
        let others: Vec<u32> = pids.into_iter().filter(|&pid| pid != me).collect();
        if others.is_empty() || Instant::now() > deadline {
            return Ok(sent);
        }
        for pid in others {
            let Ok(raw) = i32::try_from(pid) else {
                continue;
            };
            if nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(raw),
                nix::sys::signal::Signal::SIGKILL,
            )
            .is_ok()
            {
                sent += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Kills what is in the group at `dir` and in any group below it, then
/// removes them all (deepest first). For the ledger: a box that was root on
/// the host may have made groups of its own below its group.
pub(crate) fn kill_and_remove_tree(dir: &Path) -> Result<bool, CgroupError> {
    if let Ok(listing) = std::fs::read_dir(dir) {
        for entry in listing.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                kill_and_remove_tree(&entry.path())?;
            }
        }
    }
    kill_processes(dir)?;
    rmdir_patiently(dir)
}

impl BoxCgroup {
    /// Where [`BoxCgroup::create`] will make the group's directories: record
    /// each in the ledger (`Entry::Cgroup`) before calling it.
    pub fn planned_dirs(layout: &Layout, name: &str) -> Result<Vec<PathBuf>, CgroupError> {
        if !valid_name(name) || name == SERVER_LEAF {
            return Err(CgroupError::BadName(name.to_owned()));
        }
        match layout.version() {
            CgroupVersion::V1 => Ok(v1_dirs(layout, name)?.into_iter().map(|d| d.path).collect()),
            CgroupVersion::V2 => Ok(vec![v2_base(layout)?.0.join(name)]),
        }
    }

    /// Makes the box's group `name` (`damda-…`) and writes `limits` into it;
    /// nothing is moved in yet ([`BoxCgroup::move_pid`]).
    ///
    /// On v1 it goes under the server's own group in each hierarchy with a
    /// controller damda uses. On v2 the server's own processes first move
    /// into the leaf [`SERVER_LEAF`] when they are alone in their group, and
    /// the box goes beside that leaf; when others share the server's group,
    /// the box goes beside the server's group. Either way the controllers
    /// are enabled in the parent's cgroup.subtree_control.
    ///
    /// On failure, whatever was made is removed again.
    pub fn create(layout: &Layout, name: &str, limits: &Limits) -> Result<BoxCgroup, CgroupError> {
        limits.validate()?;
        if !valid_name(name) || name == SERVER_LEAF {
            return Err(CgroupError::BadName(name.to_owned()));
        }
        let mut group = BoxCgroup {
            name: name.to_owned(),
            version: layout.version(),
            dirs: Vec::new(),
            limits: limits.clone(),
            ops: Vec::new(),
            skipped: Vec::new(),
            moved: Vec::new(),
        };
        let made = match group.version {
            CgroupVersion::V1 => group.create_v1(layout),
            CgroupVersion::V2 => group.create_v2(layout),
        };
        match made.and_then(|()| group.write_limits()) {
            Ok(()) => Ok(group),
            Err(err) => {
                for dir in group.dirs.iter().rev() {
                    let _ = std::fs::remove_dir(&dir.path);
                }
                Err(err)
            }
        }
    }

    fn mkdir(&mut self, path: &Path) -> Result<(), CgroupError> {
        std::fs::create_dir(path).map_err(CgroupError::io("creating", path))?;
        self.ops.push(Op::Mkdir {
            path: path.to_owned(),
        });
        Ok(())
    }

    fn write(&mut self, path: &Path, value: &str) -> Result<(), CgroupError> {
        write_file(path, value)?;
        self.ops
            .push(Op::Write(FileWrite::new(path.to_owned(), value.to_owned())));
        Ok(())
    }

    fn create_v1(&mut self, layout: &Layout) -> Result<(), CgroupError> {
        for controller in self.limits.controllers_needed() {
            let v1_name = if controller == "io" {
                "blkio"
            } else {
                controller
            };
            if layout.hierarchy_of(v1_name).is_none() && controller != "io" {
                return Err(CgroupError::ControllerMissing {
                    controller,
                    path: "/sys/fs/cgroup".into(),
                    hint: " (no v1 hierarchy has it mounted)",
                });
            }
        }
        for dir in v1_dirs(layout, &self.name)? {
            self.mkdir(&dir.path)?;
            self.dirs.push(dir);
        }
        Ok(())
    }

    fn create_v2(&mut self, layout: &Layout) -> Result<(), CgroupError> {
        let (base, placement) = v2_base(layout)?;
        if let V2Placement::IntoLeaf { pids } = placement {
            self.move_into_leaf(&base, pids)?;
        }
        self.enable_controllers(&base)?;
        let path = base.join(&self.name);
        self.mkdir(&path)?;
        let controllers = words(&read_file(&path.join("cgroup.controllers"))?);
        self.dirs.push(GroupDir { controllers, path });
        Ok(())
    }

    /// Moves the processes of `group` into its new leaf, again while new
    /// ones appear (a process forked during the move lands in the old group).
    fn move_into_leaf(&mut self, group: &Path, mut pids: Vec<u32>) -> Result<(), CgroupError> {
        let leaf = group.join(SERVER_LEAF);
        match std::fs::create_dir(&leaf) {
            Ok(()) => self.ops.push(Op::Mkdir { path: leaf.clone() }),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(CgroupError::io("creating", &leaf)(err)),
        }
        let procs = leaf.join("cgroup.procs");
        for _ in 0..20 {
            if pids.is_empty() {
                return Ok(());
            }
            for pid in pids {
                match write_file(&procs, &pid.to_string()) {
                    Ok(()) => self
                        .ops
                        .push(Op::Write(FileWrite::new(procs.clone(), pid.to_string()))),
                    // It exited meanwhile.
                    Err(err) if err.errno() == Some(libc::ESRCH) => {}
                    Err(err) => return Err(err),
                }
            }
            pids = procs_of(group)?;
        }
        Err(CgroupError::Placement(format!(
            "processes keep appearing in {} while moving them into {SERVER_LEAF}",
            group.display()
        )))
    }

    /// Enables the box controllers in `base`'s cgroup.subtree_control, one
    /// by one (a controller the base was not offered is an error only when a
    /// limit needs it).
    fn enable_controllers(&mut self, base: &Path) -> Result<(), CgroupError> {
        let offered = words(&read_file(&base.join("cgroup.controllers"))?);
        let subtree = base.join("cgroup.subtree_control");
        let enabled = words(&read_file(&subtree)?);
        let needed = self.limits.controllers_needed();
        for controller in V2_CONTROLLERS {
            if enabled.iter().any(|c| c == controller) {
                continue;
            }
            if !offered.iter().any(|c| c == controller) {
                if needed.contains(&controller) && controller != "io" {
                    return Err(CgroupError::ControllerMissing {
                        controller,
                        path: base.to_owned(),
                        hint: " (its parent does not list it in cgroup.subtree_control)",
                    });
                }
                self.skipped.push(Skipped {
                    path: subtree.clone(),
                    reason: format!("the {controller} controller is not offered here"),
                });
                continue;
            }
            self.write(&subtree, &format!("+{controller}"))?;
        }
        Ok(())
    }

    /// The directory of the box's group that has `controller` (v1), or its
    /// one directory (v2).
    fn dir_of(&self, controller: &str) -> Option<PathBuf> {
        match self.version {
            CgroupVersion::V2 => self.dirs.first().map(|d| d.path.clone()),
            CgroupVersion::V1 => self
                .dirs
                .iter()
                .find(|d| d.controllers.iter().any(|c| c == controller))
                .map(|d| d.path.clone()),
        }
    }

    fn write_limits(&mut self) -> Result<(), CgroupError> {
        let writes = match self.version {
            CgroupVersion::V1 => v1_writes(&self.limits, &|c| self.dir_of(c)),
            CgroupVersion::V2 => match self.dirs.first() {
                Some(dir) => v2_writes(&self.limits, &dir.path),
                None => Vec::new(),
            },
        };
        for write in writes {
            let file = write
                .path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            let mut path = write.path.clone();
            if !path.exists() && file == "blkio.weight" {
                // BFQ's own weight file, where BFQ is the scheduler.
                path.set_file_name("blkio.bfq.weight");
            }
            if !path.exists() {
                if let Some(reason) = optional_reason(&file) {
                    self.skipped.push(Skipped {
                        path: write.path,
                        reason: reason.to_owned(),
                    });
                    continue;
                }
            }
            self.write(&path, &write.value)?;
        }
        Ok(())
    }

    /// Moves process `pid` (all its threads) into the box's group, in every
    /// hierarchy on v1.
    pub fn move_pid(&mut self, pid: u32) -> Result<(), CgroupError> {
        let paths: Vec<PathBuf> = self
            .dirs
            .iter()
            .map(|d| d.path.join("cgroup.procs"))
            .collect();
        for procs in paths {
            self.write(&procs, &pid.to_string())?;
        }
        self.moved.push(pid);
        Ok(())
    }

    /// The processes in the box's group now.
    pub fn procs(&self) -> Result<Vec<u32>, CgroupError> {
        let mut all = Vec::new();
        for dir in &self.dirs {
            for pid in procs_of(&dir.path)? {
                if !all.contains(&pid) {
                    all.push(pid);
                }
            }
        }
        Ok(all)
    }

    /// Usage and limits, read from the group's files now.
    pub fn stats(&self) -> CgroupStats {
        parse_stats(self.version, &|file| {
            // On v1 a file's prefix names its hierarchy (memory.*, blkio.*).
            let controller = file.split('.').next().unwrap_or_default();
            let dir = self.dir_of(controller)?;
            std::fs::read_to_string(dir.join(file)).ok()
        })
    }

    /// How much more memory the groups above the box allow before they
    /// themselves are full (the smallest limit − usage among them), or None
    /// when none of them is limited. On v1 the box is charged to the
    /// server's group too: check this before an OOM demo.
    pub fn memory_headroom(&self) -> Option<u64> {
        let (limit_file, usage_file) = match self.version {
            CgroupVersion::V1 => ("memory.limit_in_bytes", "memory.usage_in_bytes"),
            CgroupVersion::V2 => ("memory.max", "memory.current"),
        };
        let box_dir = self.dir_of("memory")?;
        let mut headroom: Option<u64> = None;
        for dir in box_dir.ancestors().skip(1) {
            let Ok(limit) = std::fs::read_to_string(dir.join(limit_file)) else {
                break;
            };
            // `max` (v2) and v1's huge "no limit" value limit nothing.
            let limit = match limit.trim().parse::<u64>() {
                Ok(limit) if limit < 1 << 62 => limit,
                _ => continue,
            };
            let usage = std::fs::read_to_string(dir.join(usage_file))
                .ok()
                .and_then(|u| u.trim().parse::<u64>().ok())
                .unwrap_or(0);
            let room = limit.saturating_sub(usage);
            headroom = Some(headroom.map_or(room, |h| h.min(room)));
        }
        headroom
    }

    /// SIGKILLs every process in the box's group (the demos' bound).
    pub fn kill_all(&self) -> Result<usize, CgroupError> {
        let mut sent = 0;
        for dir in &self.dirs {
            sent += kill_processes(&dir.path)?;
        }
        Ok(sent)
    }

    /// Removes the box's group in every hierarchy. Kills nothing: the caller
    /// kills the box's processes first; an exiting process leaves its group
    /// a moment after its death, so EBUSY is retried briefly. A directory
    /// already gone is fine. Keeps going past a failure and returns the first.
    pub fn remove(&mut self) -> Result<(), CgroupError> {
        let mut first = None;
        for dir in self.dirs.iter().rev() {
            if let Err(err) = rmdir_patiently(&dir.path) {
                first.get_or_insert(err);
            }
        }
        first.map_or(Ok(()), Err)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The group's directories (one per v1 hierarchy, one on v2).
    pub fn dirs(&self) -> &[GroupDir] {
        &self.dirs
    }

    /// Every mkdir and write made, in order (the server's own move into its
    /// v2 leaf included).
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Every file written, in order.
    pub fn written(&self) -> Vec<FileWrite> {
        self.ops
            .iter()
            .filter_map(|op| match op {
                Op::Write(write) => Some(write.clone()),
                Op::Mkdir { .. } => None,
            })
            .collect()
    }

    /// Limit files this kernel does not offer, and why they were left out.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// The pid the commands move in: the last moved, else a placeholder.
    fn pid_word(&self) -> String {
        self.moved
            .last()
            .map_or_else(|| "$BOX_PID".to_owned(), u32::to_string)
    }

    /// The files that carry these limits on `version`: the ones written when
    /// it is the version in use, else where they would go on a typical host
    /// of the other version (/sys/fs/cgroup/NAME on v2,
    /// /sys/fs/cgroup/CONTROLLER/NAME on v1).
    pub fn files_for(&self, version: CgroupVersion) -> Vec<FileWrite> {
        if version == self.version {
            return self.written();
        }
        let root = Path::new("/sys/fs/cgroup");
        match version {
            CgroupVersion::V1 => v1_writes(&self.limits, &|c| Some(root.join(c).join(&self.name))),
            CgroupVersion::V2 => v2_writes(&self.limits, &root.join(&self.name)),
        }
    }

    /// The shell commands that build the same group by hand on `version`,
    /// then the `docker run` that asks Docker for the same limits.
    pub fn equivalent_commands(&self, version: CgroupVersion) -> Vec<String> {
        let pid = self.pid_word();
        let mut commands: Vec<String> = Vec::new();
        if version == self.version {
            commands.extend(self.ops.iter().map(Op::command));
            if self.moved.is_empty() {
                for dir in &self.dirs {
                    commands.push(format!(
                        "echo {pid} > {}",
                        dir.path.join("cgroup.procs").display()
                    ));
                }
            }
        } else {
            let root = Path::new("/sys/fs/cgroup");
            match version {
                CgroupVersion::V1 => {
                    let controllers = ["memory", "cpu", "cpuacct", "pids", "blkio", "devices"];
                    for c in controllers {
                        commands.push(format!("mkdir {}", root.join(c).join(&self.name).display()));
                    }
                    commands.extend(self.files_for(version).iter().map(FileWrite::command));
                    for c in controllers {
                        commands.push(format!(
                            "echo {pid} > {}",
                            root.join(c).join(&self.name).join("cgroup.procs").display()
                        ));
                    }
                }
                CgroupVersion::V2 => {
                    commands.push(format!(
                        "echo '{}' > {}",
                        V2_CONTROLLERS.map(|c| format!("+{c}")).join(" "),
                        root.join("cgroup.subtree_control").display()
                    ));
                    commands.push(format!("mkdir {}", root.join(&self.name).display()));
                    commands.extend(self.files_for(version).iter().map(FileWrite::command));
                    commands.push(format!(
                        "echo {pid} > {}",
                        root.join(&self.name).join("cgroup.procs").display()
                    ));
                }
            }
        }
        if version == CgroupVersion::V2 {
            let allowed: Vec<String> = DEVICE_ALLOW_LIST
                .iter()
                .map(|(rule, node)| format!("{rule} ({node})"))
                .collect();
            commands.push(format!(
                "# devices: v2 has no files for them; runc attaches an eBPF program \
                 (bpf(BPF_PROG_ATTACH, BPF_CGROUP_DEVICE)) that allows only {}",
                allowed.join(", ")
            ));
        }
        commands.push(docker_command(&self.limits));
        commands
    }
}

/// Undoes the v2 server placement at shutdown, once every box is gone:
/// turns off the controllers in the group's cgroup.subtree_control (a group
/// that held processes had none on), moves the processes in
/// [`SERVER_LEAF`] back into the group and removes the leaf. Does nothing
/// on v1, or when the server never moved. Returns the writes made.
pub fn restore_server_placement(layout: &Layout) -> Result<Vec<FileWrite>, CgroupError> {
    let mut writes = Vec::new();
    if layout.version() != CgroupVersion::V2 {
        return Ok(writes);
    }
    let unified = layout.unified().ok_or(CgroupError::NotMounted)?;
    let leaf = unified.own_dir()?;
    if leaf.file_name().and_then(|n| n.to_str()) != Some(SERVER_LEAF) {
        return Ok(writes);
    }
    let group = leaf
        .parent()
        .ok_or_else(|| CgroupError::Placement(format!("{} has no parent", leaf.display())))?
        .to_owned();
    let others: Vec<String> = std::fs::read_dir(&group)
        .map_err(CgroupError::io("listing", &group))?
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name != SERVER_LEAF)
        .collect();
    if !others.is_empty() {
        return Err(CgroupError::Placement(format!(
            "groups still exist beside the server in {}: {}",
            group.display(),
            others.join(", ")
        )));
    }
    let subtree = group.join("cgroup.subtree_control");
    for controller in words(&read_file(&subtree)?).iter().rev() {
        let value = format!("-{controller}");
        write_file(&subtree, &value)?;
        writes.push(FileWrite::new(subtree.clone(), value));
    }
    let procs = group.join("cgroup.procs");
    for _ in 0..20 {
        let pids = procs_of(&leaf)?;
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            match write_file(&procs, &pid.to_string()) {
                Ok(()) => writes.push(FileWrite::new(procs.clone(), pid.to_string())),
                Err(err) if err.errno() == Some(libc::ESRCH) => {}
                Err(err) => return Err(err),
            }
        }
    }
    rmdir_patiently(&leaf)?;
    Ok(writes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::layout::{Hierarchy, Unified};

    #[test]
    fn v2_placement_follows_the_no_internal_processes_rule() {
        let mine = |pid: u32| pid == 10 || pid == 11;
        // The real root may hold processes and children at once.
        assert_eq!(decide_v2(true, None, true, &[], &mine), V2Placement::Root);
        // Already in the leaf: beside it.
        assert_eq!(
            decide_v2(false, Some(SERVER_LEAF), false, &[10], &mine),
            V2Placement::BesideLeaf
        );
        // Alone with its own children (a systemd service): into a leaf.
        assert_eq!(
            decide_v2(false, Some("damda.service"), false, &[10, 11], &mine),
            V2Placement::IntoLeaf { pids: vec![10, 11] }
        );
        // Sharing a terminal's session scope: leave the others, go beside.
        assert_eq!(
            decide_v2(false, Some("session-3.scope"), false, &[7, 10], &mine),
            V2Placement::BesideOwn
        );
        // A container's root group cannot be left upwards: move everyone.
        assert_eq!(
            decide_v2(false, None, true, &[1, 10], &mine),
            V2Placement::IntoLeaf { pids: vec![1, 10] }
        );
    }

    #[test]
    fn this_process_is_ours_and_init_is_not() {
        assert!(ours(std::process::id()));
        assert!(!ours(1));
        assert_eq!(
            parent_of(std::process::id()),
            Some(std::os::unix::process::parent_id())
        );
    }

    #[test]
    fn names_are_checked_before_anything_is_made() {
        let layout = Layout::V1 {
            hierarchies: vec![Hierarchy {
                controllers: vec!["pids".into()],
                mount_point: "/nonexistent/pids".into(),
                mount_root: "/".into(),
                own: "/".into(),
            }],
        };
        for name in ["box", "damda-../../etc", SERVER_LEAF] {
            assert!(matches!(
                BoxCgroup::create(&layout, name, &Limits::default()),
                Err(CgroupError::BadName(_))
            ));
        }
        assert_eq!(
            BoxCgroup::planned_dirs(&layout, "damda-x").unwrap(),
            [PathBuf::from("/nonexistent/pids/damda-x")]
        );
        // Bad limits are refused before any mkdir too.
        let limits = Limits {
            pids_max: Some(0),
            ..Limits::default()
        };
        assert!(matches!(
            BoxCgroup::create(&layout, "damda-x", &limits),
            Err(CgroupError::PidsZero)
        ));
    }

    fn sample(version: CgroupVersion) -> BoxCgroup {
        let dir = PathBuf::from("/sys/fs/cgroup/memory/process_api/abc/damda-x");
        let mut group = BoxCgroup {
            name: "damda-x".into(),
            version,
            dirs: vec![GroupDir {
                controllers: vec!["memory".into()],
                path: dir.clone(),
            }],
            limits: Limits::default(),
            ops: vec![Op::Mkdir { path: dir.clone() }],
            skipped: Vec::new(),
            moved: vec![4242],
        };
        group.ops.push(Op::Write(FileWrite::new(
            dir.join("memory.limit_in_bytes"),
            "67108864",
        )));
        group
            .ops
            .push(Op::Write(FileWrite::new(dir.join("cgroup.procs"), "4242")));
        group
    }

    #[test]
    fn commands_for_the_version_in_use_replay_what_was_done() {
        let group = sample(CgroupVersion::V1);
        let commands = group.equivalent_commands(CgroupVersion::V1);
        assert_eq!(
            commands,
            [
                "mkdir /sys/fs/cgroup/memory/process_api/abc/damda-x",
                "echo 67108864 > /sys/fs/cgroup/memory/process_api/abc/damda-x/memory.limit_in_bytes",
                "echo 4242 > /sys/fs/cgroup/memory/process_api/abc/damda-x/cgroup.procs",
                "docker run --rm -it --memory 64m --memory-swap 64m --cpus 0.5 --pids-limit 64 busybox sh",
            ]
        );
        assert_eq!(group.written().len(), 2);
    }

    #[test]
    fn commands_for_the_other_version_use_its_usual_paths() {
        let group = sample(CgroupVersion::V1);
        let commands = group.equivalent_commands(CgroupVersion::V2);
        assert_eq!(
            commands[0],
            "echo '+memory +pids +cpu +io' > /sys/fs/cgroup/cgroup.subtree_control"
        );
        assert_eq!(commands[1], "mkdir /sys/fs/cgroup/damda-x");
        assert!(
            commands.contains(&"echo '50000 100000' > /sys/fs/cgroup/damda-x/cpu.max".to_owned())
        );
        assert!(commands.contains(&"echo 4242 > /sys/fs/cgroup/damda-x/cgroup.procs".to_owned()));
        assert!(commands
            .iter()
            .any(|c| c.starts_with("# devices: v2 has no files")));
        assert!(commands.last().unwrap().starts_with("docker run"));

        let group = sample(CgroupVersion::V2);
        let commands = group.equivalent_commands(CgroupVersion::V1);
        assert!(commands.contains(&"mkdir /sys/fs/cgroup/pids/damda-x".to_owned()));
        assert!(
            commands.contains(&"echo a > /sys/fs/cgroup/devices/damda-x/devices.deny".to_owned())
        );
        assert!(
            commands.contains(&"echo 4242 > /sys/fs/cgroup/memory/damda-x/cgroup.procs".to_owned())
        );
        assert_eq!(
            group.files_for(CgroupVersion::V1)[0].path,
            Path::new("/sys/fs/cgroup/memory/damda-x/memory.limit_in_bytes")
        );
    }

    #[test]
    fn v2_layouts_without_a_mount_cannot_place() {
        let layout = Layout::V2 {
            unified: Unified {
                mount_point: "/nonexistent/cgroup".into(),
                mount_root: "/".into(),
                own: "/a".into(),
            },
        };
        // No cgroup.type there reads as the real root, whose procs are not
        // read; the base is the own group.
        assert_eq!(
            BoxCgroup::planned_dirs(&layout, "damda-x").unwrap(),
            [PathBuf::from("/nonexistent/cgroup/a/damda-x")]
        );
    }
}
