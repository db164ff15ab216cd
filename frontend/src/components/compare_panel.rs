use damda_protocol::MAX_COMPARE_RUNS;
use yew::prelude::*;

use crate::dom::select_value;
use crate::i18n::{compare_progress, compare_runs, Lang};
use crate::state::CompareState;

/// The runs the selector offers first: enough for a median, few enough that
/// the VM's boots under emulation stay within a minute or so.
const DEFAULT_RUNS: u32 = 3;

#[derive(PartialEq, Properties)]
pub struct ComparePanelProps {
    pub lang: Lang,
    pub state: CompareState,
    /// Whether the page can ask the server now.
    pub ready: bool,
    pub on_run: Callback<u32>,
}

/// How many runs, the button that starts the comparison, and how far it is.
#[function_component(ComparePanel)]
pub fn compare_panel(props: &ComparePanelProps) -> Html {
    let lang = props.lang;
    let t = lang.t();
    let select = use_node_ref();
    let running = props.state.pending.is_some();

    let onsubmit = {
        let select = select.clone();
        let on_run = props.on_run.clone();
        let disabled = running || !props.ready;
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            if disabled {
                return;
            }
            let runs = select_value(&select)
                .and_then(|value| value.parse::<u32>().ok())
                .filter(|runs| (1..=MAX_COMPARE_RUNS).contains(runs));
            on_run.emit(runs.unwrap_or(DEFAULT_RUNS));
        })
    };

    // Before the first `comparing` message the bar has no value: the
    // browser draws it as under way, length unknown.
    let progress = props.state.pending.map(|_| {
        let p = props.state.progress;
        let text = p.map_or_else(|| t.cmp_starting.to_owned(), |p| compare_progress(lang, &p));
        html! {
            <div class="compare-progress import-progress"
                data-stage={p.map(|p| p.stage.as_str())}
                data-run={p.map(|p| p.run.to_string())}
                data-runs={p.map(|p| p.runs.to_string())}>
                <progress id="compare-progress"
                    max={p.map(|p| p.total().to_string())}
                    value={p.map(|p| p.done().to_string())}
                    aria-labelledby="compare-progress-text">
                </progress>
                <span id="compare-progress-text" class="import-progress-text">{ text }</span>
            </div>
        }
    });

    html! {
        <section class="card" id="compare-panel" aria-labelledby="compare-title"
            data-running={running.to_string()}>
            <header class="card-head">
                <h2 id="compare-title">{ t.cmp_title }</h2>
            </header>
            <p class="card-caption">{ t.cmp_caption }</p>
            <form class="compare-form" {onsubmit}>
                <label for="compare-runs">{ t.cmp_runs }</label>
                <select id="compare-runs" class="picker-select" ref={select} disabled={running}>
                    for runs in 1..=MAX_COMPARE_RUNS {
                        <option value={runs.to_string()} selected={runs == DEFAULT_RUNS}>
                            { compare_runs(lang, runs) }
                        </option>
                    }
                </select>
                <button type="submit" id="compare-run" class="btn btn-primary"
                    disabled={running || !props.ready}>
                    if running {
                        <span class="spinner" aria-hidden="true"></span>{ t.cmp_running }
                    } else {
                        <span class="ico" aria-hidden="true">{ "▶" }</span>{ t.cmp_run }
                    }
                </button>
            </form>
            <p class="img-note">{ t.cmp_slow_note }</p>
            <div class="compare-status" aria-live="polite">
                { for progress }
                if !running && props.state.result.is_none() {
                    <p class="empty">{ t.cmp_none }</p>
                }
            </div>
        </section>
    }
}
