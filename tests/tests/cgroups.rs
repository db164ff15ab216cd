//! The `cgroups` step seen from outside: the limits read back from cgroupfs
//! at the paths /proc/PID/cgroup names, the box's own re-rooted view, bad
//! limits refused before anything exists, the demos felt in the kernel's own
//! counters, live usage sampled only while a page watches, and every group
//! removed — by the walk, the server, or the sweep after a SIGKILL.
//!
//! Nothing here asserts a timing: every wait polls a kernel fact or a
//! message until a deadline.

use damda_e2e::*;
use damda_protocol::{
    CgroupLimits, CgroupStats, CgroupView, ErrorCode, ServerMessage, Snapshot, StepId,
};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

/// How long a demonstration may take end to end (each is bounded to a few
/// seconds by the server; two cores run two tests).
const DEMO_TIMEOUT: Duration = Duration::from_secs(60);

// ------------------------------------------------------------- cgroupfs --

/// A cgroup filesystem in our mount table.
#[derive(Debug)]
struct CgroupMount {
    v2: bool,
    /// The v1 controllers bound to it (super options such as `memory`).
    options: Vec<String>,
    point: PathBuf,
    /// The directory of the hierarchy mounted there (`/` usually).
    root: String,
}

fn cgroup_mounts() -> Vec<CgroupMount> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("reading mountinfo");
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            let fstype = *fields.get(dash + 1)?;
            if fstype != "cgroup" && fstype != "cgroup2" {
                return None;
            }
            Some(CgroupMount {
                v2: fstype == "cgroup2",
                options: fields
                    .get(dash + 3)
                    .map(|o| o.split(',').map(str::to_owned).collect())
                    .unwrap_or_default(),
                point: PathBuf::from(fields[4]),
                root: fields[3].to_owned(),
            })
        })
        .collect()
}

/// One line of /proc/PID/cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CgroupLine {
    hierarchy: u32,
    controllers: Vec<String>,
    path: String,
}

fn parse_cgroup_lines(text: &str) -> Vec<CgroupLine> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let mut parts = line.splitn(3, ':');
            let (id, controllers, path) = (parts.next(), parts.next(), parts.next());
            let (Some(id), Some(controllers), Some(path)) = (id, controllers, path) else {
                panic!("cgroup line {line:?}");
            };
            CgroupLine {
                hierarchy: id.parse().unwrap_or_else(|e| panic!("{line:?}: {e}")),
                controllers: controllers
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned)
                    .collect(),
                path: path.to_owned(),
            }
        })
        .collect()
}

fn proc_cgroup(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/cgroup: {e}"))
}

/// The directory of a process's group in one hierarchy: the mount point
/// joined with the path /proc/PID/cgroup names, less the mount's root.
fn joined(mount: &CgroupMount, path: &str) -> PathBuf {
    let rel = if mount.root == "/" {
        path
    } else {
        path.strip_prefix(mount.root.as_str())
            .unwrap_or_else(|| panic!("{path} is outside the mount root {}", mount.root))
    };
    mount.point.join(rel.trim_start_matches('/'))
}

/// A process's groups as the kernel places it, by controller, on the
/// version the box's limits are on.
#[derive(Debug)]
struct Groups {
    v2: bool,
    by_controller: BTreeMap<String, PathBuf>,
}

impl Groups {
    /// Where `pid` stands, read from /proc/PID/cgroup and our mount table.
    fn of(pid: u32, v2: bool) -> Groups {
        let lines = parse_cgroup_lines(&proc_cgroup(pid));
        let mounts = cgroup_mounts();
        let mut by_controller = BTreeMap::new();
        if v2 {
            let line = lines
                .iter()
                .find(|l| l.hierarchy == 0)
                .expect("a 0:: line on a cgroup2 host");
            let mount = mounts.iter().find(|m| m.v2).expect("a cgroup2 mount");
            let dir = joined(mount, &line.path);
            for controller in ["memory", "pids", "cpu", "io"] {
                by_controller.insert(controller.to_owned(), dir.clone());
            }
        } else {
            for line in lines.iter().filter(|l| l.hierarchy != 0) {
                for controller in &line.controllers {
                    if controller.starts_with("name=") {
                        continue;
                    }
                    let Some(mount) = mounts
                        .iter()
                        .find(|m| !m.v2 && m.options.contains(controller))
                    else {
                        continue;
                    };
                    by_controller.insert(controller.clone(), joined(mount, &line.path));
                }
            }
        }
        Groups { v2, by_controller }
    }

    fn of_view(pid: u32, view: &CgroupView) -> Groups {
        Groups::of(pid, is_v2(view))
    }

    fn dir(&self, controller: &str) -> &Path {
        self.by_controller
            .get(controller)
            .unwrap_or_else(|| panic!("no {controller} group in {self:?}"))
    }

    /// The distinct directories named `damda-…`: the box's own group.
    fn box_dirs(&self) -> Vec<String> {
        let mut dirs: Vec<String> = self
            .by_controller
            .values()
            .filter(|d| is_damda_name(d))
            .map(|d| d.display().to_string())
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }

    fn read(&self, controller: &str, file: &str) -> String {
        let path = self.dir(controller).join(file);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    }

    fn number(&self, controller: &str, file: &str) -> u64 {
        let text = self.read(controller, file);
        text.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{controller}/{file} reads {text:?}: {e}"))
    }

    fn keyed(&self, controller: &str, file: &str, key: &str) -> u64 {
        let text = self.read(controller, file);
        keyed(&text, key).unwrap_or_else(|| panic!("{controller}/{file} has no {key}: {text:?}"))
    }

    fn memory_limit(&self) -> u64 {
        self.number(
            "memory",
            if self.v2 {
                "memory.max"
            } else {
                "memory.limit_in_bytes"
            },
        )
    }

    /// (quota, period) in µs.
    fn cpu_quota(&self) -> (u64, u64) {
        if self.v2 {
            let text = self.read("cpu", "cpu.max");
            let words: Vec<u64> = text
                .split_whitespace()
                .map(|w| {
                    w.parse()
                        .unwrap_or_else(|e| panic!("cpu.max {text:?}: {e}"))
                })
                .collect();
            (words[0], words[1])
        } else {
            (
                self.number("cpu", "cpu.cfs_quota_us"),
                self.number("cpu", "cpu.cfs_period_us"),
            )
        }
    }

    fn pids_max(&self) -> u64 {
        self.number("pids", "pids.max")
    }

    fn pids_current(&self) -> u64 {
        self.number("pids", "pids.current")
    }

    /// Forks refused because pids.max was reached.
    fn pids_refused(&self) -> u64 {
        self.keyed("pids", "pids.events", "max")
    }

    fn oom_kills(&self) -> u64 {
        if self.v2 {
            self.keyed("memory", "memory.events", "oom_kill")
        } else {
            self.keyed("memory", "memory.oom_control", "oom_kill")
        }
    }

    fn nr_throttled(&self) -> u64 {
        self.keyed("cpu", "cpu.stat", "nr_throttled")
    }

    /// Every process in the box's group, in any of its directories.
    fn procs(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .box_dirs()
            .iter()
            .flat_map(|dir| procs_in(Path::new(dir)))
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }
}

fn is_v2(view: &CgroupView) -> bool {
    view.version.contains("v2")
}

fn is_damda_name(dir: &Path) -> bool {
    dir.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("damda-"))
}

fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

fn procs_in(dir: &Path) -> Vec<u32> {
    let path = dir.join("cgroup.procs");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn view_of(snapshot: &Snapshot) -> CgroupView {
    snapshot
        .cgroup
        .clone()
        .unwrap_or_else(|| panic!("no cgroup view in the {} snapshot", snapshot.step))
}

/// Waits until the box's group holds the box's main process and nothing
/// else: a demo or a command that ended left nothing behind.
fn wait_group_holds_only(groups: &Groups, pid: u32) {
    poll(GONE_TIMEOUT, "the box's group to hold only the box", || {
        let procs = groups.procs();
        if procs == [pid] {
            Ok(())
        } else {
            Err(format!("{procs:?}"))
        }
    });
}

/// Waits until none of `pids` exists, reaping those that are zombies of
/// ours as they appear, in any order. A subreaper test inherits the box's
/// processes when their server dies, and a PID namespace's init that exits
/// waits for the namespace's last zombie to be reaped — which may be one we
/// hold: waiting for the init first, as [`assert_all_gone`] would, deadlocks.
fn assert_all_gone_reaping(pids: &[u32]) {
    let me = std::process::id();
    poll(GONE_TIMEOUT, "the processes to go", || {
        for &pid in pids {
            if pid_state(pid).as_deref() == Some("Z") && ppid_of(pid) == Some(me) {
                let _ = nix::sys::wait::waitpid(
                    nix::unistd::Pid::from_raw(pid as i32),
                    Some(nix::sys::wait::WaitPidFlag::WNOHANG),
                );
            }
        }
        let left: Vec<String> = pids
            .iter()
            .filter(|&&pid| pid_exists(pid))
            .map(|&pid| {
                format!(
                    "{pid} ({:?}, {:?}, ppid {:?})",
                    comm_of(pid),
                    pid_state(pid),
                    ppid_of(pid)
                )
            })
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(left.join(", "))
        }
    });
}

/// Waits until none of these cgroup directories exists.
fn assert_groups_removed(dirs: &[String]) {
    poll(GONE_TIMEOUT, "the box's cgroup directories to go", || {
        let left: Vec<&String> = dirs.iter().filter(|d| Path::new(d).exists()).collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    });
}

/// `damda sweep --check` lists nothing of ours (what it lists belongs to
/// tests running beside this one).
fn assert_leak_check_clean_of(dirs: &[String], pids: &[u32]) {
    let check = run(damda_bin(), &["sweep", "--check"], Duration::from_secs(20));
    let names: Vec<String> = dirs
        .iter()
        .filter_map(|d| Path::new(d).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    assert!(!names.is_empty(), "no names to look for in {dirs:?}");
    for line in check.stdout.lines() {
        assert!(
            !names.iter().any(|n| line.contains(n.as_str()))
                && !pids.iter().any(|p| line.contains(&format!("process {p} "))),
            "sweep --check still lists ours: {line}"
        );
    }
}

// ------------------------------------------------------------ websocket --

/// What a command or demo run through the page printed and how it ended.
#[derive(Debug)]
struct Ran {
    stdout: String,
    stderr: String,
    code: Option<i32>,
    signal: Option<i32>,
}

/// A page: the protocol client plus the `usage` messages that arrive
/// between everything else, kept in order.
struct Page {
    ws: Ws,
    usage: Vec<CgroupStats>,
}

impl Page {
    async fn open(server: &Server) -> (Page, Snapshot) {
        let (ws, _id, host) = Ws::open(server).await;
        (
            Page {
                ws,
                usage: Vec::new(),
            },
            host,
        )
    }

    async fn send(&mut self, message: Value) {
        self.ws.send_json(message).await;
    }

    /// The next message that is not `usage` (those are kept in `usage`).
    async fn next(&mut self, within: Duration) -> ServerMessage {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            match self.ws.next_event(left).await {
                Event::Message(_, ServerMessage::Usage(stats)) => self.usage.push(*stats),
                Event::Message(_, message) => return message,
                other => panic!("the connection ended: {other:?}"),
            }
        }
    }

    /// Everything that arrives within `period`, usage included (kept in
    /// `usage` too); nothing arriving is fine.
    async fn gather(&mut self, period: Duration) -> Vec<ServerMessage> {
        let deadline = tokio::time::Instant::now() + period;
        let mut got = Vec::new();
        loop {
            let event = tokio::time::timeout_at(
                deadline,
                self.ws.next_event(period + Duration::from_secs(5)),
            )
            .await;
            match event {
                Err(_) => return got,
                Ok(Event::Message(_, message)) => {
                    if let ServerMessage::Usage(stats) = &message {
                        self.usage.push((**stats).clone());
                    }
                    got.push(message);
                }
                Ok(other) => panic!("the connection ended: {other:?}"),
            }
        }
    }

    /// The snapshot at `step` (after a `busy`, if one comes).
    async fn snapshot(&mut self, step: StepId) -> Snapshot {
        loop {
            match self.next(STEP_TIMEOUT).await {
                ServerMessage::Busy { .. } => continue,
                ServerMessage::Snapshot(snapshot) if snapshot.step == step => return *snapshot,
                other => panic!("expected a snapshot at {step}, got {other:?}"),
            }
        }
    }

    async fn goto(&mut self, step: StepId) -> Snapshot {
        self.send(json!({ "type": "goto", "step": step })).await;
        self.snapshot(step).await
    }

    /// The next message must be an error with `code`; returns its text.
    async fn error(&mut self, code: ErrorCode) -> String {
        match self.next(STEP_TIMEOUT).await {
            ServerMessage::Error {
                code: got, message, ..
            } if got == code && !message.is_empty() => message,
            other => panic!("expected error {code:?}, got {other:?}"),
        }
    }

    /// Sends `request` (exec or demo) and gathers its output until `exited`.
    async fn run(&mut self, request: Value, within: Duration) -> Ran {
        self.send(request.clone()).await;
        let mut ran = Ran {
            stdout: String::new(),
            stderr: String::new(),
            code: None,
            signal: None,
        };
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                ServerMessage::Output { stream, data } => match stream {
                    damda_protocol::OutputStream::Stdout => ran.stdout.push_str(&data),
                    damda_protocol::OutputStream::Stderr => ran.stderr.push_str(&data),
                },
                ServerMessage::Exited { code, signal } => {
                    ran.code = code;
                    ran.signal = signal;
                    return ran;
                }
                other => panic!("{request}: expected output or exited, got {other:?}"),
            }
        }
    }

    async fn demo(&mut self, name: &str) -> Ran {
        self.run(json!({ "type": "demo", "demo": name }), DEMO_TIMEOUT)
            .await
    }

    /// `echo ok` in the box prints `ok`: the box is still usable.
    async fn still_usable(&mut self) {
        let ran = self
            .run(
                json!({ "type": "exec", "command": "echo ok" }),
                STEP_TIMEOUT,
            )
            .await;
        assert_eq!(
            (ran.stdout.as_str(), ran.code),
            ("ok\n", Some(0)),
            "{ran:?}"
        );
    }

    /// The first usage message (already received or still to come) for
    /// which `wanted` holds.
    async fn usage_where(
        &mut self,
        what: &str,
        wanted: impl Fn(&CgroupStats) -> bool,
    ) -> CgroupStats {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            if let Some(found) = self.usage.iter().find(|u| wanted(u)) {
                return found.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no usage message with {what} within {STEP_TIMEOUT:?}; last: {:?}",
                self.usage.last()
            );
            let period = Duration::from_millis(500);
            for message in self.gather(period).await {
                if !matches!(message, ServerMessage::Usage(_)) {
                    panic!("waiting for usage with {what}, got {message:?}");
                }
            }
        }
    }

    /// Makes sure the server has handled everything sent so far: `interrupt`
    /// with nothing running is answered `no_command`, in order.
    async fn sync(&mut self) {
        self.send(json!({ "type": "interrupt" })).await;
        self.error(ErrorCode::NoCommand).await;
    }
}

fn limits_message(limits: &CgroupLimits) -> Value {
    json!({ "type": "limits", "limits": limits })
}

fn usage_count(messages: &[ServerMessage]) -> usize {
    messages
        .iter()
        .filter(|m| matches!(m, ServerMessage::Usage(_)))
        .count()
}

// ---------------------------------------------------------------- tests --

#[test]
fn walk_limits_are_in_cgroupfs_where_the_kernel_puts_the_box() {
    become_subreaper();
    let data = TempData::with_rootfs("cgroups-walk");
    let text = data.text();
    let walk = HeldWalk::start_with(
        "cgroups",
        &["--memory-mib", "48", "--cpus", "0.25", "--pids", "32"],
        &[("DAMDA_DATA", &text)],
    );
    let snapshot = walk.last().clone();
    let pid = snapshot.pid;
    let view = view_of(&snapshot);
    assert_eq!(
        view.limits,
        CgroupLimits {
            memory_bytes: Some(48 * MIB),
            swap_bytes: Some(0),
            cpu_quota_us: Some(25_000),
            cpu_period_us: 100_000,
            pids_max: Some(32),
            io_weight: None,
        }
    );

    // Where the kernel says the box is: one damda- group, in every hierarchy
    // the limits need, and the snapshot names the same directories.
    let groups = Groups::of_view(pid, &view);
    let name = groups
        .dir("pids")
        .file_name()
        .expect("named")
        .to_string_lossy()
        .into_owned();
    assert!(name.starts_with("damda-"), "{groups:?}");
    for controller in ["memory", "cpu", "pids"] {
        assert_eq!(
            groups
                .dir(controller)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned()),
            Some(name.clone()),
            "{controller}: {groups:?}"
        );
    }
    let mut listed = view.dirs.clone();
    listed.sort();
    assert_eq!(
        groups.box_dirs(),
        listed,
        "/proc/{pid}/cgroup vs the snapshot"
    );
    if !groups.v2 {
        // v1: under the walk's own group (ours), as runc places a box.
        let ours = Groups::of(std::process::id(), false);
        for controller in ["memory", "cpu", "pids"] {
            assert_eq!(
                groups.dir(controller).parent(),
                Some(ours.dir(controller)),
                "{controller}"
            );
        }
    }

    // The limits, read back from cgroupfs.
    assert_eq!(groups.memory_limit(), 48 * MIB);
    assert_eq!(groups.pids_max(), 32);
    let (quota, period) = groups.cpu_quota();
    assert_eq!((quota, period), (25_000, 100_000));
    assert_eq!(quota as f64 / period as f64, 0.25);
    for dir in groups.box_dirs() {
        assert!(
            procs_in(Path::new(&dir)).contains(&pid),
            "{dir}/cgroup.procs lacks {pid}"
        );
    }

    // What the page shows as written is what the files hold.
    let written: Vec<(String, String)> = view
        .written
        .iter()
        .map(|w| (w.path.clone(), w.value.clone()))
        .collect();
    let file =
        |controller: &str, name: &str| groups.dir(controller).join(name).display().to_string();
    let mut expected = if groups.v2 {
        vec![
            (file("memory", "memory.max"), (48 * MIB).to_string()),
            (file("cpu", "cpu.max"), "25000 100000".to_owned()),
            (file("pids", "pids.max"), "32".to_owned()),
        ]
    } else {
        vec![
            (
                file("memory", "memory.limit_in_bytes"),
                (48 * MIB).to_string(),
            ),
            (file("cpu", "cpu.cfs_period_us"), "100000".to_owned()),
            (file("cpu", "cpu.cfs_quota_us"), "25000".to_owned()),
            (file("pids", "pids.max"), "32".to_owned()),
        ]
    };
    for dir in groups.box_dirs() {
        expected.push((format!("{dir}/cgroup.procs"), pid.to_string()));
    }
    for entry in &expected {
        assert!(written.contains(entry), "{entry:?} not in {written:#?}");
    }
    for (path, value) in &written {
        let name = Path::new(path)
            .file_name()
            .expect("a file")
            .to_string_lossy();
        if name == "cgroup.procs" || name.starts_with("devices.") || value.starts_with('+') {
            continue;
        }
        let now = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
        assert_eq!(now.trim(), value, "{path}");
    }
    if !groups.v2 {
        // The device allow list, as the kernel keeps it.
        let list = groups.read("devices", "devices.list");
        for (path, value) in &written {
            if path.ends_with("/devices.allow") {
                assert!(list.lines().any(|l| l == value), "{value} not in {list}");
            }
        }
    }
    for flag in ["--memory 48m", "--cpus 0.25", "--pids-limit 32"] {
        assert!(view.docker.contains(flag), "{flag} not in {}", view.docker);
    }
    assert!(view.docker.starts_with("docker run"), "{}", view.docker);
    assert_eq!(view.usage.memory_max, Some(48 * MIB));
    assert_eq!(view.usage.pids_max, Some(32));
    assert!(
        view.usage.pids_current.is_some_and(|n| n >= 1),
        "{:?}",
        view.usage
    );

    // The host's view: the box's lines end in its damda- group; the
    // snapshot's copy of them agrees.
    let host_lines = parse_cgroup_lines(&proc_cgroup(pid));
    let boxed: Vec<u32> = host_lines
        .iter()
        .filter(|l| l.path.ends_with(&format!("/{name}")))
        .map(|l| l.hierarchy)
        .collect();
    assert!(
        boxed.len() >= if groups.v2 { 1 } else { 3 },
        "{host_lines:?}"
    );
    let mut from_snapshot: Vec<String> = snapshot
        .box_process
        .cgroups
        .iter()
        .map(|c| format!("{}:{}", c.hierarchy, c.path))
        .collect();
    let mut from_kernel: Vec<String> = host_lines
        .iter()
        .map(|l| format!("{}:{}", l.hierarchy, l.path))
        .collect();
    from_snapshot.sort();
    from_kernel.sort();
    assert_eq!(from_snapshot, from_kernel);

    // The box's own view: its cgroup namespace was re-rooted at its group,
    // so its first process reads / everywhere.
    let inside = nsenter_ok(
        pid,
        &["-a", "-r", "-w", "/bin/busybox", "cat", "/proc/1/cgroup"],
    );
    let inside_lines = parse_cgroup_lines(&inside);
    assert_eq!(inside_lines.len(), host_lines.len(), "{inside}");
    assert!(inside_lines.iter().all(|l| l.path == "/"), "{inside}");
    let file = proc_file(&snapshot, "/proc/self/cgroup");
    assert!(
        cgroup_paths(&file.boxed).iter().all(|p| p == "/"),
        "{file:?}"
    );
    // A process that joins the namespace but not the group (nsenter) stands
    // above the namespace's root: the kernel shows it as /.. .
    let entered = parse_cgroup_lines(&nsenter_ok(
        pid,
        &["-a", "-r", "-w", "/bin/busybox", "cat", "/proc/self/cgroup"],
    ));
    for line in entered.iter().filter(|l| boxed.contains(&l.hierarchy)) {
        assert!(line.path.starts_with("/.."), "{line:?}");
    }

    // The walk ends: its group, its processes and its ledger go.
    let dirs = groups.box_dirs();
    let pids: Vec<u32> = walk.snapshots.iter().map(|s| s.pid).collect();
    let walk_pid = walk.walk_pid();
    let status = walk.finish().status;
    assert!(status.success(), "walk exit {status}");
    assert_all_gone(&pids);
    assert!(!pid_exists(walk_pid));
    assert_groups_removed(&dirs);
    assert_no_orphaned_helpers();
    assert_eq!(data.entries("ledger"), Vec::<String>::new(), "ledger files");
    assert_eq!(
        data.entries("boxes"),
        Vec::<String>::new(),
        "box directories"
    );
    assert_leak_check_clean_of(&dirs, &pids);
}

#[test]
fn bad_limits_stop_walk_and_serve_before_anything_is_made() {
    // An empty data directory: a walk that made anything would have left a
    // ledger here (every object is recorded before it is made).
    let data = std::env::temp_dir().join(format!("damda-e2e-{}-bad-limits", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).expect("creating the temp data dir");
    let text = data.to_string_lossy().into_owned();
    let cases: [(&[&str], &[&str]); 5] = [
        (&["--memory-mib", "1"], &["memory limit", "4 MiB"]),
        (&["--pids", "0"], &["pids limit 0"]),
        (&["--cpus", "0"], &["--cpus"]),
        (&["--cpus", "100000"], &["cpu quota", "cores"]),
        (&["--memory-mib", "0"], &["memory limit"]),
    ];
    for (args, words) in cases {
        let mut full = vec!["walk", "--to", "cgroups"];
        full.extend_from_slice(args);
        let walk = run_env(
            damda_bin(),
            &full,
            &[("DAMDA_DATA", &text)],
            Duration::from_secs(20),
        );
        assert!(!walk.status.success(), "{args:?}: {walk:?}");
        assert_eq!(walk.stdout, "", "{args:?}: no box, no snapshot");
        for word in words {
            assert!(
                walk.stderr.contains(word),
                "{args:?}: {word:?} not in {}",
                walk.stderr
            );
        }
        let left: Vec<_> = std::fs::read_dir(&data)
            .expect("listing the data dir")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "{args:?} made {left:?}");
    }
    let serve = run_env(
        damda_bin(),
        &["serve", "--listen", "127.0.0.1:0", "--pids", "0"],
        &[("DAMDA_DATA", &text)],
        Duration::from_secs(20),
    );
    assert!(!serve.status.success(), "{serve:?}");
    assert!(!serve.stdout.contains("http://"), "it listened: {serve:?}");
    assert!(serve.stderr.contains("pids limit 0"), "{}", serve.stderr);
    let left = std::fs::read_dir(&data).expect("listing").count();
    assert_eq!(left, 0, "serve made something");
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_from_the_page_are_checked_then_applied_by_a_rebuild() {
    become_subreaper();
    let server = Server::start(&["--grace", "0"]);
    let (mut page, host) = Page::open(&server).await;
    let mut seen = vec![host.pid];

    // Refused with a clear error; the connection stays and nothing changed.
    let bad: [(CgroupLimits, &str); 4] = [
        (
            CgroupLimits {
                memory_bytes: Some(1),
                ..CgroupLimits::default()
            },
            "memory limit 1 bytes is below the minimum",
        ),
        (
            CgroupLimits {
                pids_max: Some(0),
                ..CgroupLimits::default()
            },
            "pids limit 0",
        ),
        (
            CgroupLimits {
                cpu_period_us: 10,
                ..CgroupLimits::default()
            },
            "cpu period 10",
        ),
        (
            CgroupLimits {
                memory_bytes: None,
                ..CgroupLimits::default()
            },
            "swap limit needs a memory limit",
        ),
    ];
    for (limits, words) in &bad {
        page.send(limits_message(limits)).await;
        let message = page.error(ErrorCode::BadLimits).await;
        assert!(message.contains(words), "{message:?} lacks {words:?}");
    }
    page.send(json!({ "type": "next" })).await;
    let chroot = page.snapshot(StepId::Chroot).await;
    assert_eq!(chroot.pid, host.pid, "the refusals left the box as it was");

    // At cgroups with the server's defaults.
    let at = page.goto(StepId::Cgroups).await;
    seen.push(at.pid);
    let view = view_of(&at);
    let groups = Groups::of_view(at.pid, &view);
    let defaults = CgroupLimits::default();
    assert_eq!(view.limits, defaults);
    assert_eq!(Some(groups.memory_limit()), defaults.memory_bytes);
    assert_eq!(Some(groups.pids_max()), defaults.pids_max);

    // Refused at cgroups too: the live box and its group are untouched.
    page.send(limits_message(&bad[1].0)).await;
    let message = page.error(ErrorCode::BadLimits).await;
    assert!(message.contains("pids limit 0"), "{message}");
    page.sync().await;
    assert!(pid_exists(at.pid));
    assert_eq!(Some(groups.pids_max()), defaults.pids_max);
    assert!(groups.procs().contains(&at.pid));

    // Good limits: the box is rebuilt at cgroups with them.
    let wanted = CgroupLimits {
        memory_bytes: Some(40 * MIB),
        swap_bytes: Some(0),
        cpu_quota_us: Some(30_000),
        cpu_period_us: 100_000,
        pids_max: Some(20),
        io_weight: None,
    };
    page.send(limits_message(&wanted)).await;
    let rebuilt = page.snapshot(StepId::Cgroups).await;
    seen.push(rebuilt.pid);
    assert!(rebuilt.rebuilt);
    assert_ne!(rebuilt.pid, at.pid, "a new box");
    let new_view = view_of(&rebuilt);
    assert_eq!(new_view.limits, wanted);
    let new_groups = Groups::of_view(rebuilt.pid, &new_view);
    assert_eq!(new_groups.memory_limit(), 40 * MIB);
    assert_eq!(new_groups.pids_max(), 20);
    assert_eq!(new_groups.cpu_quota(), (30_000, 100_000));
    assert!(new_groups.procs().contains(&rebuilt.pid));
    assert!(
        new_view.docker.contains("--pids-limit 20"),
        "{}",
        new_view.docker
    );
    // The old box went with its group.
    wait_gone(at.pid, GONE_TIMEOUT).expect("the old box is destroyed");
    assert_groups_removed(&groups.box_dirs());
    page.still_usable().await;

    let dirs = new_groups.box_dirs();
    page.ws.close().await;
    let status = server.stop();
    assert!(status.success(), "serve exited {status}");
    assert_all_gone(&seen);
    assert_groups_removed(&dirs);
    assert_leak_check_clean_of(&dirs, &seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demos_are_felt_in_the_kernels_counters_and_stay_contained() {
    become_subreaper();
    let server = Server::start(&[
        "--memory-mib",
        "32",
        "--cpus",
        "0.2",
        "--pids",
        "24",
        "--grace",
        "0",
    ]);
    let (mut page, host) = Page::open(&server).await;

    // Before the box has a group of its own there is nothing to bound a demo.
    page.goto(StepId::Cgroupns).await;
    for demo in ["fork_bomb", "memory_hog", "cpu_hog"] {
        page.send(json!({ "type": "demo", "demo": demo })).await;
        let message = page.error(ErrorCode::NotYet).await;
        assert!(message.contains("cgroups"), "{demo}: {message}");
    }
    page.send(json!({ "type": "next" })).await;
    let at = page.snapshot(StepId::Cgroups).await;
    let pid = at.pid;
    let view = view_of(&at);
    let groups = Groups::of_view(pid, &view);
    assert_eq!(groups.pids_max(), 24);
    assert_eq!(groups.memory_limit(), 32 * MIB);
    wait_group_holds_only(&groups, pid);

    // Fork bomb: pids.max refuses forks and is never exceeded.
    let refused_before = groups.pids_refused();
    let seen_usage = page.usage.len();
    let ran = page.demo("fork_bomb").await;
    eprintln!(
        "fork bomb: {ran:?}, pids.events max {refused_before} -> {}",
        groups.pids_refused()
    );
    assert_eq!(ran.code, Some(0), "the bomb ran and ended: {ran:?}");
    assert!(groups.pids_refused() > refused_before, "pids.events max");
    assert!(groups.pids_current() <= groups.pids_max());
    for usage in &page.usage[seen_usage..] {
        let (current, max) = (usage.pids_current, usage.pids_max);
        assert!(current.is_some() && current <= max, "{usage:?}");
    }
    page.usage_where("pids_events_max above the count before", |u| {
        u.pids_events_max.is_some_and(|n| n > refused_before)
    })
    .await;
    wait_group_holds_only(&groups, pid);
    page.still_usable().await;

    // Memory hog: the kernel's OOM killer ends it inside the box's group.
    let kills_before = groups.oom_kills();
    let ran = page.demo("memory_hog").await;
    eprintln!(
        "memory hog: {ran:?}, oom_kill {kills_before} -> {}",
        groups.oom_kills()
    );
    assert!(
        ran.code == Some(137) || ran.signal == Some(9),
        "the hog was SIGKILLed: {ran:?}"
    );
    assert!(groups.oom_kills() > kills_before, "oom_kill");
    page.usage_where("memory_events_oom_kill above the count before", |u| {
        u.memory_events_oom_kill.is_some_and(|n| n > kills_before)
    })
    .await;
    assert!(pid_exists(pid), "the OOM killer took the hog, not the box");
    wait_group_holds_only(&groups, pid);
    page.still_usable().await;

    // CPU hog: held to its quota, the throttling counter rises.
    let throttled_before = groups.nr_throttled();
    let ran = page.demo("cpu_hog").await;
    eprintln!(
        "cpu hog: {ran:?}, nr_throttled {throttled_before} -> {}",
        groups.nr_throttled()
    );
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert!(groups.nr_throttled() > throttled_before, "nr_throttled");
    page.usage_where("nr_throttled above the count before", |u| {
        u.nr_throttled.is_some_and(|n| n > throttled_before)
    })
    .await;
    wait_group_holds_only(&groups, pid);
    page.still_usable().await;
    let inside = page
        .run(
            json!({ "type": "exec", "command": "cat /proc/self/cgroup" }),
            STEP_TIMEOUT,
        )
        .await;
    assert!(
        cgroup_paths(&inside.stdout).iter().all(|p| p == "/"),
        "a command runs in the box's group and namespace: {inside:?}"
    );
    let same = page.goto(StepId::Cgroups).await;
    assert_eq!(same.pid, pid, "the demos never rebuilt the box");

    // SIGTERM with the page still open and the box at cgroups.
    let dirs = groups.box_dirs();
    let status = server.stop();
    assert!(status.success(), "serve exited {status}");
    drop(page);
    assert_all_gone(&[host.pid, pid]);
    assert_groups_removed(&dirs);
    assert_leak_check_clean_of(&dirs, &[pid]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_sampled_only_while_the_page_watches() {
    let server = Server::start(&["--grace", "0"]);
    let (mut page, _host) = Page::open(&server).await;

    // Watching is on from the start, but without a group there is nothing
    // to sample.
    page.goto(StepId::Cgroupns).await;
    let before = page.gather(Duration::from_millis(1500)).await;
    assert_eq!(usage_count(&before), 0, "{before:?}");

    page.send(json!({ "type": "next" })).await;
    let at = page.snapshot(StepId::Cgroups).await;
    let view = view_of(&at);
    let groups = Groups::of_view(at.pid, &view);
    let sampled = page.gather(Duration::from_secs(4)).await;
    assert!(usage_count(&sampled) >= 2, "{sampled:?}");
    assert_eq!(
        usage_count(&sampled),
        sampled.len(),
        "only usage: {sampled:?}"
    );
    for usage in &page.usage {
        assert_eq!(usage.memory_max, Some(groups.memory_limit()), "{usage:?}");
        assert_eq!(usage.pids_max, Some(groups.pids_max()), "{usage:?}");
        assert!(usage.pids_current.is_some_and(|n| n >= 1), "{usage:?}");
    }

    // Hidden: once the server has handled the watch (two round trips, so a
    // sample read before it is already out), nothing comes for 3 s.
    page.send(json!({ "type": "watch", "on": false })).await;
    page.sync().await;
    page.sync().await;
    let hidden = page.gather(Duration::from_secs(3)).await;
    assert!(hidden.is_empty(), "while hidden: {hidden:?}");

    // Shown again: sampling resumes.
    page.send(json!({ "type": "watch", "on": true })).await;
    let resumed = page.gather(Duration::from_secs(4)).await;
    assert!(usage_count(&resumed) >= 2, "{resumed:?}");

    // The page goes; with no grace the box and its group go at once.
    let dirs = groups.box_dirs();
    page.ws.close().await;
    wait_gone(at.pid, GONE_TIMEOUT).expect("the box is destroyed without its page");
    assert_groups_removed(&dirs);
    wait_helpers(&server, &[]);
    let status = server.stop();
    assert!(status.success(), "serve exited {status}");
    assert_leak_check_clean_of(&dirs, &[at.pid]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_at_cgroups_leaves_its_group_to_the_sweep() {
    become_subreaper();
    let data = TempData::with_rootfs("cgroups-sigkill");
    let text = data.text();
    let mut server = Server::start_with_env(&[], &[("DAMDA_DATA", &text)]);
    let (mut page, _host) = Page::open(&server).await;
    let at = page.goto(StepId::Cgroups).await;
    let view = view_of(&at);
    let groups = Groups::of_view(at.pid, &view);
    let dirs = groups.box_dirs();
    assert!(!dirs.is_empty());

    signal(server.pid(), nix::sys::signal::Signal::SIGKILL);
    poll(GONE_TIMEOUT, "the server to die", || {
        if server.running() {
            Err("running".into())
        } else {
            Ok(())
        }
    });
    drop(page);
    // The box dies with its server; its group stays, empty, in every
    // hierarchy: no one was left to remove it.
    wait_gone(at.pid, GONE_TIMEOUT).expect("the box dies with its server");
    for dir in &dirs {
        assert!(Path::new(dir).is_dir(), "{dir} was removed by no one?");
    }
    poll(GONE_TIMEOUT, "the group to empty", || {
        let procs = groups.procs();
        if procs.is_empty() {
            Ok(())
        } else {
            Err(format!("{procs:?}"))
        }
    });
    assert_eq!(data.entries("ledger").len(), 1, "the dead server's ledger");
    // The leak check sees them (so its silence elsewhere means something).
    let check = run(damda_bin(), &["sweep", "--check"], Duration::from_secs(20));
    assert!(!check.status.success(), "{check:?}");
    for dir in &dirs {
        let line = format!("left behind: cgroup {dir}");
        assert!(
            check.stdout.lines().any(|l| l == line),
            "{line:?} not in {}",
            check.stdout
        );
    }

    // The sweep reads the dead server's ledger and removes the group.
    let sweep = run_env(
        damda_bin(),
        &["sweep"],
        &[("DAMDA_DATA", &text)],
        Duration::from_secs(30),
    );
    assert!(sweep.status.success(), "{sweep:?}");
    for dir in &dirs {
        assert!(
            sweep.stdout.contains(&format!("removed cgroup {dir}")),
            "{dir} not in {}",
            sweep.stdout
        );
    }
    assert_groups_removed(&dirs);
    assert_eq!(data.entries("ledger"), Vec::<String>::new());
    assert_eq!(data.entries("boxes"), Vec::<String>::new());
    assert_eq!(helpers_of(std::process::id()), Vec::<u32>::new());
    assert_leak_check_clean_of(&dirs, &[at.pid]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_walk_killed_at_cgroups_is_swept_when_the_next_server_starts() {
    become_subreaper();
    let data = TempData::with_rootfs("cgroups-walk-sigkill");
    let text = data.text();
    let env = [("DAMDA_DATA", text.as_str())];
    let walk = HeldWalk::start_with("cgroups", &["--pids", "16"], &env);
    let pid = walk.last().pid;
    let walk_pid = walk.walk_pid();
    let view = view_of(walk.last());
    let groups = Groups::of_view(pid, &view);
    assert_eq!(groups.pids_max(), 16);
    let dirs = groups.box_dirs();
    walk.kill();
    wait_gone(pid, GONE_TIMEOUT).expect("the box dies with its walk");
    for dir in &dirs {
        assert!(Path::new(dir).is_dir(), "{dir} was removed by no one?");
    }
    let dead_ledger = format!("{walk_pid}-");
    assert!(
        data.entries("ledger")
            .iter()
            .any(|f| f.starts_with(&dead_ledger)),
        "{:?}",
        data.entries("ledger")
    );

    // A server starting on the same data sweeps before it listens.
    let server = Server::start_with_env(&[], &env);
    assert_groups_removed(&dirs);
    // It serves; a request answered also means its SIGTERM handler is in
    // place (the handler is installed only once the server runs).
    let health = http_get(server.addr, "/api/health", &[]).await;
    assert_eq!(health.status, 200);
    assert!(
        !data
            .entries("ledger")
            .iter()
            .any(|f| f.starts_with(&dead_ledger)),
        "{:?}",
        data.entries("ledger")
    );
    assert_eq!(data.entries("boxes"), Vec::<String>::new());
    let status = server.stop();
    assert!(status.success(), "serve exited {status}");
    assert_eq!(data.entries("ledger"), Vec::<String>::new());
    assert_leak_check_clean_of(&dirs, &[pid]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_cut_short_by_sigterm_leaves_nothing() {
    become_subreaper();
    let server = Server::start(&["--pids", "24"]);
    let (mut page, host) = Page::open(&server).await;
    let at = page.goto(StepId::Cgroups).await;
    let view = view_of(&at);
    let groups = Groups::of_view(at.pid, &view);
    let dirs = groups.box_dirs();
    let refused_before = groups.pids_refused();
    page.send(json!({ "type": "demo", "demo": "fork_bomb" }))
        .await;
    // The bomb is at its limit: the kernel refuses its forks.
    let bomb = poll(STEP_TIMEOUT, "the bomb to reach pids.max", || {
        let procs = groups.procs();
        if groups.pids_refused() > refused_before {
            Ok(procs)
        } else {
            Err(format!("{procs:?}"))
        }
    });
    assert!(bomb.len() > 2, "{bomb:?}");
    assert!(groups.pids_current() <= groups.pids_max());

    // SIGTERM mid-bomb: the box, the bomb and the group all go.
    let status = server.stop();
    assert!(status.success(), "serve exited {status}");
    drop(page);
    let mut pids = bomb.clone();
    pids.extend([host.pid, at.pid]);
    assert_all_gone_reaping(&pids);
    assert_groups_removed(&dirs);
    assert_eq!(helpers_of(std::process::id()), Vec::<u32>::new());
    assert_leak_check_clean_of(&dirs, &pids);
}
