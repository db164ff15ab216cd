//! The demos' workloads: a memory hog, a fork bomb, a CPU burner and a
//! sleeper, each bounded in time and size. A workload runs in its own
//! process (a binary that dispatches [`DEMO_ARG`] to [`Workload::run`]) and
//! waits for one byte on standard input before it starts, so the caller can
//! move it into a group first ([`spawn`], then [`go`]).
//!
//! The hog and the bomb check their own group before they start and refuse
//! to run where nothing bounds them.

use super::{CgroupVersion, Layout};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The first argument that selects a workload in a binary's `main`.
pub const DEMO_ARG: &str = "__cgroup-demo";

const MIB: u64 = 1 << 20;
/// How far past its group's limit the memory hog goes at most.
pub const HOG_EXCESS: u64 = 32 * MIB;
/// The fork bomb refuses to run in a group that allows more than this.
const BOMB_MAX_PIDS: u64 = 1024;
/// The exit status of a memory hog that allocated everything it was asked
/// to without being killed.
pub const HOG_SURVIVED: i32 = 3;
/// The exit status of a workload that refused to run unbounded.
pub const REFUSED: i32 = 4;

#[derive(Debug, Clone, PartialEq)]
pub enum Workload {
    /// Sleeps; something harmless to move into a group.
    Sleep { seconds: f64 },
    /// Allocates and touches memory 1 MiB at a time up to `bytes`, unless
    /// the kernel kills it first.
    HogMemory { bytes: u64 },
    /// Every process forks as fast as the kernel lets it until `seconds`
    /// have passed, then waits for its children and exits.
    ForkBomb { seconds: f64 },
    /// Spins on the CPU for `seconds` of wall-clock time.
    BurnCpu { seconds: f64 },
}

impl Workload {
    /// The arguments after [`DEMO_ARG`].
    pub fn args(&self) -> Vec<String> {
        let (name, value) = match self {
            Workload::Sleep { seconds } => ("sleep", seconds.to_string()),
            Workload::HogMemory { bytes } => ("hog-memory", bytes.to_string()),
            Workload::ForkBomb { seconds } => ("fork-bomb", seconds.to_string()),
            Workload::BurnCpu { seconds } => ("burn-cpu", seconds.to_string()),
        };
        vec![name.to_owned(), value]
    }

    /// The workload named by the arguments after [`DEMO_ARG`]. Durations are
    /// capped at a minute and the hog at 1 GiB, whatever was asked.
    pub fn parse(args: &[String]) -> Option<Workload> {
        let [name, value] = args else { return None };
        let seconds = || {
            value
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(|s| s.min(60.0))
        };
        match name.as_str() {
            "sleep" => Some(Workload::Sleep {
                seconds: seconds()?,
            }),
            "hog-memory" => Some(Workload::HogMemory {
                bytes: value.parse::<u64>().ok()?.min(1 << 30),
            }),
            "fork-bomb" => Some(Workload::ForkBomb {
                seconds: seconds()?,
            }),
            "burn-cpu" => Some(Workload::BurnCpu {
                seconds: seconds()?,
            }),
            _ => None,
        }
    }

    /// Runs the workload in this (single-threaded) process after one byte
    /// (or the end) of standard input, and returns its exit status.
    pub fn run(&self) -> i32 {
        let mut byte = [0u8; 1];
        let _ = std::io::stdin().read(&mut byte);
        self.run_within(self.bound())
    }

    /// The limit of this process's own group that bounds the workload
    /// (memory for the hog, pids for the bomb), read where the host's
    /// cgroupfs is visible. None: nothing bounds it.
    pub fn bound(&self) -> Option<u64> {
        match self {
            Workload::HogMemory { .. } => {
                own_limit("memory", "memory.limit_in_bytes", "memory.max")
            }
            Workload::ForkBomb { .. } => own_limit("pids", "pids.max", "pids.max"),
            Workload::Sleep { .. } | Workload::BurnCpu { .. } => None,
        }
    }

    /// Runs the workload now, with the `bound` read before (inside a box
    /// the host's cgroupfs is out of sight).
    pub fn run_within(&self, bound: Option<u64>) -> i32 {
        match *self {
            Workload::Sleep { seconds } => {
                std::thread::sleep(Duration::from_secs_f64(seconds));
                0
            }
            Workload::HogMemory { bytes } => hog_memory(bytes, bound),
            Workload::ForkBomb { seconds } => fork_bomb(seconds, bound),
            Workload::BurnCpu { seconds } => burn_cpu(seconds),
        }
    }
}

/// A limit file of this process's own group (`pids.max`, `memory.max`, …),
/// as a number (`None` for `max` or anything unreadable).
fn own_limit(controller: &str, v1_file: &str, v2_file: &str) -> Option<u64> {
    let layout = Layout::detect().ok()?;
    let path: PathBuf = match layout.version() {
        CgroupVersion::V1 => layout
            .hierarchy_of(controller)?
            .own_dir()
            .ok()?
            .join(v1_file),
        CgroupVersion::V2 => layout.unified()?.own_dir().ok()?.join(v2_file),
    };
    let value = std::fs::read_to_string(path)
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()?;
    (value < 1 << 62).then_some(value)
}

fn hog_memory(bytes: u64, limit: Option<u64>) -> i32 {
    let bytes = match limit {
        // Past the limit, but never more than 32 MiB past it.
        Some(limit) if limit < bytes => bytes.min(limit + HOG_EXCESS),
        _ => {
            eprintln!("hog-memory: refusing to run outside a group whose memory limit is below {bytes} bytes");
            return REFUSED;
        }
    };
    let mut held: Vec<Vec<u8>> = Vec::new();
    for _ in 0..bytes / MIB {
        // Non-zero, so every page is really written and charged.
        held.push(vec![0x5a; MIB as usize]);
    }
    eprintln!(
        "hog-memory: allocated {} MiB and was not killed",
        held.len()
    );
    HOG_SURVIVED
}

fn fork_bomb(seconds: f64, max: Option<u64>) -> i32 {
    match max {
        Some(max) if max <= BOMB_MAX_PIDS => {}
        _ => {
            eprintln!(
                "fork-bomb: refusing to run outside a group with pids.max at most {BOMB_MAX_PIDS}"
            );
            return REFUSED;
        }
    }
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < deadline {
        // SAFETY: this process is single-threaded (a workload runs alone in
        // its process), so the child may go on running Rust code; it keeps
        // the deadline and loops like its parent.
        match unsafe { libc::fork() } {
            -1 => std::thread::sleep(Duration::from_millis(2)),
            _ => std::thread::yield_now(),
        }
    }
    // Wait for this process's own children, so nothing is orphaned.
    // SAFETY: wait(2) with a null status pointer is always valid.
    while unsafe { libc::wait(std::ptr::null_mut()) } > 0 {}
    0
}

fn burn_cpu(seconds: f64) -> i32 {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut x: u64 = 1;
    while Instant::now() < deadline {
        for _ in 0..10_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
    }
    0
}

/// Starts `workload` from `exe` (a binary that dispatches [`DEMO_ARG`]),
/// stopped before it does anything until [`go`].
pub fn spawn(exe: &Path, workload: &Workload) -> std::io::Result<Child> {
    Command::new(exe)
        .arg(DEMO_ARG)
        .args(workload.args())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
}

/// Lets a spawned workload start.
pub fn go(child: &mut Child) -> std::io::Result<()> {
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_round_trip_through_their_arguments() {
        for workload in [
            Workload::Sleep { seconds: 1.5 },
            Workload::HogMemory { bytes: 64 << 20 },
            Workload::ForkBomb { seconds: 2.0 },
            Workload::BurnCpu { seconds: 0.5 },
        ] {
            assert_eq!(Workload::parse(&workload.args()), Some(workload));
        }
    }

    #[test]
    fn workloads_stay_bounded_whatever_is_asked() {
        let args = |a: &str, b: &str| vec![a.to_owned(), b.to_owned()];
        assert_eq!(
            Workload::parse(&args("burn-cpu", "3600")),
            Some(Workload::BurnCpu { seconds: 60.0 })
        );
        assert_eq!(
            Workload::parse(&args("hog-memory", "99999999999999")),
            Some(Workload::HogMemory { bytes: 1 << 30 })
        );
        assert_eq!(Workload::parse(&args("fork-bomb", "-1")), None);
        assert_eq!(Workload::parse(&args("fork-bomb", "NaN")), None);
        assert_eq!(Workload::parse(&args("rm", "-rf")), None);
        assert_eq!(Workload::parse(&args("sleep", "1")[..1]), None);
    }
}
