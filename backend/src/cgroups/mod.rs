//! Control groups: the box's own cgroup, its limits, its live usage, and
//! the demos that make the limits felt.
//!
//! # What a cgroup is
//!
//! A namespace changes what a process can *see*; a cgroup limits what it can
//! *use*. The kernel keeps every process in exactly one cgroup per hierarchy,
//! and each **controller** (memory, cpu, pids, io or blkio, devices, …)
//! accounts for and limits the processes of a group together, children
//! included. The interface is a filesystem: a cgroup is a directory, a limit
//! is a file, `mkdir` creates a group, writing a pid into `cgroup.procs` moves
//! that process in, and `rmdir` removes an empty group. Nothing here needs a
//! system call beyond mkdir, open, read, write and rmdir — which is why the
//! equivalent commands on the page are plain `mkdir` and `echo`.
//!
//! # Version 1 and version 2
//!
//! **v1** (Linux 2.6.24, 2008) mounts one hierarchy per controller or group
//! of controllers: `/sys/fs/cgroup/memory`, `/sys/fs/cgroup/cpu`,
//! `/sys/fs/cgroup/pids`, … Each has its own tree, so a process can sit at
//! `/a` for memory and `/b` for cpu, and `/proc/PID/cgroup` has one line per
//! hierarchy (`4:memory:/process_api/…`). Every controller invented its own
//! files (`memory.limit_in_bytes`, `cpu.cfs_quota_us`, `blkio.weight`).
//!
//! **v2** (the unified hierarchy, stable in Linux 4.5, 2016) mounts a single
//! tree at `/sys/fs/cgroup`, and `/proc/PID/cgroup` has one line, `0::/path`.
//! The files share one grammar (`memory.max`, `cpu.max`, `io.weight`, where
//! `max` means no limit) and two rules shape where groups may go:
//!
//! - A controller is offered to a group only when its parent lists it in
//!   `cgroup.subtree_control` (and the parent's `cgroup.controllers` shows
//!   what the parent itself was offered).
//! - **No internal processes**: a group other than the root cannot both hold
//!   processes and hand domain controllers (memory, io, …) to its children.
//!   A server that sits in a group with processes must therefore move itself
//!   into a leaf before it can create limited children beside it
//!   ([`BoxCgroup::create`] does, into `damda-server`) — or create them beside
//!   its own group, as container engines do under systemd.
//!
//! The devices controller has no files on v2: runc attaches an eBPF program
//! (`BPF_PROG_TYPE_CGROUP_DEVICE`) to the group instead. damda shows that
//! program's allow list but writes files only on v1.
//!
//! Many hosts are **hybrid**: v1 hierarchies for the controllers and a nearly
//! empty cgroup2 tree at `/sys/fs/cgroup/unified` (systemd's process
//! tracking). A controller can be bound to one hierarchy only, so on a hybrid
//! host damda uses the v1 hierarchies, as runc does.
//!
//! # Where the box's group goes
//!
//! On v1, under the server's own group in each hierarchy (read from
//! `/proc/self/cgroup`), as runc does when told a relative path: the box's
//! memory is then charged under the server's group too, so
//! [`BoxCgroup::memory_headroom`] says how much room the ancestors leave
//! before an OOM demo. On v2, see the no-internal-processes rule above and
//! [`BoxCgroup::create`].
//!
//! # What damda never writes: CVE-2022-0492
//!
//! On v1, a hierarchy's root has `release_agent`: a program the kernel runs
//! *as root on the host* when a group with `notify_on_release` set becomes
//! empty. In CVE-2022-0492 a process in a container with a fresh user and
//! cgroup namespace could mount a v1 hierarchy and write `release_agent`,
//! escaping to the host; the kernel now requires CAP_SYS_ADMIN in the
//! initial user namespace for it. damda never writes `release_agent` or
//! `notify_on_release` (and [`write_file`] refuses both names), never mounts
//! cgroupfs inside a box, and never grants a box write access to its group.

mod boxcg;
pub mod demo;
mod layout;
mod limits;
pub mod selftest;
mod stats;

pub(crate) use boxcg::kill_and_remove_tree;
pub use boxcg::{kill_processes, restore_server_placement, BoxCgroup, GroupDir, Op, SERVER_LEAF};
pub use layout::{CgroupVersion, Hierarchy, Layout, Unified};
pub(crate) use limits::blkio_weight;
pub use limits::{
    docker_command, docker_limit_flags, Limits, LimitsCheck, DEVICE_ALLOW_LIST, MAX_PIDS,
    MIN_CPU_US, MIN_MEMORY_BYTES,
};
pub use stats::{parse_stats, stat_files, CgroupStats};

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Everything that can go wrong with cgroups. An I/O error keeps its errno
/// (see [`CgroupError::errno`]) so the page can explain it.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{operation} {path}: {source}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("no cgroup filesystem is mounted (neither v1 hierarchies nor cgroup2)")]
    NotMounted,
    #[error("the {controller} controller is not available at {path}{hint}")]
    ControllerMissing {
        controller: &'static str,
        path: PathBuf,
        hint: &'static str,
    },
    #[error("cannot place the box's cgroup: {0}")]
    Placement(String),
    #[error(
        "cgroup name {0:?} must start with \"damda-\" and use only letters, digits, '-' and '_'"
    )]
    BadName(String),
    #[error("refusing to write {0}: damda never writes release_agent or notify_on_release (CVE-2022-0492)")]
    Forbidden(PathBuf),
    #[error("memory limit {bytes} bytes is below the minimum of 4 MiB (a shell alone needs more)")]
    MemoryTooSmall { bytes: u64 },
    #[error("memory limit {bytes} bytes is larger than any machine (at most 4 PiB)")]
    MemoryTooLarge { bytes: u64 },
    #[error("a swap limit needs a memory limit (swap is counted on top of memory)")]
    SwapWithoutMemory,
    #[error("swap limit {bytes} bytes is larger than any machine (at most 4 PiB)")]
    SwapTooLarge { bytes: u64 },
    #[error("pids limit 0 would forbid even the box's first process")]
    PidsZero,
    #[error("pids limit {pids} is above the kernel's largest pid number ({MAX_PIDS})")]
    PidsTooLarge { pids: u64 },
    #[error("cpu period {period_us} µs must be between 1000 µs (1 ms) and 1000000 µs (1 s)")]
    CpuPeriod { period_us: u64 },
    #[error("cpu quota {quota_us} µs is below the kernel's minimum of 1000 µs per period")]
    CpuQuotaTooSmall { quota_us: u64 },
    #[error("cpu quota {quota_us} µs per {period_us} µs period is more than this machine's {cores} cores (at most {max_us} µs)")]
    CpuQuotaTooLarge {
        quota_us: u64,
        period_us: u64,
        cores: u32,
        max_us: u64,
    },
    #[error("io weight {weight} must be between 1 and 10000 (100 is the default)")]
    IoWeight { weight: u16 },
}

impl CgroupError {
    /// The errno of an I/O error, for the page's errno explanations.
    pub fn errno(&self) -> Option<i32> {
        match self {
            CgroupError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    fn io(operation: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError {
        let path = path.to_owned();
        move |source| CgroupError::Io {
            operation,
            path,
            source,
        }
    }
}

/// One file write into cgroupfs, as the page shows it (`echo VALUE > PATH`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct FileWrite {
    pub path: PathBuf,
    pub value: String,
}

impl FileWrite {
    fn new(path: PathBuf, value: impl Into<String>) -> Self {
        FileWrite {
            path,
            value: value.into(),
        }
    }

    /// The shell command that makes the same write.
    pub fn command(&self) -> String {
        format!(
            "echo {} > {}",
            damda_protocol::shell_word(&self.value),
            self.path.display()
        )
    }
}

/// A limit file the kernel does not offer here, and why it was left out.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

/// Writes `value` into a cgroupfs file in one write(2), as the kernel wants
/// (a short write would be half a command). Refuses the release-agent files.
pub fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
        if name == "release_agent" || name == "notify_on_release" {
            return Err(CgroupError::Forbidden(path.to_owned()));
        }
    }
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(CgroupError::io("opening", path))?;
    file.write_all(value.as_bytes())
        .map_err(CgroupError::io("writing", path))
}

fn read_file(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(CgroupError::io("reading", path))
}

/// Whether `name` is a damda cgroup name: `damda-` then letters, digits,
/// `-` or `_`, at most 64 bytes, so it is always one path component.
pub fn valid_name(name: &str) -> bool {
    name.len() <= 64
        && name.len() > "damda-".len()
        && name.starts_with("damda-")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_damda_component() {
        assert!(valid_name("damda-1a2b3c"));
        assert!(valid_name("damda-selftest_limits-01"));
        assert!(!valid_name("damda-"));
        assert!(!valid_name("box-1"));
        assert!(!valid_name("damda-../x"));
        assert!(!valid_name("damda-a/b"));
        assert!(!valid_name(&format!("damda-{}", "x".repeat(60))));
    }

    #[test]
    fn release_agent_is_never_written() {
        for name in ["release_agent", "notify_on_release"] {
            let path = Path::new("/nonexistent/cgroup").join(name);
            assert!(matches!(
                write_file(&path, "1"),
                Err(CgroupError::Forbidden(_))
            ));
        }
    }

    #[test]
    fn writes_render_as_echo_commands() {
        let write = FileWrite::new("/sys/fs/cgroup/damda-x/cpu.max".into(), "50000 100000");
        assert_eq!(
            write.command(),
            "echo '50000 100000' > /sys/fs/cgroup/damda-x/cpu.max"
        );
        let write = FileWrite::new("/sys/fs/cgroup/pids/damda-x/pids.max".into(), "64");
        assert_eq!(
            write.command(),
            "echo 64 > /sys/fs/cgroup/pids/damda-x/pids.max"
        );
    }

    #[test]
    fn io_errors_keep_their_errno() {
        let err = read_file(Path::new("/nonexistent/damda/cgroup.procs")).unwrap_err();
        assert_eq!(err.errno(), Some(libc::ENOENT));
        assert!(err.to_string().starts_with("reading /nonexistent"));
    }
}
