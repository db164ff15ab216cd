//! A bounded TCP transfer from a box's eth0 to the bridge's gateway address
//! (the host side of the veth pair and the bridge): what the `network`
//! step's plumbing carries. The sender runs in the box's namespaces but not
//! in its cgroup, whose CPU quota (half a core by default) would measure the
//! limit rather than the path.

use anyhow::Context;
use damda::engine::{BoxCommand, BoxSession, Engine};
use damda_protocol::StepId;
use std::io::Read;
use std::net::{SocketAddrV4, TcpListener};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Instant;

/// 64 KiB blocks per transfer: 256 MiB.
const BLOCKS: u64 = 4096;
const BLOCK: u64 = 64 * 1024;

pub fn measure(engine: &Arc<Engine>, runs: usize) -> anyhow::Result<()> {
    let (mut session, _) = BoxSession::start(engine.clone())?;
    session.goto(StepId::Network)?;
    let gateway = engine.network_config().subnet.gateway();
    let mut rates = Vec::new();
    for _ in 0..runs {
        let listener = TcpListener::bind(SocketAddrV4::new(gateway, 0))?;
        let port = listener.local_addr()?.port();
        let script =
            format!("dd if=/dev/zero bs={BLOCK} count={BLOCKS} 2>/dev/null | nc {gateway} {port}");
        let mut sender = engine
            .box_command(session.pid(), &[], BoxCommand::Shell(&script))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the sender in the box")?;
        let (mut stream, _) = listener.accept()?;
        let started = Instant::now();
        let mut buffer = vec![0u8; 1 << 20];
        let mut received = 0u64;
        while received < BLOCKS * BLOCK {
            let n = stream.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            received += n as u64;
        }
        let seconds = started.elapsed().as_secs_f64();
        drop(stream);
        sender.wait()?;
        anyhow::ensure!(received == BLOCKS * BLOCK, "only {received} bytes arrived");
        rates.push(received as f64 / seconds / 1e6);
    }
    let rates = damda::compare::spread(rates);
    println!(
        "== box eth0 → gateway {gateway}, {} MiB over TCP, {runs} runs",
        (BLOCKS * BLOCK) >> 20
    );
    println!(
        "throughput MB/s: median {:.0}, min {:.0}, max {:.0}",
        rates.median, rates.min, rates.max
    );
    Ok(())
}
