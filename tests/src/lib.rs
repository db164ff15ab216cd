//! Helpers shared by the end-to-end tests.
//!
//! Everything here observes the real kernel from outside, the way a learner
//! would in a terminal: `readlink`, `lsns`, `nsenter`, /proc. Nothing waits
//! by sleeping and hoping: every wait polls a condition until a deadline and
//! fails with the last thing it saw.

use damda_protocol::{ErrorCode, ImageView, NsKind, ServerMessage, Snapshot, StepId};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// How long one step (a helper spawn, a replay) may take before a test calls
/// it hung. Generous: two cores run two tests, each with boxes.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a killed process may take to disappear from /proc.
pub const GONE_TIMEOUT: Duration = Duration::from_secs(10);
/// What /proc/PID/exe of a box helper reads.
pub const HELPER_EXE: &str = "/memfd:damda-helper (deleted)";
/// The hostname the `uts` step gives the box.
pub const BOX_HOSTNAME: &str = "damda-box";
/// How long a comparison of one run may take: a trial boot, a box, a VM,
/// under software emulation.
pub const COMPARISON_TIMEOUT: Duration = Duration::from_secs(240);

// ---------------------------------------------------------------- paths --

/// The checkout this crate lives in.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The binary under test: `DAMDA_BIN`, else `target/release/damda`.
pub fn damda_bin() -> PathBuf {
    let bin = std::env::var_os("DAMDA_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/release/damda"));
    assert!(
        bin.is_file(),
        "{} does not exist: run `cargo build --release -p damda` or set DAMDA_BIN",
        bin.display()
    );
    bin
}

/// damda's data directory: `DAMDA_DATA`, else `<checkout>/data`.
pub fn data_dir() -> PathBuf {
    std::env::var_os("DAMDA_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("data"))
}

/// The prepared rootfs, canonical (as /proc/PID/root shows it).
pub fn rootfs() -> PathBuf {
    let rootfs = data_dir().join("rootfs");
    assert!(
        rootfs.join("bin/sh").exists(),
        "{} is not prepared: run `target/release/damda prepare`",
        rootfs.display()
    );
    std::fs::canonicalize(&rootfs).expect("the rootfs resolves")
}

/// Where each box gets its own copy of the rootfs (`damda-ID/root`) or its
/// overlay's directories (`damda-ID/upper`, `work`, `merged`).
fn boxes_dir() -> PathBuf {
    let data = std::fs::canonicalize(data_dir()).unwrap_or_else(|_| data_dir());
    data.join("boxes")
}

fn top_level(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The box directory (`…/boxes/damda-ID`) a box root lives in, if it is a
/// per-box copy rather than the prepared rootfs itself.
pub fn box_dir_of(root: &str) -> Option<PathBuf> {
    box_dir_holding(root, &["root"])
}

/// The box directory (`…/boxes/damda-ID`) whose entry `path` is, if its
/// last component is one of `entries`.
fn box_dir_holding(path: &str, entries: &[&str]) -> Option<PathBuf> {
    let dir = Path::new(path).strip_prefix(boxes_dir()).ok()?;
    let mut parts = dir.components();
    let id = parts.next()?.as_os_str().to_string_lossy().into_owned();
    let rest: Vec<_> = parts.collect();
    let entry = match rest.as_slice() {
        [only] => only.as_os_str(),
        _ => return None,
    };
    (id.starts_with("damda-") && entries.iter().any(|e| OsStr::new(e) == entry))
        .then(|| boxes_dir().join(id))
}

/// Whether `root` names a box's root: the prepared rootfs or a per-box copy
/// (the path only; the box may be gone).
pub fn is_box_root_path(root: &str) -> bool {
    Path::new(root) == rootfs() || box_dir_of(root).is_some()
}

/// Asserts that `root` is a box's root: the prepared rootfs, or a box's own
/// copy of it under data/boxes/damda-ID/root with the same top-level entries.
pub fn assert_box_root(root: &str) {
    let prepared = rootfs();
    if Path::new(root) == prepared {
        return;
    }
    assert!(
        box_dir_of(root).is_some(),
        "{root} is neither {} nor a box copy under {}",
        prepared.display(),
        boxes_dir().display()
    );
    assert_eq!(
        top_level(Path::new(root)),
        top_level(&prepared),
        "{root} vs the rootfs"
    );
}

/// Mount points at or under `path` in our mount table.
pub fn mounts_under(path: &Path) -> Vec<String> {
    let prefix = path.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_whitespace().nth(4))
        .filter(|point| point.starts_with(&prefix))
        .map(str::to_owned)
        .collect()
}

/// Asserts that the box directories of these roots were removed, mounts and
/// all, within [`GONE_TIMEOUT`]: a chroot box's copy (`damda-ID/root`) or an
/// overlay box's merged directory (`damda-ID/merged`). Other roots (`/`,
/// the prepared rootfs) have no box directory to check.
pub fn assert_roots_removed(roots: &[String]) {
    for root in roots {
        let Some(dir) = box_dir_holding(root, &["root", "merged"]) else {
            continue;
        };
        poll(GONE_TIMEOUT, "the box directory to be removed", || {
            let mounts = mounts_under(&dir);
            if dir.exists() || !mounts.is_empty() {
                Err(format!(
                    "{} exists: {}, mounts {mounts:?}",
                    dir.display(),
                    dir.exists()
                ))
            } else {
                Ok(())
            }
        });
    }
}

/// A data directory of its own in /tmp, whose rootfs is the prepared one
/// less `without` (to make a step fail for real). Removed when dropped,
/// unless something is still mounted in it.
pub struct TempData {
    pub dir: PathBuf,
}

impl TempData {
    pub fn rootfs_without(without: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("damda-e2e-{}-no-{without}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the temp data dir");
        let source = rootfs().to_string_lossy().into_owned();
        let target = dir.join("rootfs").to_string_lossy().into_owned();
        run_ok("cp", &["-a", &source, &target]);
        let removed = dir.join("rootfs").join(without);
        std::fs::remove_dir_all(&removed)
            .unwrap_or_else(|e| panic!("removing {}: {e}", removed.display()));
        TempData { dir }
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    pub fn text(&self) -> String {
        self.dir.to_string_lossy().into_owned()
    }
}

impl Drop for TempData {
    fn drop(&mut self) {
        if mounts_under(&self.dir).is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// An empty directory of the test's own in /tmp, searchable by all (mode
/// 0755, whatever the umask: a box's root, uid 100000, may have to reach
/// into it). Removed with everything in it when dropped, a failing test
/// included, unless something is still mounted in it.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> Self {
        static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("damda-e2e-{}-{label}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        // Set, not asked of mkdir: the umask does not mask it.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod 755 {}: {e}", path.display()));
        TempDir { path }
    }

    /// `name` inside it.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if mounts_under(&self.path).is_empty() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// The directory holding each instance's ledger file.
pub fn ledger_dir() -> PathBuf {
    data_dir().join("ledger")
}

// -------------------------------------------------------------- polling --

/// Calls `check` until it returns `Ok`, at most for `within`. `Err` carries
/// what was seen last, which the failure message shows.
pub fn poll<T>(within: Duration, what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + within;
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("{what}: still not true after {within:?}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Waits for `child` to exit, killing it (and failing) after `within`.
pub fn wait_child(child: &mut Child, within: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("waitpid works") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} (pid {}) did not exit within {within:?}; killed",
                child.id()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ------------------------------------------------------------ processes --

/// Field `n` (1-based, as in proc(5)) of /proc/PID/stat, if the process exists.
fn stat_field(pid: u32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // Field 3 is the first after the command name.
    after_comm.split_whitespace().nth(n - 3).map(str::to_owned)
}

/// Whether a process with this pid exists at all (a zombie counts).
pub fn pid_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The process state letter (R, S, Z…) if it exists.
pub fn pid_state(pid: u32) -> Option<String> {
    stat_field(pid, 3)
}

/// The parent pid, if the process exists.
pub fn ppid_of(pid: u32) -> Option<u32> {
    stat_field(pid, 4)?.parse().ok()
}

/// Waits until no process `pid` exists (not even a zombie).
///
/// A test that made itself a subreaper ([`become_subreaper`]) inherits the
/// box processes its walk did not reap itself (a PID namespace's child whose
/// helper died first): such a zombie is reaped here, as its parent's duty.
/// Never pass the pid of a `Child` the test still means to wait for.
pub fn wait_gone(pid: u32, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    while pid_exists(pid) {
        if pid_state(pid).as_deref() == Some("Z") && ppid_of(pid) == Some(std::process::id()) {
            let _ = nix::sys::wait::waitpid(
                nix::unistd::Pid::from_raw(pid as i32),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
            continue;
        }
        if Instant::now() >= deadline {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            return Err(format!(
                "pid {pid} ({}) still exists after {within:?}: state {:?}, exe {:?}, ppid {:?}",
                comm.trim(),
                pid_state(pid),
                exe_of(pid),
                ppid_of(pid)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Asserts that every pid in `pids` disappears within [`GONE_TIMEOUT`].
pub fn assert_all_gone(pids: &[u32]) {
    let mut pids = pids.to_vec();
    pids.sort_unstable();
    pids.dedup();
    let failures: Vec<String> = pids
        .iter()
        .filter_map(|pid| wait_gone(*pid, GONE_TIMEOUT).err())
        .collect();
    assert!(failures.is_empty(), "left behind: {failures:#?}");
}

/// Where /proc/PID/exe points, if readable.
pub fn exe_of(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// Every live box helper process on the host whose parent is `ppid`.
pub fn helpers_of(ppid: u32) -> Vec<u32> {
    let Ok(listing) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found: Vec<u32> = listing
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| ppid_of(*pid) == Some(ppid) && exe_of(*pid).as_deref() == Some(HELPER_EXE))
        .collect();
    found.sort_unstable();
    found
}

/// Makes this test process a child subreaper: a box helper orphaned by a
/// walk or server that died becomes our child, so [`helpers_of`] with our own
/// pid finds leaks instead of losing them to PID 1.
pub fn become_subreaper() {
    nix::sys::prctl::set_child_subreaper(true).expect("prctl(PR_SET_CHILD_SUBREAPER)");
}

/// Sends `signal` to `pid`, ignoring a process already gone.
pub fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
}

/// This machine's hostname as the test process sees it.
pub fn own_hostname() -> String {
    nix::unistd::gethostname()
        .expect("gethostname")
        .to_string_lossy()
        .into_owned()
}

// ------------------------------------------------------------- commands --

/// What a finished command printed.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

fn drain(stream: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(stream).read_to_string(&mut text);
        text
    })
}

/// Runs `program args…` to completion; fails the test if it takes longer
/// than `within` (the command is killed).
pub fn run(program: impl AsRef<std::ffi::OsStr>, args: &[&str], within: Duration) -> Output {
    run_env(program, args, &[], within)
}

/// [`run`] with extra environment variables.
pub fn run_env(
    program: impl AsRef<std::ffi::OsStr>,
    args: &[&str],
    env: &[(&str, &str)],
    within: Duration,
) -> Output {
    let program = program.as_ref();
    let mut child = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {program:?}: {e}"));
    let out = drain(child.stdout.take().expect("piped"));
    let err = drain(child.stderr.take().expect("piped"));
    let what = format!("{program:?} {args:?}");
    let status = wait_child(&mut child, within, &what);
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// A port on 127.0.0.1 that was free a moment ago (for a program the test
/// starts with an explicit port).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// `GET /` over HTTP/1.0 from `address` (HOST:PORT), retried for up to 10 s
/// while the server comes up; the whole reply, headers included.
pub fn get_page(address: &str) -> String {
    use std::io::Write;
    poll(
        Duration::from_secs(10),
        &format!("HTTP from {address}"),
        || {
            let target: SocketAddr = address.parse().map_err(|e| format!("{address}: {e}"))?;
            let mut stream = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(2))
                .map_err(|e| e.to_string())?;
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .map_err(|e| e.to_string())?;
            stream
                .write_all(b"GET / HTTP/1.0\r\nHost: box\r\n\r\n")
                .map_err(|e| e.to_string())?;
            let mut reply = String::new();
            stream
                .read_to_string(&mut reply)
                .map_err(|e| e.to_string())?;
            if reply.starts_with("HTTP/1") {
                Ok(reply)
            } else {
                Err(format!("reply {reply:?}"))
            }
        },
    )
}

/// Runs a command that must succeed (within 20 s); returns its standard
/// output.
pub fn run_ok(program: impl AsRef<OsStr>, args: &[&str]) -> String {
    run_ok_within(program, args, Duration::from_secs(20)).stdout
}

/// Runs a command that must succeed within `within`; returns all it printed.
pub fn run_ok_within(program: impl AsRef<OsStr>, args: &[&str], within: Duration) -> Output {
    let program = program.as_ref();
    let output = run(program, args, within);
    assert!(
        output.status.success(),
        "{program:?} {args:?} failed ({}): {}\n{}",
        output.status,
        output.stdout,
        output.stderr
    );
    output
}

/// `ip -j ARGS…` on the host, parsed.
pub fn ip_json(args: &[&str]) -> Vec<Value> {
    let mut full = vec!["-j"];
    full.extend_from_slice(args);
    let out = run_ok("ip", &full);
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("ip {full:?} printed non-JSON ({e}): {out:?}"))
}

/// `ip -j ARGS…` in the network namespace of `pid`, parsed.
pub fn ip_json_in(pid: u32, args: &[&str]) -> Vec<Value> {
    let mut full = vec!["-n", "ip", "-j"];
    full.extend_from_slice(args);
    let out = nsenter_ok(pid, &full);
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("nsenter -t {pid} {full:?} printed non-JSON ({e}): {out:?}"))
}

/// `readlink PATH…` (the coreutils tool), one target per path.
pub fn readlink(paths: &[String]) -> Vec<String> {
    let args: Vec<&str> = paths.iter().map(String::as_str).collect();
    let out = run_ok("readlink", &args);
    let targets: Vec<String> = out.lines().map(str::to_owned).collect();
    assert_eq!(
        targets.len(),
        paths.len(),
        "readlink {paths:?} printed {out:?}"
    );
    targets
}

/// The inode in a namespace link's target, such as `uts:[4026531838]`.
pub fn parse_ns_link(target: &str) -> u64 {
    target
        .split_once(":[")
        .and_then(|(_, rest)| rest.strip_suffix(']'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a namespace link: {target:?}"))
}

/// The eight namespace inodes of `pid`, in [`NsKind::ALL`] order, read with
/// `readlink /proc/PID/ns/*`.
pub fn ns_of(pid: u32) -> [u64; 8] {
    let paths: Vec<String> = NsKind::ALL
        .iter()
        .map(|kind| format!("/proc/{pid}/ns/{}", kind.proc_name()))
        .collect();
    let targets = readlink(&paths);
    let mut inodes = [0u64; 8];
    for (i, (kind, target)) in NsKind::ALL.iter().zip(&targets).enumerate() {
        assert!(
            target.starts_with(&format!("{}:[", kind.proc_name())),
            "{} -> {target}",
            paths[i]
        );
        inodes[i] = parse_ns_link(target);
    }
    inodes
}

/// The test process's own namespaces: "the host".
pub fn own_ns() -> [u64; 8] {
    ns_of(std::process::id())
}

/// The page's side-by-side view of the /proc file `path`.
pub fn proc_file<'a>(snapshot: &'a Snapshot, path: &str) -> &'a damda_protocol::ProcFile {
    snapshot
        .proc_files
        .iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("{path} is not among the compared files"))
}

/// The image view a snapshot has from the overlay step on.
pub fn image_view(snapshot: &Snapshot) -> &ImageView {
    snapshot
        .image
        .as_ref()
        .unwrap_or_else(|| panic!("no image view at {}", snapshot.step))
}

/// An overlay box's directory on the host: its upper directory's parent
/// (`…/boxes/damda-ID`, holding `upper`, `work` and `merged`).
pub fn overlay_dir(view: &ImageView) -> PathBuf {
    Path::new(&view.upper_dir)
        .parent()
        .unwrap_or_else(|| panic!("upper directory {} has no parent", view.upper_dir))
        .to_owned()
}

/// Asserts that `path` is an overlay whiteout: a character device 0:0.
pub fn assert_whiteout(path: &Path) {
    let meta = std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("the whiteout {}: {e}", path.display()));
    assert!(
        meta.file_type().is_char_device() && meta.rdev() == 0,
        "{} is not a 0:0 whiteout: {:?}, rdev {:#x}",
        path.display(),
        meta.file_type(),
        meta.rdev()
    );
}

/// The box side of a snapshot's namespaces, in [`NsKind::ALL`] order.
pub fn snapshot_box_ns(snapshot: &Snapshot) -> [u64; 8] {
    NsKind::ALL.map(|kind| snapshot.namespaces.get(kind).boxed)
}

/// The host side of a snapshot's namespaces, in [`NsKind::ALL`] order.
pub fn snapshot_host_ns(snapshot: &Snapshot) -> [u64; 8] {
    NsKind::ALL.map(|kind| snapshot.namespaces.get(kind).host)
}

/// The names of the namespace types in which `a` and `b` differ.
pub fn differing(a: &[u64; 8], b: &[u64; 8]) -> Vec<&'static str> {
    NsKind::ALL
        .iter()
        .zip(a.iter().zip(b))
        .filter(|(_, (x, y))| x != y)
        .map(|(kind, _)| kind.proc_name())
        .collect()
}

/// `nsenter -t PID -u hostname`: the hostname in the UTS namespace of `pid`.
pub fn hostname_in(pid: u32) -> String {
    run_ok("nsenter", &["-t", &pid.to_string(), "-u", "hostname"])
        .trim()
        .to_owned()
}

/// `readlink /proc/PID/root`.
pub fn root_of(pid: u32) -> String {
    readlink(&[format!("/proc/{pid}/root")]).remove(0)
}

/// `lsns -p PID -o NS,TYPE --noheadings`: (type, inode) for every type listed.
pub fn lsns_of(pid: u32) -> Vec<(String, u64)> {
    lsns_owners(pid)
        .into_iter()
        .map(|(kind, inode, _owner)| (kind, inode))
        .collect()
}

/// The fds a process holds: (number, link target).
pub fn fds_of(pid: u32) -> Vec<(u32, String)> {
    let mut fds: Vec<(u32, String)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("listing /proc/{pid}/fd: {e}"))
        .flatten()
        .map(|entry| {
            let n = entry
                .file_name()
                .to_string_lossy()
                .parse()
                .expect("fd number");
            let target = std::fs::read_link(entry.path())
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_else(|e| format!("<{e}>"));
            (n, target)
        })
        .collect();
    fds.sort();
    fds
}

/// A process started by a test, killed and reaped when dropped.
pub struct Spawned {
    pub child: Child,
}

/// Starts `program` with no stdio, panicking with the command if it cannot.
fn spawn_quietly(program: &str, args: &[&str]) -> Child {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {program} {args:?}: {e}"))
}

impl Spawned {
    pub fn start(program: &str, args: &[&str]) -> Self {
        Spawned {
            child: spawn_quietly(program, args),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ----------------------------------------------------------------- walk --

/// Parses a walk line as a snapshot, failing with the line on error.
pub fn parse_snapshot(line: &Value) -> Snapshot {
    serde_json::from_value(line.clone()).unwrap_or_else(|e| panic!("not a snapshot ({e}): {line}"))
}

/// A finished `damda walk` without --hold.
#[derive(Debug)]
pub struct WalkRun {
    pub status: ExitStatus,
    pub lines: Vec<Value>,
    pub stderr: String,
}

/// Runs `damda walk ARGS…` to its end.
pub fn walk(args: &[&str]) -> WalkRun {
    walk_with_env(args, &[])
}

/// Runs `damda walk ARGS…` with extra environment (DAMDA_DATA) to its end.
pub fn walk_with_env(args: &[&str], env: &[(&str, &str)]) -> WalkRun {
    let mut full = vec!["walk"];
    full.extend_from_slice(args);
    let output = run_env(damda_bin(), &full, env, Duration::from_secs(60));
    let lines = output
        .stdout
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("walk printed non-JSON ({e}): {line:?}"))
        })
        .collect();
    WalkRun {
        status: output.status,
        lines,
        stderr: output.stderr,
    }
}

/// Collects a child's output lines into a shared string, as they come (its
/// standard error, for failure messages).
pub fn collect(stream: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let mut sink = sink.lock().unwrap_or_else(|e| e.into_inner());
            sink.push_str(&line);
            sink.push('\n');
        }
    });
    text
}

/// No box helper was left orphaned to this (subreaper) test process.
pub fn assert_no_orphaned_helpers() {
    assert_eq!(
        helpers_of(std::process::id()),
        Vec::<u32>::new(),
        "orphaned helpers"
    );
}

/// Runs `script` with the box's busybox sh as root inside the box (all its
/// namespaces, its root and working directory, uid and gid 0 inside).
pub fn sh_as_box_root(pid: u32, script: &str) -> Output {
    nsenter(
        pid,
        &[
            "-a",
            "-r",
            "-w",
            "-S",
            "0",
            "-G",
            "0",
            "/bin/busybox",
            "sh",
            "-c",
            script,
        ],
    )
}

/// Sends each line of a child's standard output down a channel.
pub fn line_channel(stream: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// `damda walk --to STEP --hold`: the box stays alive for outside tools until
/// this is finished or dropped (which closes the walk's standard input).
pub struct HeldWalk {
    child: Child,
    stdin: Option<ChildStdin>,
    lines_rx: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
    /// Every line printed so far, as JSON.
    pub lines: Vec<Value>,
    /// The same lines as snapshots.
    pub snapshots: Vec<Snapshot>,
}

/// How a held walk ended.
#[derive(Debug)]
pub struct WalkEnd {
    pub status: ExitStatus,
    /// Lines printed after the target step (none expected).
    pub extra_lines: Vec<String>,
    pub stderr: String,
}

impl HeldWalk {
    /// Walks to `to` and holds the box there.
    pub fn start(to: &str) -> Self {
        Self::start_with_env(to, &[])
    }

    /// [`HeldWalk::start`] with extra environment (DAMDA_DATA).
    pub fn start_with_env(to: &str, env: &[(&str, &str)]) -> Self {
        Self::start_with(to, &[], env)
    }

    /// [`HeldWalk::start`] with extra arguments (limits) and environment.
    pub fn start_with(to: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(damda_bin())
            .args(["walk", "--to", to, "--hold"])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting damda walk");
        let stdin = child.stdin.take();
        let lines_rx = line_channel(child.stdout.take().expect("piped"));
        let stderr = collect(child.stderr.take().expect("piped"));
        let mut walk = HeldWalk {
            child,
            stdin,
            lines_rx,
            stderr,
            lines: Vec::new(),
            snapshots: Vec::new(),
        };
        loop {
            let line = match walk.lines_rx.recv_timeout(STEP_TIMEOUT) {
                Ok(line) => line,
                Err(e) => panic!(
                    "damda walk --to {to} --hold {args:?}: no line reaching {to} ({e}); lines so far {:?}; stderr: {}",
                    walk.lines,
                    walk.stderr()
                ),
            };
            let value: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("walk printed non-JSON ({e}): {line:?}"));
            assert!(
                value.get("error").is_none(),
                "walk --to {to} failed: {value}"
            );
            let snapshot = parse_snapshot(&value);
            let reached = snapshot.step.as_str() == to;
            walk.lines.push(value);
            walk.snapshots.push(snapshot);
            if reached {
                return walk;
            }
        }
    }

    /// The snapshot of the step held.
    pub fn last(&self) -> &Snapshot {
        self.snapshots.last().expect("at least one snapshot")
    }

    /// The box's main process (the helper).
    pub fn pid(&self) -> u32 {
        self.last().pid
    }

    /// The walk process itself.
    pub fn walk_pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Closes the walk's standard input and waits for it to clean up and exit.
    pub fn finish(mut self) -> WalkEnd {
        drop(self.stdin.take());
        let status = wait_child(
            &mut self.child,
            Duration::from_secs(20),
            "damda walk --hold",
        );
        let extra_lines = self.lines_rx.try_iter().collect();
        WalkEnd {
            status,
            extra_lines,
            stderr: self.stderr(),
        }
    }

    /// Ends the walk and checks it exited cleanly and left none of its boxes:
    /// no process, no root directory, no orphaned helper.
    pub fn end_cleanly(self) {
        let pids: Vec<u32> = self.snapshots.iter().map(|s| s.pid).collect();
        // A pivot_root box's root reads `/`: its directory is known by the
        // image view's upper directory instead.
        let roots: Vec<String> = self
            .snapshots
            .iter()
            .flat_map(|s| {
                let merged = s.image.as_ref().map(|view| {
                    overlay_dir(view)
                        .join("merged")
                        .to_string_lossy()
                        .into_owned()
                });
                std::iter::once(s.box_process.root.clone()).chain(merged)
            })
            .collect();
        let end = self.finish();
        assert!(
            end.status.success(),
            "walk exit {}: {}",
            end.status,
            end.stderr
        );
        assert!(end.extra_lines.is_empty(), "{:?}", end.extra_lines);
        assert_all_gone(&pids);
        assert_roots_removed(&roots);
        assert_no_orphaned_helpers();
    }

    /// SIGKILL: the walk gets no chance to clean up.
    pub fn kill(mut self) {
        signal(self.walk_pid(), nix::sys::signal::Signal::SIGKILL);
        wait_child(
            &mut self.child,
            Duration::from_secs(10),
            "damda walk after SIGKILL",
        );
    }
}

impl Drop for HeldWalk {
    fn drop(&mut self) {
        drop(self.stdin.take());
        wait_then_kill(&mut self.child, Duration::from_secs(10));
    }
}

/// Waits up to `timeout` for `child` to exit by itself, then kills it; it is
/// reaped either way.
fn wait_then_kill(child: &mut Child, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

// --------------------------------------------------------------- server --

/// A running `damda serve --listen 127.0.0.1:0 ARGS…`; SIGTERM when dropped.
pub struct Server {
    child: Child,
    pub url: String,
    pub addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
    _stdout: mpsc::Receiver<String>,
}

impl Server {
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// With extra environment variables (DAMDA_DATA to point elsewhere).
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(damda_bin())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting damda serve");
        let stdout = line_channel(child.stdout.take().expect("piped"));
        let stderr = collect(child.stderr.take().expect("piped"));
        let url = match stdout.recv_timeout(STEP_TIMEOUT) {
            Ok(line) => line,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "damda serve printed no URL ({e}); stderr: {}",
                    stderr.lock().unwrap_or_else(|e| e.into_inner())
                );
            }
        };
        let addr: SocketAddr = url
            .strip_prefix("http://")
            .and_then(|rest| rest.strip_suffix('/'))
            .and_then(|hostport| hostport.parse().ok())
            .unwrap_or_else(|| panic!("first line is not http://127.0.0.1:N/: {url:?}"));
        assert!(addr.ip().is_loopback() && addr.port() != 0, "{url}");
        Server {
            child,
            url,
            addr,
            stderr,
            _stdout: stdout,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The Host header a page on this server sends: `127.0.0.1:N`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The box helpers this server runs now.
    pub fn helpers(&self) -> Vec<u32> {
        helpers_of(self.pid())
    }

    /// Whether the server process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(mut self) -> ExitStatus {
        self.terminate()
    }

    fn terminate(&mut self) -> ExitStatus {
        if let Ok(Some(status)) = self.child.try_wait() {
            return status;
        }
        signal(self.pid(), nix::sys::signal::Signal::SIGTERM);
        wait_child(
            &mut self.child,
            Duration::from_secs(15),
            "damda serve after SIGTERM",
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- damda serve stderr ---\n{}", self.stderr());
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            signal(self.pid(), nix::sys::signal::Signal::SIGTERM);
            wait_then_kill(&mut self.child, Duration::from_secs(15));
        }
    }
}

// ----------------------------------------------------------------- http --

/// A response read by [`http_get`].
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = find(body, b"\r\n").expect("chunk size line");
        let size_text = std::str::from_utf8(&body[..line_end]).expect("chunk size is text");
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or_else(|e| panic!("chunk size {size_text:?}: {e}"));
        body = &body[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

/// A minimal HTTP/1.1 GET over a fresh connection. `headers` may override
/// Host (default: the address itself) and add Origin or anything else.
pub async fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let mut request = format!("GET {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .unwrap_or_else(|_| panic!("GET {path}: no answer in 20 s"))
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let head_end = find(&raw, b"\r\n\r\n").unwrap_or_else(|| {
        panic!(
            "GET {path}: no header end in {:?}",
            String::from_utf8_lossy(&raw)
        )
    });
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("GET {path}: status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut response = HttpResponse {
        status,
        headers,
        body: raw[head_end + 4..].to_vec(),
    };
    if response
        .header("transfer-encoding")
        .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
    {
        response.body = dechunk(&response.body);
    } else if let Some(length) = response.header("content-length") {
        let length: usize = length.parse().expect("content-length is a number");
        assert_eq!(response.body.len(), length, "GET {path}: body length");
    }
    response
}

// ------------------------------------------------------------ websocket --

type Stream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What arrived on a websocket.
#[derive(Debug)]
pub enum Event {
    /// A text frame, parsed both as JSON and as the protocol's message.
    Message(Value, ServerMessage),
    /// The server sent a close frame.
    Closed(Option<CloseFrame>),
    /// The connection ended without a close frame (or with an error).
    Ended(String),
}

/// A websocket client speaking damda's protocol.
pub struct Ws {
    stream: Stream,
}

impl Ws {
    /// Opens `/ws` on `server` with `headers` added (or replacing Host).
    pub async fn connect(
        server: &Server,
        headers: &[(&str, &str)],
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let mut request = server.ws_url().into_client_request()?;
        for (name, value) in headers {
            let name: tokio_tungstenite::tungstenite::http::HeaderName =
                name.parse().expect("header name");
            request
                .headers_mut()
                .insert(name, HeaderValue::from_str(value).expect("header value"));
        }
        let connect = tokio_tungstenite::connect_async(request);
        let (stream, _response) = tokio::time::timeout(STEP_TIMEOUT, connect)
            .await
            .expect("websocket handshake within the step timeout")?;
        Ok(Ws { stream })
    }

    /// Connects and reads the greeting: the session id and the snapshot at
    /// `host`.
    pub async fn open(server: &Server) -> (Ws, String, Snapshot) {
        let mut ws = Ws::connect(server, &[])
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", server.ws_url()));
        let id = ws.expect_session().await;
        let snapshot = ws.expect_snapshot(StepId::Host).await;
        (ws, id, snapshot)
    }

    pub async fn send_json(&mut self, message: Value) {
        self.send_text(message.to_string()).await;
    }

    pub async fn send_text(&mut self, text: String) {
        self.stream
            .send(Message::Text(text.into()))
            .await
            .expect("sending a text frame");
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.stream
            .send(Message::Binary(bytes.into()))
            .await
            .expect("sending a binary frame");
    }

    /// The next event within `within`; fails the test on a timeout.
    pub async fn next_event(&mut self, within: Duration) -> Event {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let next = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .unwrap_or_else(|_| panic!("nothing arrived on the websocket within {within:?}"));
            return match next {
                None => Event::Ended("stream ended".into()),
                Some(Err(e)) => Event::Ended(e.to_string()),
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(text.as_str())
                        .unwrap_or_else(|e| panic!("server sent non-JSON text ({e}): {text}"));
                    let typed: ServerMessage = serde_json::from_value(value.clone())
                        .unwrap_or_else(|e| {
                            panic!("server sent a message outside the protocol ({e}): {value}")
                        });
                    Event::Message(value, typed)
                }
                Some(Ok(Message::Close(frame))) => Event::Closed(frame),
                // Transport keep-alives carry no message; tungstenite answers pings.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(other)) => panic!("unexpected frame from the server: {other:?}"),
            };
        }
    }

    /// The next protocol message other than live usage and traffic, which
    /// the sampler sends on its own clock from the cgroups step on (tests
    /// that read them use `next_event`); anything else fails the test.
    pub async fn recv(&mut self) -> ServerMessage {
        loop {
            match self.next_event(STEP_TIMEOUT).await {
                Event::Message(
                    _,
                    ServerMessage::Usage(_)
                    | ServerMessage::Network(_)
                    | ServerMessage::Changes { .. },
                ) => continue,
                Event::Message(_, message) => return message,
                other => panic!("expected a message, got {other:?}"),
            }
        }
    }

    pub async fn expect_session(&mut self) -> String {
        match self.recv().await {
            ServerMessage::Session { id } => {
                assert!(!id.is_empty(), "empty session id");
                id
            }
            other => panic!("expected a session message, got {other:?}"),
        }
    }

    /// The next message must be a snapshot at `step`.
    pub async fn expect_snapshot(&mut self, step: StepId) -> Snapshot {
        match self.recv().await {
            ServerMessage::Snapshot(snapshot) => {
                assert_eq!(snapshot.step, step, "snapshot at the wrong step");
                *snapshot
            }
            other => panic!("expected a snapshot at {step}, got {other:?}"),
        }
    }

    /// The next message must be `busy`.
    pub async fn expect_busy(&mut self) -> String {
        match self.recv().await {
            ServerMessage::Busy { message } => {
                assert!(!message.is_empty(), "busy without a message");
                message
            }
            other => panic!("expected busy, got {other:?}"),
        }
    }

    /// The next message must be an error with `code`; returns the whole
    /// message for further checks.
    pub async fn expect_error(&mut self, code: ErrorCode) -> ServerMessage {
        let message = self.recv().await;
        let matches = matches!(
            &message,
            ServerMessage::Error { code: got, message: text, .. } if *got == code && !text.is_empty()
        );
        assert!(
            matches,
            "expected error {code:?} with a message, got {message:?}"
        );
        message
    }

    /// Sends a close frame and waits for the server to end the connection.
    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => panic!("the server did not end the connection after our close"),
                Ok(None) | Ok(Some(Err(_))) => return,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
}

/// Polls `helpers_of(server)` until it equals `expected` (sorted).
pub fn wait_helpers(server: &Server, expected: &[u32]) {
    let mut expected = expected.to_vec();
    expected.sort_unstable();
    poll(GONE_TIMEOUT, "the server's helpers", || {
        let now = server.helpers();
        if now == expected {
            Ok(())
        } else {
            Err(format!("{now:?}, expected {expected:?}"))
        }
    });
}

// ----------------------------------------------------------- namespaces --

/// The step that gives a box its own namespace of `kind`, if any does.
fn step_separating(kind: NsKind) -> Option<StepId> {
    match kind {
        NsKind::Uts => Some(StepId::Uts),
        NsKind::Pid => Some(StepId::Pid),
        NsKind::Mnt => Some(StepId::Mnt),
        NsKind::Ipc => Some(StepId::Ipc),
        NsKind::Net => Some(StepId::Net),
        NsKind::User => Some(StepId::User),
        NsKind::Cgroup => Some(StepId::Cgroupns),
        NsKind::Time => None,
    }
}

/// The namespace types a box has of its own once it stands at `step`, in
/// [`NsKind::ALL`] order: every namespace step up to it adds one.
pub fn separated_at(step: StepId) -> Vec<&'static str> {
    NsKind::ALL
        .into_iter()
        .filter(|kind| step_separating(*kind).is_some_and(|s| s <= step))
        .map(NsKind::proc_name)
        .collect()
}

/// The `nsenter` option that enters a namespace of `kind`.
pub fn nsenter_flag(kind: NsKind) -> &'static str {
    match kind {
        NsKind::Uts => "-u",
        NsKind::Pid => "-p",
        NsKind::Mnt => "-m",
        NsKind::Ipc => "-i",
        NsKind::Net => "-n",
        NsKind::User => "-U",
        NsKind::Cgroup => "-C",
        NsKind::Time => "-T",
    }
}

/// `lsns -p PID -o NS,TYPE,ONS --noheadings`: (type, inode, owning user
/// namespace's inode) for every type listed.
pub fn lsns_owners(pid: u32) -> Vec<(String, u64, u64)> {
    run_ok(
        "lsns",
        &["-p", &pid.to_string(), "-o", "TYPE,NS,ONS", "--noheadings"],
    )
    .lines()
    .filter(|line| !line.trim().is_empty())
    .map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let number = |i: usize| -> u64 {
            fields
                .get(i)
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("lsns line {line:?}"))
        };
        (fields[0].to_owned(), number(1), number(2))
    })
    .collect()
}

/// `nsenter -t PID ARGS…` to completion (20 s at most).
pub fn nsenter(pid: u32, args: &[&str]) -> Output {
    let pid = pid.to_string();
    let mut full = vec!["-t", pid.as_str()];
    full.extend_from_slice(args);
    run("nsenter", &full, Duration::from_secs(20))
}

/// `uid gid` of /bin/busybox as the box's root sees it (in all its
/// namespaces and its root).
pub fn busybox_owner_in_box(pid: u32) -> String {
    nsenter_ok(
        pid,
        &[
            "-a",
            "-r",
            "-w",
            "/bin/busybox",
            "stat",
            "-c",
            "%u %g",
            "/bin/busybox",
        ],
    )
}

/// [`nsenter`] that must succeed; returns its standard output.
pub fn nsenter_ok(pid: u32, args: &[&str]) -> String {
    let output = nsenter(pid, args);
    assert!(
        output.status.success(),
        "nsenter -t {pid} {args:?} failed ({}): {}{}",
        output.status,
        output.stdout,
        output.stderr
    );
    output.stdout
}

/// The value of one `Key:` line of /proc/PID/status, if present.
fn status_value(pid: u32, key: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name == key).then(|| value.trim().to_owned())
    })
}

/// The numbers of a status line such as `NSpid:` or `Uid:`.
pub fn status_numbers(pid: u32, key: &str) -> Vec<u64> {
    let value =
        status_value(pid, key).unwrap_or_else(|| panic!("/proc/{pid}/status has no {key} line"));
    value
        .split_whitespace()
        .map(|n| {
            n.parse()
                .unwrap_or_else(|e| panic!("{key} of {pid}: {value:?}: {e}"))
        })
        .collect()
}

/// A capability set line of /proc/PID/status (`CapEff` …) as a number.
pub fn status_caps(pid: u32, key: &str) -> u64 {
    let value =
        status_value(pid, key).unwrap_or_else(|| panic!("/proc/{pid}/status has no {key} line"));
    u64::from_str_radix(&value, 16).unwrap_or_else(|e| panic!("{key} {value:?}: {e}"))
}

/// `text` with every run of blanks made one space and blank lines dropped,
/// as a list of lines: uid_map's column padding does not matter.
pub fn normalise_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|line| !line.is_empty())
        .collect()
}

/// One line of a mountinfo file (proc(5)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountLine {
    pub id: u32,
    pub parent: u32,
    /// `major:minor` of the filesystem.
    pub dev: String,
    /// The directory of the filesystem mounted here.
    pub root: String,
    /// Where it is mounted, relative to the reader's root.
    pub point: String,
    /// Optional fields such as `shared:1` or `master:2`.
    pub optional: Vec<String>,
    pub fstype: String,
    /// The mount source, such as `/dev/vda` or `overlay`.
    pub source: String,
    /// The filesystem's own options, such as an overlay's `lowerdir=…`.
    pub super_options: String,
    /// The whole line, as the kernel wrote it.
    pub line: String,
}

/// Parses mountinfo text.
fn parse_mountinfo(text: &str) -> Vec<MountLine> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let dash = fields
                .iter()
                .position(|f| *f == "-")
                .unwrap_or_else(|| panic!("mountinfo line without '-': {line:?}"));
            assert!(dash >= 6 && fields.len() > dash + 3, "{line:?}");
            MountLine {
                id: fields[0].parse().expect("mount id"),
                parent: fields[1].parse().expect("parent id"),
                dev: fields[2].to_owned(),
                root: fields[3].to_owned(),
                point: fields[4].to_owned(),
                optional: fields[6..dash].iter().map(|f| (*f).to_owned()).collect(),
                fstype: fields[dash + 1].to_owned(),
                source: fields[dash + 2].to_owned(),
                super_options: fields[dash + 3].to_owned(),
                line: line.to_owned(),
            }
        })
        .collect()
}

/// /proc/PID/mountinfo: the mount table of `pid`'s mount namespace, as seen
/// from its root.
pub fn mountinfo_of(pid: u32) -> Vec<MountLine> {
    let path = format!("/proc/{pid}/mountinfo");
    parse_mountinfo(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}")),
    )
}

/// The paths of /proc/PID/cgroup text (`hierarchy:controllers:path`), in order.
pub fn cgroup_paths(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            line.splitn(3, ':')
                .nth(2)
                .unwrap_or_else(|| panic!("cgroup line {line:?}"))
                .to_owned()
        })
        .collect()
}

/// The msqid column of `ipcs -q` output.
pub fn sysv_queue_ids(ipcs_output: &str) -> Vec<u32> {
    ipcs_output
        .lines()
        .filter(|line| line.starts_with("0x"))
        .filter_map(|line| line.split_whitespace().nth(1)?.parse().ok())
        .collect()
}

/// A System V message queue made on the host with `ipcmk -Q`, removed with
/// `ipcrm -q ID` when dropped (a failing test included).
pub struct SysvQueue {
    pub id: u32,
}

impl SysvQueue {
    pub fn create() -> Self {
        let out = run_ok("ipcmk", &["-Q"]);
        let id = out
            .trim()
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("ipcmk -Q printed {out:?}"));
        SysvQueue { id }
    }

    /// Whether `ipcs -q` on the host lists it.
    pub fn on_host(&self) -> bool {
        sysv_queue_ids(&run_ok("ipcs", &["-q"])).contains(&self.id)
    }
}

impl Drop for SysvQueue {
    fn drop(&mut self) {
        let _ = run(
            "ipcrm",
            &["-q", &self.id.to_string()],
            Duration::from_secs(10),
        );
    }
}

/// The POSIX message queues of the host's IPC namespace, listed by mounting
/// an mqueue filesystem in a throwaway mount namespace (nothing shows on the
/// host's mount table).
pub fn host_mqueues() -> Vec<String> {
    static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("e2e-mq-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating a mount point");
    let dir_text = dir.to_string_lossy().into_owned();
    let output = run(
        "unshare",
        &[
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            r#"mount -t mqueue none "$1" && ls -1 "$1""#,
            "sh",
            &dir_text,
        ],
        Duration::from_secs(20),
    );
    let _ = std::fs::remove_dir(&dir);
    assert!(
        output.status.success(),
        "listing message queues: {}",
        output.stderr
    );
    normalise_lines(&output.stdout)
}

/// Every descendant of `pid` now (children, their children…).
pub fn descendants_of(pid: u32) -> Vec<u32> {
    let Ok(listing) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parents: Vec<(u32, u32)> = listing
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| Some((p, ppid_of(p)?)))
        .collect();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// A process started by a test together with everything it forks: the whole
/// tree is SIGKILLed and waited for when dropped (a failing test included).
pub struct SpawnedTree {
    pub child: Child,
}

impl SpawnedTree {
    pub fn start(program: &str, args: &[&str]) -> Self {
        SpawnedTree {
            child: spawn_quietly(program, args),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The one process the started one forked, once it exists and has
    /// exec'd `comm` (e.g. the PID namespace's first process after
    /// `unshare --fork`).
    pub fn forked(&self, comm: &str) -> u32 {
        let pid = self.pid();
        poll(STEP_TIMEOUT, &format!("{pid} to fork {comm}"), || {
            let children: Vec<u32> = descendants_of(pid)
                .into_iter()
                .filter(|p| ppid_of(*p) == Some(pid))
                .collect();
            match children.as_slice() {
                [only] if comm_of(*only).as_deref() == Some(comm) => Ok(*only),
                other => Err(format!(
                    "children {other:?}: {:?}",
                    other.iter().map(|p| comm_of(*p)).collect::<Vec<_>>()
                )),
            }
        })
    }
}

impl Drop for SpawnedTree {
    fn drop(&mut self) {
        let tree = descendants_of(self.pid());
        for pid in &tree {
            signal(*pid, nix::sys::signal::Signal::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in tree {
            let _ = wait_gone(pid, GONE_TIMEOUT);
        }
    }
}

/// /proc/PID/comm, if the process exists.
pub fn comm_of(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim().to_owned())
}

/// /proc/PID/cmdline as its arguments (none if the process is gone or a
/// kernel thread).
pub fn cmdline_of(pid: u32) -> Vec<String> {
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return Vec::new();
    };
    if raw.is_empty() {
        return Vec::new();
    }
    // Each argument ends in a NUL; an empty argument is still one.
    raw.strip_suffix(b"\0")
        .unwrap_or(&raw)
        .split(|b| *b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

/// `damda __box-escape PID`: the chroot escape, run for real.
pub fn box_escape(pid: u32) -> Output {
    run(
        damda_bin(),
        &["__box-escape", &pid.to_string()],
        Duration::from_secs(20),
    )
}

impl TempData {
    /// A data directory of its own with a full copy of the prepared rootfs
    /// (and nothing else): boxes, ledger and mounts made with it are the
    /// test's own.
    pub fn with_rootfs(label: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("damda-e2e-{}-{label}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the temp data dir");
        let source = rootfs().to_string_lossy().into_owned();
        let target = dir.join("rootfs").to_string_lossy().into_owned();
        run_ok("cp", &["-a", &source, &target]);
        TempData { dir }
    }

    /// The names in one of its directories (`boxes`, `ledger`), sorted.
    pub fn entries(&self, sub: &str) -> Vec<String> {
        let dir = self.dir.join(sub);
        if !dir.exists() {
            return Vec::new();
        }
        top_level(&dir)
    }
}
