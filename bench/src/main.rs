//! `damda-bench [--runs N]`: times every step's apply on a live box and Back
//! (a replay) from the last step, over N fresh boxes, and the time from page
//! load to the first rendered snapshot in headless Chromium. Prints a table;
//! figures are this machine's, measured now. Also the safe layer unpacker's
//! throughput (`--unpack-only` measures just that), and a bounded transfer
//! from a box's eth0 to the bridge's gateway.

use anyhow::{bail, Context};
use damda::engine::{BoxSession, Engine, EngineConfig};
use damda::ledger::Ledger;
use damda::paths::Paths;
use damda_protocol::StepId;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod throughput;
mod unpack;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn row(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name:<28} {:>9} {:>9} {:>9}   (n={})",
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.95)),
        ms(*samples.last().unwrap_or(&Duration::ZERO)),
        samples.len()
    );
}

/// An engine whose boxes run from `bin`, with this run's ledger.
fn engine(bin: &str) -> anyhow::Result<Arc<Engine>> {
    let paths = Paths::from_env();
    let ledger = Arc::new(Ledger::create(&paths.ledger())?);
    let mut config = EngineConfig::defaults(&paths);
    config.helper_binary = bin.into();
    Ok(Arc::new(Engine::new(ledger, config)?))
}

fn steps(engine: &Arc<Engine>, runs: usize) -> anyhow::Result<()> {
    let order: Vec<StepId> = damda::steps::ORDER.iter().map(|s| s.id()).collect();
    let mut per_step: BTreeMap<StepId, Vec<Duration>> = BTreeMap::new();
    let (mut walks, mut backs, mut starts) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let started = Instant::now();
        let (mut session, _) = BoxSession::start(engine.clone())?;
        starts.push(started.elapsed());
        let walk = Instant::now();
        for step in order.iter().skip(1) {
            let t = Instant::now();
            session.goto(*step)?;
            per_step.entry(*step).or_default().push(t.elapsed());
        }
        walks.push(walk.elapsed() + starts[starts.len() - 1]);
        let t = Instant::now();
        session.back()?;
        backs.push(t.elapsed());
    }
    println!("== step apply on a live box, ms ({runs} boxes)");
    println!("{:<28} {:>9} {:>9} {:>9}", "", "p50", "p95", "max");
    row("start box at host", starts);
    for (step, samples) in per_step {
        let label = if step == StepId::User {
            "user (rebuilds user-first)".to_owned()
        } else {
            step.to_string()
        };
        row(&label, samples);
    }
    row("full walk host..last", walks);
    row("back from last (replay)", backs);
    Ok(())
}

/// Starts `damda serve` on a free port and returns it with its URL.
async fn serve(bin: &str) -> anyhow::Result<(tokio::process::Child, String)> {
    use tokio::io::AsyncBufReadExt;
    let mut server = tokio::process::Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {bin}"))?;
    let stdout = server.stdout.take().context("stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let url = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await??
        .context("no URL")?;
    Ok((server, url))
}

async fn first_snapshot(bin: &str, loads: usize) -> anyhow::Result<()> {
    let (mut server, url) = serve(bin).await?;
    let port = 9515 + (std::process::id() % 1000) as u16;
    let mut driver = tokio::process::Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting chromedriver")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,800", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run"]
        }),
    );
    let client = fantoccini::ClientBuilder::rustls()?
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .context("connecting to chromedriver")?;
    let mut samples = Vec::new();
    let outcome: anyhow::Result<()> = async {
        for _ in 0..loads {
            client.goto(&url).await?;
            // A fresh tab each time: no session to resume.
            client
                .execute("sessionStorage.clear(); return 0;", vec![])
                .await?;
            client.refresh().await?;
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let value = client
                    .execute("return window.__damdaFirstSnapshotMs || null;", vec![])
                    .await?;
                if let Some(ms) = value.as_f64() {
                    samples.push(Duration::from_secs_f64(ms / 1000.0));
                    break;
                }
                if Instant::now() > deadline {
                    bail!("the page rendered no snapshot within 20 s");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }
    .await;
    let _ = client.close().await;
    let _ = driver.kill().await;
    let _ = nix_term(&mut server).await;
    outcome?;
    println!("== page load to first rendered snapshot, headless Chromium, ms");
    row("first snapshot", samples);
    Ok(())
}

/// The CPU time a process has used so far (utime + stime, clock ticks).
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields = damda::observe::stat_fields_after_comm(&stat).context("stat")?;
    // utime and stime are fields 14 and 15 of the line.
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

/// Server CPU% with `boxes` pages at the cgroups step, sampled at 1 Hz,
/// against the same pages not watching.
async fn sampling_overhead(bin: &str, boxes: usize, seconds: u64) -> anyhow::Result<()> {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (mut server, url) = serve(bin).await?;
    let pid = server.id().context("server pid")?;
    let ws_url = url.replace("http://", "ws://") + "ws";
    let mut sockets = Vec::new();
    for _ in 0..boxes {
        let (mut socket, _) = tokio_tungstenite::connect_async(ws_url.as_str()).await?;
        socket
            .send(Message::text(r#"{"type":"goto","step":"cgroups"}"#))
            .await?;
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(30), socket.next())
                .await?
                .context("socket closed")??;
            let text = frame.into_text()?;
            if text.contains(r#""type":"snapshot""#) && text.contains(r#""step":"cgroups""#) {
                break;
            }
            if text.contains(r#""type":"error""#) {
                bail!("the server refused: {text}");
            }
        }
        sockets.push(socket);
    }
    let hz = 100.0; // USER_HZ
    let measure = |label: &'static str| -> anyhow::Result<()> {
        let before = cpu_ticks(pid)?;
        std::thread::sleep(Duration::from_secs(seconds));
        let used = (cpu_ticks(pid)? - before) as f64 / hz;
        println!(
            "{label:<36} {:>8.2} % of one core over {seconds} s",
            100.0 * used / seconds as f64
        );
        Ok(())
    };
    println!("== server CPU with {boxes} boxes at the cgroups step");
    // Sockets are not read while measuring: usage messages queue in the
    // kernel's buffers, which is cheap and does not change the server's work.
    let watched = measure("sampled at 1 Hz (pages watching)");
    for socket in &mut sockets {
        socket
            .send(Message::text(r#"{"type":"watch","on":false}"#))
            .await?;
    }
    let idle = measure("not sampled (pages hidden)");
    for mut socket in sockets {
        let _ = socket.close(None).await;
    }
    nix_term(&mut server).await?;
    watched?;
    idle
}

/// SIGTERM, so the server destroys its boxes, then wait.
async fn nix_term(server: &mut tokio::process::Child) -> anyhow::Result<()> {
    if let Some(pid) = server.id() {
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
    }
    tokio::time::timeout(Duration::from_secs(10), server.wait()).await??;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut runs = 50;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => runs = args.next().context("--runs N")?.parse()?,
            "--unpack-only" => return unpack::measure(&Paths::from_env().data),
            other => {
                bail!("unknown argument {other}; usage: damda-bench [--runs N] [--unpack-only]")
            }
        }
    }
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    let bin = std::env::var("DAMDA_BIN").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/damda").to_owned()
    });
    unpack::measure(&Paths::from_env().data)?;
    let engine = engine(&bin)?;
    let measured = steps(&engine, runs).and_then(|()| throughput::measure(&engine, 5));
    for error in engine.shutdown() {
        eprintln!("cleanup: {error}");
    }
    measured?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(sampling_overhead(&bin, 10, 10))?;
    runtime.block_on(first_snapshot(&bin, 10.min(runs)))
}
