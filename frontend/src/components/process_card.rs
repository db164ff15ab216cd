use std::rc::Rc;

use damda_protocol::{CgroupEntry, ProcessInfo, Snapshot};
use yew::prelude::*;

use crate::i18n::{field_label, Lang};

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
    Field {
        name: "caps",
        show: |p| {
            vec![
                format!("CapEff {}", p.caps.effective),
                format!("CapPrm {}", p.caps.permitted),
                format!("CapBnd {}", p.caps.bounding),
            ]
        },
        marks: true,
        same: |a, b| a.caps.effective == b.caps.effective,
    },
    Field {
        name: "cgroups",
        show: |p| p.cgroups.iter().map(cgroup_line).collect(),
        marks: true,
        same: |a, b| a.cgroups == b.cgroups,
    },
];

/// The box's main process next to the host's (the server itself), as the
/// host reads them from /proc.
#[function_component(ProcessCard)]
pub fn process_card(props: &ProcessCardProps) -> Html {
    let t = props.lang.t();
    let boxed = &props.snapshot.box_process;
    let host = &props.snapshot.host_process;
    let before = props.previous.as_ref().map(|p| &p.box_process);

    let rows = FIELDS.iter().map(|field| {
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
                <th scope="row" title={(field.name == "caps").then_some(t.caps_hint)}>
                    { field_label(props.lang, field.name) }
                </th>
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
    });

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
