use damda_protocol::{CgroupStats, Demo};
use yew::prelude::*;

use crate::i18n::{demo_text, Lang};

#[derive(PartialEq, Properties)]
pub struct DemoPanelProps {
    pub lang: Lang,
    /// Whether a demonstration can start now (connected, nothing running).
    pub can_run: bool,
    /// The demonstration running now, if one is.
    pub running: Option<Demo>,
    /// The last demonstration asked for and the usage when it was.
    pub baseline: Option<(Demo, CgroupStats)>,
    /// The latest usage.
    pub now: Option<CgroupStats>,
    pub on_demo: Callback<Demo>,
}

/// The counter a demonstration moves, and its label.
fn counter(lang: Lang, demo: Demo, stats: &CgroupStats) -> (&'static str, Option<u64>) {
    let t = lang.t();
    match demo {
        Demo::MemoryHog => (t.usage_oom, stats.memory_events_oom_kill),
        Demo::ForkBomb => (t.usage_refused, stats.pids_events_max),
        Demo::CpuHog => (t.usage_throttled, stats.nr_throttled),
    }
}

/// What the last run of `demo` added to its counter, as measured.
fn result(props: &DemoPanelProps, demo: Demo) -> Html {
    let Some((last, before)) = &props.baseline else {
        return html! {};
    };
    if *last != demo {
        return html! {};
    }
    let Some(now) = &props.now else {
        return html! {};
    };
    let (label, start) = counter(props.lang, demo, before);
    let (_, end) = counter(props.lang, demo, now);
    let Some(gain) = start.zip(end).map(|(a, b)| b.saturating_sub(a)) else {
        return html! {};
    };
    let hit = gain > 0;
    html! {
        <p class={classes!("demo-result", hit.then_some("is-hit"))} data-gain={gain.to_string()}>
            <span class="ico" aria-hidden="true">{ if hit { "⚠" } else { "○" } }</span>
            { format!("{}: {label} +{gain}", props.lang.t().demo_result) }
        </p>
    }
}

/// The three demonstrations, each with what to watch on the gauges while it
/// runs. Their output goes to the terminal.
#[function_component(DemoPanel)]
pub fn demo_panel(props: &DemoPanelProps) -> Html {
    let t = props.lang.t();
    let demos = [
        (Demo::MemoryHog, "btn-demo-memory", "▲"),
        (Demo::ForkBomb, "btn-demo-forkbomb", "✱"),
        (Demo::CpuHog, "btn-demo-cpu", "⟳"),
    ];
    html! {
        <div class="demos" role="group" aria-labelledby="demos-title">
            <h3 class="sub-head" id="demos-title">{ t.demos_title }</h3>
            <p class="card-caption">{ t.demos_caption }</p>
            <ul class="demo-list">
                for (demo, id, icon) in demos {
                    <li class="demo" key={id} data-demo={demo.as_str()}
                        data-running={(props.running == Some(demo)).then_some("true")}>
                        <button type="button" {id} class="btn btn-small btn-demo"
                            disabled={!props.can_run}
                            onclick={
                                let on_demo = props.on_demo.clone();
                                move |_| on_demo.emit(demo)
                            }>
                            if props.running == Some(demo) {
                                <span class="spinner" aria-hidden="true"></span>
                            } else {
                                <span class="ico" aria-hidden="true">{ icon }</span>
                            }
                            { demo_text(props.lang, demo).0 }
                        </button>
                        <p class="demo-watch">{ demo_text(props.lang, demo).1 }</p>
                        { result(props, demo) }
                    </li>
                }
            </ul>
        </div>
    }
}
