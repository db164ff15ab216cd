//! A small qemu VM for tests and for the VM-vs-container comparison: an
//! initramfs built here (busybox, a test binary with the shared libraries it
//! needs, an `/init` script), Debian's kernel from data/vm (scripts/setup.sh
//! unpacks it there), and a boot that captures the serial console.
//!
//! /dev/kvm on the project's machines cannot run a stock kernel, so the
//! default is software emulation (TCG); [`choose_accel`] tries KVM with a
//! short boot. Under TCG `-M q35` boots to /init in about 2.5 s of guest
//! time (about 5 s on the wall). A boot is killed at its deadline and
//! retried once (`-M microvm` was seen to hang at clock calibration under
//! TCG; q35 is the safe choice, the retry the safety net). qemu dies with
//! its parent (PR_SET_PDEATHSIG) and is killed when its handle is dropped,
//! so nothing outlives a test; a test's initramfs lives in a temporary
//! directory removed on drop.

pub mod initramfs;

pub use initramfs::Initramfs;

pub use crate::lines::Missed;
use crate::lines::{wait_until, Lines};
use damda_protocol::shell_word;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
    #[error("{0}")]
    Module(String),
    #[error("finding the libraries of {binary}: {reason}")]
    Libraries { binary: PathBuf, reason: String },
    #[error("the VM did not get on within {timeout:?} ({attempts} attempts); last console lines:\n{tail}")]
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

/// What every /init starts with: PATH, /proc, /sys and /dev mounted, and
/// the [`INIT_MARK`] line with the guest's uptime and `uname -r`.
pub fn init_preamble() -> String {
    format!(
        r#"#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "{INIT_MARK} uptime $(cut -d' ' -f1 /proc/uptime) s, kernel $(uname -r)"
"#
    )
}

/// An /init that mounts proc, sysfs and devtmpfs, mounts cgroup2 at
/// /sys/fs/cgroup, enables every controller for a non-root group
/// `/sys/fs/cgroup/test`, runs `command` from inside that group (as a real
/// host runs services outside the root group), prints the
/// [`RESULT_MARK`] line and powers off.
pub fn init_script(command: &str) -> String {
    format!(
        r#"{preamble}mount -t cgroup2 cgroup2 /sys/fs/cgroup
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
"#,
        preamble = init_preamble(),
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
}

impl Accel {
    /// qemu's name for it.
    fn qemu_name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
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
    /// A host port on 127.0.0.1 forwarded to the guest's port 80 through a
    /// virtio-net card on qemu's user-mode network, restricted so that the
    /// guest reaches nothing on the host; no network card without it.
    pub forward: Option<u16>,
}

impl VmConfig {
    /// q35, 512 MiB, one CPU, TCG, no network card, a boot retried once.
    pub fn new(kernel: PathBuf) -> Self {
        VmConfig {
            qemu: PathBuf::from("qemu-system-x86_64"),
            kernel,
            memory_mib: 512,
            cpus: 1,
            cmdline: String::new(),
            accel: Accel::Tcg,
            boot_timeout: Duration::from_secs(20),
            timeout: Duration::from_secs(50),
            retries: 1,
            forward: None,
        }
    }

    /// A cgroup2-only guest: `cgroup_no_v1=all`.
    pub fn cgroup_v2(kernel: PathBuf) -> Self {
        VmConfig {
            cmdline: "cgroup_no_v1=all".to_owned(),
            ..VmConfig::new(kernel)
        }
    }

    /// qemu's arguments, as the command runs them.
    fn args(&self, initrd: &Path) -> Vec<String> {
        let nic = match self.forward {
            Some(port) => {
                format!("user,model=virtio-net-pci,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:80")
            }
            None => "none".to_owned(),
        };
        let mut args: Vec<String> = ["-M", "q35", "-nographic", "-no-reboot", "-vga", "none"]
            .map(String::from)
            .into();
        for (flag, value) in [
            ("-nic", nic),
            ("-accel", self.accel.qemu_name().to_owned()),
            ("-m", self.memory_mib.to_string()),
            ("-smp", self.cpus.to_string()),
            ("-kernel", self.kernel.display().to_string()),
            ("-initrd", initrd.display().to_string()),
            (
                "-append",
                format!("console=ttyS0 quiet panic=-1 {} rdinit=/init", self.cmdline),
            ),
        ] {
            args.push(flag.to_owned());
            args.push(value);
        }
        args
    }

    /// The command line to boot this VM by hand.
    pub fn command_line(&self, initrd: &Path) -> String {
        std::iter::once(self.qemu.display().to_string())
            .chain(self.args(initrd))
            .map(|arg| shell_word(&arg))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn command(&self, initrd: &Path) -> Command {
        let mut command = Command::new(&self.qemu);
        command
            .args(self.args(initrd))
            .stdin(Stdio::piped())
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

/// How a finished qemu ended.
#[derive(Debug)]
pub struct Finished {
    /// The console and then qemu's standard error (`qemu: ` lines).
    pub lines: Vec<String>,
    /// From starting qemu to its exit.
    pub total: Duration,
    pub status: String,
    /// It did not exit by the deadline and was killed.
    pub killed: bool,
}

/// A running qemu whose serial console is read line by line, with a line
/// sent to the guest's console on request; killed and reaped when dropped,
/// so no qemu outlives its handle.
pub struct RunningVm {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    console: Lines,
    errors: Option<std::thread::JoinHandle<String>>,
    started: Instant,
    lines: Vec<String>,
}

impl RunningVm {
    pub fn start(config: &VmConfig, initrd: &Path) -> Result<Self, VmError> {
        let started = Instant::now();
        let mut child = config
            .command(initrd)
            .spawn()
            .map_err(io_error("starting", &config.qemu))?;
        let stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let stdin = child.stdin.take();
        let errors = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Ok(RunningVm {
            child,
            stdin,
            console: Lines::spawn(stdout),
            errors: Some(errors),
            started,
            lines: Vec::new(),
        })
    }

    /// qemu's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// When qemu was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The console so far.
    pub fn console(&self) -> &[String] {
        &self.lines
    }

    /// Reads the console until a line containing `mark`, before `deadline`;
    /// returns the line and when it arrived, counted from qemu's start.
    pub fn wait_for(
        &mut self,
        mark: &str,
        deadline: Instant,
    ) -> Result<(String, Duration), Missed> {
        loop {
            let line = strip_escapes(&self.console.next_before(deadline)?);
            let at = self.started.elapsed();
            self.lines.push(line.clone());
            if line.contains(mark) {
                return Ok((line, at));
            }
        }
    }

    /// Types `line` on the guest's serial console (its /init may read it).
    pub fn send_line(&mut self, line: &str) -> Result<(), VmError> {
        let stdin = self.stdin.as_mut().expect("kept until finish");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(io_error("writing to the console of", Path::new("qemu")))
    }

    /// Waits for qemu to exit by `deadline`, killing it then, and collects
    /// the rest of its console and its standard error.
    pub fn finish(mut self, deadline: Instant) -> Finished {
        let killed = matches!(wait_until(&mut self.child, deadline), Ok(None));
        if killed {
            let _ = self.child.kill();
        }
        let status = self
            .child
            .wait()
            .map(|s| s.to_string())
            .unwrap_or_else(|e| e.to_string());
        let total = self.started.elapsed();
        self.stdin = None;
        let mut lines = std::mem::take(&mut self.lines);
        lines.extend(self.console.rest().iter().map(|l| strip_escapes(l)));
        let errors = self
            .errors
            .take()
            .and_then(|e| e.join().ok())
            .unwrap_or_default();
        lines.extend(errors.lines().map(|l| format!("qemu: {l}")));
        Finished {
            lines,
            total,
            status,
            killed,
        }
    }
}

impl Drop for RunningVm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A guest that reached /init: qemu, /init's first line (from its mark on;
/// the firmware's last words may share the line), when it came, and how
/// many boots it took.
pub struct Booted {
    pub vm: RunningVm,
    pub init_line: String,
    pub boot: Duration,
    pub attempts: u32,
}

/// Starts qemu and waits for /init's first line. A boot that hangs past
/// `config.boot_timeout` (seen at clock calibration under TCG) is killed and
/// tried again, `config.retries` times.
pub fn start(config: &VmConfig, initrd: &Path) -> Result<Booted, VmError> {
    let mut last = Vec::new();
    for attempts in 1..=config.retries + 1 {
        let mut vm = RunningVm::start(config, initrd)?;
        match vm.wait_for(INIT_MARK, vm.started() + config.boot_timeout) {
            Ok((line, boot)) => {
                let init_line = line[line.find(INIT_MARK).unwrap_or(0)..].to_owned();
                return Ok(Booted {
                    vm,
                    init_line,
                    boot,
                    attempts,
                });
            }
            Err(Missed::TimedOut) => last = vm.finish(Instant::now()).lines,
            Err(Missed::Exited) => {
                let finished = vm.finish(Instant::now() + Duration::from_secs(2));
                return Err(VmError::NoResult {
                    status: finished.status,
                    tail: tail(&finished.lines),
                });
            }
        }
    }
    Err(VmError::Timeout {
        timeout: config.boot_timeout,
        attempts: config.retries + 1,
        tail: tail(&last),
    })
}

/// Boots the VM with `initrd` and returns its console once /init reported
/// a result and qemu exited.
pub fn boot(config: &VmConfig, initrd: &Path) -> Result<VmRun, VmError> {
    let Booted {
        mut vm,
        boot,
        attempts,
        ..
    } = start(config, initrd)?;
    let result = vm.wait_for(RESULT_MARK, vm.started() + config.timeout);
    // poweroff -f follows the result at once; do not wait long for it.
    let finished = vm.finish(match result {
        Ok(_) => Instant::now() + Duration::from_secs(10),
        Err(Missed::Exited) => Instant::now() + Duration::from_secs(2),
        Err(Missed::TimedOut) => Instant::now(),
    });
    match result {
        Ok((line, _)) => Ok(VmRun {
            result: line
                .split_once(RESULT_MARK)
                .and_then(|(_, status)| status.trim().parse().ok())
                .unwrap_or(-1),
            lines: finished.lines,
            boot,
            total: finished.total,
            attempts,
        }),
        Err(Missed::Exited) => Err(VmError::NoResult {
            status: finished.status,
            tail: tail(&finished.lines),
        }),
        Err(Missed::TimedOut) => Err(VmError::Timeout {
            timeout: config.timeout,
            attempts,
            tail: tail(&finished.lines),
        }),
    }
}

/// How long the KVM trial may take to reach /init: a stock kernel boots in
/// about a second with KVM.
const KVM_TRIAL: Duration = Duration::from_secs(10);

/// The accelerator to use, and what a short trial boot with KVM showed.
/// Decided by trying, not by /dev/kvm being there: a /dev/kvm may exist
/// that cannot run a stock kernel. The guest is stopped once /init speaks
/// (given 5 s to power off on its own).
pub fn choose_accel(config: &VmConfig, initrd: &Path) -> (Accel, String) {
    let trial = VmConfig {
        accel: Accel::Kvm,
        ..config.clone()
    };
    let Ok(mut vm) = RunningVm::start(&trial, initrd) else {
        return (
            Accel::Tcg,
            "qemu could not be started with -accel kvm".into(),
        );
    };
    let booted = vm.wait_for(INIT_MARK, vm.started() + KVM_TRIAL);
    let finished = vm.finish(Instant::now() + Duration::from_secs(5));
    match booted {
        Ok((_, at)) => (
            Accel::Kvm,
            format!("KVM booted the kernel to /init in {} ms", at.as_millis()),
        ),
        Err(Missed::TimedOut) => (
            Accel::Tcg,
            format!(
                "KVM did not reach /init within {} s, so software emulation (TCG) runs",
                KVM_TRIAL.as_secs()
            ),
        ),
        Err(Missed::Exited) => {
            let said = finished
                .lines
                .iter()
                .rev()
                .find_map(|l| l.strip_prefix("qemu: "))
                .unwrap_or("no message")
                .to_owned();
            (
                Accel::Tcg,
                format!("qemu -accel kvm stopped ({said}), so software emulation (TCG) runs"),
            )
        }
    }
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
    fn console_escapes_are_stripped() {
        assert_eq!(
            strip_escapes("\u{1b}c\u{1b}[?7l\u{1b}[2JDAMDA-VM-RESULT: 0\r"),
            "DAMDA-VM-RESULT: 0"
        );
    }

    #[test]
    fn the_command_line_quotes_what_the_shell_would_split() {
        let config = VmConfig {
            forward: Some(8090),
            ..VmConfig::new(PathBuf::from("/srv/my vms/vmlinuz"))
        };
        let line = config.command_line(Path::new("/srv/it's/initrd.gz"));
        assert!(line.starts_with("qemu-system-x86_64 -M q35 "), "{line}");
        assert!(line.contains(" -accel tcg "), "{line}");
        assert!(line.contains(" -kernel '/srv/my vms/vmlinuz' "), "{line}");
        assert!(
            line.contains(r" -initrd '/srv/it'\''s/initrd.gz' "),
            "{line}"
        );
        assert!(
            line.ends_with(" -append 'console=ttyS0 quiet panic=-1  rdinit=/init'"),
            "{line}"
        );
        assert!(
            line.contains(
                " -nic user,model=virtio-net-pci,restrict=on,hostfwd=tcp:127.0.0.1:8090-:80 "
            ),
            "the forward is one plain word: {line}"
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
