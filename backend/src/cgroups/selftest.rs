//! The cgroup engine's privileged checks, written once and run in two
//! places: on the host by `backend/tests/cgroups_host.rs` (cgroup v1 on the
//! project's machines), and inside a cgroup2-only qemu VM by the
//! `cgroup-selftest` binary that `backend/tests/cgroups_v2_vm.rs` boots.
//! Each check makes its own `damda-selftest-…` group, reads the kernel's own
//! counters (never a timing), and removes everything it made, even when it
//! fails. Needs root.

use super::demo::{self, Workload};
use super::{BoxCgroup, CgroupVersion, Layout, Limits, SERVER_LEAF};
use crate::ledger::{Entry, Ledger};
use crate::lines::wait_until;
use anyhow::{bail, ensure, Context, Result};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

/// A check's name and what it does.
pub type Check = fn(&Path) -> Result<String>;

/// Every check, in the order the VM runs them (`restore_placement` last).
pub const CHECKS: [(&str, Check); 7] = [
    ("layout", check_layout),
    ("bad_limits_rejected", check_bad_limits),
    ("limits_applied", check_limits_applied),
    ("fork_bomb_bounded", check_fork_bomb),
    ("memory_hog_oom_killed", check_memory_oom),
    ("cpu_throttled", check_cpu_throttled),
    ("ledger_cleans_up", check_ledger_cleanup),
];

/// A fresh group name for one check.
fn scratch_name(what: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "damda-selftest-{}-{}-{what}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A group and the workloads in it; dropping it kills them, reaps them and
/// removes the group, so a failed check leaves nothing behind.
struct Scratch {
    group: BoxCgroup,
    children: Vec<Child>,
}

impl Scratch {
    fn new(layout: &Layout, what: &str, limits: &Limits) -> Result<Self> {
        let name = scratch_name(what);
        let group = BoxCgroup::create(layout, &name, limits)
            .with_context(|| format!("creating group {name}"))?;
        Ok(Scratch {
            group,
            children: Vec::new(),
        })
    }

    /// Starts a workload inside the group and returns its index.
    fn start(&mut self, exe: &Path, workload: &Workload) -> Result<usize> {
        let mut child =
            demo::spawn(exe, workload).with_context(|| format!("starting {}", exe.display()))?;
        let moved = self.group.move_pid(child.id());
        if let Err(err) = moved {
            let _ = child.kill();
            let _ = child.wait();
            return Err(err.into());
        }
        demo::go(&mut child)?;
        self.children.push(child);
        Ok(self.children.len() - 1)
    }

    fn wait(&mut self, index: usize, limit: Duration) -> Result<std::process::ExitStatus> {
        match wait_until(&mut self.children[index], Instant::now() + limit)? {
            Some(status) => Ok(status),
            None => bail!("the workload still runs after {limit:?}"),
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self.group.kill_all();
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Err(err) = self.group.remove() {
            eprintln!("selftest: removing {}: {err}", self.group.name());
        }
    }
}

fn detect() -> Result<Layout> {
    Layout::detect().context("detecting the cgroup layout")
}

/// Reports the layout: the VM test looks for `cgroup v2` in this line.
pub fn check_layout(_exe: &Path) -> Result<String> {
    let layout = detect()?;
    Ok(format!(
        "{} (uses {}); own group {}",
        layout.describe(),
        layout.version(),
        std::fs::read_to_string("/proc/self/cgroup")?
            .trim()
            .replace('\n', " | ")
    ))
}

/// Bad values never reach the kernel.
pub fn check_bad_limits(_exe: &Path) -> Result<String> {
    let layout = detect()?;
    let bad = [
        Limits {
            memory_bytes: Some(MIB),
            ..Limits::default()
        },
        Limits {
            pids_max: Some(0),
            ..Limits::default()
        },
        Limits {
            cpu_quota_us: Some(100_000 * 1024),
            ..Limits::default()
        },
        Limits {
            io_weight: Some(0),
            ..Limits::default()
        },
    ];
    let mut messages = Vec::new();
    for limits in bad {
        let name = scratch_name("bad");
        match BoxCgroup::create(&layout, &name, &limits) {
            Ok(mut group) => {
                let _ = group.remove();
                bail!("{limits:?} was accepted");
            }
            Err(err) => messages.push(err.to_string()),
        }
        for dir in BoxCgroup::planned_dirs(&layout, &name)? {
            ensure!(
                !dir.exists(),
                "{} was made for rejected limits",
                dir.display()
            );
        }
    }
    Ok(messages.join("; "))
}

/// The limits read back from cgroupfs equal what was written, the moved
/// process's /proc/PID/cgroup names the group in every hierarchy, and the
/// group is gone after removal.
pub fn check_limits_applied(exe: &Path) -> Result<String> {
    let layout = detect()?;
    let limits = Limits {
        io_weight: Some(200),
        ..Limits::default()
    };
    let mut scratch = Scratch::new(&layout, "limits", &limits)?;
    let group = &scratch.group;
    let mut checked = Vec::new();
    for write in group.written() {
        let file = write
            .path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if matches!(
            file.as_str(),
            "cgroup.procs" | "cgroup.subtree_control" | "devices.allow" | "devices.deny"
        ) {
            continue;
        }
        let read = std::fs::read_to_string(&write.path)
            .with_context(|| format!("reading back {}", write.path.display()))?;
        let read = read.lines().next().unwrap_or_default().trim();
        ensure!(
            read == write.value,
            "{} reads {read:?}, {:?} was written",
            write.path.display(),
            write.value
        );
        checked.push(format!("{file}={read}"));
    }
    if group.version() == CgroupVersion::V1 {
        let devices = group
            .dirs()
            .iter()
            .find(|d| d.controllers.iter().any(|c| c == "devices"))
            .context("no devices hierarchy")?;
        let list = std::fs::read_to_string(devices.path.join("devices.list"))?;
        for (rule, _) in super::DEVICE_ALLOW_LIST {
            ensure!(
                list.lines().any(|l| l == rule),
                "devices.list lacks {rule}: {list}"
            );
        }
        ensure!(!list.contains("a *:* rwm"), "devices.list still allows all");
        checked.push(format!("devices.list={} rules", list.lines().count()));
    }
    let stats = scratch.group.stats();
    ensure!(stats.memory_max == limits.memory_bytes, "stats: {stats:?}");
    ensure!(stats.pids_max == limits.pids_max, "stats: {stats:?}");

    let index = scratch.start(exe, &Workload::Sleep { seconds: 30.0 })?;
    let pid = scratch.children[index].id();
    ensure!(
        scratch.group.procs()?.contains(&pid),
        "{pid} is not in cgroup.procs"
    );
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let name = scratch.group.name().to_owned();
    let lines_in_group = own
        .lines()
        .filter(|line| line.ends_with(&format!("/{name}")))
        .count();
    ensure!(
        lines_in_group == scratch.group.dirs().len(),
        "/proc/{pid}/cgroup names {name} on {lines_in_group} lines, expected {}: {own}",
        scratch.group.dirs().len()
    );
    let stats = scratch.group.stats();
    ensure!(stats.pids_current >= Some(1), "stats: {stats:?}");

    let dirs: Vec<PathBuf> = scratch
        .group
        .dirs()
        .iter()
        .map(|d| d.path.clone())
        .collect();
    let skipped: Vec<String> = scratch
        .group
        .skipped()
        .iter()
        .map(|s| format!("{} ({})", s.path.display(), s.reason))
        .collect();
    drop(scratch);
    for dir in &dirs {
        ensure!(!dir.exists(), "{} is left after removal", dir.display());
    }
    Ok(format!(
        "{} dirs, read back {}; not offered here: {}",
        dirs.len(),
        checked.join(" "),
        if skipped.is_empty() {
            "nothing".to_owned()
        } else {
            skipped.join(", ")
        }
    ))
}

/// pids.max stops a fork bomb: forks are refused (pids.events `max` > 0)
/// and pids.current never exceeds pids.max.
pub fn check_fork_bomb(exe: &Path) -> Result<String> {
    let layout = detect()?;
    let pids_max = 16;
    let limits = Limits {
        pids_max: Some(pids_max),
        ..Limits::default()
    };
    let mut scratch = Scratch::new(&layout, "forkbomb", &limits)?;
    let index = scratch.start(exe, &Workload::ForkBomb { seconds: 2.0 })?;
    let mut highest = 0;
    for _ in 0..15 {
        std::thread::sleep(Duration::from_millis(100));
        let stats = scratch.group.stats();
        let current = stats.pids_current.context("no pids.current")?;
        ensure!(
            current <= pids_max,
            "pids.current {current} > pids.max {pids_max}"
        );
        highest = highest.max(current);
    }
    let status = match scratch.wait(index, Duration::from_secs(10)) {
        Ok(status) => status,
        Err(_) => {
            // Bounded anyway: kill the whole group.
            scratch.group.kill_all()?;
            scratch.wait(index, Duration::from_secs(5))?
        }
    };
    ensure!(
        status.code() != Some(demo::REFUSED),
        "the bomb refused to run"
    );
    let stats = scratch.group.stats();
    let refused = stats.pids_events_max.context("no pids.events")?;
    ensure!(refused > 0, "pids.events max is 0: {stats:?}");
    Ok(format!(
        "highest pids.current {highest} of {pids_max}, forks refused (pids.events max) {refused}"
    ))
}

/// A memory hog past its limit is killed by the kernel's OOM killer, and the
/// group's own counter says so.
pub fn check_memory_oom(exe: &Path) -> Result<String> {
    let layout = detect()?;
    let limit = 32 * MIB;
    let limits = Limits {
        memory_bytes: Some(limit),
        swap_bytes: Some(0),
        ..Limits::default()
    };
    let mut scratch = Scratch::new(&layout, "oom", &limits)?;
    let asked = limit + 32 * MIB;
    if let Some(room) = scratch.group.memory_headroom() {
        ensure!(
            room > asked,
            "the groups above leave only {room} bytes: an OOM demo there would hit them"
        );
    }
    let index = scratch.start(exe, &Workload::HogMemory { bytes: asked })?;
    let status = scratch.wait(index, Duration::from_secs(30))?;
    ensure!(
        status.signal() == Some(libc::SIGKILL),
        "the hog was not killed by SIGKILL: {status:?}"
    );
    let stats = scratch.group.stats();
    let kills = stats
        .memory_events_oom_kill
        .context("no oom_kill counter")?;
    ensure!(kills >= 1, "oom_kill is 0: {stats:?}");
    // v1 charges memory+swap first: with no swap allowed it is
    // memory.memsw.failcnt that counts the refusals, so failcnt may be 0.
    let failcnt = stats
        .memory_failcnt
        .map(|failcnt| format!(", memory.failcnt {failcnt}"))
        .unwrap_or_default();
    Ok(format!("killed by SIGKILL; oom_kill {kills}{failcnt}"))
}

/// A CPU burner under a tenth of a core is throttled (nr_throttled > 0).
pub fn check_cpu_throttled(exe: &Path) -> Result<String> {
    let layout = detect()?;
    let limits = Limits {
        cpu_quota_us: Some(10_000),
        cpu_period_us: 100_000,
        ..Limits::default()
    };
    let mut scratch = Scratch::new(&layout, "cpu", &limits)?;
    let index = scratch.start(exe, &Workload::BurnCpu { seconds: 1.0 })?;
    let status = scratch.wait(index, Duration::from_secs(20))?;
    ensure!(status.success(), "the burner failed: {status:?}");
    let stats = scratch.group.stats();
    let periods = stats.nr_periods.context("no nr_periods")?;
    let throttled = stats.nr_throttled.context("no nr_throttled")?;
    ensure!(periods > 0 && throttled > 0, "not throttled: {stats:?}");
    Ok(format!(
        "nr_periods {periods}, nr_throttled {throttled}, throttled {} µs, usage {} µs",
        stats.throttled_usec.unwrap_or(0),
        stats.cpu_usage_usec.unwrap_or(0)
    ))
}

/// The ledger's `Entry::Cgroup` kills what is left in a group and removes it.
pub fn check_ledger_cleanup(exe: &Path) -> Result<String> {
    let layout = detect()?;
    let dir = std::env::temp_dir().join(format!("damda-selftest-ledger-{}", std::process::id()));
    let ledger = Ledger::create(&dir)?;
    let name = scratch_name("ledger");
    let entries: Vec<Entry> = BoxCgroup::planned_dirs(&layout, &name)?
        .into_iter()
        .map(|path| Entry::Cgroup { path })
        .collect();
    for entry in &entries {
        ledger.record(entry.clone())?;
    }
    let mut group = BoxCgroup::create(&layout, &name, &Limits::default())?;
    let mut child = demo::spawn(exe, &Workload::Sleep { seconds: 30.0 })?;
    let moved = group.move_pid(child.id());
    let report = ledger.close();
    let status = wait_until(&mut child, Instant::now() + Duration::from_secs(5))?;
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = group.remove();
    let _ = std::fs::remove_dir_all(&dir);
    moved?;
    ensure!(
        report.errors.is_empty(),
        "ledger errors: {:?}",
        report.errors
    );
    ensure!(
        status.and_then(|s| s.signal()) == Some(libc::SIGKILL),
        "the sleeper was not killed: {status:?}"
    );
    for entry in &entries {
        let Entry::Cgroup { path } = entry else {
            unreachable!()
        };
        ensure!(!path.exists(), "{} is left", path.display());
    }
    Ok(format!("removed {}", report.removed.join(", ")))
}

/// On v2, puts the server's processes back where they were and removes its
/// leaf (run last: no group may be left beside the leaf).
pub fn check_restore_placement(_exe: &Path) -> Result<String> {
    let layout = detect()?;
    let writes = super::restore_server_placement(&layout)?;
    let after = detect()?;
    if let Some(unified) = after.unified() {
        ensure!(
            !unified.own.ends_with(SERVER_LEAF),
            "still in the leaf: {}",
            unified.own
        );
    }
    Ok(format!("{} writes", writes.len()))
}

/// Every group the checks may make under `root` (`damda-selftest-…` and the
/// server leaf), for the leak check; other damda groups (boxes of servers
/// running meanwhile) are not the checks' business.
pub fn leftovers(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![(root.to_owned(), 0)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(listing) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in listing.flatten() {
            if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("damda-selftest-") || name == SERVER_LEAF {
                found.push(entry.path());
            } else if depth < 6 {
                stack.push((entry.path(), depth + 1));
            }
        }
    }
    found
}

/// Runs every check (and on v2 the placement restore, then the leak check)
/// and prints one `ok NAME: …` or `FAILED NAME: …` line each. Returns
/// whether all passed.
pub fn run_all(exe: &Path) -> bool {
    let mut passed = true;
    let mut report = |name: &str, result: Result<String>| match result {
        Ok(summary) => println!("DAMDA-SELFTEST ok {name}: {summary}"),
        Err(err) => {
            passed = false;
            println!("DAMDA-SELFTEST FAILED {name}: {err:#}");
        }
    };
    for (name, check) in CHECKS {
        report(name, check(exe));
    }
    report("restore_placement", check_restore_placement(exe));
    let left = leftovers(Path::new("/sys/fs/cgroup"));
    report(
        "nothing_left",
        if left.is_empty() {
            Ok("no damda-selftest-* group or server leaf under /sys/fs/cgroup".to_owned())
        } else {
            Err(anyhow::anyhow!("left: {left:?}"))
        },
    );
    passed
}
