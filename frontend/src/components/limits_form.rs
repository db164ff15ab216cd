use damda_protocol::{CgroupLimits, ErrorCode};
use web_sys::HtmlInputElement;
use yew::prelude::*;

use crate::components::cgroup_card::trim_float;
use crate::components::error_note::ErrorNote;
use crate::i18n::Lang;
use crate::state::LimitsState;

#[derive(PartialEq, Properties)]
pub struct LimitsFormProps {
    pub lang: Lang,
    /// What the form starts with: the box's limits, or what will be applied.
    pub current: CgroupLimits,
    /// True when the box is past the `cgroups` step: applying rebuilds it.
    pub applies_now: bool,
    /// Whether the page can send now.
    pub ready: bool,
    pub state: LimitsState,
    pub on_submit: Callback<CgroupLimits>,
}

const MIB: f64 = 1_048_576.0;

/// The three fields as text, the way the form shows them.
#[derive(Clone, PartialEq)]
struct Fields {
    memory: String,
    cpus: String,
    pids: String,
}

impl Fields {
    fn of(limits: &CgroupLimits) -> Self {
        Fields {
            memory: limits
                .memory_bytes
                .map(|b| trim_float(b as f64 / MIB))
                .unwrap_or_default(),
            cpus: limits.cpus().map(trim_float).unwrap_or_default(),
            pids: limits.pids_max.map(|p| p.to_string()).unwrap_or_default(),
        }
    }
}

/// Which field did not parse.
#[derive(Clone, Copy, PartialEq)]
enum Bad {
    Memory,
    Cpus,
    Pids,
}

/// A number ≥ 0, or `None` for an empty field (no limit). Out-of-range
/// values are left for the server, which says what the kernel accepts.
fn number(text: &str) -> Result<Option<f64>, ()> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    match text.replace(',', ".").parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(Some(v)),
        _ => Err(()),
    }
}

fn limits_from(fields: &Fields, base: &CgroupLimits) -> Result<CgroupLimits, Bad> {
    let memory = number(&fields.memory).map_err(|()| Bad::Memory)?;
    let cpus = number(&fields.cpus).map_err(|()| Bad::Cpus)?;
    let pids = match number(&fields.pids).map_err(|()| Bad::Pids)? {
        Some(p) if p.fract() != 0.0 => return Err(Bad::Pids),
        other => other,
    };
    let memory_bytes = memory.map(|m| (m * MIB).round() as u64);
    // Swap rides on the memory limit: kept as it was, none when new.
    let swap_bytes = match (memory_bytes, base.memory_bytes) {
        (None, _) => None,
        (Some(_), Some(_)) => base.swap_bytes,
        (Some(_), None) => Some(0),
    };
    Ok(CgroupLimits {
        memory_bytes,
        swap_bytes,
        cpu_quota_us: cpus.map(|c| (c * base.cpu_period_us as f64).round() as u64),
        cpu_period_us: base.cpu_period_us,
        pids_max: pids.map(|p| p as u64),
        io_weight: base.io_weight,
    })
}

/// Memory, CPUs and processes for the box's cgroup. The server checks them
/// and says why when it refuses (`bad_limits`), shown here.
#[function_component(LimitsForm)]
pub fn limits_form(props: &LimitsFormProps) -> Html {
    let t = props.lang.t();
    let fields = use_state(|| Fields::of(&props.current));
    let bad = use_state(|| None::<Bad>);
    {
        // New limits from the server start the form again.
        let fields = fields.clone();
        let bad = bad.clone();
        use_effect_with(props.current.clone(), move |current| {
            fields.set(Fields::of(current));
            bad.set(None);
        });
    }

    let edit = |which: Bad| {
        let fields = fields.clone();
        let bad = bad.clone();
        Callback::from(move |e: InputEvent| {
            let value = e.target_unchecked_into::<HtmlInputElement>().value();
            let mut next = (*fields).clone();
            match which {
                Bad::Memory => next.memory = value,
                Bad::Cpus => next.cpus = value,
                Bad::Pids => next.pids = value,
            }
            fields.set(next);
            bad.set(None);
        })
    };
    let onsubmit = {
        let fields = fields.clone();
        let bad = bad.clone();
        let base = props.current.clone();
        let on_submit = props.on_submit.clone();
        let ready = props.ready && !props.state.applying;
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            if !ready {
                return;
            }
            match limits_from(&fields, &base) {
                Ok(limits) => on_submit.emit(limits),
                Err(which) => bad.set(Some(which)),
            }
        })
    };
    let defaults = {
        let fields = fields.clone();
        let bad = bad.clone();
        Callback::from(move |_: MouseEvent| {
            fields.set(Fields::of(&CgroupLimits::default()));
            bad.set(None);
        })
    };

    let field =
        |id: &'static str, label: &'static str, unit: &'static str, which: Bad, value: &str| {
            let invalid = *bad == Some(which);
            html! {
                <div class={classes!("limit-field", invalid.then_some("is-invalid"))}>
                    <label for={id}>{ label }</label>
                    <input {id} type="text" inputmode="decimal" autocomplete="off"
                        class="limit-input mono" value={value.to_owned()}
                        placeholder="∞" aria-invalid={invalid.to_string()}
                        aria-describedby="limits-hint"
                        oninput={edit(which)} />
                    <span class="limit-unit" aria-hidden="true">{ unit }</span>
                </div>
            }
        };
    let applying = props.state.applying;
    let saved = !props.applies_now && props.state.sent.is_some() && props.state.error.is_none();
    html! {
        <section class="card" id="cgroup-limits" aria-labelledby="limits-title">
            <header class="card-head">
                <h2 id="limits-title">{ t.limits_title }</h2>
            </header>
            <p class="card-caption">
                { if props.applies_now { t.limits_after } else { t.limits_before } }
            </p>
            <form id="limits" class="limits-form" novalidate=true {onsubmit}
                data-applying={applying.to_string()}>
                { field("limit-memory", t.limits_memory, "MiB", Bad::Memory, &fields.memory) }
                { field("limit-cpus", t.limits_cpus, t.cg_cores, Bad::Cpus, &fields.cpus) }
                { field("limit-pids", t.limits_pids, "", Bad::Pids, &fields.pids) }
                <div class="limit-actions">
                    <button type="submit" id="btn-limits" class="btn btn-primary btn-small"
                        disabled={!props.ready || applying}>
                        if applying {
                            <span class="spinner" aria-hidden="true"></span>
                        }
                        { if props.applies_now { t.limits_apply } else { t.limits_save } }
                    </button>
                    <button type="button" class="btn btn-quiet btn-small" onclick={defaults}>
                        { t.limits_defaults }
                    </button>
                </div>
            </form>
            <p class="limits-hint" id="limits-hint">
                { t.limits_blank }
                if bad.is_some() {
                    <span class="limits-local-error" role="alert">
                        <span class="ico" aria-hidden="true">{ " ⚠" }</span>{ t.limits_not_number }
                    </span>
                }
            </p>
            if applying {
                <p class="limits-status" id="limits-status" role="status">
                    <span class="spinner" aria-hidden="true"></span>{ t.limits_applying }
                </p>
            } else if saved {
                <p class="limits-status is-saved" id="limits-status" role="status">
                    <span class="ico" aria-hidden="true">{ "✓" }</span>{ t.limits_saved }
                </p>
            }
            if let Some(message) = props.state.error.clone() {
                <ErrorNote id="limits-error" title={t.limits_refused} {message}
                    code={ErrorCode::BadLimits} />
            }
        </section>
    }
}
