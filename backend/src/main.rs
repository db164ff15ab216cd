//! The `damda` command. Errors become anyhow only here, at the edge.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use damda::engine::{Engine, EngineConfig};
use damda::ledger::Ledger;
use damda::paths::Paths;
use damda_protocol::StepId;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "damda",
    version,
    about = "담다 — build a real container one kernel primitive at a time"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Apply steps headless and print one JSON snapshot per line.
    Walk {
        /// The last step to apply (all available steps without it).
        #[arg(long)]
        to: Option<StepId>,
        /// Keep the box alive until standard input ends (or SIGINT/SIGTERM).
        #[arg(long)]
        hold: bool,
        /// A rootfs other than the prepared default.
        #[arg(long)]
        rootfs: Option<std::path::PathBuf>,
        #[command(flatten)]
        boxes: BoxArgs,
    },
    /// Serve the page and the websocket.
    Serve {
        /// Address to listen on; a port of 0 picks a free one. A non-loopback
        /// address is classroom mode and needs --token.
        #[arg(long, default_value = "127.0.0.1:4780")]
        listen: SocketAddr,
        /// Classroom mode: the secret every page must present.
        #[arg(long)]
        token: Option<String>,
        /// Classroom mode: another host name the page may be reached by.
        #[arg(long = "allow-host")]
        allow_hosts: Vec<String>,
        /// How many boxes may run at once.
        #[arg(long, default_value_t = 16)]
        max_boxes: usize,
        /// Seconds a box outlives its closed page (a reload resumes it).
        #[arg(long, default_value_t = 20)]
        grace: u64,
        #[command(flatten)]
        boxes: BoxArgs,
    },
    /// Check what damda needs on this host.
    Doctor,
    /// Remove what dead damda instances left behind.
    Sweep {
        /// Only list damda objects still on the host; exit 1 if there are any.
        #[arg(long)]
        check: bool,
    },
    /// Build the default rootfs from /bin/busybox (set-up does this).
    Prepare,
    /// Import an image: a `docker save` tarball or an OCI layout (directory or tar).
    Import {
        path: std::path::PathBuf,
        /// The name to store it under, as registry/repository:tag.
        #[arg(long)]
        name: Option<String>,
    },
    /// List the stored images, as `docker image ls` does.
    Images,
    /// Show an image's layers, as `docker history` does.
    History { name: String },
    /// Run the same workload in a fresh box and in a qemu VM on this host,
    /// `--runs` times, and print each figure's median and range.
    Compare {
        /// How many times each side runs (1 to 5; each VM boot takes seconds).
        #[arg(long, default_value_t = 3)]
        runs: u32,
        /// Print the comparison as JSON (the page's `compared` message).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        network: NetworkArgs,
    },
    /// Write the box as an OCI runtime bundle (config.json + rootfs) that
    /// runc or crun runs: `damda export DIR [-- ARGS...]`.
    Export {
        /// The bundle directory (created if missing).
        dir: std::path::PathBuf,
        /// The image whose layers become the rootfs (the default image without it).
        #[arg(long)]
        image: Option<String>,
        #[command(flatten)]
        limits: LimitArgs,
        /// The command to run instead of the image's Entrypoint and Cmd.
        #[arg(last = true)]
        args: Vec<String>,
    },
}

/// What every box of a walk or a server is built with.
#[derive(clap::Args)]
struct BoxArgs {
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    network: NetworkArgs,
    /// A host directory bound into the box at the overlay step, as
    /// `docker run -v HOST:BOX`; its data outlives the box. Repeatable.
    #[arg(long = "volume", short = 'v', value_name = "HOST:BOX")]
    volumes: Vec<damda::steps::Volume>,
}

/// The `network` step's bridge network.
#[derive(clap::Args)]
struct NetworkArgs {
    /// The private subnet boxes get addresses from; the bridge takes the
    /// first address. Checked against the host's routes before use.
    #[arg(long, default_value = damda::network::subnet::DEFAULT_SUBNET)]
    subnet: String,
}

impl NetworkArgs {
    fn config(&self) -> anyhow::Result<damda::network::NetworkConfig> {
        Ok(damda::network::NetworkConfig {
            subnet: self.subnet.parse()?,
            ..Default::default()
        })
    }
}

/// The `cgroups` step's limits, as `docker run` names them.
#[derive(clap::Args)]
struct LimitArgs {
    /// Memory limit in MiB (docker run --memory).
    #[arg(long = "memory-mib", default_value_t = 64)]
    memory_mib: u64,
    /// CPU limit in cores, e.g. 0.5 (docker run --cpus).
    #[arg(long, default_value_t = 0.5)]
    cpus: f64,
    /// Most processes at once (docker run --pids-limit).
    #[arg(long, default_value_t = 64)]
    pids: u64,
}

impl LimitArgs {
    fn limits(&self) -> anyhow::Result<damda::cgroups::Limits> {
        use damda::cgroups::LimitsCheck;
        if !self.cpus.is_finite() || self.cpus <= 0.0 {
            bail!("--cpus must be a positive number of cores, like 0.5");
        }
        let mut limits = damda::cgroups::Limits::default();
        limits.memory_bytes = Some(self.memory_mib.saturating_mul(1 << 20));
        limits.cpu_quota_us = Some((self.cpus * limits.cpu_period_us as f64).round() as u64);
        limits.pids_max = Some(self.pids);
        limits.validate()?;
        Ok(limits)
    }
}

fn require_root(what: &str) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "{what} needs root to create namespaces and chroot: run it with sudo \
             (상자를 만들려면 root 권한이 필요합니다: sudo로 실행하세요)"
        );
    }
    Ok(())
}

fn sweep_at_start(paths: &Paths, network: &damda::network::NetworkConfig) {
    let report = damda::cli::sweep::sweep(&paths.ledger(), network);
    for removed in &report.removed {
        tracing::info!("swept {removed} left by a dead instance");
    }
    for error in &report.errors {
        tracing::warn!("sweep: {error}");
    }
}

fn engine(
    paths: &Paths,
    rootfs: Option<std::path::PathBuf>,
    limits: damda::cgroups::Limits,
    network: &NetworkArgs,
    volumes: Vec<damda::steps::Volume>,
) -> anyhow::Result<Arc<Engine>> {
    let network = network.config()?;
    sweep_at_start(paths, &network);
    let ledger = Arc::new(Ledger::create(&paths.ledger())?);
    let mut config = EngineConfig::defaults(paths);
    config.limits = limits;
    config.network = network;
    config.volumes = volumes;
    if let Some(rootfs) = rootfs {
        config.rootfs = rootfs;
    }
    Ok(Arc::new(Engine::new(ledger, config)?))
}

impl BoxArgs {
    fn engine(
        self,
        paths: &Paths,
        rootfs: Option<std::path::PathBuf>,
    ) -> anyhow::Result<Arc<Engine>> {
        engine(
            paths,
            rootfs,
            self.limits.limits()?,
            &self.network,
            self.volumes,
        )
    }
}

fn close(engine: &Engine) {
    for error in engine.shutdown() {
        tracing::warn!("cleanup: {error}");
    }
}

fn main() -> anyhow::Result<()> {
    // A box helper must stay single-threaded: dispatch before anything starts
    // a thread (logging, the async runtime).
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some(damda::helper::HELPER_ARG) => damda::helper::child::run(),
        Some(damda::helper::enter::ENTER_ARG) if args.len() == 4 => {
            damda::helper::enter::run(&args[2], &args[3])
        }
        Some(damda::helper::enter::ESCAPE_ARG) if args.len() == 3 => {
            damda::helper::enter::escape(&args[2])
        }
        Some(damda::helper::enter::DEMO_ARG) if args.len() >= 3 => {
            damda::helper::enter::demo(&args[2], &args[3..])
        }
        _ => {}
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let paths = Paths::from_env();
    match cli.command {
        Commands::Walk {
            to,
            hold,
            rootfs,
            boxes,
        } => {
            require_root("damda walk")?;
            let engine = boxes.engine(&paths, rootfs)?;
            let outcome = damda::cli::walk::walk(engine.clone(), to, hold);
            close(&engine);
            match outcome {
                Ok(()) => Ok(()),
                Err(damda::cli::walk::WalkError::StepFailed) => std::process::exit(1),
                Err(err) => Err(err.into()),
            }
        }
        Commands::Serve {
            listen,
            token,
            allow_hosts,
            max_boxes,
            grace,
            boxes,
        } => {
            require_root("damda serve")?;
            if !listen.ip().is_loopback() && token.is_none() {
                bail!(
                    "{listen} is reachable from other machines: classroom mode needs --token \
                     (다른 컴퓨터에서 접속할 수 있는 주소에는 --token이 필요합니다)"
                );
            }
            if max_boxes == 0 {
                bail!("--max-boxes must be at least 1");
            }
            let engine = boxes.engine(&paths, None)?;
            let options = damda::server::ServeOptions {
                listen,
                web_dir: paths.web.clone(),
                allow_hosts,
                token,
                max_boxes,
                grace: Duration::from_secs(grace),
            };
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let outcome = runtime.block_on(damda::server::serve(engine.clone(), options));
            runtime.shutdown_timeout(Duration::from_secs(2));
            close(&engine);
            outcome
        }
        Commands::Doctor => {
            let findings = damda::cli::doctor::diagnose(&paths);
            let mut missing = false;
            for f in &findings {
                let mark = if f.ok {
                    "ok  "
                } else if f.required {
                    "FAIL"
                } else {
                    "warn"
                };
                println!("[{mark}] {:<24} {}", f.what, f.detail);
                missing |= f.required && !f.ok;
            }
            if missing {
                bail!("damda cannot build boxes here until the FAIL lines are fixed");
            }
            Ok(())
        }
        Commands::Sweep { check } => {
            if check {
                let left = damda::cli::sweep::leftovers();
                for item in &left {
                    println!("left behind: {item}");
                }
                if !left.is_empty() {
                    bail!("{} damda object(s) left behind", left.len());
                }
                println!("nothing left behind");
                return Ok(());
            }
            require_root("damda sweep")?;
            let report = damda::cli::sweep::sweep(
                &paths.ledger(),
                &damda::network::NetworkConfig::default(),
            );
            for removed in &report.removed {
                println!("removed {removed}");
            }
            for error in &report.errors {
                eprintln!("could not remove: {error}");
            }
            println!(
                "swept: {} removed, {} errors",
                report.removed.len(),
                report.errors.len()
            );
            if report.errors.is_empty() {
                Ok(())
            } else {
                bail!("sweep incomplete")
            }
        }
        Commands::Prepare => {
            let rootfs = paths.rootfs();
            let built = damda::rootfs::prepare(&rootfs)?;
            println!(
                "{} {}",
                if built { "built" } else { "up to date:" },
                rootfs.display()
            );
            let image = damda::image::prepare_default(&paths)?;
            println!(
                "{} {} ({})",
                if image.changed {
                    "built"
                } else {
                    "up to date:"
                },
                image.reference,
                image.manifest
            );
            Ok(())
        }
        Commands::Import { path, name } => {
            let name = name.map(|n| n.parse()).transpose()?;
            let store = damda::image::open_store(&paths)?;
            let mut shown = String::new();
            let names = damda::image::import(&store, &path, name.as_ref(), &mut |p| {
                let line = damda::image::progress_line(&p);
                if line != shown {
                    eprint!("\r{line}");
                    shown = line;
                }
            });
            eprintln!();
            for name in names? {
                println!("imported {name}");
            }
            Ok(())
        }
        Commands::Images => {
            print!(
                "{}",
                damda::image::images_table(&damda::image::open_store(&paths)?)?
            );
            Ok(())
        }
        Commands::History { name } => {
            let store = damda::image::open_store(&paths)?;
            print!("{}", damda::image::history_table(&store, &name.parse()?)?);
            Ok(())
        }
        Commands::Compare {
            runs,
            json,
            network,
        } => {
            require_root("damda compare")?;
            // The box's memory and CPUs are set to the VM's by the comparison.
            let limits = damda::cgroups::Limits::default();
            let engine = engine(&paths, None, limits, &network, Vec::new())?;
            let outcome = damda::compare::compare(&engine, runs, &mut |stage, run, runs| {
                eprintln!("{}", damda::compare::progress_line(stage, run, runs));
            });
            close(&engine);
            let comparison = outcome?;
            if json {
                println!("{}", serde_json::to_string_pretty(&comparison)?);
            } else {
                print!("{}", damda::compare::table(&comparison));
            }
            Ok(())
        }
        Commands::Export {
            dir,
            image,
            limits,
            args,
        } => {
            let mut config = EngineConfig::defaults(&paths);
            config.limits = limits.limits()?;
            if let Some(image) = image {
                config.image = image.parse()?;
            }
            print!("{}", damda::image::export::export(&config, &dir, &args)?);
            Ok(())
        }
    }
}
