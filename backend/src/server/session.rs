//! One websocket connection: it drives one box. The socket is split in two
//! tasks under `select!` — one writes what an mpsc channel carries, one reads
//! requests and runs them on blocking threads — and both are generic over
//! Sink/Stream so tests can drive them without a socket.

use super::registry::{Registry, RegistryError, SharedBox};
use crate::engine::{BoxCommand, EngineError};
use crate::terminal::{self, Running};
use axum::extract::ws::Message;
use damda_protocol::{
    ClientMessage, ErrorCode, ServerMessage, Snapshot, StepId, MAX_CLIENT_MESSAGE_BYTES,
    MAX_COMMAND_BYTES,
};
use futures::{Sink, SinkExt, Stream, StreamExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

fn error(code: ErrorCode, message: impl Into<String>) -> ServerMessage {
    ServerMessage::Error {
        code,
        message: message.into(),
        step: None,
        error: None,
    }
}

fn snapshot_message(snapshot: Snapshot) -> ServerMessage {
    ServerMessage::Snapshot(Box::new(snapshot))
}

fn engine_error(err: EngineError) -> ServerMessage {
    match err {
        EngineError::StepFailed { step, error } => ServerMessage::Error {
            code: ErrorCode::StepFailed,
            message: error.message.clone(),
            step: Some(step),
            error: Some(error),
        },
        EngineError::NotAvailable(step) => ServerMessage::Error {
            code: ErrorCode::UnknownStep,
            message: format!("step {step} is not available yet"),
            step: Some(step),
            error: None,
        },
        EngineError::NoSuchMove(why) => error(ErrorCode::NoSuchMove, why),
        EngineError::NotYet(why) => error(ErrorCode::NotYet, why),
        EngineError::BadImage { .. } => error(ErrorCode::BadMessage, err.to_string()),
        other => error(ErrorCode::BoxFailed, other.to_string()),
    }
}

/// A path on the server's host or in the box, as the page may send one.
fn absolute_path(path: &str) -> Result<(), ServerMessage> {
    if path.len() > MAX_COMMAND_BYTES || !path.starts_with('/') {
        return Err(error(
            ErrorCode::BadMessage,
            format!("a path must start with / and be at most {MAX_COMMAND_BYTES} bytes"),
        ));
    }
    Ok(())
}

fn registry_error(err: RegistryError) -> ServerMessage {
    let code = match err {
        RegistryError::Full(_) => ErrorCode::TooManyBoxes,
        RegistryError::Comparing => ErrorCode::CompareRunning,
        RegistryError::Engine(_) => ErrorCode::BoxFailed,
    };
    error(code, err.to_string())
}

/// Parses one text frame; the error is what the page is told.
pub fn parse_request(text: &str) -> Result<ClientMessage, ServerMessage> {
    if text.len() > MAX_CLIENT_MESSAGE_BYTES {
        return Err(error(
            ErrorCode::TooLarge,
            format!(
                "message of {} bytes refused; the limit is {MAX_CLIENT_MESSAGE_BYTES}",
                text.len()
            ),
        ));
    }
    serde_json::from_str(text).map_err(|err| {
        // A goto naming an unknown step deserves its own code and the list.
        let value: Option<serde_json::Value> = serde_json::from_str(text).ok();
        let step = value
            .as_ref()
            .filter(|v| v["type"] == "goto")
            .and_then(|v| v["step"].as_str());
        match step.map(str::parse::<StepId>) {
            Some(Err(unknown)) => error(ErrorCode::UnknownStep, unknown.to_string()),
            _ => error(ErrorCode::BadMessage, format!("malformed message: {err}")),
        }
    })
}

/// What the page asked to run in the box.
enum Command {
    Shell(String),
    Escape,
    Demo(damda_protocol::Demo),
}

/// What the writing task sends: protocol messages, or the closing frame.
enum Outgoing {
    Message(ServerMessage),
    Close { code: u16, reason: String },
}

impl From<ServerMessage> for Outgoing {
    fn from(message: ServerMessage) -> Self {
        Outgoing::Message(message)
    }
}

/// The connection's state: which box it drives, and its terminal.
struct Connection {
    registry: Arc<Registry>,
    id: String,
    session: SharedBox,
    outbox: mpsc::Sender<Outgoing>,
    terminal_allowed: bool,
    running: Option<Running>,
    /// Whether the page shows live usage; sampling stops when it does not.
    watching: Arc<AtomicBool>,
    /// The box the sampler reads, weakly: a box let go (a resume replaced
    /// it) must be destroyed, not kept alive by its sampler.
    sampled: SampledBox,
}

type SampledBox =
    Arc<std::sync::Mutex<std::sync::Weak<std::sync::Mutex<crate::engine::BoxSession>>>>;

/// Runs `work` on the box off the async threads.
async fn with_box<T: Send + 'static>(
    session: &SharedBox,
    work: impl FnOnce(&mut crate::engine::BoxSession) -> T + Send + 'static,
) -> T {
    let session = session.clone();
    tokio::task::spawn_blocking(move || {
        let mut guard = session.lock().unwrap_or_else(|e| e.into_inner());
        work(&mut guard)
    })
    .await
    .expect("box work does not panic")
}

/// Drops boxes on a blocking thread: killing and reaping a helper blocks.
pub async fn destroy(boxes: Vec<SharedBox>) {
    if !boxes.is_empty() {
        let _ = tokio::task::spawn_blocking(move || drop(boxes)).await;
    }
}

impl Connection {
    async fn send(&self, message: ServerMessage) {
        let _ = self.outbox.send(Outgoing::Message(message)).await;
    }

    /// Tells the page the work takes a while, then does it on the box.
    async fn busy<T: Send + 'static>(
        &self,
        message: &str,
        work: impl FnOnce(&mut crate::engine::BoxSession) -> T + Send + 'static,
    ) -> T {
        self.send(ServerMessage::Busy {
            message: message.into(),
        })
        .await;
        with_box(&self.session, work).await
    }

    async fn send_outcome(&self, outcome: Result<Vec<Snapshot>, EngineError>) {
        match outcome {
            Ok(snapshots) => {
                if let Some(last) = snapshots.into_iter().last() {
                    self.send(snapshot_message(last)).await;
                }
            }
            Err(err) => {
                let helper_lost = matches!(err, EngineError::Helper(_));
                self.send(engine_error(err)).await;
                if helper_lost {
                    // The box died under us: give the learner a fresh one.
                    let reset = with_box(&self.session, |b| b.reset()).await;
                    Box::pin(self.send_outcome(reset)).await;
                } else if let Ok(snapshot) = with_box(&self.session, |b| b.snapshot()).await {
                    // The box was kept (or rebuilt) at its step: show it.
                    self.send(snapshot_message(snapshot)).await;
                }
            }
        }
    }

    async fn handle(&mut self, request: ClientMessage) {
        match request {
            ClientMessage::Next => {
                let outcome = with_box(&self.session, |b| b.step_forward()).await;
                self.send_outcome(outcome).await;
            }
            ClientMessage::Back => {
                let outcome = self
                    .busy("rebuilding the box and replaying the steps before", |b| {
                        b.back()
                    })
                    .await;
                self.send_outcome(outcome).await;
            }
            ClientMessage::Reset => {
                let outcome = self.busy("starting a fresh box", |b| b.reset()).await;
                self.send_outcome(outcome).await;
            }
            ClientMessage::Goto { step } => {
                let outcome = with_box(&self.session, move |b| b.goto(step)).await;
                self.send_outcome(outcome).await;
            }
            ClientMessage::Resume { session } => self.resume(session).await,
            ClientMessage::Exec { command } => self.exec(Command::Shell(command)).await,
            ClientMessage::Escape => self.exec(Command::Escape).await,
            ClientMessage::Demo { demo } => self.exec(Command::Demo(demo)).await,
            ClientMessage::Limits { limits } => {
                let outcome = with_box(&self.session, move |b| b.set_limits(limits)).await;
                match outcome {
                    Err(EngineError::BadLimits(err)) => {
                        self.send(error(ErrorCode::BadLimits, err.to_string()))
                            .await
                    }
                    // Kept for the cgroups step: the page gets the box as it is.
                    Ok(snapshots) if snapshots.is_empty() => self.send_current().await,
                    other => self.send_outcome(other).await,
                }
            }
            ClientMessage::Watch { on } => self.watching.store(on, Ordering::Relaxed),
            ClientMessage::Which { path } => self.which(path).await,
            ClientMessage::Commit { name } => {
                match self
                    .busy(
                        "saving the box's upper directory as a new layer",
                        move |b| b.commit(&name),
                    )
                    .await
                {
                    Ok((name, id, layers)) => {
                        self.send(ServerMessage::Committed { name, id, layers })
                            .await;
                        // The store lists the new image now.
                        self.send_current().await;
                    }
                    Err(err) => self.send(engine_error(err)).await,
                }
            }
            ClientMessage::Import { path } => self.import(path).await,
            ClientMessage::Compare { runs } => self.compare(runs).await,
            ClientMessage::Image { name } => {
                match self
                    .busy("building the box from the image", move |b| {
                        b.use_image(&name)
                    })
                    .await
                {
                    Ok(snapshots) if snapshots.is_empty() => self.send_current().await,
                    other => self.send_outcome(other).await,
                }
            }
            ClientMessage::Interrupt => match &self.running {
                Some(running) if !running.is_finished() => running.interrupt(),
                _ => {
                    self.send(error(ErrorCode::NoCommand, "no command is running"))
                        .await
                }
            },
        }
    }

    /// Runs a shell command, the chroot escape or a cgroup demonstration in
    /// the box, streaming its output.
    async fn exec(&mut self, command: Command) {
        if !self.terminal_allowed {
            return self
                .send(error(
                    ErrorCode::NotAllowed,
                    "the terminal is served to loopback only; this is a classroom server",
                ))
                .await;
        }
        if let Command::Shell(line) = &command {
            if line.len() > MAX_COMMAND_BYTES || line.trim().is_empty() {
                return self
                    .send(error(
                        ErrorCode::BadMessage,
                        format!("a command must be 1 to {MAX_COMMAND_BYTES} bytes"),
                    ))
                    .await;
            }
        }
        if self.running.as_ref().is_some_and(|r| !r.is_finished()) {
            return self
                .send(error(
                    ErrorCode::CommandRunning,
                    "a command is still running: wait for it or press Ctrl-C",
                ))
                .await;
        }
        let (pid, cgroup_procs) = with_box(&self.session, |b| (b.pid(), b.cgroup_procs())).await;
        if matches!(command, Command::Demo(_)) && cgroup_procs.is_empty() {
            return self
                .send(error(
                    ErrorCode::NotYet,
                    "the demonstrations need the box's own cgroup: go to the cgroups step first",
                ))
                .await;
        }
        if matches!(command, Command::Demo(damda_protocol::Demo::MemoryHog)) {
            if let Err(why) = with_box(&self.session, |b| b.memory_demo_room()).await {
                return self.send(error(ErrorCode::BadLimits, why)).await;
            }
        }
        let what = match &command {
            Command::Shell(line) => BoxCommand::Shell(line),
            Command::Escape => BoxCommand::Escape,
            Command::Demo(demo) => BoxCommand::Demo(*demo),
        };
        let prepared = self.registry.engine().box_command(pid, &cgroup_procs, what);
        match terminal::start(prepared, self.outbox.clone()) {
            Ok(running) => self.running = Some(running),
            Err(err) => {
                self.send(error(
                    ErrorCode::BoxFailed,
                    format!("starting the command: {err}"),
                ))
                .await;
                // The terminal waits for an end: this command has none to wait for.
                self.send(ServerMessage::Exited {
                    code: None,
                    signal: None,
                })
                .await
            }
        }
    }

    async fn resume(&mut self, id: String) {
        if id == self.id {
            return self.send_current().await;
        }
        let Some(old) = self.registry.resume(&id) else {
            return self
                .send(error(
                    ErrorCode::NoSuchSession,
                    "that box is gone (it expired or the server restarted); this is a fresh one",
                ))
                .await;
        };
        let fresh = self.registry.remove(&self.id);
        destroy(fresh.into_iter().collect()).await;
        self.id = id.clone();
        *self.sampled.lock().unwrap_or_else(|e| e.into_inner()) = Arc::downgrade(&old);
        self.session = old;
        self.send(ServerMessage::Session { id }).await;
        self.send_current().await;
    }

    /// Imports an image from a path on the server's host, with progress.
    async fn import(&self, path: String) {
        if !self.terminal_allowed {
            return self
                .send(error(
                    ErrorCode::NotAllowed,
                    "importing reads the server's files: loopback pages only",
                ))
                .await;
        }
        if let Err(refusal) = absolute_path(&path) {
            return self.send(refusal).await;
        }
        let engine = self.registry.engine().clone();
        let outbox = self.outbox.clone();
        let imported = tokio::task::spawn_blocking(move || {
            let mut last = None;
            engine.import(std::path::Path::new(&path), &mut |p| {
                // At most one message per percent and stage.
                let now = Some((p.stage, p.percent()));
                if now != last {
                    last = now;
                    let _ = outbox.blocking_send(Outgoing::Message(ServerMessage::Progress(p)));
                }
            })
        })
        .await
        .expect("import does not panic");
        match imported {
            Ok(names) => {
                self.send(ServerMessage::Imported { names }).await;
                self.send_current().await;
            }
            Err(err) => self.send(engine_error(err)).await,
        }
    }

    /// Starts a VM-vs-container comparison in the background: its progress
    /// and result come as messages while the page goes on using its box.
    async fn compare(&self, runs: u32) {
        // Checked before the one comparison slot is taken.
        if let Err(err) = crate::compare::check_runs(runs) {
            return self
                .send(error(ErrorCode::BadMessage, err.to_string()))
                .await;
        }
        let slot = match self.registry.begin_comparison() {
            Ok(slot) => slot,
            Err(err) => return self.send(registry_error(err)).await,
        };
        let engine = self.registry.engine().clone();
        let outbox = self.outbox.clone();
        tokio::spawn(async move {
            let progress = outbox.clone();
            let outcome = tokio::task::spawn_blocking(move || {
                let _slot = slot;
                crate::compare::compare(&engine, runs, &mut |stage, run, runs| {
                    let message = ServerMessage::Comparing { stage, run, runs };
                    let _ = progress.blocking_send(Outgoing::Message(message));
                })
            })
            .await
            .expect("a comparison does not panic");
            let message = match outcome {
                Ok(comparison) => ServerMessage::Compared(Box::new(comparison)),
                Err(err) => error(ErrorCode::CompareFailed, err.to_string()),
            };
            let _ = outbox.send(Outgoing::Message(message)).await;
        });
    }

    /// Which layer provides a path of the box's root.
    async fn which(&self, path: String) {
        if let Err(refusal) = absolute_path(&path) {
            return self.send(refusal).await;
        }
        let lookup = path.clone();
        match with_box(&self.session, move |b| b.which(&lookup)).await {
            Some(provenance) => self.send(ServerMessage::Which { path, provenance }).await,
            None => {
                self.send(error(
                    ErrorCode::NotYet,
                    "the box's root is made of image layers from the overlay step on",
                ))
                .await
            }
        }
    }

    /// The box observed again, as it stands.
    async fn send_current(&self) {
        let outcome = with_box(&self.session, |b| b.snapshot().map(|s| vec![s])).await;
        self.send_outcome(outcome).await
    }
}

/// Serves one connection until the page goes away.
pub async fn serve_connection<W, R, E>(
    registry: Arc<Registry>,
    terminal_allowed: bool,
    mut writer: W,
    mut reader: R,
) where
    W: Sink<Message> + Unpin + Send + 'static,
    R: Stream<Item = Result<Message, E>> + Unpin + Send,
    E: std::fmt::Display,
{
    let created = {
        let registry = registry.clone();
        tokio::task::spawn_blocking(move || registry.create())
            .await
            .expect("box start does not panic")
    };
    let (id, session, snapshot) = match created {
        Ok(created) => created,
        Err(err) => {
            let text = serde_json::to_string(&registry_error(err)).expect("serialises");
            let _ = writer.send(Message::Text(text.into())).await;
            let _ = writer.close().await;
            return;
        }
    };

    let (outbox, mut outgoing) = mpsc::channel::<Outgoing>(32);
    let mut write_task = tokio::spawn(async move {
        while let Some(item) = outgoing.recv().await {
            let frame = match item {
                Outgoing::Message(message) => {
                    let text = serde_json::to_string(&message).expect("server messages serialise");
                    Message::Text(text.into())
                }
                Outgoing::Close { code, reason } => {
                    let close = axum::extract::ws::CloseFrame {
                        code,
                        reason: reason.into(),
                    };
                    let _ = writer.send(Message::Close(Some(close))).await;
                    break;
                }
            };
            if writer.send(frame).await.is_err() {
                break;
            }
        }
    });

    let sampled: SampledBox = Arc::new(std::sync::Mutex::new(Arc::downgrade(&session)));
    let mut connection = Connection {
        registry: registry.clone(),
        id: id.clone(),
        session,
        outbox,
        terminal_allowed,
        running: None,
        watching: Arc::new(AtomicBool::new(true)),
        sampled,
    };
    let sampler = tokio::spawn(sample_usage(
        connection.sampled.clone(),
        connection.watching.clone(),
        connection.outbox.clone(),
    ));
    connection.send(ServerMessage::Session { id }).await;
    connection.send(snapshot_message(snapshot)).await;

    // Ends with the reason to close, if the page broke the protocol.
    let read_loop = async {
        while let Some(frame) = reader.next().await {
            let frame = match frame {
                Ok(frame) => frame,
                Err(err) => return Some(close_for(&err.to_string())),
            };
            match frame {
                Message::Text(text) => match parse_request(text.as_str()) {
                    Ok(request) => connection.handle(request).await,
                    Err(refusal) => connection.send(refusal).await,
                },
                Message::Binary(_) => {
                    connection
                        .send(error(
                            ErrorCode::BadMessage,
                            "binary frames are not part of the protocol; send JSON text",
                        ))
                        .await
                }
                Message::Close(_) => return None,
                Message::Ping(_) | Message::Pong(_) => {}
            }
        }
        None
    };
    let broken = tokio::select! {
        broken = read_loop => broken,
        _ = &mut write_task => None,
    };
    if let Some(close) = broken {
        // Say why, then drain what the page still sends: dropping a socket
        // with unread data resets it, and the reset can swallow the close.
        let _ = connection.outbox.send(close).await;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), &mut write_task).await;
        let drain = async { while let Some(Ok(_)) = reader.next().await {} };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), drain).await;
    }
    write_task.abort();
    sampler.abort();
    drop(connection.running.take());
    registry.detach(&connection.id);
}

/// How often live usage is sent while a page watches.
const SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Sends the box's cgroup usage and network counters about once a second
/// while the page watches and the box has a cgroup or a network; reads
/// nothing otherwise.
async fn sample_usage(
    sampled: SampledBox,
    watching: Arc<AtomicBool>,
    outbox: mpsc::Sender<Outgoing>,
) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    let mut last_upper = None;
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        if !watching.load(Ordering::Relaxed) {
            continue;
        }
        let Some(session) = sampled.lock().unwrap_or_else(|e| e.into_inner()).upgrade() else {
            continue;
        };
        // A box busy with a step is not waited for: the next tick will do.
        let (usage, traffic, upper) = match session.try_lock() {
            Ok(guard) => (guard.usage(), guard.network_traffic(), guard.changes()),
            Err(_) => continue,
        };
        // The upper directory only when it changed: a copy-up or a whiteout.
        let changed = upper.filter(|upper| last_upper.as_ref() != Some(upper));
        if let Some(upper) = &changed {
            last_upper = Some(upper.clone());
        }
        let messages = usage
            .map(|u| ServerMessage::Usage(Box::new(u)))
            .into_iter()
            .chain(traffic.map(|t| ServerMessage::Network(Box::new(t))))
            .chain(changed.map(|upper| ServerMessage::Changes { upper }));
        for message in messages {
            if outbox.send(Outgoing::Message(message)).await.is_err() {
                return;
            }
        }
    }
}

/// The close frame for a read error: 1009 for a message over the limit,
/// 1002 (protocol error) otherwise.
fn close_for(reason: &str) -> Outgoing {
    let too_big = reason.contains("too long") || reason.contains("too big");
    Outgoing::Close {
        code: if too_big { 1009 } else { 1002 },
        reason: reason.chars().take(120).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(message: ServerMessage) -> ErrorCode {
        match message {
            ServerMessage::Error { code, .. } => code,
            other => panic!("not an error: {other:?}"),
        }
    }

    #[test]
    fn well_formed_requests_parse() {
        assert_eq!(
            parse_request(r#"{"type":"next"}"#).unwrap(),
            ClientMessage::Next
        );
        assert_eq!(
            parse_request(r#"{"type":"goto","step":"uts"}"#).unwrap(),
            ClientMessage::Goto { step: StepId::Uts }
        );
    }

    #[test]
    fn bad_requests_get_their_own_codes() {
        assert_eq!(
            code_of(parse_request("{not json").unwrap_err()),
            ErrorCode::BadMessage
        );
        assert_eq!(
            code_of(parse_request(r#"{"type":"fly"}"#).unwrap_err()),
            ErrorCode::BadMessage
        );
        assert_eq!(
            code_of(parse_request(r#"{"type":"goto","step":"vm"}"#).unwrap_err()),
            ErrorCode::UnknownStep
        );
        let huge = format!(
            r#"{{"type":"next","pad":"{}"}}"#,
            "x".repeat(MAX_CLIENT_MESSAGE_BYTES)
        );
        assert_eq!(
            code_of(parse_request(&huge).unwrap_err()),
            ErrorCode::TooLarge
        );
    }
}
