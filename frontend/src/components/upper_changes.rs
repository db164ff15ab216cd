use std::rc::Rc;

use damda_protocol::{binary_size, LayerView, UpperEntry, UpperKind};
use yew::prelude::*;

use crate::components::command_line::CommandLine;
use crate::i18n::{layer_name, upper_count, upper_hides, Lang, Texts};
use crate::state::{UpperMark, UpperMarks};

/// Commands that change the root: one copies a file up, one whites one out.
const TRY: [&str; 2] = ["echo hi >> /etc/motd", "rm /www/index.html"];

#[derive(PartialEq, Properties)]
pub struct UpperChangesProps {
    pub lang: Lang,
    pub upper: Vec<UpperEntry>,
    /// The image's read-only layers, bottom first, to name the hidden one.
    pub layers: Vec<LayerView>,
    /// Entries new or changed since the list before.
    pub marks: Rc<UpperMarks>,
}

/// What an entry means in the merged view: its wire kind says what is in
/// the upper directory, and whether a lower layer has the path too tells a
/// copy-up from something new.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Change {
    CopyUp,
    NewFile,
    DirCopyUp,
    NewDir,
    Symlink,
    Whiteout,
    Opaque,
}

impl Change {
    fn of(entry: &UpperEntry) -> Change {
        let lower = entry.hides_layer.is_some();
        match entry.kind {
            UpperKind::File if lower => Change::CopyUp,
            UpperKind::File => Change::NewFile,
            UpperKind::Dir if lower => Change::DirCopyUp,
            UpperKind::Dir => Change::NewDir,
            UpperKind::Symlink => Change::Symlink,
            UpperKind::Whiteout => Change::Whiteout,
            UpperKind::OpaqueDir => Change::Opaque,
        }
    }

    /// `data-change`.
    fn id(self) -> &'static str {
        match self {
            Change::CopyUp => "copy_up",
            Change::NewFile => "new_file",
            Change::DirCopyUp => "dir_copy_up",
            Change::NewDir => "new_dir",
            Change::Symlink => "symlink",
            Change::Whiteout => "whiteout",
            Change::Opaque => "opaque_dir",
        }
    }

    fn icon(self) -> &'static str {
        match self {
            Change::CopyUp => "✎",
            Change::NewFile | Change::NewDir => "＋",
            Change::DirCopyUp => "↥",
            Change::Symlink => "↪",
            Change::Whiteout => "✕",
            Change::Opaque => "■",
        }
    }

    fn label(self, t: &Texts) -> &'static str {
        match self {
            Change::CopyUp => t.up_copy_up,
            Change::NewFile => t.up_new_file,
            Change::DirCopyUp => t.up_dir_copy_up,
            Change::NewDir => t.up_new_dir,
            Change::Symlink => t.up_symlink,
            Change::Whiteout => t.up_whiteout,
            Change::Opaque => t.up_opaque,
        }
    }

    /// Whether the size column says anything.
    fn sized(self) -> bool {
        matches!(self, Change::CopyUp | Change::NewFile | Change::Symlink)
    }
}

/// The box's upper directory: what it wrote, copied up or deleted, with
/// what changed since the last command marked.
#[function_component(UpperChanges)]
pub fn upper_changes(props: &UpperChangesProps) -> Html {
    let lang = props.lang;
    let t = lang.t();
    let rows = props.upper.iter().map(|entry| {
        let change = Change::of(entry);
        let mark = props.marks.get(&entry.path).copied();
        let hidden = entry.hides_layer.map(|index| {
            let created_by = props
                .layers
                .get(index)
                .map(|l| l.created_by.clone())
                .unwrap_or_else(|| layer_name(lang, index));
            html! { <span title={created_by}>{ upper_hides(lang, index) }</span> }
        });
        html! {
            <tr class={classes!("upper-entry", format!("change-{}", change.id()), mark.is_some().then_some("is-new"))}
                data-kind={entry.kind.as_str()}
                data-change={change.id()}
                data-path={entry.path.clone()}
                data-new={mark.map(|m| match m {
                    UpperMark::New => "new",
                    UpperMark::Grown => "changed",
                })}
                data-hides={entry.hides_layer.map(|i| i.to_string())}>
                <th scope="row" class="mono upper-path">
                    { &entry.path }
                    { match mark {
                        Some(UpperMark::New) => html! {
                            <span class="badge badge-changed">
                                <span class="ico" aria-hidden="true">{ "★" }</span>{ t.up_mark_new }
                            </span>
                        },
                        Some(UpperMark::Grown) => html! {
                            <span class="badge badge-changed">
                                <span class="ico" aria-hidden="true">{ "↻" }</span>{ t.up_mark_grown }
                            </span>
                        },
                        None => html! {},
                    } }
                </th>
                <td>
                    <span class="upper-kind">
                        <span class="ico" aria-hidden="true">{ change.icon() }</span>
                        { change.label(t) }
                    </span>
                </td>
                <td class="mono num">
                    if change.sized() { { binary_size(entry.size) } } else { { "—" } }
                </td>
                <td>
                    if let Some(hidden) = hidden { { hidden } } else { <span class="muted">{ "—" }</span> }
                </td>
            </tr>
        }
    });

    html! {
        <section class="card" id="upper-changes" aria-labelledby="upper-changes-title"
            data-count={props.upper.len().to_string()}>
            <header class="card-head">
                <h2 id="upper-changes-title">{ t.up_title }</h2>
                <p class="card-count">{ upper_count(lang, props.upper.len()) }</p>
            </header>
            <p class="card-caption">{ t.up_caption }</p>
            if props.upper.is_empty() {
                <div class="upper-empty" id="upper-empty">
                    <p class="empty">{ t.up_empty }</p>
                    for command in TRY {
                        <CommandLine {lang} text={command} />
                    }
                </div>
            } else {
                <div class="scroll-box upper-scroll">
                    <table class="mini-table upper-table">
                        <thead>
                            <tr>
                                <th scope="col">{ t.up_col_path }</th>
                                <th scope="col">{ t.up_col_kind }</th>
                                <th scope="col">{ t.up_col_size }</th>
                                <th scope="col">{ t.up_col_hides }</th>
                            </tr>
                        </thead>
                        <tbody>{ for rows }</tbody>
                    </table>
                </div>
            }
            <p class="img-note">{ t.up_legend }</p>
        </section>
    }
}
