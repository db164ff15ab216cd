//! The limits a box gets, their validation, and the files that carry them on
//! each cgroup version.

use super::{CgroupError, FileWrite};
/// The limits are protocol data (the page shows and sets them); the checks
/// and the files they become live here.
pub use damda_protocol::CgroupLimits as Limits;
use std::path::{Path, PathBuf};

const MIB: u64 = 1 << 20;
/// Below this a box's shell cannot even start.
pub const MIN_MEMORY_BYTES: u64 = 4 * MIB;
/// Larger than any machine: 4 PiB.
const MAX_BYTES: u64 = 1 << 52;
/// The kernel's largest pid number (PID_MAX_LIMIT on 64-bit).
pub const MAX_PIDS: u64 = 4_194_304;
/// The kernel's smallest CFS quota and period: 1 ms.
pub const MIN_CPU_US: u64 = 1_000;
/// The kernel's largest CFS period: 1 s.
const MAX_CPU_PERIOD_US: u64 = 1_000_000;

/// The device nodes a box may use, as runc allows them by default
/// (`TYPE MAJOR:MINOR ACCESS`, access = read, write, mknod). On v1 they go
/// into devices.allow after `a` into devices.deny; on v2 runc compiles the
/// same list into an eBPF program attached to the group.
pub const DEVICE_ALLOW_LIST: [(&str, &str); 8] = [
    ("c 1:3 rwm", "/dev/null"),
    ("c 1:5 rwm", "/dev/zero"),
    ("c 1:7 rwm", "/dev/full"),
    ("c 1:8 rwm", "/dev/random"),
    ("c 1:9 rwm", "/dev/urandom"),
    ("c 5:0 rwm", "/dev/tty"),
    ("c 5:2 rwm", "/dev/ptmx"),
    ("c 136:* rwm", "/dev/pts/*"),
];

/// The number of CPUs this process may run on.
fn cores() -> u32 {
    std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1)
}

/// Checks of [`Limits`] against the kernel's bounds and this machine.
pub trait LimitsCheck {
    fn validate(&self) -> Result<(), CgroupError>;
    fn validate_for(&self, cores: u32) -> Result<(), CgroupError>;
    fn controllers_needed(&self) -> Vec<&'static str>;
}

impl LimitsCheck for Limits {
    /// Rejects values the kernel would refuse or that make no sense on this
    /// machine.
    fn validate(&self) -> Result<(), CgroupError> {
        self.validate_for(cores())
    }

    /// [`Limits::validate`] for a machine with `cores` CPUs.
    fn validate_for(&self, cores: u32) -> Result<(), CgroupError> {
        if let Some(bytes) = self.memory_bytes {
            if bytes < MIN_MEMORY_BYTES {
                return Err(CgroupError::MemoryTooSmall { bytes });
            }
            if bytes > MAX_BYTES {
                return Err(CgroupError::MemoryTooLarge { bytes });
            }
        }
        if let Some(bytes) = self.swap_bytes {
            if self.memory_bytes.is_none() {
                return Err(CgroupError::SwapWithoutMemory);
            }
            if bytes > MAX_BYTES {
                return Err(CgroupError::SwapTooLarge { bytes });
            }
        }
        let period_us = self.cpu_period_us;
        if !(MIN_CPU_US..=MAX_CPU_PERIOD_US).contains(&period_us) {
            return Err(CgroupError::CpuPeriod { period_us });
        }
        if let Some(quota_us) = self.cpu_quota_us {
            if quota_us < MIN_CPU_US {
                return Err(CgroupError::CpuQuotaTooSmall { quota_us });
            }
            let max_us = period_us.saturating_mul(u64::from(cores.max(1)));
            if quota_us > max_us {
                return Err(CgroupError::CpuQuotaTooLarge {
                    quota_us,
                    period_us,
                    cores,
                    max_us,
                });
            }
        }
        match self.pids_max {
            Some(0) => return Err(CgroupError::PidsZero),
            Some(pids) if pids > MAX_PIDS => return Err(CgroupError::PidsTooLarge { pids }),
            _ => {}
        }
        if let Some(weight) = self.io_weight {
            if !(1..=10_000).contains(&weight) {
                return Err(CgroupError::IoWeight { weight });
            }
        }
        Ok(())
    }

    /// The controllers these limits need (v2 names; `io` is v1's `blkio`).
    fn controllers_needed(&self) -> Vec<&'static str> {
        let mut needed = Vec::new();
        if self.memory_bytes.is_some() {
            needed.push("memory");
        }
        if self.cpu_quota_us.is_some() {
            needed.push("cpu");
        }
        if self.pids_max.is_some() {
            needed.push("pids");
        }
        if self.io_weight.is_some() {
            needed.push("io");
        }
        needed
    }
}

/// v2's io.weight (1..=10000, default 100) as v1's blkio.weight (10..=1000,
/// default 500): scaled so the defaults meet, as systemd converts them.
pub(crate) fn blkio_weight(io_weight: u16) -> u64 {
    (u64::from(io_weight) * 5).clamp(10, 1000)
}

/// The v1 writes for `limits`, given each controller's directory (None for a
/// controller without a hierarchy: its writes are left out). Order matters:
/// the memory limit goes before memory+swap, which may not be below it; the
/// period before the quota; the deny-all before the allow list.
pub(crate) fn v1_writes(
    limits: &Limits,
    dir_of: &dyn Fn(&str) -> Option<PathBuf>,
) -> Vec<FileWrite> {
    let mut writes = Vec::new();
    let mut write = |controller: &str, file: &str, value: String| {
        if let Some(dir) = dir_of(controller) {
            writes.push(FileWrite::new(dir.join(file), value));
        }
    };
    if let Some(memory) = limits.memory_bytes {
        write("memory", "memory.limit_in_bytes", memory.to_string());
        if let Some(swap) = limits.swap_bytes {
            write(
                "memory",
                "memory.memsw.limit_in_bytes",
                (memory + swap).to_string(),
            );
        }
    }
    if let Some(quota) = limits.cpu_quota_us {
        write("cpu", "cpu.cfs_period_us", limits.cpu_period_us.to_string());
        write("cpu", "cpu.cfs_quota_us", quota.to_string());
    }
    if let Some(pids) = limits.pids_max {
        write("pids", "pids.max", pids.to_string());
    }
    if let Some(weight) = limits.io_weight {
        write("blkio", "blkio.weight", blkio_weight(weight).to_string());
    }
    write("devices", "devices.deny", "a".to_owned());
    for (rule, _) in DEVICE_ALLOW_LIST {
        write("devices", "devices.allow", rule.to_owned());
    }
    writes
}

/// The v2 writes for `limits` into the group at `dir`.
pub(crate) fn v2_writes(limits: &Limits, dir: &Path) -> Vec<FileWrite> {
    let mut writes = Vec::new();
    let mut write = |file: &str, value: String| writes.push(FileWrite::new(dir.join(file), value));
    if let Some(memory) = limits.memory_bytes {
        write("memory.max", memory.to_string());
        if let Some(swap) = limits.swap_bytes {
            write("memory.swap.max", swap.to_string());
        }
    }
    if let Some(quota) = limits.cpu_quota_us {
        write("cpu.max", format!("{quota} {}", limits.cpu_period_us));
    }
    if let Some(pids) = limits.pids_max {
        write("pids.max", pids.to_string());
    }
    if let Some(weight) = limits.io_weight {
        write("io.weight", format!("default {weight}"));
    }
    writes
}

/// Docker's size notation: `64m`, `1g`, or bytes.
fn docker_size(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 30) && bytes > 0 {
        format!("{}g", bytes >> 30)
    } else if bytes.is_multiple_of(MIB) && bytes > 0 {
        format!("{}m", bytes >> 20)
    } else {
        format!("{bytes}b")
    }
}

/// The `docker run` that asks for the same limits (the same on both
/// versions: Docker writes v1 or v2 files itself). Docker's default device
/// list already matches [`DEVICE_ALLOW_LIST`].
pub fn docker_command(limits: &Limits) -> String {
    let mut words = vec!["docker run --rm -it".to_owned()];
    words.extend(docker_limit_flags(limits));
    words.push("busybox sh".to_owned());
    words.join(" ")
}

/// The `docker run` flags that ask for `limits`.
pub fn docker_limit_flags(limits: &Limits) -> Vec<String> {
    let mut words = Vec::new();
    if let Some(memory) = limits.memory_bytes {
        words.push(format!("--memory {}", docker_size(memory)));
        // --memory-swap is the total of memory and swap; -1 is unlimited.
        words.push(match limits.swap_bytes {
            Some(swap) => format!("--memory-swap {}", docker_size(memory + swap)),
            None => "--memory-swap -1".to_owned(),
        });
    }
    if let Some(quota) = limits.cpu_quota_us {
        if limits.cpu_period_us == 100_000 {
            words.push(format!("--cpus {}", quota as f64 / 100_000.0));
        } else {
            words.push(format!(
                "--cpu-period {} --cpu-quota {quota}",
                limits.cpu_period_us
            ));
        }
    }
    if let Some(pids) = limits.pids_max {
        words.push(format!("--pids-limit {pids}"));
    }
    if let Some(weight) = limits.io_weight {
        words.push(format!("--blkio-weight {}", blkio_weight(weight)));
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(change: impl FnOnce(&mut Limits)) -> Limits {
        let mut limits = Limits::default();
        change(&mut limits);
        limits
    }

    #[test]
    fn defaults_are_valid_and_sensible() {
        let limits = Limits::default();
        limits.validate_for(1).unwrap();
        assert_eq!(limits.memory_bytes, Some(64 << 20));
        assert_eq!(limits.pids_max, Some(64));
        assert_eq!(limits.cpus(), Some(0.5));
    }

    #[test]
    fn bad_values_are_rejected_with_clear_errors() {
        let cases: Vec<(Limits, &str)> = vec![
            (
                with(|l| l.memory_bytes = Some(1 << 20)),
                "memory limit 1048576 bytes is below the minimum of 4 MiB",
            ),
            (
                with(|l| l.memory_bytes = Some(1 << 60)),
                "larger than any machine",
            ),
            (
                with(|l| l.memory_bytes = None),
                "a swap limit needs a memory limit",
            ),
            (
                with(|l| l.pids_max = Some(0)),
                "pids limit 0 would forbid even the box's first process",
            ),
            (
                with(|l| l.pids_max = Some(MAX_PIDS + 1)),
                "above the kernel's largest pid number",
            ),
            (
                with(|l| l.cpu_period_us = 500),
                "cpu period 500 µs must be between 1000 µs",
            ),
            (
                with(|l| l.cpu_period_us = 2_000_000),
                "must be between 1000 µs (1 ms) and 1000000 µs (1 s)",
            ),
            (
                with(|l| l.cpu_quota_us = Some(999)),
                "cpu quota 999 µs is below the kernel's minimum",
            ),
            (
                with(|l| l.cpu_quota_us = Some(250_000)),
                "cpu quota 250000 µs per 100000 µs period is more than this machine's 2 cores (at most 200000 µs)",
            ),
            (
                with(|l| l.io_weight = Some(0)),
                "io weight 0 must be between 1 and 10000",
            ),
            (
                with(|l| l.io_weight = Some(10_001)),
                "io weight 10001 must be between 1 and 10000",
            ),
        ];
        for (limits, expected) in cases {
            let err = limits.validate_for(2).unwrap_err().to_string();
            assert!(err.contains(expected), "{err:?} lacks {expected:?}");
            assert!(err.starts_with(|c: char| c.is_lowercase()), "{err}");
        }
        // The edges themselves are fine.
        with(|l| {
            l.memory_bytes = Some(MIN_MEMORY_BYTES);
            l.cpu_quota_us = Some(200_000);
            l.pids_max = Some(1);
            l.io_weight = Some(10_000);
        })
        .validate_for(2)
        .unwrap();
        // No limits at all is valid too.
        Limits {
            memory_bytes: None,
            swap_bytes: None,
            cpu_quota_us: None,
            cpu_period_us: 100_000,
            pids_max: None,
            io_weight: None,
        }
        .validate_for(1)
        .unwrap();
    }

    #[test]
    fn v1_files_in_kernel_order() {
        let limits = with(|l| l.io_weight = Some(200));
        let writes = v1_writes(&limits, &|c| {
            Some(PathBuf::from(format!("/cg/{c}/damda-x")))
        });
        let rendered: Vec<String> = writes.iter().map(FileWrite::command).collect();
        assert_eq!(
            &rendered[..8],
            [
                "echo 67108864 > /cg/memory/damda-x/memory.limit_in_bytes",
                "echo 67108864 > /cg/memory/damda-x/memory.memsw.limit_in_bytes",
                "echo 100000 > /cg/cpu/damda-x/cpu.cfs_period_us",
                "echo 50000 > /cg/cpu/damda-x/cpu.cfs_quota_us",
                "echo 64 > /cg/pids/damda-x/pids.max",
                "echo 1000 > /cg/blkio/damda-x/blkio.weight",
                "echo a > /cg/devices/damda-x/devices.deny",
                "echo 'c 1:3 rwm' > /cg/devices/damda-x/devices.allow",
            ]
        );
        assert_eq!(writes.len(), 7 + DEVICE_ALLOW_LIST.len());
        // A controller without a hierarchy has no writes.
        let writes = v1_writes(&limits, &|c| {
            (c == "pids").then(|| PathBuf::from("/cg/pids/damda-x"))
        });
        assert_eq!(writes.len(), 1);
    }

    #[test]
    fn v2_files() {
        let limits = with(|l| l.io_weight = Some(200));
        let writes = v2_writes(&limits, Path::new("/sys/fs/cgroup/damda-x"));
        let rendered: Vec<String> = writes.iter().map(FileWrite::command).collect();
        assert_eq!(
            rendered,
            [
                "echo 67108864 > /sys/fs/cgroup/damda-x/memory.max",
                "echo 0 > /sys/fs/cgroup/damda-x/memory.swap.max",
                "echo '50000 100000' > /sys/fs/cgroup/damda-x/cpu.max",
                "echo 64 > /sys/fs/cgroup/damda-x/pids.max",
                "echo 'default 200' > /sys/fs/cgroup/damda-x/io.weight",
            ]
        );
    }

    #[test]
    fn docker_flags() {
        assert_eq!(
            docker_command(&Limits::default()),
            "docker run --rm -it --memory 64m --memory-swap 64m --cpus 0.5 --pids-limit 64 busybox sh"
        );
        let limits = Limits {
            memory_bytes: Some(1 << 30),
            swap_bytes: None,
            cpu_quota_us: Some(20_000),
            cpu_period_us: 50_000,
            pids_max: None,
            io_weight: Some(100),
        };
        assert_eq!(
            docker_command(&limits),
            "docker run --rm -it --memory 1g --memory-swap -1 --cpu-period 50000 --cpu-quota 20000 --blkio-weight 500 busybox sh"
        );
    }

    #[test]
    fn blkio_weight_meets_io_weight_at_the_defaults() {
        assert_eq!(blkio_weight(100), 500);
        assert_eq!(blkio_weight(1), 10);
        assert_eq!(blkio_weight(10_000), 1000);
    }
}
