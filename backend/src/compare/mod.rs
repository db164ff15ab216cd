//! The VM-vs-container comparison: the same small workload in a fresh damda
//! box and in a qemu VM on the same host, in the same run, repeated, each
//! figure's median and range reported. Every number is measured here: times
//! by this process's monotonic clock, memory from the kernel (qemu's VmRSS,
//! the box's cgroup), disk from the files' sizes.
//!
//! Each run builds the box and then boots the VM, one after the other, so
//! neither slows the other. The VM uses KVM if a short trial boot shows it
//! works, else software emulation (TCG), which the result says.

mod container;
mod machine;
mod workload;

use crate::cgroups::Limits;
use crate::engine::{Engine, EngineError};
use crate::vm::{Accel, VmError};
use damda_protocol::{
    shell_word, Accelerator, CompareStage, Comparison, Figure, FigureId, FigurePart, FigureUnit,
    Spread, MAX_COMPARE_RUNS,
};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("a comparison makes 1 to {MAX_COMPARE_RUNS} runs, not {0}")]
    Runs(u32),
    #[error("the box: {0}")]
    Box(#[from] Box<EngineError>),
    #[error("the VM: {0}")]
    Vm(#[from] VmError),
    #[error("the image for the VM: {0}")]
    Image(Box<crate::image::BuildError>),
    #[error("the workload in the {side}: {reason}")]
    Workload { side: &'static str, reason: String },
    #[error("the request to the {side}: {reason}")]
    Request { side: &'static str, reason: String },
}

/// One run of one side.
#[derive(Debug, Clone)]
struct Sample {
    first_output: Duration,
    exit: Duration,
    cpu: Duration,
    files: Duration,
    forks: Duration,
    request: Duration,
    memory: u64,
    teardown: Duration,
    /// The VM's first /init line (empty for a box).
    guest_init: String,
}

impl Sample {
    /// A run's figures: the workload's parts from its stamped marks.
    fn new(
        timings: workload::Timings,
        exit: Duration,
        request: Duration,
        memory: u64,
        teardown: Duration,
        guest_init: String,
    ) -> Self {
        Sample {
            first_output: timings.first_output,
            exit,
            cpu: timings.cpu,
            files: timings.files,
            forks: timings.forks,
            request,
            memory,
            teardown,
            guest_init,
        }
    }
}

/// Requests timed per run (after one that warms the path up).
const REQUESTS: usize = 5;

/// One `GET /` over a new connection to `address`; the time until the whole
/// answer is read.
fn request(address: SocketAddr) -> Result<Duration, String> {
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))
        .map_err(|e| format!("connecting to {address}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .map_err(|e| format!("sending to {address}: {e}"))?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .map_err(|e| format!("reading from {address}: {e}"))?;
    let elapsed = started.elapsed();
    let head = String::from_utf8_lossy(&answer[..answer.len().min(64)]).into_owned();
    if !head.starts_with("HTTP/1.") || !head.contains(" 200") {
        return Err(format!(
            "{address} answered `{}`",
            head.lines().next().unwrap_or("")
        ));
    }
    Ok(elapsed)
}

/// The median of [`REQUESTS`] requests, after a first one that may wait
/// (up to 10 s) for the server to listen.
fn requests(address: SocketAddr) -> Result<Duration, String> {
    let waiting = Instant::now() + Duration::from_secs(10);
    while let Err(err) = request(address) {
        if Instant::now() >= waiting {
            return Err(err);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut times = (0..REQUESTS)
        .map(|_| request(address))
        .collect::<Result<Vec<_>, _>>()?;
    times.sort();
    Ok(times[times.len() / 2])
}

/// Median, least and most of `samples`.
pub fn spread(samples: Vec<f64>) -> Spread {
    let mut sorted = samples.clone();
    sorted.sort_by(f64::total_cmp);
    let median = match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    };
    Spread {
        median,
        min: sorted.first().copied().unwrap_or(0.0),
        max: sorted.last().copied().unwrap_or(0.0),
        samples,
    }
}

/// The `docker run` that does what the container side does (the server is
/// the image's own command there; here the workload replaces it).
fn docker_line(limits: &Limits, image: &str) -> String {
    let mut words = vec!["docker run --rm".to_owned()];
    words.extend(crate::cgroups::docker_limit_flags(limits));
    words.push(format!("-p 8081:80 {image} sh -c"));
    words.push(shell_word(workload::SCRIPT));
    words.join(" ")
}

/// The box gets what the VM gets: one CPU and the VM's memory.
fn box_limits(engine: &Engine) -> Limits {
    let mut limits = engine.default_limits().clone();
    limits.memory_bytes = Some(u64::from(machine::MEMORY_MIB) << 20);
    limits.cpu_quota_us = Some(limits.cpu_period_us * u64::from(machine::CPUS));
    limits
}

/// Refuses a run count out of 1..=[`MAX_COMPARE_RUNS`].
pub fn check_runs(runs: u32) -> Result<(), CompareError> {
    if (1..=MAX_COMPARE_RUNS).contains(&runs) {
        Ok(())
    } else {
        Err(CompareError::Runs(runs))
    }
}

/// Runs the comparison `runs` times; `progress` hears of each stage.
pub fn compare(
    engine: &Arc<Engine>,
    runs: u32,
    progress: &mut dyn FnMut(CompareStage, u32, u32),
) -> Result<Comparison, CompareError> {
    check_runs(runs)?;
    progress(CompareStage::Preparing, 0, runs);
    let machine = machine::Machine::prepare(engine)?;
    progress(CompareStage::KvmTrial, 0, runs);
    // Tried once per process: what the host's KVM can do does not change.
    static TRIAL: std::sync::OnceLock<(Accel, String)> = std::sync::OnceLock::new();
    let (accel, kvm_trial) = TRIAL.get_or_init(|| machine.trial()).clone();
    let limits = box_limits(engine);
    let mut boxes = Vec::new();
    let mut vms = Vec::new();
    for run in 1..=runs {
        progress(CompareStage::Container, run, runs);
        boxes.push(container::run(engine, &limits)?);
        progress(CompareStage::Vm, run, runs);
        vms.push(machine.run(accel)?);
    }
    let image = engine.config().image.to_string();
    Ok(Comparison {
        accelerator: if accel == Accel::Kvm {
            Accelerator::Kvm
        } else {
            Accelerator::Tcg
        },
        kvm_trial,
        runs,
        host_kernel: nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
        guest_kernel: machine.kernel_release.clone(),
        guest_init: vms.last().map(|s| s.guest_init.clone()).unwrap_or_default(),
        vm_memory_mib: machine::MEMORY_MIB,
        vm_cpus: machine::CPUS,
        container_cpus: limits.cpu_quota_us.unwrap_or(0) as f64 / limits.cpu_period_us as f64,
        image: image.clone(),
        workload: workload::SCRIPT.to_owned(),
        vm_command: machine.command_line(accel),
        container_command: docker_line(&limits, &image),
        figures: figures(&boxes, &vms, machine.layers.clone(), machine.disk.clone()),
    })
}

/// The command line's progress line.
pub fn progress_line(stage: CompareStage, run: u32, runs: u32) -> String {
    match stage {
        CompareStage::Preparing => "compare: building the VM's initramfs from the image".into(),
        CompareStage::KvmTrial => "compare: a short trial boot with KVM".into(),
        CompareStage::Container => format!("compare: run {run}/{runs}: the box"),
        CompareStage::Vm => format!("compare: run {run}/{runs}: the VM"),
    }
}

/// A figure's name on the command line.
fn figure_name(id: FigureId) -> &'static str {
    match id {
        FigureId::FirstOutput => "start: first output",
        FigureId::Exit => "start: workload exited",
        FigureId::Memory => "memory (RSS / cgroup)",
        FigureId::Disk => "disk",
        FigureId::Cpu => "CPU: sha256 of 16 MiB",
        FigureId::Files => "syscalls: 2000 file reads",
        FigureId::Forks => "syscalls: 200 processes",
        FigureId::Request => "HTTP request (fwd port)",
        FigureId::Teardown => "stop and remove",
    }
}

fn human_spread(spread: &Spread, unit: FigureUnit) -> String {
    if spread.min == spread.max {
        unit.text(spread.median)
    } else {
        format!(
            "{} ({}–{})",
            unit.text(spread.median),
            unit.text(spread.min),
            unit.text(spread.max)
        )
    }
}

/// The comparison as `damda compare` prints it.
pub fn table(comparison: &Comparison) -> String {
    let tcg = comparison.accelerator == Accelerator::Tcg;
    let mut out = format!(
        "VM vs container: {} run(s) of the same workload on this host\n\
         accelerator: {} ({})\n\
         host kernel {}; VM: kernel {}, {} MiB, {} CPU; box: {} CPU, same memory limit; image {}\n\n",
        comparison.runs,
        if tcg { "TCG, software emulation" } else { "KVM" },
        comparison.kvm_trial,
        comparison.host_kernel,
        comparison.guest_kernel,
        comparison.vm_memory_mib,
        comparison.vm_cpus,
        comparison.container_cpus,
        comparison.image,
    );
    out.push_str(&format!(
        "{:<26} {:<30} {:<30} {}\n",
        "figure", "container: median (range)", "VM: median (range)", "VM ÷ container"
    ));
    for figure in &comparison.figures {
        let ratio = if figure.container.median > 0.0 {
            format!("{:.1}×", figure.vm.median / figure.container.median)
        } else {
            "–".into()
        };
        out.push_str(&format!(
            "{:<26} {:<30} {:<30} {ratio}{}\n",
            figure_name(figure.id),
            human_spread(&figure.container, figure.unit),
            human_spread(&figure.vm, figure.unit),
            if tcg && figure.emulated { " *" } else { "" },
        ));
    }
    if tcg {
        out.push_str(
            "\n* under software emulation (TCG) the VM's figure measures qemu's emulator, \
             not virtualization: with KVM the VM runs guest code on the CPU itself.\n",
        );
    }
    out
}

fn milliseconds(time: Duration) -> f64 {
    time.as_secs_f64() * 1000.0
}

/// One figure's value in a run's sample.
type SampleValue = fn(&Sample) -> f64;

/// How each run's sample gives a figure; `None` for disk, which is the
/// files' sizes rather than something a run measures.
fn measure(id: FigureId) -> Option<(FigureUnit, SampleValue)> {
    use FigureUnit::{Bytes, Milliseconds};
    Some(match id {
        FigureId::FirstOutput => (Milliseconds, |s| milliseconds(s.first_output)),
        FigureId::Exit => (Milliseconds, |s| milliseconds(s.exit)),
        FigureId::Memory => (Bytes, |s| s.memory as f64),
        FigureId::Disk => return None,
        FigureId::Cpu => (Milliseconds, |s| milliseconds(s.cpu)),
        FigureId::Files => (Milliseconds, |s| milliseconds(s.files)),
        FigureId::Forks => (Milliseconds, |s| milliseconds(s.forks)),
        FigureId::Request => (Milliseconds, |s| milliseconds(s.request)),
        FigureId::Teardown => (Milliseconds, |s| milliseconds(s.teardown)),
    })
}

fn figures(
    boxes: &[Sample],
    vms: &[Sample],
    layers: Vec<FigurePart>,
    vm_disk: Vec<FigurePart>,
) -> Vec<Figure> {
    let total = |parts: &[FigurePart]| parts.iter().map(|p| p.bytes).sum::<u64>() as f64;
    FigureId::ALL
        .into_iter()
        .map(|id| match measure(id) {
            Some((unit, value)) => Figure {
                id,
                unit,
                container: spread(boxes.iter().map(value).collect()),
                vm: spread(vms.iter().map(value).collect()),
                // Every VM figure but its files' sizes comes from guest code
                // qemu runs (even its memory holds TCG's translated code).
                emulated: true,
                container_parts: Vec::new(),
                vm_parts: Vec::new(),
            },
            None => Figure {
                id,
                unit: FigureUnit::Bytes,
                container: spread(vec![total(&layers)]),
                vm: spread(vec![total(&vm_disk)]),
                emulated: false,
                container_parts: layers.clone(),
                vm_parts: vm_disk.clone(),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_gives_median_and_range() {
        let odd = spread(vec![30.0, 10.0, 20.0]);
        assert_eq!((odd.median, odd.min, odd.max), (20.0, 10.0, 30.0));
        assert_eq!(odd.samples, [30.0, 10.0, 20.0]);
        assert_eq!(spread(vec![1.0, 4.0]).median, 2.5);
    }

    #[test]
    fn docker_line_runs_the_workload_with_the_boxs_limits() {
        let limits = Limits {
            memory_bytes: Some(512 << 20),
            cpu_quota_us: Some(100_000),
            ..Limits::default()
        };
        let line = docker_line(&limits, "damda.local/busybox-httpd:latest");
        assert!(line.starts_with("docker run --rm --memory 512m"), "{line}");
        assert!(line.contains("--cpus 1 "), "{line}");
        assert!(
            line.contains(
                " -p 8081:80 damda.local/busybox-httpd:latest sh -c 'echo DAMDA-WL start\n"
            ),
            "{line}"
        );
        assert!(!line.contains("-it"), "{line}");
    }

    #[test]
    fn every_figure_is_there_once() {
        let sample = Sample {
            first_output: Duration::from_millis(40),
            exit: Duration::from_millis(400),
            cpu: Duration::from_millis(100),
            files: Duration::from_millis(30),
            forks: Duration::from_millis(250),
            request: Duration::from_millis(2),
            memory: 4 << 20,
            teardown: Duration::from_millis(20),
            guest_init: String::new(),
        };
        let disk = |bytes| {
            vec![FigurePart {
                name: "x".into(),
                bytes,
            }]
        };
        let figures = figures(
            std::slice::from_ref(&sample),
            &[sample.clone(), sample.clone()],
            disk(10),
            disk(20),
        );
        let ids: Vec<FigureId> = figures.iter().map(|f| f.id).collect();
        assert_eq!(ids, FigureId::ALL);
        let memory = figures.iter().find(|f| f.id == FigureId::Memory).unwrap();
        assert_eq!(
            (memory.unit, memory.container.median),
            (FigureUnit::Bytes, 4194304.0)
        );
        let cpu = figures.iter().find(|f| f.id == FigureId::Cpu).unwrap();
        assert_eq!((cpu.vm.median, cpu.vm.samples.len()), (100.0, 2));
        let disk = figures.iter().find(|f| f.id == FigureId::Disk).unwrap();
        assert!(!disk.emulated);
        assert_eq!((disk.container.median, disk.vm.median), (10.0, 20.0));
    }

    #[test]
    fn the_table_names_the_accelerator_and_marks_emulated_figures() {
        let sample = |ms: u64, memory: u64| Sample {
            first_output: Duration::from_millis(ms),
            exit: Duration::from_millis(ms * 2),
            cpu: Duration::from_millis(ms),
            files: Duration::from_millis(ms),
            forks: Duration::from_millis(ms),
            request: Duration::from_millis(ms),
            memory,
            teardown: Duration::from_millis(ms),
            guest_init: String::new(),
        };
        let part = |bytes| {
            vec![FigurePart {
                name: "x".into(),
                bytes,
            }]
        };
        let mut comparison = Comparison {
            accelerator: Accelerator::Tcg,
            kvm_trial: "KVM did not reach /init within 10 s".into(),
            runs: 2,
            host_kernel: "6.18.0".into(),
            guest_kernel: "6.1.0-56-amd64".into(),
            guest_init: String::new(),
            vm_memory_mib: 512,
            vm_cpus: 1,
            container_cpus: 1.0,
            image: "damda.local/busybox-httpd:latest".into(),
            workload: workload::SCRIPT.into(),
            vm_command: String::new(),
            container_command: String::new(),
            figures: figures(
                &[sample(40, 1 << 20), sample(60, 1 << 20)],
                &[sample(100, 200 << 20), sample(100, 200 << 20)],
                part(1 << 20),
                part(9 << 20),
            ),
        };
        let table = table(&comparison);
        assert!(
            table.contains("accelerator: TCG, software emulation (KVM did not"),
            "{table}"
        );
        let first = table
            .lines()
            .find(|l| l.starts_with("start: first output"))
            .unwrap();
        assert!(first.contains("50.0 ms (40.0 ms–60.0 ms)"), "{first}");
        assert!(first.contains("100 ms"), "{first}");
        assert!(first.ends_with("2.0× *"), "{first}");
        let disk = table.lines().find(|l| l.starts_with("disk")).unwrap();
        assert!(disk.contains("1.0 MiB") && disk.ends_with("9.0×"), "{disk}");
        let memory = table.lines().find(|l| l.starts_with("memory")).unwrap();
        assert!(
            memory.contains("200.0 MiB") && memory.contains("200.0× *"),
            "{memory}"
        );
        assert!(table.contains("measures qemu's emulator"));
        comparison.accelerator = Accelerator::Kvm;
        let table = super::table(&comparison);
        assert!(table.contains("accelerator: KVM"), "{table}");
        assert!(!table.contains(" *"), "{table}");
    }
}
