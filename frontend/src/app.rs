//! The page: header, stepper, controls, then the lesson next to live views.

use damda_protocol::{CgroupLimits, ClientMessage, Demo, ServerMessage, StepId};
use wasm_bindgen::JsValue;
use yew::prelude::*;

use crate::components::busy_indicator::BusyIndicator;
use crate::components::cgroup_card::CgroupCard;
use crate::components::commands_panel::CommandsPanel;
use crate::components::commit_form::CommitForm;
use crate::components::compare_chart::CompareChart;
use crate::components::compare_commands::CompareCommands;
use crate::components::compare_panel::ComparePanel;
use crate::components::controls::Controls;
use crate::components::demo_panel::DemoPanel;
use crate::components::error_banner::ErrorBanner;
use crate::components::header::Header;
use crate::components::image_import::ImageImport;
use crate::components::image_layers::ImageLayers;
use crate::components::image_picker::ImagePicker;
use crate::components::ipc_probe::IpcProbe;
use crate::components::lesson_pane::LessonPane;
use crate::components::limits_form::LimitsForm;
use crate::components::links_view::LinksView;
use crate::components::namespace_map::NamespaceMap;
use crate::components::network_drivers::NetworkDrivers;
use crate::components::network_rules::NetworkRules;
use crate::components::network_topology::NetworkTopology;
use crate::components::proc_files::ProcFiles;
use crate::components::process_card::ProcessCard;
use crate::components::process_tree::ProcessTree;
use crate::components::rebuild_note::RebuildNote;
use crate::components::service_card::ServiceCard;
use crate::components::stack_diagram::StackDiagram;
use crate::components::stepper::{step_title, Stepper};
use crate::components::terminal::Terminal;
use crate::components::upper_changes::UpperChanges;
use crate::components::usage_gauges::UsageGauges;
use crate::hooks::use_arrow_keys::use_arrow_keys;
use crate::hooks::use_damda_socket::{use_damda_socket, SocketEvent};
use crate::hooks::use_errno::use_errno;
use crate::hooks::use_lesson::use_lesson;
use crate::hooks::use_steps::use_steps;
use crate::hooks::use_watch::use_watch;
use crate::i18n::Lang;
use crate::state::{Action, CommittedImage, Connection, LessonView, MainView, ServerError, State};

/// Where the chosen language is remembered across visits.
const LANG_KEY: &str = "damda.lang";

fn initial_lang() -> Lang {
    gloo::utils::window()
        .local_storage()
        .ok()
        .flatten()
        .and_then(|s| s.get_item(LANG_KEY).ok().flatten())
        .and_then(|code| Lang::from_code(&code))
        .unwrap_or(Lang::Ko)
}

fn remember_lang(lang: Lang) {
    if let Ok(Some(storage)) = gloo::utils::window().local_storage() {
        let _ = storage.set_item(LANG_KEY, lang.code());
    }
}

/// `performance.now()` in ms (0 where there is no performance API).
fn now_ms() -> f64 {
    gloo::utils::window()
        .performance()
        .map(|p| p.now())
        .unwrap_or_default()
}

/// For the benchmark: when the first snapshot reached the screen.
fn mark_first_snapshot() {
    let window = gloo::utils::window();
    let now = window.performance().map(|p| p.now()).unwrap_or_default();
    let _ = js_sys::Reflect::set(
        &window,
        &JsValue::from_str("__damdaFirstSnapshotMs"),
        &JsValue::from_f64(now),
    );
}

/// What a socket event does to the page.
fn socket_action(event: SocketEvent) -> Action {
    match event {
        SocketEvent::Connecting => Action::Connection(Connection::Connecting),
        SocketEvent::Open => Action::Connection(Connection::Open),
        SocketEvent::Closed { retry_in_ms } => {
            Action::Connection(Connection::Closed { retry_in_ms })
        }
        SocketEvent::Message(message) => match message {
            ServerMessage::Session { id } => Action::Session(id),
            ServerMessage::Snapshot(snapshot) => Action::Snapshot(snapshot),
            ServerMessage::Busy { message } => Action::Busy(message),
            ServerMessage::Output { stream, data } => Action::TermOutput(stream, data),
            ServerMessage::Exited { code, signal } => Action::TermExited { code, signal },
            ServerMessage::Usage(stats) => Action::Usage(stats, now_ms()),
            ServerMessage::Network(view) => Action::Network(view, now_ms()),
            ServerMessage::Changes { upper } => Action::Changes(upper),
            ServerMessage::Which { path, provenance } => Action::Which { path, provenance },
            ServerMessage::Committed { name, id, layers } => {
                Action::Committed(CommittedImage { name, id, layers })
            }
            ServerMessage::Progress(progress) => Action::ImportProgress(progress),
            ServerMessage::Imported { names } => Action::Imported(names),
            ServerMessage::Comparing { stage, run, runs } => Action::Comparing { stage, run, runs },
            ServerMessage::Compared(comparison) => Action::Compared(comparison),
            ServerMessage::Error {
                code,
                message,
                step,
                error,
            } => Action::ServerError(ServerError {
                code,
                message,
                step,
                error,
            }),
        },
    }
}

#[function_component(App)]
pub fn app() -> Html {
    let state = use_reducer(|| State::new(initial_lang()));
    let lang = state.lang;
    let t = lang.t();

    let socket = {
        let dispatcher = state.dispatcher();
        use_damda_socket(Callback::from(move |event| {
            dispatcher.dispatch(socket_action(event))
        }))
    };
    use_steps(
        state.steps.is_none() && state.connection == Connection::Open,
        state.dispatcher(),
    );
    use_watch(socket.clone(), state.connection == Connection::Open);
    let errno = use_errno(lang);
    let current = state.current_step();
    let compare_view = state.main == MainView::Compare;
    let lesson_id = match (compare_view, state.view) {
        (true, _) => "compare".to_owned(),
        (false, LessonView::Intro) => "intro".to_owned(),
        (false, LessonView::Step) => current.unwrap_or(StepId::Host).as_str().to_owned(),
    };
    let lesson = use_lesson(lang, lesson_id);

    use_effect_with(state.snapshots > 0, |&shown| {
        if shown {
            mark_first_snapshot();
        }
    });
    {
        let title = if compare_view {
            Some(t.view_compare.to_owned())
        } else {
            current.map(|step| step_title(state.steps.as_ref(), lang, step))
        };
        use_effect_with((lang, title), |(lang, title)| {
            let document = gloo::utils::document();
            if let Some(root) = document.document_element() {
                let _ = root.set_attribute("lang", lang.code());
            }
            document.set_title(&match title {
                Some(title) => format!("{title} · damda 담다"),
                None => "damda 담다".to_owned(),
            });
        });
    }

    // --- what the page asks of the server ------------------------------------
    let reading_intro = state.view == LessonView::Intro && !compare_view;
    let can_next = if reading_intro {
        state.snapshot.is_some()
    } else {
        state.can_next()
    };
    let on_next = {
        let state = state.clone();
        let socket = socket.clone();
        Callback::from(move |()| {
            if state.view == LessonView::Intro && state.snapshot.is_some() {
                // After the intro comes the box's own step.
                state.dispatch(Action::ShowLesson(LessonView::Step));
            } else if state.can_next() {
                socket.send(ClientMessage::Next);
            }
        })
    };
    let on_back = {
        let state = state.clone();
        let socket = socket.clone();
        Callback::from(move |()| {
            if state.can_back() {
                socket.send(ClientMessage::Back);
            }
        })
    };
    let on_reset = {
        let state = state.clone();
        let socket = socket.clone();
        Callback::from(move |()| {
            if state.can_send() {
                socket.send(ClientMessage::Reset);
            }
        })
    };
    let on_goto = {
        let state = state.clone();
        let socket = socket.clone();
        Callback::from(move |step: StepId| {
            if state.current_step() == Some(step) {
                state.dispatch(Action::ShowLesson(LessonView::Step));
            } else if state.can_send() && state.is_available(step) {
                socket.send(ClientMessage::Goto { step });
            }
        })
    };
    let on_intro = {
        let dispatcher = state.dispatcher();
        Callback::from(move |()| dispatcher.dispatch(Action::ShowLesson(LessonView::Intro)))
    };
    let on_lang = {
        let dispatcher = state.dispatcher();
        Callback::from(move |lang: Lang| {
            remember_lang(lang);
            dispatcher.dispatch(Action::SetLang(lang));
        })
    };
    let on_view = {
        let dispatcher = state.dispatcher();
        Callback::from(move |main: MainView| dispatcher.dispatch(Action::ShowMain(main)))
    };
    let on_compare = {
        let state = state.clone();
        let socket = socket.clone();
        Callback::from(move |runs: u32| {
            if state.connection == Connection::Open
                && state.compare.pending.is_none()
                && socket.send(ClientMessage::Compare { runs })
            {
                state.dispatch(Action::CompareSent(runs));
            }
        })
    };
    let on_dismiss = {
        let dispatcher = state.dispatcher();
        Callback::from(move |()| dispatcher.dispatch(Action::DismissError))
    };
    let on_exec = {
        let dispatcher = state.dispatcher();
        let socket = socket.clone();
        Callback::from(move |command: String| {
            if socket.send(ClientMessage::Exec {
                command: command.clone(),
            }) {
                dispatcher.dispatch(Action::TermSent(command));
            }
        })
    };
    let on_escape = {
        let state = state.clone();
        let socket = socket.clone();
        Callback::from(move |()| {
            if !state.terminal.running && socket.send(ClientMessage::Escape) {
                state.dispatch(Action::EscapeSent);
            }
        })
    };
    let on_demo = {
        let state = state.clone();
        let socket = socket.clone();
        Callback::from(move |demo: Demo| {
            if !state.terminal.running && socket.send(ClientMessage::Demo { demo }) {
                state.dispatch(Action::DemoSent(demo));
            }
        })
    };
    let on_limits = {
        let state = state.clone();
        let socket = socket.clone();
        Callback::from(move |limits: CgroupLimits| {
            let applying = state.snapshot.as_ref().is_some_and(|s| s.cgroup.is_some());
            if state.can_send()
                && socket.send(ClientMessage::Limits {
                    limits: limits.clone(),
                })
            {
                state.dispatch(Action::LimitsSent { limits, applying });
            }
        })
    };
    let on_which = {
        let state = state.clone();
        let socket = socket.clone();
        Callback::from(move |path: String| {
            if state.connection == Connection::Open
                && socket.send(ClientMessage::Which { path: path.clone() })
            {
                state.dispatch(Action::WhichSent(path));
            }
        })
    };
    let on_commit = {
        let state = state.clone();
        let socket = socket.clone();
        Callback::from(move |name: String| {
            let Some(from) = state
                .snapshot
                .as_ref()
                .and_then(|s| s.image.as_ref())
                .map(|i| i.name.clone())
            else {
                return;
            };
            if state.can_ask_images() && socket.send(ClientMessage::Commit { name: name.clone() }) {
                state.dispatch(Action::CommitSent { name, from });
            }
        })
    };
    let on_image = {
        let state = state.clone();
        let socket = socket.clone();
        Callback::from(move |name: String| {
            if state.can_ask_images() && socket.send(ClientMessage::Image { name: name.clone() }) {
                state.dispatch(Action::ImageSent(name));
            }
        })
    };
    let on_import = {
        let state = state.clone();
        let socket = socket.clone();
        Callback::from(move |path: String| {
            if state.can_ask_images() && socket.send(ClientMessage::Import { path: path.clone() }) {
                state.dispatch(Action::ImportSent(path));
            }
        })
    };
    let on_interrupt = {
        let socket = socket.clone();
        Callback::from(move |()| {
            socket.send(ClientMessage::Interrupt);
        })
    };
    let on_clear = {
        let dispatcher = state.dispatcher();
        Callback::from(move |()| dispatcher.dispatch(Action::TermClear))
    };
    // In the comparison the arrows scroll, as on any page.
    use_arrow_keys(!compare_view, on_back.clone(), on_next.clone());

    // --- the page -------------------------------------------------------------
    let connection = match state.connection {
        Connection::Connecting => "connecting",
        Connection::Open => "open",
        Connection::Closed { .. } => "closed",
    };
    let lost = matches!(state.connection, Connection::Closed { .. }) && state.snapshot.is_some();
    let snapshot = state.snapshot.clone();

    let views = match (state.main, &snapshot) {
        (MainView::Compare, _) => {
            let result = state.compare.result.clone();
            html! {
                <>
                    <ComparePanel {lang}
                        state={state.compare.clone()}
                        ready={state.connection == Connection::Open}
                        on_run={on_compare} />
                    if let Some(comparison) = result.clone() {
                        <CompareChart {lang} comparison={comparison.clone()} />
                    }
                    <StackDiagram {lang} comparison={result.clone()} />
                    if let Some(comparison) = result {
                        <CompareCommands {lang} {comparison} />
                    }
                </>
            }
        }
        (MainView::Steps, Some(snapshot)) => {
            let previous = state.previous.clone();
            let tree = (!snapshot.tree.host_view.is_empty() || !snapshot.tree.box_view.is_empty())
                .then(|| html! { <ProcessTree {lang} tree={snapshot.tree.clone()} /> });
            let links = (!snapshot.links.is_empty())
                .then(|| html! { <LinksView {lang} links={snapshot.links.clone()} /> });
            let ipc = snapshot
                .ipc_probe
                .clone()
                .map(|probe| html! { <IpcProbe {lang} {probe} /> });
            let files = (!snapshot.proc_files.is_empty())
                .then(|| html! { <ProcFiles {lang} files={snapshot.proc_files.clone()} /> });
            // The view this step is about comes right after the namespace map
            // (on `network`, the drawing below is).
            let featured = match snapshot.step {
                StepId::Pid | StepId::Mnt => 0,
                StepId::Net => 1,
                StepId::Ipc => 2,
                _ => usize::MAX,
            };
            let mut extra = [tree, links, ipc];
            let first = extra.get_mut(featured).and_then(Option::take);
            let rest = extra.into_iter().flatten();

            // From the network step on: the drawing, live, and the rules;
            // the drivers compare from `net` on, where the box has a network
            // namespace of its own.
            let network = snapshot.network.as_ref().map(|network| {
                html! {
                    <>
                        <NetworkTopology {lang}
                            network={network.clone()}
                            rates={state.net_rates.clone()} />
                        <NetworkRules {lang}
                            rules={network.rules.clone()}
                            bridge={network.bridge.name.clone()}
                            host_settings={network.host_settings.clone()}
                            forward_drops={network.forward_drops.clone()} />
                    </>
                }
            });
            let drivers = (snapshot.step >= StepId::Net).then(|| {
                html! {
                    <NetworkDrivers {lang}
                        step={snapshot.step}
                        forward={snapshot.network.as_ref().and_then(|n| n.forward.clone())} />
                }
            });

            let ready = state.connection == Connection::Open;

            // From the overlay step on: the image's layers under the box's
            // own with the images to build it from, what the box changed and
            // the commit that saves it, and (from `run`) the service.
            let image = snapshot.image.as_ref().map(|image| {
                let can_ask = state.can_ask_images();
                html! {
                    <>
                        <ImageLayers {lang}
                            image={image.clone()}
                            which={state.which.clone()}
                            {ready}
                            {on_which}>
                            <ImagePicker {lang}
                                current={image.name.clone()}
                                available={image.available.clone()}
                                ready={can_ask}
                                switching={state.switching.clone()}
                                on_image={on_image.clone()} />
                            <ImageImport {lang}
                                state={state.import.clone()}
                                ready={can_ask}
                                {on_import} />
                        </ImageLayers>
                        <UpperChanges {lang}
                            upper={image.upper.clone()}
                            layers={image.layers.clone()}
                            marks={state.upper_marks.clone()} />
                        <CommitForm {lang}
                            base_layers={image.layers.clone()}
                            upper_count={image.upper.len()}
                            state={state.commit.clone()}
                            ready={can_ask}
                            {on_commit}
                            on_start={on_image} />
                    </>
                }
            });
            let service = snapshot.image.as_ref().and_then(|image| {
                let pid = image.service_pid?;
                Some(html! {
                    <ServiceCard {lang}
                        docker={image.docker.clone()}
                        command={image.command.clone()}
                        {pid}
                        forward={snapshot.network.as_ref().and_then(|n| n.forward.clone())} />
                })
            });

            let terminal = html! {
                <Terminal {lang}
                    terminal={state.terminal.clone()}
                    {ready}
                    step={snapshot.step}
                    {on_exec}
                    {on_escape}
                    {on_interrupt}
                    {on_clear} />
            };
            // From the cgroups step on: live usage with the demonstrations,
            // the cgroup itself, and its limits (the form shows one step
            // early, so the limits can be chosen before they are applied).
            let usage = snapshot.cgroup.as_ref().map(|cgroup| {
                let demos = (!state.terminal.refused).then(|| {
                    html! {
                        <DemoPanel {lang}
                            can_run={ready && !state.terminal.running}
                            running={state.terminal.running_demo()}
                            baseline={state.demo_baseline.clone()}
                            now={state.usage.latest().map(|s| s.stats.clone())}
                            {on_demo} />
                    }
                });
                html! {
                    <UsageGauges {lang}
                        usage={state.usage.clone()}
                        seed={cgroup.usage.clone()}
                        limits={cgroup.limits.clone()}>
                        { for demos }
                    </UsageGauges>
                }
            });
            let card = snapshot
                .cgroup
                .clone()
                .map(|cgroup| html! { <CgroupCard {lang} {cgroup} /> });
            let limits =
                (snapshot.cgroup.is_some() || snapshot.step == StepId::Cgroupns).then(|| {
                    let current = snapshot
                        .cgroup
                        .as_ref()
                        .map(|c| c.limits.clone())
                        .or_else(|| state.limits.sent.clone())
                        .unwrap_or_default();
                    html! {
                        <LimitsForm {lang} {current}
                            applies_now={snapshot.cgroup.is_some()}
                            ready={state.can_send()}
                            state={state.limits.clone()}
                            on_submit={on_limits} />
                    }
                });
            // On the cgroups step the demonstrations, their output and the
            // gauges they move come first, together; later they follow the
            // namespace map like the other views. From the overlay step on,
            // the layers, the box's changes and the terminal that makes them
            // come together right after the namespace map, led by the
            // service the `run` step started.
            let (top, featured, middle, bottom) = if snapshot.step == StepId::Cgroups {
                let top = html! {
                    <>{ for usage }{ terminal }{ for card }{ for limits }</>
                };
                (Some(top), None, None, None)
            } else {
                let middle = html! { <>{ for usage }{ for card }{ for limits }</> };
                if image.is_some() {
                    let featured = html! { <>{ for service }{ for image }{ terminal }</> };
                    (None, Some(featured), Some(middle), None)
                } else {
                    (None, None, Some(middle), Some(terminal))
                }
            };
            html! {
                <>
                    { for top }
                    if let Some(note) = snapshot.rebuild.clone() {
                        <RebuildNote {lang} {note} errno={errno.clone()} />
                    }
                    <NamespaceMap {lang} snapshot={snapshot.clone()} previous={previous.clone()} />
                    { for featured }
                    { for first }
                    { for network }
                    { for drivers }
                    { for middle }
                    <ProcessCard {lang} snapshot={snapshot.clone()} {previous} />
                    { for rest }
                    { for files }
                    <CommandsPanel {lang} snapshot={snapshot.clone()} />
                    { for bottom }
                </>
            }
        }
        (MainView::Steps, None) => html! {
            <div class="waiting" role="status">
                <span class="spinner" aria-hidden="true"></span>
                <span>{ t.waiting_first }</span>
            </div>
        },
    };

    html! {
        <main id="app"
            class={classes!(lost.then_some("is-stale"))}
            data-current-step={current.map(|s| s.as_str())}
            data-snapshots={state.snapshots.to_string()}
            data-connection={connection}
            data-busy={state.busy.is_some().to_string()}
            data-lang={lang.code()}
            data-view={if compare_view { "compare" } else { "steps" }}>
            <Header {lang} connection={state.connection} session={state.session.clone()} {on_lang}
                view={state.main}
                compare_running={state.compare.pending.is_some()}
                {on_view} />
            // The stepper and its controls move the box: not part of the comparison.
            if !compare_view {
                <Stepper {lang}
                    steps={state.steps.clone()}
                    {current}
                    view={state.view}
                    can_move={state.can_send()}
                    {on_goto}
                    {on_intro} />
                <Controls {lang}
                    position={current.map(|s| (s.index() + 1, StepId::ALL.len()))}
                    title={current.map(|s| step_title(state.steps.as_ref(), lang, s))}
                    step_id={current.map(|s| s.as_str())}
                    can_back={state.can_back()}
                    {can_next}
                    can_reset={state.can_send()}
                    {on_back}
                    {on_next}
                    {on_reset}>
                    if snapshot.as_ref().is_some_and(|s| s.rebuilt) {
                        <span class="badge badge-rebuilt" title={t.rebuilt}>
                            <span class="ico" aria-hidden="true">{ "↻" }</span>{ t.rebuilt }
                        </span>
                    }
                    if let Some(message) = state.busy.clone() {
                        <BusyIndicator {lang} {message} />
                    }
                </Controls>
            }
            if lost {
                <div class="banner banner-lost" role="status">
                    <span class="banner-icon" aria-hidden="true">{ "⚡" }</span>
                    <div class="banner-body"><p>{ t.conn_lost_banner }</p></div>
                </div>
            }
            if let Some(error) = state.error.clone() {
                <ErrorBanner {lang} {error} {errno} {on_dismiss} />
            }
            <div class="columns">
                <LessonPane {lang} {lesson} intro={reading_intro} />
                <section class="views-col" aria-label={t.views_label}>
                    { views }
                </section>
            </div>
        </main>
    }
}
