//! The page's state and the actions that change it. Everything shown about
//! the box comes from the last snapshot the server sent; the page only
//! remembers the one before it, to mark what just changed.

use std::rc::Rc;

use std::collections::{HashMap, VecDeque};

use damda_protocol::{
    CgroupLimits, CgroupStats, CompareStage, Comparison, Counters, Demo, ErrorCode, ImportProgress,
    LayerView, NetworkView, OutputStream, Provenance, Snapshot, StepError, StepId, StepInfo,
    UpperEntry, UpperKind,
};
use yew::prelude::*;

use crate::i18n::Lang;

/// The websocket as the page last saw it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Connection {
    Connecting,
    Open,
    /// Closed; a new attempt starts in `retry_in_ms`.
    Closed {
        retry_in_ms: u32,
    },
}

/// What the lesson pane shows: the introduction, or the lesson of the box's
/// current step.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LessonView {
    Intro,
    Step,
}

/// What the main area shows: the box built step by step, or the same
/// workload in a box and in a VM side by side.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MainView {
    Steps,
    Compare,
}

/// An error message from the server, kept until dismissed or replaced.
#[derive(Clone, PartialEq, Debug)]
pub struct ServerError {
    pub code: ErrorCode,
    pub message: String,
    pub step: Option<StepId>,
    pub error: Option<StepError>,
}

/// One piece of the terminal's scrollback.
#[derive(Clone, PartialEq, Debug)]
pub enum TermChunk {
    /// A command the page sent.
    Command(String),
    /// The page asked for the chroot escape demonstration.
    Escape,
    /// The page asked for a cgroup demonstration.
    Demo(Demo),
    Output(OutputStream, String),
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// The server refused a terminal request.
    Refused(ErrorCode, String),
}

/// The terminal: its scrollback and whether a command runs.
#[derive(Clone, PartialEq, Debug, Default)]
pub struct Terminal {
    pub chunks: Vec<TermChunk>,
    /// Characters held in `chunks` (bounded by [`TERM_KEEP_CHARS`]).
    pub chars: usize,
    pub running: bool,
    /// False once the server said the terminal is not served here.
    pub refused: bool,
}

/// How the last chroot escape the terminal shows ended, by its own words.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EscapeOutcome {
    Escaped,
    Contained,
}

/// How much scrollback the terminal keeps.
pub const TERM_KEEP_CHARS: usize = 200_000;

impl Terminal {
    fn push(&mut self, chunk: TermChunk) {
        let size = match &chunk {
            TermChunk::Command(text) | TermChunk::Output(_, text) | TermChunk::Refused(_, text) => {
                text.len()
            }
            TermChunk::Exited { .. } | TermChunk::Escape | TermChunk::Demo(_) => 0,
        };
        // Output arrives in pieces: join a piece to the one before it.
        if let (Some(TermChunk::Output(last_stream, last)), TermChunk::Output(stream, text)) =
            (self.chunks.last_mut(), &chunk)
        {
            if last_stream == stream {
                last.push_str(text);
                self.chars += size;
                self.trim();
                return;
            }
        }
        self.chunks.push(chunk);
        self.chars += size;
        self.trim();
    }

    /// What the last escape printed as its verdict, once it has ended.
    pub fn escape_outcome(&self) -> Option<EscapeOutcome> {
        let start = self
            .chunks
            .iter()
            .rposition(|c| matches!(c, TermChunk::Escape))?;
        let mut verdict = None;
        for chunk in &self.chunks[start + 1..] {
            match chunk {
                TermChunk::Output(_, text) => {
                    // The verdict is among the last lines.
                    for line in text.lines() {
                        if line.starts_with("ESCAPED") {
                            verdict = Some(EscapeOutcome::Escaped);
                        } else if line.starts_with("CONTAINED") {
                            verdict = Some(EscapeOutcome::Contained);
                        }
                    }
                }
                TermChunk::Exited { .. } => return verdict,
                _ => return None,
            }
        }
        None
    }

    /// The demonstration running now, if what runs is one.
    pub fn running_demo(&self) -> Option<Demo> {
        if !self.running {
            return None;
        }
        self.chunks.iter().rev().find_map(|c| match c {
            TermChunk::Demo(demo) => Some(Some(*demo)),
            TermChunk::Command(_) | TermChunk::Escape => Some(None),
            _ => None,
        })?
    }

    fn trim(&mut self) {
        while self.chars > TERM_KEEP_CHARS && self.chunks.len() > 1 {
            let first = self.chunks.remove(0);
            if let TermChunk::Command(text)
            | TermChunk::Output(_, text)
            | TermChunk::Refused(_, text) = first
            {
                self.chars -= text.len();
            }
        }
    }
}

/// How many usage samples the page keeps (about a minute).
pub const USAGE_KEEP: usize = 60;

/// One `usage` message, with when it arrived and the CPU rate since the one
/// before.
#[derive(Clone, PartialEq, Debug)]
pub struct UsageSample {
    pub stats: CgroupStats,
    /// `performance.now()` when it arrived, in ms.
    pub at_ms: f64,
    /// CPU time used per wall-clock time since the sample before, in % of
    /// one core.
    pub cpu_percent: Option<f64>,
}

/// The last [`USAGE_KEEP`] usage samples of the box's cgroup, oldest first.
#[derive(Clone, PartialEq, Debug, Default)]
pub struct UsageHistory {
    pub samples: VecDeque<UsageSample>,
}

impl UsageHistory {
    pub fn latest(&self) -> Option<&UsageSample> {
        self.samples.back()
    }

    /// Adds a sample; true when the counters started again (a new group).
    fn push(&mut self, stats: CgroupStats, at_ms: f64) -> bool {
        // A counter that went back means a new group (the box was rebuilt):
        // its history starts again.
        let mut restarted = false;
        if let Some(last) = self.samples.back() {
            let went_back =
                |a: Option<u64>, b: Option<u64>| matches!((a, b), (Some(a), Some(b)) if b < a);
            if went_back(last.stats.cpu_usage_usec, stats.cpu_usage_usec)
                || went_back(last.stats.nr_periods, stats.nr_periods)
                || went_back(
                    last.stats.memory_events_oom_kill,
                    stats.memory_events_oom_kill,
                )
                || went_back(last.stats.pids_events_max, stats.pids_events_max)
            {
                self.samples.clear();
                restarted = true;
            }
        }
        let cpu_percent = self.samples.back().and_then(|last| {
            let used = stats
                .cpu_usage_usec?
                .checked_sub(last.stats.cpu_usage_usec?)?;
            let wall_us = (at_ms - last.at_ms) * 1000.0;
            (wall_us >= 100_000.0).then(|| used as f64 / wall_us * 100.0)
        });
        if self.samples.len() == USAGE_KEEP {
            self.samples.pop_front();
        }
        self.samples.push_back(UsageSample {
            stats,
            at_ms,
            cpu_percent,
        });
        restarted
    }
}

/// An interface of the network view, as its counters are keyed.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Iface {
    Bridge,
    /// A veth's host end on the bridge, by name.
    Port(String),
    /// An interface inside the box, by name.
    Inside(String),
}

/// Bytes per second received and sent.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Rate {
    pub rx: f64,
    pub tx: f64,
}

/// Rates through the network view's interfaces, from the last two `network`
/// messages.
#[derive(Clone, PartialEq, Debug, Default)]
pub struct NetRates {
    /// When the last sample arrived (`performance.now()`, ms), and its
    /// counters.
    last: Option<(f64, HashMap<Iface, Counters>)>,
    rates: HashMap<Iface, Rate>,
}

impl NetRates {
    pub fn get(&self, iface: &Iface) -> Option<Rate> {
        self.rates.get(iface).copied()
    }

    fn push(&mut self, view: &NetworkView, at_ms: f64) {
        let counters: HashMap<Iface, Counters> =
            std::iter::once((Iface::Bridge, view.bridge.counters))
                .chain(
                    view.ports
                        .iter()
                        .map(|p| (Iface::Port(p.veth.clone()), p.counters)),
                )
                .chain(
                    view.inside
                        .iter()
                        .map(|i| (Iface::Inside(i.name.clone()), i.counters)),
                )
                .collect();
        if let Some((last_ms, last)) = &self.last {
            let seconds = (at_ms - last_ms) / 1000.0;
            // Two messages close together say little: wait for a longer span.
            if seconds < 0.1 {
                return;
            }
            // A counter that went back is a new interface (a rebuilt box):
            // it has no rate until its next sample.
            self.rates = counters
                .iter()
                .filter_map(|(iface, now)| {
                    let before = last.get(iface)?;
                    let per_second =
                        |now: u64, before: u64| Some(now.checked_sub(before)? as f64 / seconds);
                    let rate = Rate {
                        rx: per_second(now.rx_bytes, before.rx_bytes)?,
                        tx: per_second(now.tx_bytes, before.tx_bytes)?,
                    };
                    Some((iface.clone(), rate))
                })
                .collect();
        }
        self.last = Some((at_ms, counters));
    }
}

/// The limits form's exchange with the server.
#[derive(Clone, PartialEq, Debug, Default)]
pub struct LimitsState {
    /// The limits last sent and not refused (kept for the form before the
    /// `cgroups` step, where the server answers nothing).
    pub sent: Option<CgroupLimits>,
    /// Sent to a box past the `cgroups` step: it is being rebuilt.
    pub applying: bool,
    /// Why the server refused the last limits (`bad_limits`).
    pub error: Option<String>,
}

/// How an entry of the upper directory differs from the list before it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum UpperMark {
    /// Not in the list before (or there as another kind).
    New,
    /// There before, with another size.
    Grown,
}

/// The upper directory's entries that differ from the list before, by path.
pub type UpperMarks = HashMap<String, UpperMark>;

/// What changed from one upper-directory list to the next.
fn upper_marks(before: &[UpperEntry], after: &[UpperEntry]) -> UpperMarks {
    let before: HashMap<&str, &UpperEntry> = before.iter().map(|e| (e.path.as_str(), e)).collect();
    after
        .iter()
        .filter_map(|entry| {
            let mark = match before.get(entry.path.as_str()) {
                None => UpperMark::New,
                Some(old) if old.kind != entry.kind => UpperMark::New,
                Some(old) if old.size != entry.size => UpperMark::Grown,
                Some(_) => return None,
            };
            Some((entry.path.clone(), mark))
        })
        .collect()
}

/// Whether `path` is `dir` or under it.
fn within(dir: &str, path: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    path == dir
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Whether a new or changed upper entry can change where `path` comes
/// from: the path itself, or a directory above it that now hides what is
/// under it (a parent merely copied up hides nothing).
fn touches(changed: &UpperEntry, path: &str) -> bool {
    changed.path == path
        || (matches!(changed.kind, UpperKind::Whiteout | UpperKind::OpaqueDir)
            && within(&changed.path, path))
}

/// The "which layer?" form's exchange with the server.
#[derive(Clone, PartialEq, Debug, Default)]
pub struct WhichState {
    /// The path asked about, while its answer is on the way.
    pub asked: Option<String>,
    /// The last answer: the path and where it comes from.
    pub answer: Option<(String, Provenance)>,
    /// The upper directory changed at or above the answer's path since.
    pub stale: bool,
}

/// An image `commit` made: its name, id and layers, bottom first.
#[derive(Clone, PartialEq, Debug)]
pub struct CommittedImage {
    pub name: String,
    pub id: String,
    pub layers: Vec<LayerView>,
}

/// The commit form's exchange with the server.
#[derive(Clone, PartialEq, Debug, Default)]
pub struct CommitState {
    /// The name asked for, while the answer is on the way.
    pub pending: Option<String>,
    /// The image the box was built from when the commit was asked for: the
    /// result belongs to that box.
    pub from: Option<String>,
    /// The last image made.
    pub result: Option<Rc<CommittedImage>>,
    /// Why the server refused the last commit.
    pub error: Option<String>,
}

/// The import card's exchange with the server.
#[derive(Clone, PartialEq, Debug, Default)]
pub struct ImportState {
    /// The path asked for, until the server answers.
    pub pending: Option<String>,
    /// The last progress of the import asked for last.
    pub progress: Option<ImportProgress>,
    /// The images the last import stored.
    pub result: Option<Rc<Vec<String>>>,
    /// Why the server refused the last import.
    pub error: Option<String>,
    /// The server does not import for this page (not on loopback): it said
    /// so to an import, or to the terminal, served to the same pages.
    pub refused: bool,
}

/// How far a comparison is, from the last `comparing` message.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct CompareProgress {
    pub stage: CompareStage,
    pub run: u32,
    pub runs: u32,
    /// How many stages have started, this one included: counted as they
    /// come, so the bar moves on whatever order the server runs them in.
    pub started: u32,
}

impl CompareProgress {
    /// Every stage of the comparison: preparing, the KVM trial, and a
    /// container and a VM stage per run.
    pub fn total(&self) -> u32 {
        2 + 2 * self.runs
    }

    /// The stages finished, for the progress bar.
    pub fn done(&self) -> u32 {
        self.started.saturating_sub(1).min(self.total())
    }
}

/// The comparison's exchange with the server.
#[derive(Clone, PartialEq, Debug, Default)]
pub struct CompareState {
    /// The runs asked for, until the comparison or its error arrives.
    pub pending: Option<u32>,
    pub progress: Option<CompareProgress>,
    /// The last comparison that finished.
    pub result: Option<Rc<Comparison>>,
}

/// Error codes that answer a comparison (shown in the banner).
fn is_compare_error(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::CompareRunning | ErrorCode::CompareFailed)
}

/// Error codes that only a terminal request gets: never the answer to a
/// commit or an image switch.
fn is_terminal_only(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::CommandRunning | ErrorCode::NoCommand)
}

/// Error codes that answer a terminal request, shown in the terminal.
pub fn is_terminal_error(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::CommandRunning
            | ErrorCode::NoCommand
            | ErrorCode::NotAllowed
            | ErrorCode::NotYet
    )
}

#[derive(Clone, PartialEq, Debug)]
pub struct State {
    /// The lesson order from `GET /api/steps`; `None` until it arrives.
    pub steps: Option<Rc<Vec<StepInfo>>>,
    pub snapshot: Option<Rc<Snapshot>>,
    pub previous: Option<Rc<Snapshot>>,
    /// How many snapshots this page has rendered (tests wait on it).
    pub snapshots: u32,
    pub lang: Lang,
    pub session: Option<String>,
    pub connection: Connection,
    pub error: Option<ServerError>,
    /// The message of a replay in progress.
    pub busy: Option<String>,
    pub view: LessonView,
    pub main: MainView,
    pub terminal: Rc<Terminal>,
    /// Live usage of the box's cgroup, from `usage` messages.
    pub usage: Rc<UsageHistory>,
    /// The last demonstration asked for, with the usage when it was: what
    /// its counter gained since is its effect.
    pub demo_baseline: Option<(Demo, CgroupStats)>,
    pub limits: LimitsState,
    /// Rates through the box's network, from `network` messages.
    pub net_rates: Rc<NetRates>,
    /// Entries of the box's upper directory new or grown since the list
    /// before (from `changes` messages and snapshots of the same box).
    pub upper_marks: Rc<UpperMarks>,
    pub which: WhichState,
    pub commit: CommitState,
    /// The image the box is being rebuilt from, until its snapshot arrives.
    pub switching: Option<String>,
    pub import: ImportState,
    pub compare: CompareState,
}

impl State {
    pub fn new(lang: Lang) -> Self {
        State {
            steps: None,
            snapshot: None,
            previous: None,
            snapshots: 0,
            lang,
            session: None,
            connection: Connection::Connecting,
            error: None,
            busy: None,
            view: LessonView::Step,
            main: MainView::Steps,
            terminal: Rc::default(),
            usage: Rc::default(),
            demo_baseline: None,
            limits: LimitsState::default(),
            net_rates: Rc::default(),
            upper_marks: Rc::default(),
            which: WhichState::default(),
            commit: CommitState::default(),
            switching: None,
            import: ImportState::default(),
            compare: CompareState::default(),
        }
    }

    pub fn current_step(&self) -> Option<StepId> {
        self.snapshot.as_ref().map(|s| s.step)
    }

    /// Whether a step can be applied; every step counts as available until
    /// the list arrives (the server refuses the ones it cannot apply).
    pub fn is_available(&self, step: StepId) -> bool {
        match &self.steps {
            Some(steps) => steps.iter().any(|s| s.id == step && s.available),
            None => true,
        }
    }

    /// The page can ask the server for something.
    pub fn can_send(&self) -> bool {
        self.connection == Connection::Open && self.busy.is_none() && self.snapshot.is_some()
    }

    /// The page can ask about images (commit, switch, import): one such
    /// request at a time, since a refusal goes to the one that is pending.
    pub fn can_ask_images(&self) -> bool {
        self.can_send()
            && self.commit.pending.is_none()
            && self.switching.is_none()
            && self.import.pending.is_none()
    }

    pub fn can_back(&self) -> bool {
        self.can_send() && self.current_step().is_some_and(|s| s.index() > 0)
    }

    pub fn can_next(&self) -> bool {
        self.can_send()
            && self
                .current_step()
                .and_then(|s| StepId::ALL.get(s.index() + 1).copied())
                .is_some_and(|next| self.is_available(next))
    }
}

pub enum Action {
    StepsLoaded(Vec<StepInfo>),
    Connection(Connection),
    Session(String),
    Snapshot(Box<Snapshot>),
    Busy(String),
    ServerError(ServerError),
    DismissError,
    SetLang(Lang),
    ShowLesson(LessonView),
    TermSent(String),
    /// The chroot escape was asked for; its output follows like a command's.
    EscapeSent,
    /// A cgroup demonstration was asked for; its output follows likewise.
    DemoSent(Demo),
    /// A `usage` message, with when it arrived (`performance.now()`, ms).
    Usage(Box<CgroupStats>, f64),
    /// A `network` message, with when it arrived (`performance.now()`, ms).
    Network(Box<NetworkView>, f64),
    /// Limits were sent; `applying` when the box is past the `cgroups` step
    /// and will be rebuilt with them.
    LimitsSent {
        limits: CgroupLimits,
        applying: bool,
    },
    TermOutput(OutputStream, String),
    TermExited {
        code: Option<i32>,
        signal: Option<i32>,
    },
    TermClear,
    /// A `changes` message: the box's upper directory after a command.
    Changes(Vec<UpperEntry>),
    /// "Which layer?" was asked about a path.
    WhichSent(String),
    /// The answer to it.
    Which {
        path: String,
        provenance: Provenance,
    },
    /// `commit` was asked for, naming the new image; `from` is the image
    /// the box is built from now.
    CommitSent {
        name: String,
        from: String,
    },
    /// The image it made.
    Committed(CommittedImage),
    /// The box is to be built again from the image named.
    ImageSent(String),
    /// An import of the path was asked for.
    ImportSent(String),
    /// How far it is.
    ImportProgress(ImportProgress),
    /// The images it stored.
    Imported(Vec<String>),
    ShowMain(MainView),
    /// A comparison of this many runs was asked for.
    CompareSent(u32),
    /// How far it is.
    Comparing {
        stage: CompareStage,
        run: u32,
        runs: u32,
    },
    /// The finished comparison.
    Compared(Box<Comparison>),
}

impl Reducible for State {
    type Action = Action;

    fn reduce(self: Rc<Self>, action: Action) -> Rc<Self> {
        let mut next = (*self).clone();
        match action {
            Action::StepsLoaded(steps) => next.steps = Some(Rc::new(steps)),
            Action::Connection(connection) => {
                next.connection = connection;
                if connection != Connection::Open {
                    // A replay cannot finish on a closed socket; the resume
                    // after reconnecting shows where the box stands. The
                    // command's output went with the connection.
                    next.busy = None;
                    next.limits.applying = false;
                    next.commit.pending = None;
                    next.switching = None;
                    // The import's progress went with the connection.
                    if next.import.pending.take().is_some() {
                        next.import.progress = None;
                    }
                    if next.terminal.running {
                        Rc::make_mut(&mut next.terminal).running = false;
                    }
                    // So did the comparison's answer.
                    next.compare.pending = None;
                    next.compare.progress = None;
                }
            }
            Action::Session(id) => next.session = Some(id),
            Action::Snapshot(snapshot) => {
                // Another box (rebuilt, reset) or no cgroup: a new history.
                let same_box = next
                    .snapshot
                    .as_ref()
                    .is_some_and(|s| s.pid == snapshot.pid);
                if !same_box || snapshot.cgroup.is_none() {
                    next.usage = Rc::default();
                    next.demo_baseline = None;
                }
                if !same_box || snapshot.network.is_none() {
                    next.net_rates = Rc::default();
                }
                // The same box's upper directory carries on; another box's
                // (or no overlay) starts with nothing marked or asked.
                let upper_before = next
                    .snapshot
                    .as_ref()
                    .filter(|_| same_box)
                    .and_then(|s| s.image.as_ref())
                    .map(|i| i.upper.as_slice());
                match (upper_before, &snapshot.image) {
                    (Some(before), Some(image)) => {
                        if before != image.upper.as_slice() {
                            next.upper_marks = Rc::new(upper_marks(before, &image.upper));
                        }
                    }
                    _ => {
                        next.upper_marks = Rc::default();
                        next.which = WhichState::default();
                    }
                }
                // A fresh box (reset) or one built from another image: the
                // commit's result was about the box before.
                let other_image = snapshot.image.as_ref().is_some_and(|image| {
                    next.commit
                        .from
                        .as_ref()
                        .is_some_and(|from| *from != image.name)
                });
                if snapshot.step == StepId::Host || other_image {
                    next.commit = CommitState {
                        pending: next.commit.pending.take(),
                        ..CommitState::default()
                    };
                }
                next.switching = None;
                next.limits.applying = false;
                if snapshot.cgroup.is_some() {
                    next.limits.sent = None;
                }
                next.previous = next.snapshot.take();
                next.snapshot = Some(Rc::new(*snapshot));
                next.snapshots += 1;
                next.busy = None;
                next.view = LessonView::Step;
                // A new view of the box answers the request that failed.
                if next
                    .error
                    .as_ref()
                    .is_some_and(|e| e.code != ErrorCode::StepFailed)
                {
                    next.error = None;
                }
            }
            Action::Busy(message) => next.busy = Some(message),
            // The comparison's answer, in the banner. Before any progress,
            // `bad_message` is a server that does not know `compare`, and
            // `too_many_boxes` a server with no room for the comparison's box.
            Action::ServerError(error)
                if is_compare_error(error.code)
                    || (next.compare.pending.is_some()
                        && next.compare.progress.is_none()
                        && matches!(
                            error.code,
                            ErrorCode::BadMessage | ErrorCode::TooManyBoxes
                        )) =>
            {
                next.compare.pending = None;
                next.compare.progress = None;
                next.error = Some(error);
            }
            Action::ServerError(error)
                if next.import.pending.is_some() && !is_terminal_only(error.code) =>
            {
                // The import's answer: shown in its card.
                next.import.pending = None;
                next.import.refused = error.code == ErrorCode::NotAllowed;
                next.import.error = Some(error.message);
            }
            Action::ServerError(error)
                if next.commit.pending.is_some() && !is_terminal_only(error.code) =>
            {
                // The commit's answer: shown next to its form.
                next.busy = None;
                next.commit.pending = None;
                next.commit.error = Some(error.message);
            }
            Action::ServerError(error)
                if next.switching.is_some() && !is_terminal_only(error.code) =>
            {
                // The image switch's answer: the box is as it was.
                next.switching = None;
                next.busy = None;
                next.error = Some(error);
            }
            Action::ServerError(error) if is_terminal_error(error.code) => {
                next.which.asked = None;
                if error.code == ErrorCode::NotAllowed {
                    next.import.refused = true;
                }
                let terminal = Rc::make_mut(&mut next.terminal);
                match error.code {
                    ErrorCode::NotAllowed => {
                        terminal.refused = true;
                        terminal.running = false;
                    }
                    // Nothing started: the request is answered.
                    ErrorCode::NoCommand | ErrorCode::NotYet => terminal.running = false,
                    _ => {}
                }
                terminal.push(TermChunk::Refused(error.code, error.message));
            }
            Action::ServerError(error) if error.code == ErrorCode::BadLimits => {
                // Shown next to the limits form, not as a banner.
                next.limits = LimitsState {
                    sent: None,
                    applying: false,
                    error: Some(error.message),
                };
            }
            Action::ServerError(error) => {
                next.which.asked = None;
                next.busy = None;
                next.limits.applying = false;
                next.error = Some(error);
            }
            Action::DismissError => next.error = None,
            Action::SetLang(lang) => next.lang = lang,
            Action::ShowLesson(view) => next.view = view,
            Action::TermSent(command) => {
                let terminal = Rc::make_mut(&mut next.terminal);
                terminal.running = true;
                terminal.push(TermChunk::Command(command));
            }
            Action::EscapeSent => {
                let terminal = Rc::make_mut(&mut next.terminal);
                terminal.running = true;
                terminal.push(TermChunk::Escape);
            }
            Action::DemoSent(demo) => {
                let baseline = next.usage.latest().map(|s| s.stats.clone()).or_else(|| {
                    next.snapshot
                        .as_ref()?
                        .cgroup
                        .as_ref()
                        .map(|c| c.usage.clone())
                });
                next.demo_baseline = baseline.map(|b| (demo, b));
                let terminal = Rc::make_mut(&mut next.terminal);
                terminal.running = true;
                terminal.push(TermChunk::Demo(demo));
            }
            Action::Usage(stats, at_ms) => {
                if Rc::make_mut(&mut next.usage).push(*stats, at_ms) {
                    // The counters started again: a baseline from before means nothing.
                    next.demo_baseline = None;
                }
            }
            Action::Network(mut view, at_ms) => {
                // One sent before the box went back past `network` has
                // nothing to update.
                let Some(snapshot) = next.snapshot.as_mut() else {
                    return self;
                };
                let Some(current) = &snapshot.network else {
                    return self;
                };
                // Live updates leave the rules out: they change only with
                // the steps.
                if view.rules.is_none() {
                    view.rules = current.rules.clone();
                }
                Rc::make_mut(&mut next.net_rates).push(&view, at_ms);
                Rc::make_mut(snapshot).network = Some(*view);
            }
            Action::LimitsSent { limits, applying } => {
                next.limits = LimitsState {
                    sent: Some(limits),
                    applying,
                    error: None,
                };
            }
            Action::TermOutput(stream, data) => {
                Rc::make_mut(&mut next.terminal).push(TermChunk::Output(stream, data));
            }
            Action::TermExited { code, signal } => {
                let terminal = Rc::make_mut(&mut next.terminal);
                terminal.running = false;
                terminal.push(TermChunk::Exited { code, signal });
            }
            Action::Changes(upper) => {
                // One sent before the box went back past `overlay` has
                // nothing to update.
                let Some(snapshot) = next.snapshot.as_mut() else {
                    return self;
                };
                let Some(image) = &snapshot.image else {
                    return self;
                };
                if image.upper == upper {
                    return self;
                }
                let marks = upper_marks(&image.upper, &upper);
                // Entries gone from the list count too: `rm` of a file the
                // box created brings a layer's version (or nothing) back.
                if let Some((path, _)) = &next.which.answer {
                    let mut changed = upper.iter().filter(|e| marks.contains_key(&e.path));
                    let mut gone = image
                        .upper
                        .iter()
                        .filter(|old| !upper.iter().any(|e| e.path == old.path));
                    if changed.any(|e| touches(e, path)) || gone.any(|old| within(&old.path, path))
                    {
                        next.which.stale = true;
                    }
                }
                next.upper_marks = Rc::new(marks);
                if let Some(image) = Rc::make_mut(snapshot).image.as_mut() {
                    image.upper = upper;
                }
            }
            Action::WhichSent(path) => next.which.asked = Some(path),
            Action::Which { path, provenance } => {
                next.which = WhichState {
                    asked: None,
                    answer: Some((path, provenance)),
                    stale: false,
                };
            }
            Action::CommitSent { name, from } => {
                next.commit.pending = Some(name);
                next.commit.from = Some(from);
                next.commit.error = None;
            }
            Action::Committed(image) => {
                next.busy = None;
                next.commit.pending = None;
                next.commit.error = None;
                next.commit.result = Some(Rc::new(image));
            }
            Action::ImageSent(name) => next.switching = Some(name),
            Action::ImportSent(path) => {
                next.import = ImportState {
                    pending: Some(path),
                    ..ImportState::default()
                };
            }
            Action::ImportProgress(progress) => {
                // Only the import asked for has progress to show.
                if next.import.pending.is_none() || next.import.progress.as_ref() == Some(&progress)
                {
                    return self;
                }
                next.import.progress = Some(progress);
            }
            Action::Imported(names) => {
                next.import.pending = None;
                next.import.error = None;
                next.import.result = Some(Rc::new(names));
            }
            Action::ShowMain(main) => next.main = main,
            Action::CompareSent(runs) => {
                next.compare = CompareState {
                    pending: Some(runs),
                    ..CompareState::default()
                };
                // An earlier comparison's error is answered by this one.
                if next
                    .error
                    .as_ref()
                    .is_some_and(|e| is_compare_error(e.code))
                {
                    next.error = None;
                }
            }
            Action::Comparing { stage, run, runs } => {
                // Only the comparison asked for has progress to show.
                if next.compare.pending.is_none() {
                    return self;
                }
                let last = next.compare.progress;
                if last.is_some_and(|p| (p.stage, p.run, p.runs) == (stage, run, runs)) {
                    return self;
                }
                next.compare.progress = Some(CompareProgress {
                    stage,
                    run,
                    runs,
                    started: last.map_or(0, |p| p.started) + 1,
                });
            }
            Action::Compared(comparison) => {
                next.compare = CompareState {
                    result: Some(Rc::new(*comparison)),
                    ..CompareState::default()
                };
            }
            Action::TermClear => {
                let running = next.terminal.running;
                let refused = next.terminal.refused;
                next.terminal = Rc::new(Terminal {
                    running,
                    refused,
                    ..Terminal::default()
                });
            }
        }
        Rc::new(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use damda_protocol::ImportStage;

    fn entry(path: &str, kind: UpperKind, size: u64) -> UpperEntry {
        UpperEntry {
            path: path.to_owned(),
            kind,
            size,
            hides_layer: None,
        }
    }

    #[test]
    fn marks_new_and_grown_entries() {
        let before = [
            entry("/etc", UpperKind::Dir, 0),
            entry("/etc/motd", UpperKind::File, 3),
        ];
        let after = [
            entry("/etc", UpperKind::Dir, 0),
            entry("/etc/motd", UpperKind::File, 6),
            entry("/www/index.html", UpperKind::Whiteout, 0),
        ];
        let marks = upper_marks(&before, &after);
        assert_eq!(marks.len(), 2);
        assert_eq!(marks.get("/etc"), None);
        assert_eq!(marks["/etc/motd"], UpperMark::Grown);
        assert_eq!(marks["/www/index.html"], UpperMark::New);
    }

    #[test]
    fn a_change_touches_the_path_and_what_it_hides() {
        let passwd = "/etc/passwd";
        assert!(touches(&entry(passwd, UpperKind::File, 9), passwd));
        assert!(!touches(&entry("/etc", UpperKind::Dir, 0), passwd));
        assert!(touches(&entry("/etc", UpperKind::OpaqueDir, 0), passwd));
        assert!(touches(&entry("/etc", UpperKind::Whiteout, 0), passwd));
        assert!(!touches(&entry("/et", UpperKind::Whiteout, 0), passwd));
        assert!(!touches(&entry(passwd, UpperKind::Whiteout, 0), "/etc"));
        assert!(within("/etc/", passwd));
    }

    fn snapshot(step: StepId, pid: u32, image: Option<&str>) -> Box<Snapshot> {
        Box::new(Snapshot {
            step,
            pid,
            namespaces: Default::default(),
            rebuilt: false,
            box_process: Default::default(),
            host_process: Default::default(),
            commands: Vec::new(),
            syscalls: Vec::new(),
            links: Vec::new(),
            tree: Default::default(),
            proc_files: Vec::new(),
            ipc_probe: None,
            rebuild: None,
            cgroup: None,
            network: None,
            image: image.map(|name| damda_protocol::ImageView {
                name: name.to_owned(),
                ..Default::default()
            }),
        })
    }

    fn error(code: ErrorCode) -> Action {
        Action::ServerError(ServerError {
            code,
            message: "no".to_owned(),
            step: None,
            error: None,
        })
    }

    fn committed(name: &str) -> Action {
        Action::Committed(CommittedImage {
            name: name.to_owned(),
            id: "0123456789ab".to_owned(),
            layers: Vec::new(),
        })
    }

    #[test]
    fn an_import_shows_progress_then_its_images_or_its_error() {
        let base = "damda.local/busybox-httpd:latest";
        let path = "/tmp/image.tar";
        let mut state = Rc::new(State::new(Lang::Ko)).reduce(Action::Snapshot(snapshot(
            StepId::Overlay,
            7,
            Some(base),
        )));
        let progress =
            |stage, done, total| Action::ImportProgress(ImportProgress { stage, done, total });
        // Progress with nothing asked is nobody's.
        state = state.reduce(progress(ImportStage::Reading, 1, 2));
        assert_eq!(state.import.progress, None);
        state = state
            .reduce(Action::ImportSent(path.to_owned()))
            .reduce(progress(ImportStage::Reading, 5, 10))
            .reduce(progress(ImportStage::Unpacking, 2, 3));
        let shown = state.import.progress.unwrap();
        assert_eq!((shown.stage, shown.percent()), (ImportStage::Unpacking, 66));
        // Refused: the card shows why, the terminal and the banner nothing.
        let refused = state.clone().reduce(error(ErrorCode::NotAllowed));
        assert_eq!(refused.import.pending, None);
        assert!(refused.import.refused);
        assert_eq!(refused.import.error.as_deref(), Some("no"));
        assert!(refused.terminal.chunks.is_empty());
        assert_eq!(refused.error, None);
        let bad = state.clone().reduce(error(ErrorCode::BadMessage));
        assert!(!bad.import.refused);
        // The terminal refused for the same reason: no import either.
        let no_terminal = Rc::new(State::new(Lang::Ko)).reduce(error(ErrorCode::NotAllowed));
        assert!(no_terminal.terminal.refused && no_terminal.import.refused);
        assert_eq!(bad.error, None);

        state = state
            .reduce(Action::Imported(vec!["x:1".to_owned()]))
            .reduce(Action::Snapshot(snapshot(StepId::Overlay, 7, Some(base))));
        assert_eq!(state.import.pending, None);
        assert_eq!(
            state.import.result.as_deref(),
            Some(&vec!["x:1".to_owned()])
        );
        // A new import starts afresh.
        state = state.reduce(Action::ImportSent(path.to_owned()));
        assert_eq!(state.import.result, None);
        assert_eq!(state.import.progress, None);
        assert_eq!(
            ImportProgress {
                stage: ImportStage::Reading,
                done: 0,
                total: 0
            }
            .percent(),
            100
        );
    }

    fn comparison() -> Box<Comparison> {
        Box::new(Comparison {
            accelerator: damda_protocol::Accelerator::Tcg,
            kvm_trial: String::new(),
            runs: 2,
            host_kernel: "6.1.0".to_owned(),
            guest_kernel: "6.1.0".to_owned(),
            guest_init: String::new(),
            vm_memory_mib: 256,
            vm_cpus: 1,
            container_cpus: 1.0,
            image: "damda.local/busybox-httpd:latest".to_owned(),
            workload: String::new(),
            vm_command: String::new(),
            container_command: String::new(),
            figures: Vec::new(),
        })
    }

    #[test]
    fn a_comparison_shows_progress_then_its_result_or_its_error() {
        let comparing = |stage, run| Action::Comparing {
            stage,
            run,
            runs: 2,
        };
        let mut state = Rc::new(State::new(Lang::Ko));
        // Progress with nothing asked is nobody's.
        state = state.reduce(comparing(CompareStage::Preparing, 0));
        assert_eq!(state.compare.progress, None);
        state = state
            .reduce(Action::CompareSent(2))
            .reduce(comparing(CompareStage::Preparing, 0))
            .reduce(comparing(CompareStage::KvmTrial, 0))
            .reduce(comparing(CompareStage::Container, 1))
            .reduce(comparing(CompareStage::Container, 1));
        let progress = state.compare.progress.unwrap();
        assert_eq!((progress.done(), progress.total()), (2, 6));
        // Another comparison runs: the banner says so, the button is back.
        let refused = state.clone().reduce(error(ErrorCode::CompareRunning));
        assert_eq!(refused.compare.pending, None);
        assert_eq!(refused.compare.progress, None);
        assert_eq!(
            refused.error.as_ref().map(|e| e.code),
            Some(ErrorCode::CompareRunning)
        );
        // Asking again clears that error.
        assert_eq!(refused.reduce(Action::CompareSent(1)).error, None);
        // A full server refuses it before any progress.
        let full = Rc::new(State::new(Lang::Ko))
            .reduce(Action::CompareSent(1))
            .reduce(error(ErrorCode::TooManyBoxes));
        assert_eq!(full.compare.pending, None);
        assert_eq!(
            full.error.as_ref().map(|e| e.code),
            Some(ErrorCode::TooManyBoxes)
        );
        // An unrelated refusal leaves the comparison running.
        let other = state.clone().reduce(error(ErrorCode::NoSuchMove));
        assert_eq!(other.compare.pending, Some(2));

        state = state.reduce(Action::Compared(comparison()));
        assert_eq!(state.compare.pending, None);
        assert_eq!(state.compare.result.as_ref().unwrap().runs, 2);
        // A new run starts afresh.
        state = state.reduce(Action::CompareSent(3));
        assert_eq!(state.compare.result, None);
        // A lost connection takes the answer with it.
        state = state.reduce(Action::Connection(Connection::Closed { retry_in_ms: 500 }));
        assert_eq!(state.compare.pending, None);
    }

    #[test]
    fn one_image_request_at_a_time() {
        let state = Rc::new(State::new(Lang::Ko))
            .reduce(Action::Connection(Connection::Open))
            .reduce(Action::Snapshot(snapshot(StepId::Overlay, 7, Some("a:1"))));
        assert!(state.can_ask_images());
        let asked = [
            Action::CommitSent {
                name: "b:1".to_owned(),
                from: "a:1".to_owned(),
            },
            Action::ImageSent("b:1".to_owned()),
            Action::ImportSent("/tmp/b.tar".to_owned()),
        ];
        for action in asked {
            assert!(!state.clone().reduce(action).can_ask_images());
        }
    }

    #[test]
    fn a_commit_is_answered_and_kept_for_its_box() {
        let base = "damda.local/busybox-httpd:latest";
        let made = "damda.local/my-box:1";
        let mut state = Rc::new(State::new(Lang::Ko)).reduce(Action::Snapshot(snapshot(
            StepId::Overlay,
            7,
            Some(base),
        )));
        state = state.reduce(Action::CommitSent {
            name: made.to_owned(),
            from: base.to_owned(),
        });
        assert!(state.commit.pending.is_some());
        // Refused with a code the terminal also gets: the form shows it.
        let refused = state.clone().reduce(error(ErrorCode::NotYet));
        assert_eq!(refused.commit.pending, None);
        assert_eq!(refused.commit.error.as_deref(), Some("no"));
        assert!(refused.terminal.chunks.is_empty());
        assert_eq!(refused.error, None);

        state = state
            .reduce(committed(made))
            .reduce(Action::Snapshot(snapshot(StepId::Overlay, 7, Some(base))));
        assert_eq!(state.commit.pending, None);
        assert_eq!(state.commit.result.as_ref().unwrap().name, made);
        // The box built from the new image: the result was the old box's.
        state = state.reduce(Action::ImageSent(made.to_owned()));
        assert!(state.switching.is_some());
        let rebuilt =
            state
                .clone()
                .reduce(Action::Snapshot(snapshot(StepId::Overlay, 8, Some(made))));
        assert_eq!(rebuilt.switching, None);
        assert_eq!(rebuilt.commit.result, None);
        // A refused switch leaves the box and the result as they were.
        let refused = state.reduce(error(ErrorCode::BadMessage));
        assert_eq!(refused.switching, None);
        assert!(refused.commit.result.is_some());
        assert!(refused.error.is_some());
        // A reset forgets it.
        let reset = refused.reduce(Action::Snapshot(snapshot(StepId::Host, 9, None)));
        assert_eq!(reset.commit.result, None);
    }
}
