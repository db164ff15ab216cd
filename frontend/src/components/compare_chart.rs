use std::rc::Rc;

use damda_protocol::{
    binary_size, Accelerator, Comparison, Figure, FigurePart, FigureUnit, Spread,
};
use yew::prelude::*;

use crate::i18n::{compare_resources, compare_runs, figure_text, Lang};

#[derive(PartialEq, Properties)]
pub struct CompareChartProps {
    pub lang: Lang,
    pub comparison: Rc<Comparison>,
}

/// How qemu ran the VM, as its short name.
pub fn accelerator_name(accelerator: Accelerator) -> &'static str {
    match accelerator {
        Accelerator::Kvm => "KVM",
        Accelerator::Tcg => "TCG",
    }
}

/// A range of two values, its unit written once where they share it:
/// `41.2–60.3 ms`, `980 ms–12.3 s`.
fn range_text(min: &str, max: &str) -> String {
    match (min.rsplit_once(' '), max.rsplit_once(' ')) {
        (Some((min, unit)), Some((_, max_unit))) if unit == max_unit => format!("{min}–{max}"),
        _ => format!("{min}–{max}"),
    }
}

/// How many times the container's value the VM's is: `38×`, `2.4×`,
/// `0.52×`; nothing against a container's zero.
fn times(vm: f64, container: f64) -> Option<String> {
    if container <= 0.0 || !vm.is_finite() {
        return None;
    }
    let ratio = vm / container;
    Some(if ratio >= 10.0 {
        format!("{ratio:.0}×")
    } else if ratio >= 1.0 {
        format!("{ratio:.1}×")
    } else {
        format!("{ratio:.2}×")
    })
}

/// One side of a figure: its bar (the median, cut into its parts where it
/// has them), the min–max range over it, and the value as text.
struct Side<'a> {
    /// `container` or `vm`: the class names' middle.
    id: &'static str,
    label: &'static str,
    spread: &'a Spread,
    parts: &'a [FigurePart],
}

fn side_row(side: &Side, unit: FigureUnit, scale: f64) -> Html {
    // Per figure: the longer bar fills the track.
    let percent = |v: f64| {
        if scale > 0.0 {
            (v / scale * 100.0).clamp(0.0, 100.0)
        } else {
            0.0
        }
    };
    let spread = side.spread;
    let value = unit.text(spread.median);
    // A sliver stays visible next to a bar a hundred times its length.
    let width = if spread.median > 0.0 {
        percent(spread.median).max(0.6)
    } else {
        0.0
    };
    let range = (spread.max > spread.min)
        .then(|| range_text(&unit.text(spread.min), &unit.text(spread.max)));
    let label = match &range {
        Some(range) => format!("{}: {value} ({range})", side.label),
        None => format!("{}: {value}", side.label),
    };
    let total: u64 = side.parts.iter().map(|p| p.bytes).sum();
    let segments = side.parts.iter().filter(|_| total > 0).map(|part| {
        let share = part.bytes as f64 / total as f64 * 100.0;
        html! {
            <span class="cmp-seg" style={format!("width:{share:.2}%")}
                title={format!("{} {}", part.name, binary_size(part.bytes))}></span>
        }
    });
    html! {
        <div class={classes!("cmp-row", format!("is-{}", side.id))}>
            <span class="cmp-side">
                <span class={classes!("cmp-swatch", format!("is-{}", side.id))} aria-hidden="true"></span>
                { side.label }
            </span>
            <div class="cmp-track" role="img" aria-label={label}>
                <div class="cmp-bar" style={format!("width:{width:.2}%")}>{ for segments }</div>
                if range.is_some() {
                    <div class="cmp-range" style={format!(
                        "left:{:.2}%;width:{:.2}%",
                        percent(spread.min),
                        percent(spread.max) - percent(spread.min)
                    )}></div>
                }
            </div>
            <span class="cmp-values">
                <span class={classes!("cmp-value", format!("compare-{}-value", side.id))}>{ value }</span>
                if let Some(range) = range {
                    <span class="cmp-minmax">{ range }</span>
                }
            </span>
            if !side.parts.is_empty() {
                <ul class="cmp-parts">
                    for part in side.parts.iter() {
                        <li><code>{ &part.name }</code>{ " " }{ binary_size(part.bytes) }</li>
                    }
                </ul>
            }
        </div>
    }
}

fn figure(lang: Lang, figure: &Figure, tcg: bool) -> Html {
    let t = lang.t();
    let (name, what) = figure_text(lang, figure.id);
    let scale = [
        figure.container.median,
        figure.container.max,
        figure.vm.median,
        figure.vm.max,
    ]
    .into_iter()
    .fold(0.0, f64::max);
    let ratio = times(figure.vm.median, figure.container.median);
    let emulated = figure.emulated && tcg;
    let sides = [
        Side {
            id: "container",
            label: t.cmp_container,
            spread: &figure.container,
            parts: &figure.container_parts,
        },
        Side {
            id: "vm",
            label: t.cmp_vm,
            spread: &figure.vm,
            parts: &figure.vm_parts,
        },
    ];
    html! {
        <li class={classes!("compare-figure", emulated.then_some("is-emulated"))}
            data-figure={figure.id.as_str()}
            data-emulated={emulated.to_string()}>
            <div class="cmp-fig-head">
                <h3 class="cmp-fig-name">{ name }</h3>
                if let Some(ratio) = ratio {
                    <p class="cmp-ratio">{ format!("{} = ", t.cmp_ratio) }<strong>{ ratio }</strong></p>
                }
            </div>
            <p class="cmp-fig-what">{ what }</p>
            if emulated {
                <p class="cmp-emulated">
                    <span class="ico" aria-hidden="true">{ "⚠" }</span>{ t.cmp_emulated }
                </p>
            }
            for side in sides.iter() {
                { side_row(side, figure.unit, scale) }
            }
        </li>
    }
}

/// The finished comparison: how the VM ran and on what, then each figure
/// as a pair of bars (container solid, VM hatched) on its own scale.
#[function_component(CompareChart)]
pub fn compare_chart(props: &CompareChartProps) -> Html {
    let lang = props.lang;
    let t = lang.t();
    let c = &props.comparison;
    let tcg = c.accelerator == Accelerator::Tcg;
    let accelerator_words = if tcg { t.cmp_tcg } else { t.cmp_kvm };
    html! {
        <section class="card" id="compare-results" aria-labelledby="compare-results-title"
            data-accelerator={accelerator_name(c.accelerator)}
            data-runs={c.runs.to_string()}>
            <header class="card-head">
                <h2 id="compare-results-title">{ t.cmp_results }</h2>
            </header>
            <dl class="compare-setup">
                <div>
                    <dt>{ t.cmp_accelerator }</dt>
                    <dd>
                        <p id="compare-accelerator" class={classes!("cmp-accel", tcg.then_some("is-tcg"))}>
                            <strong>{ accelerator_name(c.accelerator) }</strong>
                            { format!(" {accelerator_words}") }
                        </p>
                        if !c.kvm_trial.is_empty() {
                            <p class="cmp-trial">
                                { format!("{}: ", t.cmp_kvm_trial) }<span class="mono">{ &c.kvm_trial }</span>
                            </p>
                        }
                    </dd>
                </div>
                <div>
                    <dt>{ t.cmp_kernels }</dt>
                    <dd>
                        { format!("{} ", t.cmp_host) }<code>{ &c.host_kernel }</code>
                        { format!(" · {} ", t.cmp_guest) }<code>{ &c.guest_kernel }</code>
                        if !c.guest_init.is_empty() {
                            <p class="cmp-trial">
                                { format!("{}: ", t.cmp_guest_init) }<span class="mono">{ &c.guest_init }</span>
                            </p>
                        }
                    </dd>
                </div>
                <div>
                    <dt>{ t.cmp_resources }</dt>
                    <dd>{ compare_resources(lang, c.vm_memory_mib, c.vm_cpus, c.container_cpus) }</dd>
                </div>
                <div>
                    <dt>{ t.cmp_runs_label }</dt>
                    <dd>{ compare_runs(lang, c.runs) }</dd>
                </div>
                <div>
                    <dt>{ t.cmp_image }</dt>
                    <dd><code>{ &c.image }</code></dd>
                </div>
            </dl>
            <p class="card-caption">{ t.cmp_scale_note }</p>
            <p class="cmp-legend">
                <span><span class="cmp-swatch is-container" aria-hidden="true"></span>{ t.cmp_legend_container }</span>
                <span><span class="cmp-swatch is-vm" aria-hidden="true"></span>{ t.cmp_legend_vm }</span>
            </p>
            <ol class="compare-figures">
                for f in c.figures.iter() {
                    { figure(lang, f, tcg) }
                }
            </ol>
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios() {
        assert_eq!(times(5000.0, 131.0).as_deref(), Some("38×"));
        assert_eq!(times(2.4, 1.0).as_deref(), Some("2.4×"));
        assert_eq!(times(1.0, 2.0).as_deref(), Some("0.50×"));
        assert_eq!(times(1.0, 0.0), None);
    }

    #[test]
    fn a_range_names_its_unit_once() {
        assert_eq!(range_text("41.2 ms", "60.3 ms"), "41.2–60.3 ms");
        assert_eq!(range_text("980 ms", "12.3 s"), "980 ms–12.3 s");
    }
}
