use std::rc::Rc;

use damda_protocol::Comparison;
use yew::prelude::*;

use crate::components::compare_chart::accelerator_name;
use crate::i18n::Lang;

#[derive(PartialEq, Properties)]
pub struct StackDiagramProps {
    pub lang: Lang,
    /// The last comparison: its kernels and accelerator fill the boxes.
    pub comparison: Option<Rc<Comparison>>,
}

/// One layer of a stack: what it is, what fills it here, a `kernel` tag on
/// the layers that hold one (count them: two against one), and a note.
fn layer(
    class: &'static str,
    role: &'static str,
    what: String,
    kernel: Option<&str>,
    note: Option<&str>,
) -> Html {
    html! {
        <li class={classes!("stk-layer", class, kernel.is_some().then_some("is-kernel"))}
            data-layer={class.trim_start_matches("is-")}>
            <span class="stk-role">
                { role }
                if let Some(kernel) = kernel {
                    <span class="stk-kernel">{ kernel }</span>
                }
            </span>
            <span class="stk-what mono">{ what }</span>
            if let Some(note) = note {
                <span class="stk-note">{ note }</span>
            }
        </li>
    }
}

/// The two stacks side by side, hardware at the bottom: a VM carries a
/// hypervisor and a kernel of its own; boxes are processes on the host's.
#[function_component(StackDiagram)]
pub fn stack_diagram(props: &StackDiagramProps) -> Html {
    let t = props.lang.t();
    let c = props.comparison.as_deref();
    let linux = |kernel: Option<&String>| match kernel {
        Some(kernel) => format!("Linux {kernel}"),
        None => "Linux".to_owned(),
    };
    let host = linux(c.map(|c| &c.host_kernel));
    let guest = linux(c.map(|c| &c.guest_kernel));
    let hypervisor = match c {
        Some(c) => format!("qemu + {}", accelerator_name(c.accelerator)),
        None => format!("qemu + {}", t.stk_either),
    };
    let app = || layer("is-app", t.stk_app, "httpd".to_owned(), None, None);
    let libs = || layer("is-libs", t.stk_libs, "busybox".to_owned(), None, None);
    let hardware = || {
        layer(
            "is-hardware",
            t.stk_hardware,
            t.stk_hardware_what.to_owned(),
            None,
            None,
        )
    };

    html! {
        <section class="card" id="stack-diagram" aria-labelledby="stack-title">
            <header class="card-head">
                <h2 id="stack-title">{ t.stk_title }</h2>
            </header>
            <p class="card-caption">{ t.stk_caption }</p>
            <div class="stacks">
                <figure id="stack-vm" class="stack is-vm">
                    <figcaption class="stk-head">{ t.stk_vm }</figcaption>
                    <ol class="stk-layers" role="list">
                        { app() }
                        { libs() }
                        { layer("is-guest", t.stk_guest_os, guest, Some(t.stk_kernel), None) }
                        { layer("is-hypervisor", t.stk_hypervisor, hypervisor, None, None) }
                        { layer("is-host", t.stk_host_os, host.clone(), Some(t.stk_kernel), None) }
                        { hardware() }
                    </ol>
                </figure>
                <figure id="stack-container" class="stack is-container">
                    <figcaption class="stk-head">{ t.stk_container }</figcaption>
                    <ol class="stk-layers" role="list">
                        <li class="stk-layer is-box" data-layer="box">
                            <span class="stk-role">{ t.stk_box }</span>
                            <ol class="stk-layers" role="list">
                                { app() }
                                { libs() }
                            </ol>
                        </li>
                        { layer("is-engine", t.stk_engine, "damda".to_owned(), None, None) }
                        { layer("is-host", t.stk_host_os, host, Some(t.stk_kernel), Some(t.stk_shared)) }
                        { hardware() }
                    </ol>
                </figure>
            </div>
        </section>
    }
}
