use damda_protocol::RebuildNote as Note;
use yew::prelude::*;

use crate::hooks::use_errno::ErrnoTable;
use crate::i18n::Lang;

#[derive(PartialEq, Properties)]
pub struct RebuildNoteProps {
    pub lang: Lang,
    pub note: Note,
    pub errno: ErrnoTable,
}

/// Why the box stands in another order than the lesson's: the step the
/// kernel refused, its errno, and the order the box was rebuilt in.
#[function_component(RebuildNote)]
pub fn rebuild_note(props: &RebuildNoteProps) -> Html {
    let t = props.lang.t();
    let note = &props.note;
    let e = &note.refused;
    let plain = props.errno.get(&e.errno_name).cloned();
    html! {
        <section class="card card-note" id="rebuild-note" data-step={note.step.as_str()}
            data-errno={e.errno_name.clone()}>
            <header class="card-head">
                <h2>
                    <span class="ico" aria-hidden="true">{ "↻" }</span>{ t.rebuild_title }
                </h2>
            </header>
            <p>
                <strong>{ format!("{}: ", t.rebuild_refused) }</strong>
                <code>{ note.step.as_str() }</code>
            </p>
            <p class="error-syscall mono">
                { format!("{}: {} (errno {}) {}", e.syscall, e.errno_name, e.errno, e.message) }
            </p>
            if let Some(plain) = plain {
                <p class="error-plain"><strong>{ format!("{}: ", t.errno_plain) }</strong>{ plain }</p>
            }
            <p class="order">
                <strong>{ format!("{}: ", t.rebuild_order) }</strong>
                for (i, step) in note.order.iter().enumerate() {
                    if i > 0 {
                        <span class="order-arrow" aria-hidden="true">{ "→" }</span>
                    }
                    <code class={classes!("order-step", (*step == note.step).then_some("is-refused"))}>
                        { step.as_str() }
                    </code>
                }
            </p>
        </section>
    }
}
