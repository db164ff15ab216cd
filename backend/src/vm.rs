//! A small qemu VM for tests and for the VM-vs-container comparison: an
//! initramfs built here (busybox, a test binary with the shared libraries it
//! needs, an `/init` script), Debian's kernel from data/vm (scripts/setup.sh
//! unpacks it there), and a boot that captures the serial console.
//!
//! /dev/kvm on the project's machines cannot run a stock kernel, so the
//! default is software emulation (TCG): `-M q35` boots to /init in about
//! 2.5 s of guest time (about 5 s on the wall). A boot is killed at its
//! deadline and retried once (`-M microvm` was seen to hang at clock
//! calibration under TCG; q35 is the safe choice, the retry the safety
//! net). qemu dies with its parent (PR_SET_PDEATHSIG) and is killed when its
//! handle is dropped, so nothing outlives a test; the initramfs lives in a
//! temporary directory removed on drop.
//!
//! The cpio writer is ours (newc is a 110-byte text header per file): it
//! lets an unprivileged build put root-owned files and the /dev/console
//! device node into the archive without a staging tree. gzip is Debian's.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The line /init prints first, with the guest's uptime.
pub const INIT_MARK: &str = "DAMDA-VM-INIT";
/// The line /init prints last: `DAMDA-VM-RESULT: <exit status>`.
pub const RESULT_MARK: &str = "DAMDA-VM-RESULT:";

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("{operation} {path}: {source}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no VM kernel in {0}: run scripts/setup.sh (it unpacks Debian's linux-image there)")]
    NoKernel(PathBuf),
    #[error("finding the libraries of {binary}: {reason}")]
    Libraries { binary: PathBuf, reason: String },
    #[error("the VM did not finish within {timeout:?} in {attempts} attempts; last console lines:\n{tail}")]
    Timeout {
        timeout: Duration,
        attempts: u32,
        tail: String,
    },
    #[error("qemu exited ({status}) before /init reported a result; last console lines:\n{tail}")]
    NoResult { status: String, tail: String },
}

fn io_error(operation: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> VmError {
    let path = path.to_owned();
    move |source| VmError::Io {
        operation,
        path,
        source,
    }
}

// ---------------------------------------------------------------------------
// The initramfs

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir,
    File { data: Vec<u8>, executable: bool },
    Symlink { target: String },
    CharDevice { major: u32, minor: u32 },
}

/// An initramfs being built: paths are absolute inside the VM.
#[derive(Debug, Default)]
pub struct Initramfs {
    entries: Vec<(String, Node)>,
    dirs: BTreeSet<String>,
}

fn relative(path: &str) -> String {
    path.trim_start_matches('/').to_owned()
}

impl Initramfs {
    /// The usual directories and /dev/console (the kernel opens it for
    /// /init's standard streams before any devtmpfs is mounted).
    pub fn new() -> Self {
        let mut initramfs = Initramfs::default();
        for dir in [
            "/bin",
            "/sbin",
            "/usr/bin",
            "/usr/sbin",
            "/dev",
            "/proc",
            "/sys",
            "/tmp",
            "/etc",
            "/root",
        ] {
            initramfs.dir(dir);
        }
        initramfs.push("/dev/console", Node::CharDevice { major: 5, minor: 1 });
        initramfs
    }

    /// Adds a directory and its parents.
    pub fn dir(&mut self, path: &str) {
        let path = relative(path);
        let mut so_far = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !so_far.is_empty() {
                so_far.push('/');
            }
            so_far.push_str(part);
            if self.dirs.insert(so_far.clone()) {
                self.entries.push((so_far.clone(), Node::Dir));
            }
        }
    }

    fn push(&mut self, path: &str, node: Node) {
        let path = relative(path);
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.entries.retain(|(p, _)| *p != path);
        self.entries.push((path, node));
    }

    pub fn file(&mut self, path: &str, data: Vec<u8>, executable: bool) {
        self.push(path, Node::File { data, executable });
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.push(
            path,
            Node::Symlink {
                target: target.to_owned(),
            },
        );
    }

    /// Copies a host file to `dest` (following symlinks).
    pub fn copy(&mut self, source: &Path, dest: &str, executable: bool) -> Result<(), VmError> {
        let data = std::fs::read(source).map_err(io_error("reading", source))?;
        self.file(dest, data, executable);
        Ok(())
    }

    /// Debian's busybox-static as /bin/busybox, and a link for every applet
    /// where `busybox --list-full` puts it (/bin/sh, /sbin/poweroff, …).
    pub fn busybox(&mut self, busybox: &Path) -> Result<(), VmError> {
        self.copy(busybox, "/bin/busybox", true)?;
        let output = Command::new(busybox)
            .arg("--list-full")
            .output()
            .map_err(io_error("running", busybox))?;
        for applet in String::from_utf8_lossy(&output.stdout).lines() {
            let applet = applet.trim();
            if applet.is_empty() || applet.ends_with("/busybox") {
                continue;
            }
            self.symlink(&format!("/{applet}"), "/bin/busybox");
        }
        Ok(())
    }

    /// A binary at `dest`, with every shared library `ldd` names (and the
    /// loader) at the same path as on the host. Its debug information is
    /// stripped where binutils' `strip` is at hand (a debug build is ten
    /// times larger, and the guest decompresses it under emulation).
    pub fn binary(&mut self, source: &Path, dest: &str) -> Result<(), VmError> {
        let scratch = TempDir::new("damda-vm-strip")?;
        let stripped = scratch.path().join("binary");
        let strip = Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&stripped)
            .arg(source)
            .stderr(Stdio::null())
            .status();
        if strip.is_ok_and(|status| status.success()) {
            self.copy(&stripped, dest, true)?;
        } else {
            self.copy(source, dest, true)?;
        }
        drop(scratch);
        let output = Command::new("ldd")
            .arg(source)
            .output()
            .map_err(io_error("running ldd on", source))?;
        let text = String::from_utf8_lossy(&output.stdout);
        let libraries = parse_ldd(&text).map_err(|reason| VmError::Libraries {
            binary: source.to_owned(),
            reason,
        })?;
        for library in libraries {
            let dest = library.to_string_lossy().into_owned();
            self.copy(&library, &dest, true)?;
        }
        Ok(())
    }

    /// The /init script.
    pub fn init(&mut self, script: &str) {
        self.file("/init", script.as_bytes().to_vec(), true);
    }

    /// The archive in cpio's `newc` format, uncompressed.
    pub fn cpio(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (path, node)) in self.entries.iter().enumerate() {
            let (mode, data, rdev): (u32, &[u8], (u32, u32)) = match node {
                Node::Dir => (0o040755, &[], (0, 0)),
                Node::File { data, executable } => {
                    (if *executable { 0o100755 } else { 0o100644 }, data, (0, 0))
                }
                Node::Symlink { target } => (0o120777, target.as_bytes(), (0, 0)),
                Node::CharDevice { major, minor } => (0o020600, &[], (*major, *minor)),
            };
            let nlink = if matches!(node, Node::Dir) { 2 } else { 1 };
            newc_entry(&mut out, ino as u32 + 1, mode, nlink, rdev, path, data);
        }
        newc_entry(&mut out, 0, 0, 1, (0, 0), "TRAILER!!!", &[]);
        out
    }

    /// Writes the archive gzip-compressed (by Debian's gzip, fastest level:
    /// the guest decompresses it under emulation).
    pub fn write_gzip(&self, path: &Path) -> Result<(), VmError> {
        let file = std::fs::File::create(path).map_err(io_error("creating", path))?;
        let mut gzip = Command::new("gzip")
            .args(["-1", "-c"])
            .stdin(Stdio::piped())
            .stdout(file)
            .spawn()
            .map_err(io_error("running gzip for", path))?;
        let mut stdin = gzip.stdin.take().expect("piped");
        let written = stdin.write_all(&self.cpio());
        drop(stdin);
        let status = gzip.wait().map_err(io_error("running gzip for", path))?;
        written.map_err(io_error("compressing", path))?;
        if !status.success() {
            return Err(VmError::Io {
                operation: "compressing",
                path: path.to_owned(),
                source: std::io::Error::other(format!("gzip: {status}")),
            });
        }
        Ok(())
    }
}

fn newc_entry(
    out: &mut Vec<u8>,
    ino: u32,
    mode: u32,
    nlink: u32,
    rdev: (u32, u32),
    name: &str,
    data: &[u8],
) {
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        data.len() as u32,
        0, // devmajor
        0, // devminor
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for field in fields {
        out.extend_from_slice(format!("{field:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// The library paths in `ldd` output: `name => /path (addr)` lines and the
/// loader's `/path (addr)` line. The vDSO has no file; a library `ldd`
/// cannot find is an error; a static binary has none.
pub fn parse_ldd(text: &str) -> Result<Vec<PathBuf>, String> {
    let mut libraries = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.contains("not a dynamic executable") || line.contains("statically linked") {
            return Ok(Vec::new());
        }
        let path = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    return Err(format!("{} not found", name.trim()));
                }
                rest.split_whitespace().next().unwrap_or_default()
            }
            None => line.split_whitespace().next().unwrap_or_default(),
        };
        if path.starts_with('/') {
            libraries.push(PathBuf::from(path));
        }
    }
    Ok(libraries)
}

/// An /init that mounts proc, sysfs and devtmpfs, mounts cgroup2 at
/// /sys/fs/cgroup, enables every controller for a non-root group
/// `/sys/fs/cgroup/test`, runs `command` from inside that group (as a real
/// host runs services outside the root group), prints the
/// [`RESULT_MARK`] line and powers off.
pub fn init_script(command: &str) -> String {
    format!(
        r#"#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "{INIT_MARK} uptime $(cut -d' ' -f1 /proc/uptime) s, kernel $(uname -r)"
mount -t cgroup2 cgroup2 /sys/fs/cgroup
echo "DAMDA-VM cgroup2 mount: $(grep ' - cgroup2 ' /proc/self/mountinfo)"
echo "DAMDA-VM v1 hierarchies: $(grep -c ' - cgroup ' /proc/self/mountinfo)"
echo "DAMDA-VM controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
for c in $(cat /sys/fs/cgroup/cgroup.controllers); do
  echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control
done
mkdir /sys/fs/cgroup/test
echo "DAMDA-VM test group offers: $(cat /sys/fs/cgroup/test/cgroup.controllers)"
sh -c 'echo $$ > /sys/fs/cgroup/test/cgroup.procs && echo "DAMDA-VM running in $(cat /proc/self/cgroup)" && exec {command}'
echo "{RESULT_MARK} $?"
poweroff -f
"#
    )
}

// ---------------------------------------------------------------------------
// Booting

/// How qemu runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Software emulation: slow, always works.
    Tcg,
    /// Hardware virtualization (needs a /dev/kvm that can run the kernel).
    Kvm,
    /// A short trial boot with KVM, then TCG if it did not reach /init.
    Auto,
}

#[derive(Debug, Clone)]
pub struct VmConfig {
    pub qemu: PathBuf,
    pub kernel: PathBuf,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Added to `console=ttyS0 quiet panic=-1 rdinit=/init`.
    pub cmdline: String,
    pub accel: Accel,
    /// Until /init's first line; a boot slower than this is taken as hung.
    pub boot_timeout: Duration,
    /// Until the result line, boot included.
    pub timeout: Duration,
    /// Boots tried again after a hang or timeout.
    pub retries: u32,
}

impl VmConfig {
    /// A cgroup2-only guest: q35, 512 MiB, one CPU, TCG, `cgroup_no_v1=all`.
    pub fn cgroup_v2(kernel: PathBuf) -> Self {
        VmConfig {
            qemu: PathBuf::from("qemu-system-x86_64"),
            kernel,
            memory_mib: 512,
            cpus: 1,
            cmdline: "cgroup_no_v1=all".to_owned(),
            accel: Accel::Tcg,
            boot_timeout: Duration::from_secs(20),
            timeout: Duration::from_secs(50),
            retries: 1,
        }
    }

    fn command(&self, initrd: &Path, accel: Accel) -> Command {
        let mut command = Command::new(&self.qemu);
        command
            .args([
                "-M",
                "q35",
                "-nographic",
                "-no-reboot",
                "-nic",
                "none",
                "-vga",
                "none",
            ])
            .args(["-accel", if accel == Accel::Kvm { "kvm" } else { "tcg" }])
            .args(["-m", &self.memory_mib.to_string()])
            .args(["-smp", &self.cpus.to_string()])
            .arg("-kernel")
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(initrd)
            .arg("-append")
            .arg(format!(
                "console=ttyS0 quiet panic=-1 {} rdinit=/init",
                self.cmdline
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: prctl is async-signal-safe; qemu dies with its parent.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        command
    }
}

/// What one VM run printed and how long it took.
#[derive(Debug, Clone)]
pub struct VmRun {
    /// The console, line by line (carriage returns removed), then qemu's
    /// own standard error prefixed with `qemu: `.
    pub lines: Vec<String>,
    /// /init's [`RESULT_MARK`] status.
    pub result: i32,
    /// From starting qemu to /init's first line: the boot.
    pub boot: Duration,
    /// From starting qemu to its exit.
    pub total: Duration,
    pub attempts: u32,
    pub accel: Accel,
}

/// A running qemu, killed and reaped when dropped.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

enum Outcome {
    Done(VmRun),
    Hung(Vec<String>),
}

fn strip_escapes(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... letter, or ESC and one character.
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else if c != '\r' {
            out.push(c);
        }
    }
    out
}

fn tail(lines: &[String]) -> String {
    lines[lines.len().saturating_sub(25)..].join("\n")
}

fn attempt(
    config: &VmConfig,
    initrd: &Path,
    accel: Accel,
    boot_timeout: Duration,
) -> Result<Outcome, VmError> {
    let started = Instant::now();
    let mut child = config
        .command(initrd, accel)
        .spawn()
        .map_err(io_error("starting", &config.qemu))?;
    let stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let qemu = Qemu(child);
    let (send, receive) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut buffer = Vec::new();
        while reader
            .read_until(b'\n', &mut buffer)
            .map(|n| n > 0)
            .unwrap_or(false)
        {
            let line = strip_escapes(String::from_utf8_lossy(&buffer).trim_end_matches('\n'));
            buffer.clear();
            if send.send(line).is_err() {
                break;
            }
        }
    });
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut lines = Vec::new();
    let mut boot = None;
    let mut result = None;
    let mut deadline = started + config.timeout;
    let outcome = loop {
        let now = Instant::now();
        let limit = if boot.is_none() {
            (started + boot_timeout).min(deadline)
        } else {
            deadline
        };
        if now >= limit {
            break None;
        }
        match receive.recv_timeout(limit - now) {
            Ok(line) => {
                if boot.is_none() && line.contains(INIT_MARK) {
                    boot = Some(started.elapsed());
                }
                if let Some(rest) = line.split_once(RESULT_MARK).map(|(_, r)| r.trim()) {
                    result = rest.parse::<i32>().ok();
                    // poweroff -f follows at once; do not wait long for it.
                    deadline = deadline.min(Instant::now() + Duration::from_secs(10));
                }
                lines.push(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => break None,
            // qemu closed its output: it exited.
            Err(mpsc::RecvTimeoutError::Disconnected) => break Some(()),
        }
    };
    let mut qemu = qemu;
    if outcome.is_none() {
        let _ = qemu.0.kill();
    }
    let status = qemu
        .0
        .wait()
        .map_err(io_error("waiting for", &config.qemu))?;
    let total = started.elapsed();
    drop(qemu);
    let _ = reader.join();
    let errors = errors.join().unwrap_or_default();
    lines.extend(errors.lines().map(|l| format!("qemu: {l}")));
    match (outcome, result, boot) {
        // Killed after the result line (a poweroff that never came) is done too.
        (_, Some(result), Some(boot)) => Ok(Outcome::Done(VmRun {
            lines,
            result,
            boot,
            total,
            attempts: 1,
            accel,
        })),
        (Some(()), _, _) => Err(VmError::NoResult {
            status: status.to_string(),
            tail: tail(&lines),
        }),
        (None, _, _) => Ok(Outcome::Hung(lines)),
    }
}

/// Boots the VM with `initrd` and returns its console once /init reported
/// a result and qemu exited. A boot that hangs or runs past the deadline is
/// killed and tried again (`config.retries` times).
pub fn boot(config: &VmConfig, initrd: &Path) -> Result<VmRun, VmError> {
    let mut accel = config.accel;
    if accel == Accel::Auto {
        accel = match attempt(config, initrd, Accel::Kvm, Duration::from_secs(10)) {
            Ok(Outcome::Done(run)) => return Ok(run),
            _ => Accel::Tcg,
        };
    }
    let mut last = Vec::new();
    for attempts in 1..=config.retries + 1 {
        match attempt(config, initrd, accel, config.boot_timeout)? {
            Outcome::Done(mut run) => {
                run.attempts = attempts;
                return Ok(run);
            }
            Outcome::Hung(lines) => last = lines,
        }
    }
    Err(VmError::Timeout {
        timeout: config.timeout,
        attempts: config.retries + 1,
        tail: tail(&last),
    })
}

/// A directory removed with everything in it when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Result<Self, VmError> {
        let mut bytes = [0u8; 6];
        getrandom::fill(&mut bytes).expect("the kernel's random source works");
        let suffix: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let path = std::env::temp_dir().join(format!("{prefix}-{}-{suffix}", std::process::id()));
        std::fs::create_dir(&path).map_err(io_error("creating", &path))?;
        Ok(TempDir(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `initramfs` into a temporary directory, boots it, and removes the
/// directory again.
pub fn run(config: &VmConfig, initramfs: &Initramfs) -> Result<VmRun, VmError> {
    let scratch = TempDir::new("damda-vm")?;
    let initrd = scratch.path().join("initrd.gz");
    initramfs.write_gzip(&initrd)?;
    boot(config, &initrd)
}

/// The kernel set-up unpacked into `dir` (data/vm): the `vmlinuz` link, else
/// the newest boot/vmlinuz-*.
pub fn kernel(dir: &Path) -> Result<PathBuf, VmError> {
    let link = dir.join("vmlinuz");
    if link.is_file() {
        return Ok(link);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir.join("boot"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .collect();
    found.sort();
    found.pop().ok_or_else(|| VmError::NoKernel(dir.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_names_the_loader_and_libraries() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd5a9f2000)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f1e2c5d0000)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f1e2c3ef000)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f1e2c6a1000)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert!(parse_ldd("\tnot a dynamic executable\n")
            .unwrap()
            .is_empty());
        assert!(parse_ldd("\tstatically linked\n").unwrap().is_empty());
        assert_eq!(
            parse_ldd("\tlibfoo.so.1 => not found\n").unwrap_err(),
            "libfoo.so.1 not found"
        );
    }

    /// One entry read back: name, mode, rdev, data.
    type Unpacked = (String, u32, (u32, u32), Vec<u8>);

    /// Reads a newc archive back.
    fn unpack(mut archive: &[u8]) -> Vec<Unpacked> {
        let mut entries = Vec::new();
        let mut offset = 0;
        loop {
            assert_eq!(&archive[..6], b"070701", "at {offset}");
            let field = |i: usize| {
                u32::from_str_radix(
                    std::str::from_utf8(&archive[6 + 8 * i..14 + 8 * i]).unwrap(),
                    16,
                )
                .unwrap()
            };
            let (mode, size, rdev, namesize) =
                (field(1), field(6), (field(9), field(10)), field(11));
            let name_end = 110 + namesize as usize;
            let name = String::from_utf8(archive[110..name_end - 1].to_vec()).unwrap();
            let data_start = name_end.div_ceil(4) * 4;
            let data_end = data_start + size as usize;
            let data = archive[data_start..data_end].to_vec();
            let next = data_end.div_ceil(4) * 4;
            archive = &archive[next..];
            offset += next;
            if name == "TRAILER!!!" {
                assert!(archive.is_empty());
                return entries;
            }
            entries.push((name, mode, rdev, data));
        }
    }

    #[test]
    fn cpio_newc_round_trips() {
        let mut initramfs = Initramfs::new();
        initramfs.init("#!/bin/sh\necho hi\n");
        initramfs.symlink("/bin/sh", "/bin/busybox");
        initramfs.file("/lib/x86_64-linux-gnu/libc.so.6", vec![1, 2, 3], true);
        let entries = unpack(&initramfs.cpio());
        let find = |name: &str| entries.iter().find(|e| e.0 == name).unwrap().clone();
        assert_eq!(find("init").1, 0o100755);
        assert_eq!(find("init").3, b"#!/bin/sh\necho hi\n");
        assert_eq!(find("bin/sh").1, 0o120777);
        assert_eq!(find("bin/sh").3, b"/bin/busybox");
        assert_eq!(find("dev/console").1, 0o020600);
        assert_eq!(find("dev/console").2, (5, 1));
        assert_eq!(find("lib").1, 0o040755);
        // Parents come before what they hold.
        let position = |name: &str| entries.iter().position(|e| e.0 == name).unwrap();
        assert!(position("lib/x86_64-linux-gnu") < position("lib/x86_64-linux-gnu/libc.so.6"));
    }

    #[test]
    fn cpio_tool_reads_our_archive() {
        let Ok(mut cpio) = Command::new("cpio")
            .args(["-t", "--quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
        else {
            return; // cpio is not installed: the round trip above covers the format
        };
        let mut initramfs = Initramfs::new();
        initramfs.init("#!/bin/sh\n");
        cpio.stdin
            .take()
            .unwrap()
            .write_all(&initramfs.cpio())
            .unwrap();
        let listing = String::from_utf8(cpio.wait_with_output().unwrap().stdout).unwrap();
        assert!(listing.lines().any(|l| l == "init"), "{listing}");
        assert!(listing.lines().any(|l| l == "dev/console"), "{listing}");
    }

    #[test]
    fn console_escapes_are_stripped() {
        assert_eq!(
            strip_escapes("\u{1b}c\u{1b}[?7l\u{1b}[2JDAMDA-VM-RESULT: 0\r"),
            "DAMDA-VM-RESULT: 0"
        );
    }

    #[test]
    fn init_mounts_cgroup2_and_runs_from_a_child_group() {
        let script = init_script("/bin/cgroup-selftest");
        assert!(script.starts_with("#!/bin/sh\n"));
        assert!(script.contains("mount -t cgroup2 cgroup2 /sys/fs/cgroup"));
        assert!(script.contains("exec /bin/cgroup-selftest'"));
        assert!(script.contains("echo \"DAMDA-VM-RESULT: $?\""));
        assert!(script.trim_end().ends_with("poweroff -f"));
    }
}
