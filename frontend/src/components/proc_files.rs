use damda_protocol::ProcFile;
use yew::prelude::*;

use crate::i18n::Lang;

#[derive(PartialEq, Properties)]
pub struct ProcFilesProps {
    pub lang: Lang,
    pub files: Vec<ProcFile>,
}

/// The same /proc paths read by the host and by the box.
#[function_component(ProcFiles)]
pub fn proc_files(props: &ProcFilesProps) -> Html {
    let t = props.lang.t();
    html! {
        <section class="card" id="proc-files" aria-labelledby="proc-files-title">
            <header class="card-head">
                <h2 id="proc-files-title">{ t.proc_files_title }</h2>
            </header>
            <p class="card-caption">{ t.proc_files_caption }</p>
            for file in props.files.iter() {
                <div class="proc-file" data-path={file.path.clone()}
                    data-differs={(file.host != file.boxed).to_string()}>
                    <h3 class="sub-head mono">
                        { &file.path }
                        if file.host != file.boxed {
                            <span class="badge badge-differs">
                                <span class="ico" aria-hidden="true">{ "≠" }</span>{ t.differs }
                            </span>
                        }
                    </h3>
                    <div class="two-up">
                        <div>
                            <p class="side-label">{ t.proc_files_host }</p>
                            <pre class="file-body" data-side="host">{ &file.host }</pre>
                        </div>
                        <div>
                            <p class="side-label">{ t.proc_files_box }</p>
                            <pre class={classes!("file-body", (file.host != file.boxed).then_some("is-different"))}
                                data-side="box">{ &file.boxed }</pre>
                        </div>
                    </div>
                </div>
            }
        </section>
    }
}
