//! A box and its steps: forward applies the next step to the live helper,
//! backward destroys the box and replays the steps before on a fresh one.
//! After every step the box is observed from the host and a snapshot made.
//!
//! The engine is synchronous; the server runs it on blocking threads.

use crate::helper::parent::{HelperError, HelperExe, HelperProcess};
use crate::helper::{InsideFacts, Reply, Request};
use crate::ledger::{process_start_time, Entry, Ledger, LedgerError};
use crate::observe::{self, ObserveError, Target};
use crate::steps::{self, BoxSpec};
use damda_protocol::{Command, Snapshot, StepError, StepId, Syscall};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Helper(#[from] HelperError),
    #[error(transparent)]
    Observe(#[from] ObserveError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("step {step}: {}", error.message)]
    StepFailed { step: StepId, error: StepError },
    #[error("step {0} is not available in this build")]
    NotAvailable(StepId),
    #[error("{0}")]
    NoSuchMove(&'static str),
    #[error("the box helper refused: {0}")]
    Refused(String),
}

/// What every box of one server or walk shares.
pub struct Engine {
    exe: HelperExe,
    ledger: Arc<Ledger>,
    spec: BoxSpec,
}

impl Engine {
    pub fn new(ledger: Arc<Ledger>, spec: BoxSpec) -> Result<Self, EngineError> {
        Ok(Engine {
            exe: HelperExe::seal_current()?,
            ledger,
            spec,
        })
    }

    pub fn spec(&self) -> &BoxSpec {
        &self.spec
    }
}

/// A helper process recorded in the ledger for as long as it lives.
struct LiveBox {
    helper: HelperProcess,
    entry: Entry,
    ledger: Arc<Ledger>,
}

impl LiveBox {
    fn start(engine: &Engine) -> Result<Self, EngineError> {
        let helper = HelperProcess::spawn(&engine.exe)?;
        let pid = helper.pid();
        let entry = Entry::Process {
            pid,
            start_time: process_start_time(pid).unwrap_or(0),
        };
        engine.ledger.record(entry.clone())?;
        Ok(LiveBox {
            helper,
            entry,
            ledger: engine.ledger.clone(),
        })
    }
}

impl Drop for LiveBox {
    fn drop(&mut self) {
        // The helper is killed by its own Drop, which runs after this.
        if let Err(err) = self.ledger.forget(&self.entry) {
            tracing::warn!("{err}");
        }
    }
}

/// One learner's box.
pub struct BoxSession {
    engine: Arc<Engine>,
    live: LiveBox,
    applied: Vec<StepId>,
}

impl BoxSession {
    /// A fresh box at `host`.
    pub fn start(engine: Arc<Engine>) -> Result<(Self, Snapshot), EngineError> {
        let live = LiveBox::start(&engine)?;
        let mut session = BoxSession {
            engine,
            live,
            applied: Vec::new(),
        };
        let snapshot = session.apply(StepId::Host, false)?;
        Ok((session, snapshot))
    }

    pub fn current(&self) -> StepId {
        *self.applied.last().unwrap_or(&StepId::Host)
    }

    pub fn pid(&self) -> u32 {
        self.live.helper.pid()
    }

    fn apply(&mut self, step: StepId, rebuilt: bool) -> Result<Snapshot, EngineError> {
        let reply = self.live.helper.request(&Request::Apply {
            step,
            rootfs: self.engine.spec.rootfs.clone(),
            hostname: self.engine.spec.hostname.clone(),
        })?;
        match reply {
            Reply::Applied { syscalls, inside } => {
                self.applied.push(step);
                self.observe(step, syscalls, inside, rebuilt)
            }
            Reply::Failed { error, .. } => Err(EngineError::StepFailed { step, error }),
            Reply::Refused { message } => Err(EngineError::Refused(message)),
            Reply::Inspected { .. } => Err(EngineError::Refused("unexpected reply".into())),
        }
    }

    fn observe(
        &self,
        step: StepId,
        syscalls: Vec<String>,
        inside: InsideFacts,
        rebuilt: bool,
    ) -> Result<Snapshot, EngineError> {
        let pid = self.pid();
        let mut box_process = observe::read_process(Target::Pid(pid))?;
        box_process.hostname = inside.hostname;
        let mut host_process = observe::read_process(Target::Myself)?;
        host_process.hostname = observe::own_hostname();
        let commands = steps::find(step)
            .map(|s| s.commands(&self.engine.spec, pid))
            .unwrap_or_default();
        Ok(Snapshot {
            step,
            pid,
            namespaces: observe::read_namespaces(pid)?,
            rebuilt,
            box_process,
            host_process,
            commands: commands.into_iter().map(|shell| Command { shell }).collect(),
            syscalls: syscalls.into_iter().map(|call| Syscall { call }).collect(),
        })
    }

    /// Observes the box again at its current step (for a resumed page).
    pub fn snapshot(&mut self) -> Result<Snapshot, EngineError> {
        let inside = match self.live.helper.request(&Request::Inspect)? {
            Reply::Inspected { inside } => inside,
            _ => return Err(EngineError::Refused("unexpected reply".into())),
        };
        self.observe(self.current(), Vec::new(), inside, false)
    }

    /// Applies the next available step to the live box.
    pub fn next(&mut self) -> Result<Snapshot, EngineError> {
        let step = steps::next_after(self.current())
            .ok_or(EngineError::NoSuchMove("already at the last available step"))?;
        self.forward(step)
    }

    /// Applies `step` to the live box; if the kernel refuses, the box is
    /// rebuilt at the step before so it stays usable, and the error returned.
    fn forward(&mut self, step: StepId) -> Result<Snapshot, EngineError> {
        match self.apply(step, false) {
            Err(EngineError::StepFailed { step, error }) => {
                let keep = self.applied.clone();
                self.rebuild(&keep)?;
                Err(EngineError::StepFailed { step, error })
            }
            other => other,
        }
    }

    /// Destroys the box and replays `path` on a fresh one; returns the
    /// replayed snapshots, each marked rebuilt.
    fn rebuild(&mut self, path: &[StepId]) -> Result<Vec<Snapshot>, EngineError> {
        self.live = LiveBox::start(&self.engine)?;
        self.applied.clear();
        path.iter().map(|step| self.apply(*step, true)).collect()
    }

    /// One step back: replay up to the step before the current one.
    pub fn back(&mut self) -> Result<Vec<Snapshot>, EngineError> {
        if self.applied.len() <= 1 {
            return Err(EngineError::NoSuchMove("already at the first step"));
        }
        let path = self.applied[..self.applied.len() - 1].to_vec();
        self.rebuild(&path)
    }

    /// A fresh box at `host`.
    pub fn reset(&mut self) -> Result<Vec<Snapshot>, EngineError> {
        self.rebuild(&[StepId::Host])
    }

    /// Forward by applying, backward by replaying.
    pub fn goto(&mut self, target: StepId) -> Result<Vec<Snapshot>, EngineError> {
        if !steps::is_available(target) {
            return Err(EngineError::NotAvailable(target));
        }
        let current = self.current();
        if target == current {
            return Ok(vec![self.snapshot()?]);
        }
        if target < current {
            return self.rebuild(&steps::path_to(target));
        }
        let mut snapshots = Vec::new();
        for step in steps::path_to(target)
            .into_iter()
            .filter(|step| *step > current)
        {
            snapshots.push(self.forward(step)?);
        }
        Ok(snapshots)
    }
}
