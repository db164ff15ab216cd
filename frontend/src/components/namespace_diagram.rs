use std::rc::Rc;

use damda_protocol::{NsKind, Snapshot};
use yew::prelude::*;

use crate::components::namespace_map::changed;
use crate::i18n::Lang;

#[derive(PartialEq, Properties)]
pub struct NamespaceDiagramProps {
    pub lang: Lang,
    pub snapshot: Rc<Snapshot>,
    pub previous: Option<Rc<Snapshot>>,
}

// The drawing, in viewBox units: the host's region on the left, the box's on
// the right, overlapping in the middle. Shared namespaces sit in the overlap,
// the box's own ones on the box's side, and the host's originals of those on
// the host's side. Each region holds up to eight chips in two columns.
const GAP: f64 = 8.0;
const MARGIN: f64 = 6.0;
/// A namespace the box has of its own (and the host's original): two lines.
const OWN_W: f64 = 100.0;
const OWN_H: f64 = 46.0;
/// A shared namespace: one line, a pill.
const SHARED_W: f64 = 96.0;
const SHARED_H: f64 = 34.0;
const SIDE_W: f64 = 2.0 * OWN_W + 3.0 * GAP;
const MIDDLE_W: f64 = 2.0 * SHARED_W + 3.0 * GAP;
const HOST_X: f64 = MARGIN;
const MIDDLE_X: f64 = HOST_X + SIDE_W;
const BOX_X: f64 = MIDDLE_X + MIDDLE_W;
const WIDTH: f64 = BOX_X + SIDE_W + MARGIN;
const LABEL_Y: f64 = 30.0;
const CHIPS_Y: f64 = 48.0;
const ROW: f64 = OWN_H + GAP;
const HEIGHT: f64 = CHIPS_Y + 4.0 * ROW + MARGIN;

/// Where the `slot`th chip of a region starting at `x` goes (its top left).
fn slot(x: f64, width: f64, height: f64, slot: usize) -> (f64, f64) {
    let col = (slot % 2) as f64;
    let row = (slot / 2) as f64;
    let x = x + GAP + col * (width + GAP);
    let y = CHIPS_Y + row * ROW + (OWN_H - height) / 2.0;
    (x, y)
}

/// The eight namespace types drawn as chips in two overlapping regions,
/// "host" and "box": a chip in the overlap is shared, a chip on the box's
/// side is the box's own.
#[function_component(NamespaceDiagram)]
pub fn namespace_diagram(props: &NamespaceDiagramProps) -> Html {
    let t = props.lang.t();
    let snapshot = &props.snapshot;
    let kinds = NsKind::ALL.map(|kind| (kind, snapshot.namespaces.get(kind)));
    let separate: Vec<&str> = kinds
        .iter()
        .filter(|(_, pair)| !pair.is_shared())
        .map(|(kind, _)| kind.proc_name())
        .collect();

    let mut shared_slot = 0;
    let mut own_slot = 0;
    let chips = kinds.iter().map(|&(kind, pair)| {
        let name = kind.proc_name();
        let shared = pair.is_shared();
        let before = props.previous.as_ref().map(|p| p.namespaces.get(kind));
        let changed = changed(pair, before, snapshot.rebuilt);
        let (w, h) = if shared {
            (SHARED_W, SHARED_H)
        } else {
            (OWN_W, OWN_H)
        };
        let (x, y) = if shared {
            shared_slot += 1;
            slot(MIDDLE_X, w, h, shared_slot - 1)
        } else {
            own_slot += 1;
            slot(BOX_X, w, h, own_slot - 1)
        };
        let tip = if shared {
            format!("{name}: {} · inode {}", t.ns_shared, pair.host)
        } else {
            format!(
                "{name}: {} · {} {} · {} {}",
                t.ns_separate, t.nsd_host, pair.host, t.nsd_box, pair.boxed
            )
        };
        let (cx, cy) = (w / 2.0, h / 2.0);
        html! {
            <g key={name}
                class={classes!("nsd-chip", if shared { "is-shared" } else { "is-own" }, changed.then_some("is-changed"))}
                data-ns-chip={name}
                data-shared={shared.to_string()}
                style={format!("transform: translate({x}px, {y}px)")}>
                <title>{ tip }</title>
                if changed {
                    <rect class="nsd-halo" x="-2.5" y="-2.5" width={(w + 5.0).to_string()}
                        height={(h + 5.0).to_string()} rx={if shared { (h / 2.0 + 2.5).to_string() } else { "6".to_owned() }} />
                }
                <rect class="nsd-chip-shape" width={w.to_string()} height={h.to_string()}
                    rx={if shared { (h / 2.0).to_string() } else { "4".to_owned() }} />
                if shared {
                    <text class="nsd-name" x={cx.to_string()} y={cy.to_string()}>
                        { format!("○ {name}") }
                    </text>
                } else {
                    <text class="nsd-name" x={cx.to_string()} y="16">{ format!("◆ {name}") }</text>
                    <text class="nsd-inode" x={cx.to_string()} y="36">{ pair.boxed }</text>
                }
                if changed {
                    <g class="nsd-star" style={format!("transform: translate({}px, 0px)", w - 4.0)}>
                        <circle r="9" />
                        <text>{ "★" }</text>
                    </g>
                }
            </g>
        }
    });

    // The host keeps its original of every namespace the box left.
    let originals = kinds
        .iter()
        .filter(|(_, pair)| !pair.is_shared())
        .enumerate()
        .map(|(i, &(kind, pair))| {
            let name = kind.proc_name();
            let (x, y) = slot(HOST_X, OWN_W, OWN_H, i);
            let cx = OWN_W / 2.0;
            html! {
                <g key={name} class="nsd-original"
                    style={format!("transform: translate({x}px, {y}px)")}>
                    <title>{ format!("{name}: {} · inode {}", t.nsd_host, pair.host) }</title>
                    <rect class="nsd-chip-shape" width={OWN_W.to_string()} height={OWN_H.to_string()} rx="4" />
                    <text class="nsd-name" x={cx.to_string()} y="16">{ name }</text>
                    <text class="nsd-inode" x={cx.to_string()} y="36">{ pair.host }</text>
                </g>
            }
        });

    let summary = if separate.is_empty() {
        format!(
            "{}: {} 0 / {}",
            t.nsd_title,
            t.ns_separate,
            NsKind::ALL.len()
        )
    } else {
        format!(
            "{}: {} {} / {} ({})",
            t.nsd_title,
            t.ns_separate,
            separate.len(),
            NsKind::ALL.len(),
            separate.join(", ")
        )
    };
    let region_w = (SIDE_W + MIDDLE_W).to_string();
    let region_h = (HEIGHT - 2.0 * MARGIN).to_string();
    html! {
        <figure id="ns-diagram" class="ns-diagram" data-separate={separate.len().to_string()}>
            <svg class="nsd-svg" viewBox={format!("0 0 {WIDTH} {HEIGHT}")}
                role="img" aria-label={summary}
                preserveAspectRatio="xMidYMid meet">
                <rect class="nsd-region nsd-host" x={HOST_X.to_string()} y={MARGIN.to_string()}
                    width={region_w.clone()} height={region_h.clone()} rx="14" />
                <rect class="nsd-region nsd-box" x={MIDDLE_X.to_string()} y={MARGIN.to_string()}
                    width={region_w} height={region_h} rx="14" />
                <text class="nsd-label" x={(HOST_X + 14.0).to_string()} y={LABEL_Y.to_string()}
                    text-anchor="start">{ t.nsd_host }</text>
                <text class="nsd-label nsd-label-box" x={(WIDTH - MARGIN - 14.0).to_string()}
                    y={LABEL_Y.to_string()} text-anchor="end">{ t.nsd_box }</text>
                <text class="nsd-label nsd-label-both" x={(MIDDLE_X + MIDDLE_W / 2.0).to_string()}
                    y={LABEL_Y.to_string()} text-anchor="middle">{ t.nsd_both }</text>
                if separate.is_empty() {
                    <text class="nsd-none" x={(BOX_X + SIDE_W / 2.0).to_string()}
                        y={(CHIPS_Y + 2.0 * ROW - GAP / 2.0).to_string()}
                        text-anchor="middle">{ t.nsd_none_own }</text>
                }
                <g class="nsd-originals">{ for originals }</g>
                <g class="nsd-chips">{ for chips }</g>
            </svg>
            <figcaption class="nsd-legend">
                <span class="nsd-key">
                    <span class="nsd-swatch is-shared" aria-hidden="true">{ "○" }</span>
                    { t.nsd_legend_shared }
                </span>
                <span class="nsd-key">
                    <span class="nsd-swatch is-own" aria-hidden="true">{ "◆" }</span>
                    { t.nsd_legend_own }
                </span>
                <span class="nsd-key">
                    <span class="nsd-swatch is-original" aria-hidden="true"></span>
                    { t.nsd_legend_original }
                </span>
            </figcaption>
        </figure>
    }
}
