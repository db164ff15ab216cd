use std::rc::Rc;

use damda_protocol::{binary_size, CgroupLimits, CgroupStats};
use yew::prelude::*;

use crate::i18n::Lang;
use crate::state::{UsageHistory, USAGE_KEEP};

#[derive(PartialEq, Properties)]
pub struct UsageGaugesProps {
    pub lang: Lang,
    pub usage: Rc<UsageHistory>,
    /// The usage the snapshot carried, shown until the first sample.
    pub seed: CgroupStats,
    /// The box's limits (the CPU gauge's limit is not in the stats).
    pub limits: CgroupLimits,
    /// Shown under the gauges (the demonstrations).
    #[prop_or_default]
    pub children: Html,
}

const MIB: f64 = 1_048_576.0;
/// The plots' height in their own units (the width is one unit a sample).
const PLOT_H: f64 = 40.0;

/// Bytes as MiB, without decimals from 100 on or for whole numbers.
fn mib(bytes: u64) -> String {
    let m = bytes as f64 / MIB;
    if m >= 100.0 || m.fract() == 0.0 {
        format!("{m:.0}")
    } else {
        format!("{m:.1}")
    }
}

fn count(n: Option<u64>) -> String {
    n.map_or_else(|| "—".to_owned(), |n| n.to_string())
}

/// A small plot of the last samples, newest on the right, with the limit as
/// a dashed line.
fn sparkline(values: &[Option<f64>], top: f64, limit: Option<f64>, label: String) -> Html {
    let width = (USAGE_KEEP - 1) as f64;
    let offset = USAGE_KEEP.saturating_sub(values.len());
    let y = |v: f64| PLOT_H - (v / top).clamp(0.0, 1.0) * (PLOT_H - 1.5);
    let points: Vec<(f64, f64)> = values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.map(|v| ((offset + i) as f64, y(v))))
        .collect();
    let line = points
        .iter()
        .map(|(x, y)| format!("{x:.0},{y:.2}"))
        .collect::<Vec<_>>()
        .join(" ");
    let area = match (points.first(), points.last()) {
        (Some(first), Some(last)) if points.len() > 1 => {
            format!("{:.0},{PLOT_H} {line} {:.0},{PLOT_H}", first.0, last.0)
        }
        _ => String::new(),
    };
    let limit_y = limit.filter(|l| *l <= top).map(|l| format!("{:.2}", y(l)));
    html! {
        <svg class="spark" viewBox={format!("0 0 {width} {PLOT_H}")}
            preserveAspectRatio="none" role="img" aria-label={label}>
            <polygon class="spark-area" points={area} />
            if let Some(ly) = limit_y {
                <line class="spark-limit" x1="0" x2={width.to_string()} y1={ly.clone()} y2={ly}
                    vector-effect="non-scaling-stroke" />
            }
            <polyline class="spark-line" points={line} vector-effect="non-scaling-stroke" />
        </svg>
    }
}

/// A bar filled to `value / top`, with a tick at the limit when the limit is
/// not the top.
fn bar(value: f64, top: f64, limit: Option<f64>, hit: bool, label: String) -> Html {
    let fill = (value / top).clamp(0.0, 1.0) * 100.0;
    let tick = limit
        .filter(|l| *l < top)
        .map(|l| (l / top).clamp(0.0, 1.0) * 100.0);
    html! {
        <div class={classes!("bar", hit.then_some("is-hit"))} role="img" aria-label={label}>
            <div class="bar-fill" style={format!("width: {fill:.1}%")}></div>
            if let Some(tick) = tick {
                <div class="bar-limit" style={format!("left: {tick:.1}%")}></div>
            }
        </div>
    }
}

/// A counter that matters once it is above zero: then it says so with ⚠,
/// not only with colour.
fn flag(label: &str, value: Option<u64>, extra: Option<String>, id: &'static str) -> Html {
    let hit = value.is_some_and(|v| v > 0);
    let text = match &extra {
        Some(extra) => format!("{label} {} {extra}", count(value)),
        None => format!("{label} {}", count(value)),
    };
    html! {
        <span {id} class={classes!("flag", hit.then_some("is-hit"))}
            data-value={value.map(|v| v.to_string())}>
            <span class="ico" aria-hidden="true">{ if hit { "⚠" } else { "○" } }</span>
            { text }
        </span>
    }
}

/// "At the limit" next to a gauge's numbers, with an icon.
fn at_limit(lang: Lang, hit: bool) -> Html {
    if !hit {
        return html! {};
    }
    html! {
        <span class="badge badge-limit">
            <span class="ico" aria-hidden="true">{ "⚠" }</span>{ lang.t().usage_at_limit }
        </span>
    }
}

/// Live usage of the box's cgroup: memory, CPU, processes and disk I/O, with
/// the counters that show a limit was hit (OOM kills, refused forks,
/// throttled periods).
#[function_component(UsageGauges)]
pub fn usage_gauges(props: &UsageGaugesProps) -> Html {
    let lang = props.lang;
    let t = lang.t();
    let samples = &props.usage.samples;
    let latest = props.usage.latest();
    let now = latest.map_or(&props.seed, |s| &s.stats);
    let series = |f: &dyn Fn(&CgroupStats) -> Option<u64>| -> Vec<Option<f64>> {
        samples
            .iter()
            .map(|s| f(&s.stats).map(|v| v as f64))
            .collect()
    };

    // Memory: MiB against memory.max.
    let mem_values = series(&|s| s.memory_current);
    let mem_peak = mem_values.iter().flatten().fold(0.0f64, |a, &b| a.max(b));
    let mem_max = now.memory_max.map(|m| m as f64);
    let mem_top = match mem_max {
        Some(max) => max.max(mem_peak),
        None => (mem_peak * 1.25).max(MIB),
    };
    let mem_now = now.memory_current.unwrap_or(0) as f64;
    let mem_hit = mem_max.is_some_and(|max| mem_now >= max * 0.95);
    let mem_text = match (now.memory_current, now.memory_max) {
        (Some(cur), Some(max)) => (mib(cur), format!("/ {} MiB", mib(max))),
        (Some(cur), None) => (mib(cur), format!("MiB · {}", t.cg_unlimited)),
        (None, _) => ("—".to_owned(), t.usage_none.to_owned()),
    };

    // CPU: % of one core since the sample before, against the quota.
    let cpu_values: Vec<Option<f64>> = samples.iter().map(|s| s.cpu_percent).collect();
    let cpu_peak = cpu_values.iter().flatten().fold(0.0f64, |a, &b| a.max(b));
    let cpu_limit = props.limits.cpus().map(|c| c * 100.0);
    let cpu_top = 100.0f64.max(cpu_limit.unwrap_or(0.0)).max(cpu_peak);
    let cpu_now = latest.and_then(|s| s.cpu_percent);
    let cpu_hit = matches!((cpu_now, cpu_limit), (Some(n), Some(l)) if n >= l * 0.9);
    let cpu_limit_text = match cpu_limit {
        Some(l) => format!("{} {l:.0}%", t.usage_limit),
        None => t.cg_unlimited.to_owned(),
    };

    // Processes against pids.max.
    let pid_values = series(&|s| s.pids_current);
    let pid_peak = pid_values.iter().flatten().fold(0.0f64, |a, &b| a.max(b));
    let pid_max = now.pids_max.map(|m| m as f64);
    let pid_top = match pid_max {
        Some(max) => max.max(pid_peak),
        None => (pid_peak * 1.25).max(8.0),
    };
    let pid_now = now.pids_current.unwrap_or(0) as f64;
    let pid_hit = pid_max.is_some_and(|max| pid_now >= max);
    let pid_text = match (now.pids_current, now.pids_max) {
        (Some(cur), Some(max)) => (cur.to_string(), format!("/ {max}")),
        (Some(cur), None) => (cur.to_string(), format!("· {}", t.cg_unlimited)),
        (None, _) => ("—".to_owned(), t.usage_none.to_owned()),
    };

    let throttled_of = now
        .nr_periods
        .map(|p| format!("/ {p}"))
        .filter(|_| now.nr_throttled.is_some());
    let attr = |v: Option<u64>| v.map(|v| v.to_string());

    html! {
        <section class="card" id="usage" aria-labelledby="usage-title"
            data-samples={samples.len().to_string()}
            data-oom-kills={attr(now.memory_events_oom_kill)}
            data-pids-refused={attr(now.pids_events_max)}
            data-throttled={attr(now.nr_throttled)}>
            <header class="card-head">
                <h2 id="usage-title">{ t.usage_title }</h2>
                if latest.is_some() {
                    <span class="live-dot" aria-hidden="true"></span>
                }
            </header>
            <p class="card-caption">
                { t.usage_caption }
                if latest.is_none() {
                    { " · " }{ t.usage_waiting }
                }
            </p>
            <div class="gauges">
                <div class="gauge" id="gauge-memory" data-at-limit={mem_hit.to_string()}>
                    <div class="gauge-head">
                        <span class="gauge-name">{ t.cg_memory }</span>
                        { at_limit(lang, mem_hit) }
                        <span class="gauge-value">
                            <strong>{ mem_text.0.clone() }</strong>{ " " }{ mem_text.1.clone() }
                        </span>
                    </div>
                    { bar(mem_now, mem_top, mem_max, mem_hit,
                        format!("{} {} {}", t.cg_memory, mem_text.0, mem_text.1)) }
                    { sparkline(&mem_values, mem_top, mem_max, t.cg_memory.to_owned()) }
                    <div class="gauge-foot">
                        { flag(t.usage_oom, now.memory_events_oom_kill, None, "usage-oom") }
                        if now.memory_failcnt.is_some() {
                            { flag(t.usage_failcnt, now.memory_failcnt, None, "usage-failcnt") }
                        }
                    </div>
                </div>
                <div class="gauge" id="gauge-cpu" data-at-limit={cpu_hit.to_string()}>
                    <div class="gauge-head">
                        <span class="gauge-name">{ t.cg_cpu }</span>
                        { at_limit(lang, cpu_hit) }
                        <span class="gauge-value">
                            <strong>{ cpu_now.map_or_else(|| "—".to_owned(), |c| format!("{c:.0}%")) }</strong>
                            { " " }{ cpu_limit_text.clone() }
                        </span>
                    </div>
                    { bar(cpu_now.unwrap_or(0.0), cpu_top, cpu_limit, cpu_hit,
                        format!("{} {:.0}% ({}), {cpu_limit_text}", t.cg_cpu, cpu_now.unwrap_or(0.0), t.usage_of_core)) }
                    { sparkline(&cpu_values, cpu_top, cpu_limit,
                        format!("{} % ({})", t.cg_cpu, t.usage_of_core)) }
                    <div class="gauge-foot">
                        { flag(t.usage_throttled, now.nr_throttled, throttled_of, "usage-throttled") }
                        <span class="gauge-note">{ format!("% = {}", t.usage_of_core) }</span>
                    </div>
                </div>
                <div class="gauge" id="gauge-pids" data-at-limit={pid_hit.to_string()}>
                    <div class="gauge-head">
                        <span class="gauge-name">{ t.cg_pids }</span>
                        { at_limit(lang, pid_hit) }
                        <span class="gauge-value">
                            <strong>{ pid_text.0.clone() }</strong>{ " " }{ pid_text.1.clone() }
                        </span>
                    </div>
                    { bar(pid_now, pid_top, pid_max, pid_hit,
                        format!("{} {} {}", t.cg_pids, pid_text.0, pid_text.1)) }
                    { sparkline(&pid_values, pid_top, pid_max, t.cg_pids.to_owned()) }
                    <div class="gauge-foot">
                        { flag(t.usage_refused, now.pids_events_max, None, "usage-refused") }
                    </div>
                </div>
                <div class="gauge gauge-io" id="gauge-io">
                    <div class="gauge-head">
                        <span class="gauge-name">{ t.usage_io }</span>
                    </div>
                    <dl class="io-list">
                        <div>
                            <dt><span class="ico" aria-hidden="true">{ "↓" }</span>{ t.usage_read }</dt>
                            <dd>{ now.io_read_bytes.map_or_else(|| t.usage_none.to_owned(), binary_size) }</dd>
                        </div>
                        <div>
                            <dt><span class="ico" aria-hidden="true">{ "↑" }</span>{ t.usage_write }</dt>
                            <dd>{ now.io_write_bytes.map_or_else(|| t.usage_none.to_owned(), binary_size) }</dd>
                        </div>
                    </dl>
                </div>
            </div>
            { props.children.clone() }
        </section>
    }
}
