//! `damda walk [--to STEP] [--hold]`: applies steps headless and prints one
//! JSON snapshot per line.

use crate::engine::{BoxSession, Engine, EngineError};
use damda_protocol::{StepFailure, StepId};
use serde::Serialize;
use std::io::{Read, Write};
use std::sync::mpsc;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("step {0} is not available in this build")]
    NotAvailable(StepId),
    #[error(transparent)]
    Engine(EngineError),
    #[error("a step failed")]
    StepFailed,
    #[error("writing to standard output: {0}")]
    Output(#[from] std::io::Error),
}

fn print_line(value: &impl Serialize) -> Result<(), WalkError> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value).map_err(std::io::Error::from)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// Prints a failure line for a refused step; other errors pass through.
fn report(err: EngineError) -> WalkError {
    match err {
        EngineError::StepFailed { step, error } => match print_line(&StepFailure { step, error }) {
            Ok(()) => WalkError::StepFailed,
            Err(err) => err,
        },
        other => WalkError::Engine(other),
    }
}

/// Blocks until standard input ends or SIGINT/SIGTERM arrives.
fn hold() {
    let (done, wait) = mpsc::channel::<()>();
    let on_eof = done.clone();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        let _ = on_eof.send(());
    });
    if let Ok(mut signals) = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ]) {
        std::thread::spawn(move || {
            if signals.forever().next().is_some() {
                let _ = done.send(());
            }
        });
    }
    let _ = wait.recv();
}

pub fn walk(engine: Arc<Engine>, to: Option<StepId>, hold_box: bool) -> Result<(), WalkError> {
    let path = match to {
        Some(step) if !crate::steps::is_available(step) => {
            return Err(WalkError::NotAvailable(step))
        }
        Some(step) => crate::steps::path_to(step),
        None => crate::steps::ORDER.iter().map(|s| s.id()).collect(),
    };
    let (mut session, first) = BoxSession::start(engine).map_err(report)?;
    print_line(&first)?;
    for step in path.into_iter().skip(1) {
        for snapshot in session.goto(step).map_err(report)? {
            print_line(&snapshot)?;
        }
    }
    if hold_box {
        hold();
    }
    Ok(())
}
