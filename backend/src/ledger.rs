//! The on-disk ledger of what a damda instance owns on the host.
//!
//! Each instance (a server or a walk) has one file, named after its pid and
//! start time so a recycled pid is never mistaken for its owner. An object is
//! recorded before it is created and forgotten after it is removed; a sweep
//! removes what dead owners left behind, and only that. Teardown keeps going
//! past a failure and reports every error.

use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LedgerError {
    let path = path.to_owned();
    move |source| LedgerError::Io {
        action,
        path,
        source,
    }
}

/// Something on the host a damda instance is responsible for.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    /// A box helper; the start time tells it apart from a later process that
    /// reuses the pid.
    Process { pid: u32, start_time: u64 },
    /// A box's directory (its rootfs copy) under data/boxes.
    Directory { path: PathBuf },
    /// A mount on the host (the box root's bind mount and what is below it).
    Mount { path: PathBuf },
    /// A POSIX message queue on the host (the IPC demonstration).
    Queue { name: String },
    /// A box's cgroup directory (one per v1 hierarchy, one on v2).
    Cgroup { path: PathBuf },
}

impl Entry {
    fn describe(&self) -> String {
        match self {
            Entry::Process { pid, .. } => format!("box process {pid}"),
            Entry::Directory { path } => format!("directory {}", path.display()),
            Entry::Mount { path } => format!("mount {}", path.display()),
            Entry::Queue { name } => format!("message queue {name}"),
            Entry::Cgroup { path } => format!("cgroup {}", path.display()),
        }
    }

    /// Removes the object if it still exists.
    fn remove(&self) -> Result<bool, String> {
        use nix::errno::Errno;
        match self {
            Entry::Directory { path } => match fs::remove_dir_all(path) {
                Ok(()) => Ok(true),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(err) => Err(format!("rm -r {}: {err}", path.display())),
            },
            // Detached, so a busy mount goes as soon as its last user does.
            Entry::Mount { path } => {
                match nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH) {
                    Ok(()) => Ok(true),
                    Err(Errno::EINVAL | Errno::ENOENT) => Ok(false),
                    Err(errno) => Err(format!("umount2({}, MNT_DETACH): {errno}", path.display())),
                }
            }
            Entry::Queue { name } => match crate::mqueue::unlink(name) {
                Ok(()) => Ok(true),
                Err(Errno::ENOENT) => Ok(false),
                Err(errno) => Err(format!("mq_unlink({name}): {errno}")),
            },
            // The processes still in the group (and only those) are killed
            // first: a group with processes cannot be removed. Only damda's
            // own groups, whatever a damaged ledger says.
            Entry::Cgroup { path } => {
                let ours = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(crate::cgroups::valid_name);
                if !ours {
                    return Err(format!("{} is not a damda cgroup", path.display()));
                }
                crate::cgroups::kill_and_remove_tree(path)
                    .map_err(|err| format!("rmdir {}: {err}", path.display()))
            }
            Entry::Process { pid, start_time } => {
                if process_start_time(*pid) != Some(*start_time) {
                    return Ok(false);
                }
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                )
                .map(|()| true)
                .map_err(|errno| format!("kill({pid}, SIGKILL): {errno}"))
            }
        }
    }
}

/// The start time of a process in clock ticks since boot (field 22 of
/// /proc/PID/stat), or None if it does not exist.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// Field 22 of a /proc/PID/stat line.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    crate::observe::stat_fields_after_comm(stat)?
        .get(19)?
        .parse()
        .ok()
}

/// What a sweep did.
#[derive(Debug, Default)]
pub struct SweepReport {
    pub removed: Vec<String>,
    pub errors: Vec<String>,
}

impl SweepReport {
    fn absorb(&mut self, entries: &[Entry]) {
        for entry in entries.iter().rev() {
            match entry.remove() {
                Ok(true) => self.removed.push(entry.describe()),
                Ok(false) => {}
                Err(err) => self.errors.push(format!("{}: {err}", entry.describe())),
            }
        }
    }
}

/// One instance's ledger file.
pub struct Ledger {
    path: PathBuf,
    entries: Mutex<Vec<Entry>>,
}

impl Ledger {
    /// Creates this instance's ledger in `dir` (data/ledger).
    pub fn create(dir: &Path) -> Result<Self, LedgerError> {
        fs::create_dir_all(dir).map_err(io_error("creating", dir))?;
        let pid = std::process::id();
        let start = process_start_time(pid).unwrap_or(0);
        let ledger = Ledger {
            path: dir.join(format!("{pid}-{start}.json")),
            entries: Mutex::new(Vec::new()),
        };
        ledger.write(&[])?;
        Ok(ledger)
    }

    /// Replaces the file atomically (write, then rename). Not fsynced: the
    /// ledger guards against a dead process, whose writes the kernel keeps;
    /// after a power loss the processes, mounts and queues are gone anyway.
    fn write(&self, entries: &[Entry]) -> Result<(), LedgerError> {
        let tmp = self.path.with_extension("tmp");
        let mut file = fs::File::create(&tmp).map_err(io_error("creating", &tmp))?;
        let json = serde_json::to_vec_pretty(entries).expect("entries serialise");
        file.write_all(&json).map_err(io_error("writing", &tmp))?;
        fs::rename(&tmp, &self.path).map_err(io_error("renaming", &self.path))
    }

    pub fn record(&self, entry: Entry) -> Result<(), LedgerError> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.push(entry);
        self.write(&entries)
    }

    pub fn forget(&self, entry: &Entry) -> Result<(), LedgerError> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|e| e != entry);
        self.write(&entries)
    }

    /// What is recorded now.
    pub fn recorded(&self) -> Vec<Entry> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Removes these objects now (last recorded first) and forgets them.
    pub fn release(&self, entries: &[Entry]) -> SweepReport {
        let mut report = SweepReport::default();
        report.absorb(entries);
        let mut recorded = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        recorded.retain(|e| !entries.contains(e));
        if let Err(err) = self.write(&recorded) {
            report.errors.push(err.to_string());
        }
        report
    }

    /// Removes everything still recorded and the ledger file itself.
    pub fn close(&self) -> SweepReport {
        let mut report = SweepReport::default();
        let entries = std::mem::take(&mut *self.entries.lock().unwrap_or_else(|e| e.into_inner()));
        report.absorb(&entries);
        if let Err(err) = fs::remove_file(&self.path) {
            report
                .errors
                .push(format!("removing {}: {err}", self.path.display()));
        }
        report
    }
}

/// Whether the owner named by a ledger file name (`PID-START.json`) is alive.
fn owner_alive(file_name: &str) -> bool {
    let Some((pid, start)) = file_name
        .strip_suffix(".json")
        .and_then(|stem| stem.split_once('-'))
    else {
        return false;
    };
    match (pid.parse::<u32>(), start.parse::<u64>()) {
        (Ok(pid), Ok(start)) => process_start_time(pid) == Some(start),
        _ => false,
    }
}

/// Sweeps what every dead owner in `dir` left behind.
pub fn sweep_dead_owners(dir: &Path) -> SweepReport {
    let mut report = SweepReport::default();
    let Ok(listing) = fs::read_dir(dir) else {
        return report;
    };
    for file in listing.flatten() {
        let name = file.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".json") || owner_alive(&name) {
            continue;
        }
        let path = file.path();
        match fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                serde_json::from_slice::<Vec<Entry>>(&bytes).map_err(|e| e.to_string())
            }) {
            Ok(entries) => report.absorb(&entries),
            Err(err) => report
                .errors
                .push(format!("reading {}: {err}", path.display())),
        }
        if let Err(err) = fs::remove_file(&path) {
            report
                .errors
                .push(format!("removing {}: {err}", path.display()));
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_survives_odd_command_names() {
        let stat = "1234 (we ird) (x)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 200";
        assert_eq!(parse_start_time(stat), Some(987654));
        assert_eq!(parse_start_time("garbage"), None);
    }

    #[test]
    fn own_start_time_is_readable() {
        assert!(process_start_time(std::process::id()).is_some());
    }

    #[test]
    fn ledger_writes_records_and_forgets() {
        let dir = std::env::temp_dir().join(format!("damda-ledger-test-{}", std::process::id()));
        let ledger = Ledger::create(&dir).unwrap();
        // An entry for a process that does not exist: sweeping it is a no-op.
        let entry = Entry::Process {
            pid: u32::MAX - 1,
            start_time: 1,
        };
        ledger.record(entry.clone()).unwrap();
        let on_disk: Vec<Entry> = serde_json::from_slice(&fs::read(&ledger.path).unwrap()).unwrap();
        assert_eq!(on_disk, vec![entry.clone()]);
        ledger.forget(&entry).unwrap();
        let on_disk: Vec<Entry> = serde_json::from_slice(&fs::read(&ledger.path).unwrap()).unwrap();
        assert!(on_disk.is_empty());
        let report = ledger.close();
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert!(!ledger.path.exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cgroup_entries_touch_only_damda_groups() {
        let gone = Entry::Cgroup {
            path: PathBuf::from("/nonexistent/cgroup/damda-gone"),
        };
        assert_eq!(gone.describe(), "cgroup /nonexistent/cgroup/damda-gone");
        assert_eq!(gone.remove(), Ok(false));
        let foreign = Entry::Cgroup {
            path: PathBuf::from("/nonexistent/cgroup/system.slice"),
        };
        assert!(foreign.remove().unwrap_err().contains("not a damda cgroup"));
        let json = serde_json::to_string(&gone).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"cgroup","path":"/nonexistent/cgroup/damda-gone"}"#
        );
    }

    #[test]
    fn dead_owners_are_swept_and_live_ones_kept() {
        let dir = std::env::temp_dir().join(format!("damda-sweep-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let dead = dir.join("999999999-1.json");
        fs::write(&dead, "[]").unwrap();
        let live = Ledger::create(&dir).unwrap();
        let report = sweep_dead_owners(&dir);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert!(!dead.exists());
        assert!(live.path.exists());
        live.close();
        fs::remove_dir_all(&dir).unwrap();
    }
}
