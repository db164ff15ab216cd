//! The VM side: Debian's kernel from data/vm and an initramfs holding the
//! image's own files (flattened as overlay would show them), the virtio-net
//! modules, and an /init that brings the network up, starts the image's
//! server, runs the same workload, then waits for the host to say stop.

use super::{requests, workload, CompareError, Sample};
use crate::image;
use crate::vm::{self, Accel, Initramfs, Missed, RunningVm, VmConfig};
use damda_protocol::FigurePart;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Printed by /init when the workload exited, with its status.
const EXIT_MARK: &str = "DAMDA-VM-EXIT";
/// Printed by /init when it waits for the host's stop line.
const READY_MARK: &str = "DAMDA-VM-READY";
/// On the kernel command line of the trial boot: /init powers off at once.
const TRIAL_ARG: &str = "damda.trial";
/// The modules the network card needs (the rest are found from these).
const MODULES: [&str; 2] = ["virtio_pci", "virtio_net"];
/// The comparison's initramfs, in data/vm.
pub const INITRD: &str = "damda-compare-initrd.gz";
/// The guest's memory and CPUs; the box gets the same.
pub(super) const MEMORY_MIB: u32 = 512;
pub(super) const CPUS: u32 = 1;

/// The comparison's /init: `modules` are loaded in order, the image's
/// `command` is started in the background, the workload runs.
fn init_script(modules: &[String], command: &[String]) -> String {
    let command: Vec<String> = command
        .iter()
        .map(|w| damda_protocol::shell_word(w))
        .collect();
    format!(
        r#"{preamble}if grep -q {TRIAL_ARG} /proc/cmdline; then poweroff -f; fi
for module in {modules}; do insmod $module || echo "DAMDA-VM insmod $module failed"; done
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
cd / && {command} &
sh /damda-workload.sh
echo "{EXIT_MARK} $?"
echo "{READY_MARK}"
read -r stop
poweroff -f
"#,
        preamble = vm::init_preamble(),
        modules = modules.join(" "),
        command = command.join(" "),
    )
}

/// The VM, built once for every run.
pub(super) struct Machine {
    config: VmConfig,
    initrd: PathBuf,
    pub kernel_release: String,
    /// The VM's files on disk: its kernel and initramfs.
    pub disk: Vec<FigurePart>,
    /// The container's: the image's layer blobs.
    pub layers: Vec<FigurePart>,
}

impl Machine {
    /// Builds the initramfs from the image the boxes use.
    pub fn prepare(engine: &crate::engine::Engine) -> Result<Self, CompareError> {
        let config = engine.config();
        let kernel = vm::kernel(&config.vm)?;
        // The layers as the boxes have them unpacked (owned by the mapped
        // root); reading them needs no second copy.
        let store = config
            .store()
            .map_err(|e| CompareError::Image(Box::new(e.into())))?;
        let stored = store
            .image(&config.image)
            .map_err(|e| CompareError::Image(Box::new(e.into())))?;
        let layers = store
            .unpacked_layers(&stored)
            .map_err(|e| CompareError::Image(Box::new(e.into())))?;
        let tree = image::flatten(&layers).map_err(|e| CompareError::Image(Box::new(e)))?;
        let mut initramfs = Initramfs::new();
        initramfs.image(&tree);
        let modules = initramfs.modules(&config.vm, &MODULES)?;
        initramfs.file("/damda-workload.sh", workload::SCRIPT.into(), false);
        initramfs.init(&init_script(&modules, &stored.command()));
        // Kept beside the kernel (not in a temporary directory) so the
        // printed qemu command line boots it by hand after the comparison.
        let initrd = config.vm.join(INITRD);
        initramfs.write_gzip(&initrd)?;
        let size = |path: &std::path::Path| std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let kernel_file = std::fs::canonicalize(&kernel).unwrap_or(kernel.clone());
        let kernel_release = kernel_file
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("vmlinuz-"))
            .unwrap_or_default()
            .to_owned();
        let disk = vec![
            FigurePart {
                name: format!("vmlinuz-{kernel_release}"),
                bytes: size(&kernel_file),
            },
            FigurePart {
                name: "initrd.gz".into(),
                bytes: size(&initrd),
            },
        ];
        let layers = stored
            .manifest
            .layers()
            .iter()
            .enumerate()
            .map(|(index, layer)| FigurePart {
                name: format!("layer {} ({})", index + 1, image::short_id(layer.digest())),
                bytes: layer.size(),
            })
            .collect();
        Ok(Machine {
            config: VmConfig {
                memory_mib: MEMORY_MIB,
                cpus: CPUS,
                boot_timeout: Duration::from_secs(30),
                timeout: Duration::from_secs(180),
                ..VmConfig::new(kernel_file)
            },
            initrd,
            kernel_release,
            disk,
            layers,
        })
    }

    /// The command line of a run, to boot it by hand.
    pub fn command_line(&self, accel: Accel) -> String {
        let config = VmConfig {
            forward: Some(8090),
            accel,
            ..self.config.clone()
        };
        config.command_line(&self.initrd)
    }

    /// The accelerator, by a short trial boot with KVM (see
    /// [`vm::choose_accel`]); this /init powers off as soon as it starts.
    pub fn trial(&self) -> (Accel, String) {
        let config = VmConfig {
            cmdline: TRIAL_ARG.into(),
            ..self.config.clone()
        };
        vm::choose_accel(&config, &self.initrd)
    }

    /// One run: boot, the workload, requests, qemu's memory, power-off.
    pub fn run(&self, accel: Accel) -> Result<Sample, CompareError> {
        let port = free_port()?;
        let config = VmConfig {
            forward: Some(port),
            accel,
            ..self.config.clone()
        };
        let failed = |vm: &RunningVm, missed: Missed, what: &str| {
            let lines = vm.console();
            CompareError::Workload {
                side: "vm",
                reason: format!(
                    "{} before {what}; last console lines:\n{}",
                    match missed {
                        Missed::TimedOut => "timed out",
                        Missed::Exited => "qemu exited",
                    },
                    lines[lines.len().saturating_sub(20)..].join("\n")
                ),
            }
        };
        let vm::Booted {
            mut vm,
            init_line: guest_init,
            ..
        } = vm::start(&config, &self.initrd)?;
        let deadline = vm.started() + config.timeout;
        let mut lines = Vec::new();
        for mark in workload::MARKS {
            let line = workload::mark_line(mark);
            let (text, at) = vm
                .wait_for(&line, deadline)
                .map_err(|m| failed(&vm, m, &line))?;
            lines.push((at, text));
        }
        let (status, exit) = vm
            .wait_for(EXIT_MARK, deadline)
            .map_err(|m| failed(&vm, m, EXIT_MARK))?;
        if status.trim().strip_prefix(EXIT_MARK).map(str::trim) != Some("0") {
            return Err(CompareError::Workload {
                side: "vm",
                reason: format!("the workload ended with `{status}`"),
            });
        }
        vm.wait_for(READY_MARK, deadline)
            .map_err(|m| failed(&vm, m, READY_MARK))?;
        let timings = workload::timings(&lines)
            .map_err(|reason| CompareError::Workload { side: "vm", reason })?;
        let request = requests(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)))
            .map_err(|reason| CompareError::Request { side: "vm", reason })?;
        let memory = resident_bytes(vm.pid())?;
        let stopping = Instant::now();
        vm.send_line("stop")?;
        let finished = vm.finish(stopping + Duration::from_secs(30));
        if finished.killed {
            return Err(CompareError::Workload {
                side: "vm",
                reason: "the VM did not power off within 30 s and was killed".into(),
            });
        }
        Ok(Sample::new(
            timings,
            exit,
            request,
            memory,
            stopping.elapsed(),
            guest_init,
        ))
    }
}

/// A free port on 127.0.0.1 for qemu's forward (free when asked; qemu
/// fails loudly in the rare case another program takes it first).
fn free_port() -> Result<u16, CompareError> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|e| CompareError::Request {
            side: "vm",
            reason: format!("finding a free port on 127.0.0.1: {e}"),
        })
}

/// A process's resident memory (VmRSS of /proc/PID/status), in bytes.
fn resident_bytes(pid: u32) -> Result<u64, CompareError> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    crate::observe::resident_kib(&text)
        .map(|kib| kib * 1024)
        .ok_or_else(|| CompareError::Workload {
            side: "vm",
            reason: format!("{path} has no VmRSS line"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_loads_modules_starts_the_server_and_waits_for_stop() {
        let script = init_script(
            &[
                "/lib/modules/x/virtio.ko".into(),
                "/lib/modules/x/virtio_net.ko".into(),
            ],
            &[
                "httpd".into(),
                "-f".into(),
                "-p".into(),
                "80".into(),
                "-h".into(),
                "/www".into(),
            ],
        );
        assert!(
            script.contains("for module in /lib/modules/x/virtio.ko /lib/modules/x/virtio_net.ko;")
        );
        assert!(script.contains("cd / && httpd -f -p 80 -h /www &\n"));
        let workload = script.find("sh /damda-workload.sh").unwrap();
        assert!(script.find("httpd -f").unwrap() < workload);
        assert!(workload < script.find("read -r stop").unwrap());
        assert!(script.trim_end().ends_with("poweroff -f"));
    }
}
