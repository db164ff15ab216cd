use std::rc::Rc;

use web_sys::{Element, HtmlInputElement};
use yew::prelude::*;

use damda_protocol::{OutputStream, StepId, MAX_COMMAND_BYTES};

use crate::i18n::{demo_text, Lang};
use crate::state::{EscapeOutcome, TermChunk, Terminal as TerminalState};

/// Commands worth trying at any step (busybox has them all).
const SUGGESTIONS: &[&str] = &[
    "hostname",
    "id",
    "ps",
    "ls /",
    "cat /proc/self/cgroup",
    "ip addr",
    "readlink /proc/self/ns/*",
];

#[derive(PartialEq, Properties)]
pub struct TerminalProps {
    pub lang: Lang,
    pub terminal: Rc<TerminalState>,
    /// Whether the page can talk to the box right now.
    pub ready: bool,
    /// The box's step: the chroot escape is offered from `chroot` on.
    pub step: StepId,
    pub on_exec: Callback<String>,
    pub on_escape: Callback<()>,
    pub on_interrupt: Callback<()>,
    pub on_clear: Callback<()>,
}

/// An escape's output, with its verdict (the lines from `ESCAPED` or
/// `CONTAINED` on) set apart.
fn escape_output(class: &'static str, data: &str) -> Html {
    let verdict = data
        .match_indices('\n')
        .map(|(i, _)| i + 1)
        .chain([0])
        .filter(|&i| data[i..].starts_with("ESCAPED") || data[i..].starts_with("CONTAINED"))
        .min();
    match verdict {
        Some(at) => html! {
            <span class={class}>
                { &data[..at] }
                <span class="term-verdict">{ &data[at..] }</span>
            </span>
        },
        None => html! { <span class={class}>{ data }</span> },
    }
}

/// One command at a time inside the box, its output streamed back.
#[function_component(Terminal)]
pub fn terminal(props: &TerminalProps) -> Html {
    let t = props.lang.t();
    let input = use_node_ref();
    let output = use_node_ref();
    // Earlier commands, for ↑ and ↓, and where in them the input stands.
    let history = use_mut_ref(Vec::<String>::new);
    let cursor = use_mut_ref(|| 0usize);
    let term = &props.terminal;
    let can_run = props.ready && !term.running && !term.refused;

    // Follow the output as it grows.
    {
        let output = output.clone();
        use_effect_with(term.chars, move |_| {
            if let Some(element) = output.cast::<Element>() {
                element.set_scroll_top(element.scroll_height());
            }
        });
    }

    let submit = {
        let input = input.clone();
        let history = history.clone();
        let cursor = cursor.clone();
        let on_exec = props.on_exec.clone();
        move || {
            let Some(field) = input.cast::<HtmlInputElement>() else {
                return;
            };
            let command = field.value();
            if command.trim().is_empty() || command.len() > MAX_COMMAND_BYTES {
                return;
            }
            let mut past = history.borrow_mut();
            if past.last() != Some(&command) {
                past.push(command.clone());
            }
            *cursor.borrow_mut() = past.len();
            field.set_value("");
            on_exec.emit(command);
        }
    };
    let onsubmit = {
        let submit = submit.clone();
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            if can_run {
                submit();
            }
        })
    };
    let onkeydown = {
        let on_interrupt = props.on_interrupt.clone();
        let running = term.running;
        Callback::from(move |e: KeyboardEvent| {
            let field: HtmlInputElement = e.target_unchecked_into();
            match e.key().as_str() {
                "c" if e.ctrl_key() && running => {
                    e.prevent_default();
                    on_interrupt.emit(());
                }
                "ArrowUp" | "ArrowDown" => {
                    let past = history.borrow();
                    if past.is_empty() {
                        return;
                    }
                    e.prevent_default();
                    let mut at = cursor.borrow_mut();
                    if e.key() == "ArrowUp" {
                        *at = at.saturating_sub(1);
                    } else {
                        *at = (*at + 1).min(past.len());
                    }
                    field.set_value(past.get(*at).map(String::as_str).unwrap_or(""));
                }
                _ => {}
            }
        })
    };
    let suggest = |command: &'static str| {
        let input = input.clone();
        Callback::from(move |_: MouseEvent| {
            if let Some(field) = input.cast::<HtmlInputElement>() {
                field.set_value(command);
                let _ = field.focus();
            }
        })
    };

    let mut after_escape = false;
    let lines = term.chunks.iter().map(|chunk| match chunk {
        TermChunk::Command(command) => {
            after_escape = false;
            html! {
                <div class="term-cmd"><span class="term-prompt" aria-hidden="true">{ "# " }</span>{ command }</div>
            }
        }
        TermChunk::Escape => {
            after_escape = true;
            html! {
                <div class="term-cmd term-escape">
                    <span class="term-prompt" aria-hidden="true">{ "▶ " }</span>{ t.escape_echo }
                </div>
            }
        }
        TermChunk::Demo(demo) => {
            after_escape = false;
            let (name, _) = demo_text(props.lang, *demo);
            html! {
                <div class="term-cmd term-demo">
                    <span class="term-prompt" aria-hidden="true">{ "▶ " }</span>
                    { format!("{}: {name} ", t.demo_echo) }
                    <span class="term-demo-id">{ format!("({})", demo.as_str()) }</span>
                </div>
            }
        }
        TermChunk::Output(stream, data) => {
            let class = match stream {
                OutputStream::Stdout => "term-stdout",
                OutputStream::Stderr => "term-stderr",
            };
            if after_escape {
                escape_output(class, data)
            } else {
                html! { <span class={class}>{ data }</span> }
            }
        }
        TermChunk::Exited { code, signal } => {
            let text = match (code, signal) {
                (_, Some(signal)) => format!("[{} {signal}]", t.term_exit_signal),
                (Some(code), None) => format!("[{} {code}]", t.term_exit_code),
                (None, None) => format!("[{} ?]", t.term_exit_code),
            };
            let ok = *code == Some(0);
            html! { <div class={classes!("term-exit", (!ok).then_some("is-fail"))}>{ text }</div> }
        }
        TermChunk::Refused(code, message) => html! {
            <div class="term-refused">{ format!("[{}] {message}", code.as_str()) }</div>
        },
    });

    let on_interrupt = props.on_interrupt.clone();
    let on_clear = props.on_clear.clone();
    let on_escape = props.on_escape.clone();
    let show_escape = props.step >= StepId::Chroot && !term.refused;
    let outcome = if term.running {
        None
    } else {
        term.escape_outcome()
    };
    html! {
        <section class="card" id="terminal" aria-labelledby="term-title"
            data-running={term.running.to_string()}>
            <header class="card-head">
                <h2 id="term-title">{ t.term_title }</h2>
                <button type="button" class="copy-button" onclick={move |_| on_clear.emit(())}>
                    { t.term_clear }
                </button>
            </header>
            <p class="card-caption">{ t.term_caption }</p>
            if show_escape {
                <div class="escape" data-outcome={outcome.map(|o| match o {
                    EscapeOutcome::Escaped => "escaped",
                    EscapeOutcome::Contained => "contained",
                })}>
                    <div class="escape-row">
                        <button type="button" id="btn-escape" class="btn btn-small btn-escape"
                            disabled={!can_run} onclick={move |_| on_escape.emit(())}>
                            <span class="ico" aria-hidden="true">{ "⤴" }</span>{ t.escape_button }
                        </button>
                        { match outcome {
                            Some(EscapeOutcome::Escaped) => html! {
                                <span class="badge badge-escaped">
                                    <span class="ico" aria-hidden="true">{ "⚠" }</span>{ t.escape_escaped }
                                </span>
                            },
                            Some(EscapeOutcome::Contained) => html! {
                                <span class="badge badge-contained">
                                    <span class="ico" aria-hidden="true">{ "■" }</span>{ t.escape_contained }
                                </span>
                            },
                            None => html! {},
                        } }
                    </div>
                    <p class="escape-note">{ t.escape_note }</p>
                </div>
            }
            <pre class="term-out" ref={output} aria-live="polite" tabindex="0">
                if term.chunks.is_empty() {
                    <span class="term-hint">{ t.term_empty }</span>
                }
                { for lines }
                if term.running {
                    <div class="term-running"><span class="spinner" aria-hidden="true"></span>{ t.term_running }</div>
                }
            </pre>
            if term.refused {
                <p class="empty">{ t.term_not_allowed }</p>
            } else {
                <form class="term-form" {onsubmit}>
                    <span class="term-prompt" aria-hidden="true">{ "#" }</span>
                    <input
                        id="term-input"
                        ref={input.clone()}
                        type="text"
                        class="term-input"
                        aria-label={t.term_input}
                        placeholder={t.term_input}
                        autocomplete="off"
                        autocapitalize="off"
                        spellcheck="false"
                        maxlength={MAX_COMMAND_BYTES.to_string()}
                        disabled={!props.ready}
                        {onkeydown}
                    />
                    <button type="submit" class="btn btn-primary btn-small" disabled={!can_run}>
                        { t.term_run }
                    </button>
                    <button type="button" class="btn btn-small" disabled={!term.running}
                        title="SIGINT" onclick={move |_| on_interrupt.emit(())}>
                        { t.term_interrupt }
                    </button>
                </form>
                <p class="term-try">
                    <span>{ t.term_try }</span>
                    for command in SUGGESTIONS.iter().copied() {
                        <button type="button" class="chip" onclick={suggest(command)}>
                            <code>{ command }</code>
                        </button>
                    }
                </p>
            }
        </section>
    }
}
