use std::rc::Rc;

use damda_protocol::{CgroupEntry, ProcessInfo, Snapshot};
use yew::prelude::*;

use crate::i18n::{caps_set, field_label, Lang};

#[derive(PartialEq, Properties)]
pub struct ProcessCardProps {
    pub lang: Lang,
    pub snapshot: Rc<Snapshot>,
    pub previous: Option<Rc<Snapshot>>,
}

/// One row: the field's name and how to show it for a process.
struct Field {
    name: &'static str,
    show: fn(&ProcessInfo) -> Vec<String>,
    /// Whether a difference between box and host is worth a mark. The two are
    /// different processes, so their pids always differ: that is not news.
    marks: bool,
    /// How two values are compared when `marks` is set.
    same: fn(&ProcessInfo, &ProcessInfo) -> bool,
}

fn cgroup_line(c: &CgroupEntry) -> String {
    format!("{}:{}:{}", c.hierarchy, c.controllers.join(","), c.path)
}

fn real_eff(ids: &[u32; 4]) -> Vec<String> {
    vec![format!("{} / {}", ids[0], ids[1])]
}

const FIELDS: &[Field] = &[
    Field {
        name: "pid",
        show: |p| vec![p.pid.to_string()],
        marks: false,
        same: |_, _| true,
    },
    Field {
        name: "ppid",
        show: |p| vec![p.ppid.to_string()],
        marks: false,
        same: |_, _| true,
    },
    Field {
        name: "nspid",
        show: |p| {
            vec![p
                .nspid
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(" → ")]
        },
        // Another depth means another PID namespace.
        marks: true,
        same: |a, b| a.nspid.len() == b.nspid.len(),
    },
    Field {
        name: "comm",
        show: |p| vec![p.comm.clone()],
        marks: true,
        same: |a, b| a.comm == b.comm,
    },
    Field {
        name: "uid",
        show: |p| real_eff(&p.uid),
        marks: true,
        same: |a, b| a.uid[..2] == b.uid[..2],
    },
    Field {
        name: "gid",
        show: |p| real_eff(&p.gid),
        marks: true,
        same: |a, b| a.gid[..2] == b.gid[..2],
    },
    Field {
        name: "hostname",
        show: |p| vec![p.hostname.clone()],
        marks: true,
        same: |a, b| a.hostname == b.hostname,
    },
    Field {
        name: "root",
        show: |p| vec![p.root.clone()],
        marks: true,
        same: |a, b| a.root == b.root,
    },
    Field {
        name: "cwd",
        show: |p| vec![p.cwd.clone()],
        marks: true,
        same: |a, b| a.cwd == b.cwd,
    },
];

/// Rows after the capability rows.
const LATE_FIELDS: &[Field] = &[Field {
    name: "cgroups",
    show: |p| p.cgroups.iter().map(cgroup_line).collect(),
    marks: true,
    same: |a, b| a.cgroups == b.cgroups,
}];

/// One of the capability sets the card shows.
#[derive(Clone, Copy)]
enum CapSet {
    Effective,
    Bounding,
}

impl CapSet {
    fn field(self) -> &'static str {
        match self {
            CapSet::Effective => "cap_eff",
            CapSet::Bounding => "cap_bnd",
        }
    }

    fn of(self, p: &ProcessInfo) -> &str {
        match self {
            CapSet::Effective => &p.caps.effective,
            CapSet::Bounding => &p.caps.bounding,
        }
    }
}

/// How many capabilities a set as /proc prints it (16 hex digits) holds.
fn popcount(hex: &str) -> Option<u32> {
    u64::from_str_radix(hex.trim(), 16)
        .ok()
        .map(u64::count_ones)
}

/// A row that shows a field as lines of text.
fn text_row(
    lang: Lang,
    field: &Field,
    boxed: &ProcessInfo,
    host: &ProcessInfo,
    before: Option<&ProcessInfo>,
) -> Html {
    let t = lang.t();
    let differs = field.marks && !(field.same)(boxed, host);
    let box_lines = (field.show)(boxed);
    let changed = before.is_some_and(|b| (field.show)(b) != box_lines);
    let cell = |lines: Vec<String>| {
        html! {
            for line in lines {
                <span class="line">{ line }</span>
            }
        }
    };
    html! {
        <tr key={field.name} class={classes!(differs.then_some("differs"))} data-row={field.name}>
            <th scope="row">{ field_label(lang, field.name) }</th>
            <td class={classes!("mono", "value", differs.then_some("is-different"))}
                data-field={field.name} data-side="box"
                data-differs={differs.to_string()}
                data-changed={changed.then_some("true")}>
                { cell(box_lines) }
                if differs {
                    <span class="badge badge-differs">
                        <span class="ico" aria-hidden="true">{ "≠" }</span>{ t.differs }
                    </span>
                }
            </td>
            <td class="mono value" data-field={field.name} data-side="host">
                { cell((field.show)(host)) }
            </td>
        </tr>
    }
}

/// A capability set of both processes: the kernel's hex and how many
/// capabilities it holds, with the user namespace it counts in.
fn caps_row(
    lang: Lang,
    set: CapSet,
    boxed: &ProcessInfo,
    host: &ProcessInfo,
    before: Option<&ProcessInfo>,
    own_userns: bool,
) -> Html {
    let t = lang.t();
    let name = set.field();
    let differs = set.of(boxed) != set.of(host);
    let changed = before.is_some_and(|b| set.of(b) != set.of(boxed));
    let cell = |p: &ProcessInfo, scope: &'static str| {
        let hex = set.of(p);
        let count = popcount(hex);
        let title = format!("{scope} · CapPrm {}", p.caps.permitted);
        (hex.to_owned(), count, title)
    };
    let box_scope = if own_userns {
        t.caps_own_userns
    } else {
        t.caps_host_userns
    };
    let (box_hex, box_count, box_title) = cell(boxed, box_scope);
    let (host_hex, host_count, host_title) = cell(host, t.caps_host_userns);
    let count = |n: Option<u32>| match n {
        Some(n) => html! { <span class="cap-count">{ caps_set(lang, n) }</span> },
        None => html! {},
    };
    html! {
        <tr key={name} class={classes!("cap-row", differs.then_some("differs"))} data-row={name}>
            <th scope="row" title={t.caps_hint}>
                { field_label(lang, name) }
            </th>
            <td class={classes!("mono", "value", differs.then_some("is-different"))}
                data-field={name} data-side="box"
                data-differs={differs.to_string()}
                data-changed={changed.then_some("true")}
                data-count={box_count.map(|n| n.to_string())}
                data-userns={if own_userns { "box" } else { "host" }}
                title={box_title}>
                <span class="line">{ box_hex }</span>
                { count(box_count) }
                if differs {
                    <span class="badge badge-differs">
                        <span class="ico" aria-hidden="true">{ "≠" }</span>{ t.differs }
                    </span>
                }
                if own_userns {
                    <span class="cap-scope">
                        <span class="ico" aria-hidden="true">{ "⚑" }</span>{ t.caps_own_userns }
                    </span>
                }
            </td>
            <td class="mono value" data-field={name} data-side="host"
                data-count={host_count.map(|n| n.to_string())}
                title={host_title}>
                <span class="line">{ host_hex }</span>
                { count(host_count) }
            </td>
        </tr>
    }
}

/// The box's main process next to the host's (the server itself), as the
/// host reads them from /proc.
#[function_component(ProcessCard)]
pub fn process_card(props: &ProcessCardProps) -> Html {
    let t = props.lang.t();
    let lang = props.lang;
    let boxed = &props.snapshot.box_process;
    let host = &props.snapshot.host_process;
    let before = props.previous.as_ref().map(|p| &p.box_process);
    // After the user step the box's capabilities are those of its own user
    // namespace: a full set there is no power over the host.
    let own_userns = !props.snapshot.namespaces.user.is_shared();

    let rows = FIELDS
        .iter()
        .map(|field| text_row(lang, field, boxed, host, before))
        .chain(
            [CapSet::Effective, CapSet::Bounding]
                .map(|set| caps_row(lang, set, boxed, host, before, own_userns)),
        )
        .chain(
            LATE_FIELDS
                .iter()
                .map(|field| text_row(lang, field, boxed, host, before)),
        );

    html! {
        <section class="card" id="process-card" aria-labelledby="proc-title">
            <header class="card-head">
                <h2 id="proc-title">{ t.proc_title }</h2>
            </header>
            <p class="card-caption">
                { t.proc_caption }{ " · NSpid: " }{ t.nspid_hint }
            </p>
            <table class="proc-table">
                <thead>
                    <tr>
                        <th scope="col">{ t.proc_col_field }</th>
                        <th scope="col">
                            { t.proc_col_box }
                            <span class="col-pid mono">{ format!(" pid {}", boxed.pid) }</span>
                        </th>
                        <th scope="col">
                            { t.proc_col_host }
                            <span class="col-pid mono">{ format!(" pid {}", host.pid) }</span>
                        </th>
                    </tr>
                </thead>
                <tbody>
                    { for rows }
                </tbody>
            </table>
        </section>
    }
}
