//! The boxes a server runs, by session id. A box whose socket closed is kept
//! for a grace period so a reload of the same tab can resume it; after that
//! it is destroyed. The number of boxes is capped.

use crate::engine::{BoxSession, Engine, EngineError};
use damda_protocol::Snapshot;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub type SharedBox = Arc<Mutex<BoxSession>>;

struct Slot {
    session: SharedBox,
    detached_since: Option<Instant>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("this server already runs {0} boxes, its limit; close another tab or wait for an idle box to expire")]
    Full(usize),
    #[error("a comparison is already running on this server; try again when it ends")]
    Comparing,
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// A running comparison's claim: the one comparison this server runs, and
/// one box under the limit while it lasts (it builds one box at a time).
pub struct ComparisonSlot {
    registry: Arc<Registry>,
    _running: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for ComparisonSlot {
    fn drop(&mut self) {
        *self.registry.starting() -= 1;
    }
}

pub struct Registry {
    engine: Arc<Engine>,
    max_boxes: usize,
    grace: Duration,
    slots: Mutex<HashMap<String, Slot>>,
    /// Boxes being started, counted against the limit.
    starting: Mutex<usize>,
    /// Held while a VM-vs-container comparison runs: one at a time, as a
    /// VM takes hundreds of MB and a core.
    comparing: Arc<tokio::sync::Mutex<()>>,
}

fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the kernel's random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Registry {
    pub fn new(engine: Arc<Engine>, max_boxes: usize, grace: Duration) -> Self {
        Registry {
            engine,
            max_boxes,
            grace,
            slots: Mutex::new(HashMap::new()),
            starting: Mutex::new(0),
            comparing: Arc::default(),
        }
    }

    fn starting(&self) -> std::sync::MutexGuard<'_, usize> {
        self.starting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims one box under the limit while it is being started.
    fn reserve(&self) -> Result<(), RegistryError> {
        let mut starting = self.starting();
        if self.len() + *starting >= self.max_boxes {
            return Err(RegistryError::Full(self.max_boxes));
        }
        *starting += 1;
        Ok(())
    }

    /// The right to run a comparison: none runs now, and its box fits.
    pub fn begin_comparison(self: &Arc<Self>) -> Result<ComparisonSlot, RegistryError> {
        let running = self
            .comparing
            .clone()
            .try_lock_owned()
            .map_err(|_| RegistryError::Comparing)?;
        self.reserve()?;
        Ok(ComparisonSlot {
            registry: self.clone(),
            _running: running,
        })
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn len(&self) -> usize {
        self.slots().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts a fresh box at `host`. Blocking: call from a blocking thread.
    pub fn create(&self) -> Result<(String, SharedBox, Snapshot), RegistryError> {
        self.reserve()?;
        let started = BoxSession::start(self.engine.clone());
        *self.starting() -= 1;
        let (session, snapshot) = started?;
        let id = new_session_id();
        let shared = Arc::new(Mutex::new(session));
        self.slots().insert(
            id.clone(),
            Slot {
                session: shared.clone(),
                detached_since: None,
            },
        );
        Ok((id, shared, snapshot))
    }

    /// The socket of `id` closed: keep its box for the grace period.
    pub fn detach(&self, id: &str) {
        if let Some(slot) = self.slots().get_mut(id) {
            slot.detached_since = Some(Instant::now());
        }
    }

    /// Takes over a detached box (a reloaded tab). A box still attached to a
    /// live socket is not handed out.
    pub fn resume(&self, id: &str) -> Option<SharedBox> {
        let mut slots = self.slots();
        let slot = slots.get_mut(id)?;
        slot.detached_since.take()?;
        Some(slot.session.clone())
    }

    /// Destroys the box of `id`; returns it so the caller can drop it off the
    /// async threads.
    pub fn remove(&self, id: &str) -> Option<SharedBox> {
        self.slots().remove(id).map(|slot| slot.session)
    }

    /// Removes boxes detached for longer than the grace period.
    pub fn expired(&self) -> Vec<SharedBox> {
        let grace = self.grace;
        let mut slots = self.slots();
        let ids: Vec<String> = slots
            .iter()
            .filter(|(_, slot)| slot.detached_since.is_some_and(|t| t.elapsed() >= grace))
            .map(|(id, _)| id.clone())
            .collect();
        ids.iter()
            .filter_map(|id| slots.remove(id).map(|slot| slot.session))
            .collect()
    }

    /// Removes every box (shutdown).
    pub fn drain(&self) -> Vec<SharedBox> {
        self.slots().drain().map(|(_, slot)| slot.session).collect()
    }
}
