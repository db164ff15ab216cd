//! Observation from the host: what the kernel says about a process, read
//! from /proc/PID. The parsers are pure functions of the text (tested on
//! fixtures); [`read_process`] and [`read_namespaces`] do the reading.
//!
//! Facts that only exist inside the box's namespaces (its hostname) come from
//! the box helper, never from the server's threads.

use damda_protocol::{
    BoxProcessRow, Capabilities, CgroupEntry, Namespaces, NsKind, NsPair, ProcessInfo,
};
use procfs_core::process::Status;
use procfs_core::FromRead;
use procfs_core::ProcessCGroups;
use std::fs;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
}

/// Which process to read: a pid, or `self` (the observer — "the host").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Pid(u32),
    Myself,
}

impl Target {
    fn path(self, file: &str) -> PathBuf {
        match self {
            Target::Pid(pid) => PathBuf::from(format!("/proc/{pid}/{file}")),
            Target::Myself => PathBuf::from(format!("/proc/self/{file}")),
        }
    }
}

fn read_text(path: PathBuf) -> Result<(PathBuf, String), ObserveError> {
    match fs::read_to_string(&path) {
        Ok(text) => Ok((path, text)),
        Err(source) => Err(ObserveError::Read { path, source }),
    }
}

fn read_link(path: PathBuf) -> Result<(PathBuf, String), ObserveError> {
    match fs::read_link(&path) {
        Ok(target) => Ok((path, target.to_string_lossy().into_owned())),
        Err(source) => Err(ObserveError::Read { path, source }),
    }
}

/// The inode in a namespace link's target, such as `uts:[4026531838]`.
pub fn parse_ns_link(target: &str) -> Option<u64> {
    let (_, rest) = target.split_once(":[")?;
    rest.strip_suffix(']')?.parse().ok()
}

/// The namespace inode of one type for one process.
pub fn namespace_inode(target: Target, kind: NsKind) -> Result<u64, ObserveError> {
    let (path, link) = read_link(target.path(&format!("ns/{}", kind.proc_name())))?;
    parse_ns_link(&link).ok_or_else(|| ObserveError::Parse {
        path,
        reason: format!("unexpected link target {link:?}"),
    })
}

/// All eight namespace inodes of the box next to the observer's own.
pub fn read_namespaces(pid: u32) -> Result<Namespaces, ObserveError> {
    let mut namespaces = Namespaces::default();
    for kind in NsKind::ALL {
        let pair = NsPair {
            host: namespace_inode(Target::Myself, kind)?,
            boxed: namespace_inode(Target::Pid(pid), kind)?,
        };
        namespaces.set(kind, pair);
    }
    Ok(namespaces)
}

/// The lines of /proc/PID/cgroup.
pub fn parse_cgroups(text: &str) -> Result<Vec<CgroupEntry>, String> {
    let groups = ProcessCGroups::from_read(text.as_bytes()).map_err(|e| e.to_string())?;
    Ok(groups
        .into_iter()
        .map(|group| CgroupEntry {
            hierarchy: group.hierarchy,
            controllers: group.controllers,
            path: group.pathname,
        })
        .collect())
}

/// The identity fields of /proc/PID/status, filled into `info`.
pub fn parse_status(text: &str, info: &mut ProcessInfo) -> Result<(), String> {
    let status = Status::from_read(text.as_bytes()).map_err(|e| e.to_string())?;
    info.comm = status.name;
    info.ppid = u32::try_from(status.ppid).unwrap_or(0);
    info.uid = [status.ruid, status.euid, status.suid, status.fuid];
    info.gid = [status.rgid, status.egid, status.sgid, status.fgid];
    info.nspid = status
        .nspid
        .unwrap_or_default()
        .into_iter()
        .filter_map(|pid| u32::try_from(pid).ok())
        .collect();
    info.caps = Capabilities {
        effective: format!("{:016x}", status.capeff),
        permitted: format!("{:016x}", status.capprm),
        bounding: format!("{:016x}", status.capbnd.unwrap_or(0)),
    };
    Ok(())
}

/// A process's resident memory (VmRSS of /proc/PID/status), in KiB.
pub fn resident_kib(status: &str) -> Option<u64> {
    Status::from_read(status.as_bytes()).ok()?.vmrss
}

/// The /proc files the page compares, each read by the host and by the box.
/// Most resolve to the reader's own namespaces: `self` and `net` to its PID
/// and network namespace, sysvipc to its IPC namespace, the hostname to its
/// UTS namespace, the cgroup path to its cgroup namespace.
pub const PROC_FILES: [&str; 10] = [
    "/proc/sys/kernel/hostname",
    "/proc/self/status",
    "/proc/self/mountinfo",
    "/proc/net/dev",
    "/proc/sysvipc/msg",
    "/proc/sysvipc/shm",
    "/proc/self/uid_map",
    "/proc/self/gid_map",
    "/proc/self/cgroup",
    "/proc/1/cmdline",
];

/// The most of one /proc file the page shows.
const MAX_PROC_FILE: usize = 8 * 1024;

/// One /proc file as the calling process reads it, bounded; NULs (cmdline)
/// become spaces; an error is shown as what the kernel said.
pub fn read_proc_file(path: &str) -> String {
    match fs::read(path) {
        Ok(mut bytes) => {
            let cut = bytes.len() > MAX_PROC_FILE;
            bytes.truncate(MAX_PROC_FILE);
            let mut text: String = String::from_utf8_lossy(&bytes)
                .chars()
                .map(|c| if c == '\0' { ' ' } else { c })
                .collect();
            if cut {
                text.push_str("\n…");
            }
            text
        }
        Err(err) => format!("({err})"),
    }
}

/// The fields of a /proc/PID/stat line from field 3 (state) on. The command
/// name (field 2) may hold spaces and parentheses, so fields are counted
/// after its last `)`.
pub fn stat_fields_after_comm(stat: &str) -> Option<Vec<&str>> {
    Some(stat[stat.rfind(')')? + 1..].split_whitespace().collect())
}

/// The most processes a process list on the page shows, from either side.
pub const MAX_PROCESS_ROWS: usize = 300;

/// The children of a process, from /proc/PID/task/*/children.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .flat_map(|task| {
            fs::read_to_string(task.path().join("children"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// The box's processes as the host sees them: `root` and its descendants.
pub fn box_tree(root: u32) -> Vec<BoxProcessRow> {
    let mut rows = Vec::new();
    let mut queue = vec![root];
    while let Some(pid) = queue.pop() {
        if rows.len() >= MAX_PROCESS_ROWS {
            break;
        }
        let mut info = ProcessInfo::default();
        let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        if parse_status(&status, &mut info).is_err() {
            continue;
        }
        rows.push(BoxProcessRow {
            nspid: info.nspid,
            ppid: info.ppid,
            comm: info.comm,
        });
        queue.extend(children(pid));
    }
    rows
}

/// Everything the host can read about a process. `hostname` is left for the
/// caller: it lives in the process's UTS namespace.
pub fn read_process(target: Target) -> Result<ProcessInfo, ObserveError> {
    let mut info = ProcessInfo {
        pid: match target {
            Target::Pid(pid) => pid,
            Target::Myself => std::process::id(),
        },
        ..ProcessInfo::default()
    };
    let (path, status) = read_text(target.path("status"))?;
    parse_status(&status, &mut info).map_err(|reason| ObserveError::Parse { path, reason })?;
    let (path, cgroups) = read_text(target.path("cgroup"))?;
    info.cgroups =
        parse_cgroups(&cgroups).map_err(|reason| ObserveError::Parse { path, reason })?;
    info.root = read_link(target.path("root"))?.1;
    info.cwd = read_link(target.path("cwd"))?.1;
    Ok(info)
}

/// The observer's own hostname (uname's nodename).
pub fn own_hostname() -> String {
    nix::unistd::gethostname()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ns_links_give_their_inode() {
        assert_eq!(parse_ns_link("uts:[4026531838]"), Some(4026531838));
        assert_eq!(
            parse_ns_link("time_for_children:[4026531834]"),
            Some(4026531834)
        );
        assert_eq!(parse_ns_link("uts:4026531838"), None);
        assert_eq!(parse_ns_link("garbage"), None);
    }

    #[test]
    fn status_of_a_host_process() {
        let mut info = ProcessInfo::default();
        parse_status(include_str!("fixtures/status.txt"), &mut info).unwrap();
        assert_eq!(info.comm, "cat");
        assert_eq!(info.ppid, 9409);
        assert_eq!(info.uid, [0, 0, 0, 0]);
        assert_eq!(info.nspid, vec![9412]);
        assert_eq!(
            resident_kib(include_str!("fixtures/status.txt")),
            Some(1744)
        );
        assert_eq!(resident_kib("Name:\tkthreadd\nPid:\t2\n"), None);
    }

    #[test]
    fn status_of_a_process_in_a_pid_namespace() {
        let mut info = ProcessInfo::default();
        parse_status(include_str!("fixtures/status-nested.txt"), &mut info).unwrap();
        assert_eq!(info.comm, "sh");
        assert_eq!(info.nspid, vec![4242, 1]);
        assert_eq!(info.uid[0], 100000);
    }

    #[test]
    fn capabilities_are_shown_as_the_kernel_prints_them() {
        let mut info = ProcessInfo::default();
        parse_status(include_str!("fixtures/status.txt"), &mut info).unwrap();
        assert_eq!(info.caps.effective.len(), 16);
        assert!(u64::from_str_radix(&info.caps.bounding, 16).unwrap() > 0);
    }

    #[test]
    fn proc_files_are_bounded_and_nul_free() {
        let cmdline = read_proc_file("/proc/self/cmdline");
        assert!(!cmdline.contains('\0'));
        assert!(read_proc_file("/proc/self/does-not-exist").starts_with('('));
        assert!(read_proc_file("/proc/self/mountinfo").len() <= MAX_PROC_FILE + 4);
    }

    #[test]
    fn the_tree_of_this_process_starts_with_it() {
        let rows = box_tree(std::process::id());
        assert_eq!(rows[0].nspid.first(), Some(&std::process::id()));
    }

    #[test]
    fn cgroup_v1_lines_name_their_controllers() {
        let entries = parse_cgroups(include_str!("fixtures/cgroup-v1.txt")).unwrap();
        let memory = entries
            .iter()
            .find(|e| e.controllers == ["memory"])
            .unwrap();
        assert_eq!(memory.hierarchy, 4);
        assert!(memory.path.starts_with("/process_api/"));
        let unified = entries.iter().find(|e| e.hierarchy == 0).unwrap();
        assert!(unified.controllers.is_empty());
        assert_eq!(unified.path, "/");
    }

    #[test]
    fn cgroup_v2_has_one_line() {
        let entries = parse_cgroups(include_str!("fixtures/cgroup-v2.txt")).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].path, "/system.slice/damda.service");
    }
}
