//! The container side: a fresh box built at the last step in one go (on the
//! image, with its server running, on the bridge with a forwarded port),
//! the workload run in it, then a request, its memory, and its removal.

use super::{requests, workload, CompareError, Sample};
use crate::cgroups::Limits;
use crate::engine::{BoxCommand, BoxSession, Engine};
use crate::lines::{Lines, Missed};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the workload may take in the box.
const WORKLOAD_TIMEOUT: Duration = Duration::from_secs(120);

pub(super) fn run(engine: &Arc<Engine>, limits: &Limits) -> Result<Sample, CompareError> {
    let started = Instant::now();
    let session = BoxSession::launch(engine.clone(), limits.clone()).map_err(Box::new)?;
    let mut child = engine
        .box_command(
            session.pid(),
            &session.cgroup_procs(),
            BoxCommand::Shell(workload::SCRIPT),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| CompareError::Workload {
            side: "container",
            reason: format!("starting the workload in the box: {e}"),
        })?;
    let output = Lines::spawn(child.stdout.take().expect("piped"));
    let deadline = started + WORKLOAD_TIMEOUT;
    let mut lines = Vec::new();
    let ended = loop {
        match output.next_before(deadline) {
            Ok(line) => lines.push((started.elapsed(), line)),
            Err(missed) => break missed == Missed::Exited,
        }
    };
    if !ended {
        let _ = child.kill();
    }
    let status = child.wait();
    let exit = started.elapsed();
    let failed = |reason: String| CompareError::Workload {
        side: "container",
        reason,
    };
    if !ended {
        return Err(failed(format!(
            "the workload ran past {WORKLOAD_TIMEOUT:?}"
        )));
    }
    match status {
        Ok(status) if status.success() => {}
        other => return Err(failed(format!("the workload ended with {other:?}"))),
    }
    let timings = workload::timings(&lines).map_err(failed)?;
    let address = session
        .forwarded_address()
        .ok_or_else(|| failed("the box has no forwarded port".into()))?;
    let request = requests(address).map_err(|reason| CompareError::Request {
        side: "container",
        reason,
    })?;
    let memory = session
        .usage()
        .and_then(|usage| usage.memory_current)
        .ok_or_else(|| failed("the box's cgroup has no memory figure".into()))?;
    let stopping = Instant::now();
    drop(session);
    Ok(Sample::new(
        timings,
        exit,
        request,
        memory,
        stopping.elapsed(),
        String::new(),
    ))
}
