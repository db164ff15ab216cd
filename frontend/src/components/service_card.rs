use damda_protocol::{shell_word, PortForward};
use yew::prelude::*;

use crate::components::command_line::CommandLine;
use crate::i18n::Lang;

#[derive(PartialEq, Properties)]
pub struct ServiceCardProps {
    pub lang: Lang,
    /// The `docker run` that does the same.
    pub docker: String,
    /// The image's Entrypoint and Cmd.
    pub command: Vec<String>,
    /// The service's pid on the host.
    pub pid: u32,
    /// The box's forwarded port, when it has one.
    pub forward: Option<PortForward>,
}

/// Whether this page was loaded from the machine the server runs on: only
/// then does 127.0.0.1 in a link reach the server's proxy.
fn on_loopback() -> bool {
    let host = gloo::utils::window()
        .location()
        .hostname()
        .unwrap_or_default();
    matches!(host.as_str(), "127.0.0.1" | "localhost" | "[::1]" | "::1")
}

/// The `run` step: the image's command running in the box, and the way in
/// to it through the forwarded port.
#[function_component(ServiceCard)]
pub fn service_card(props: &ServiceCardProps) -> Html {
    let lang = props.lang;
    let t = lang.t();
    let command: Vec<String> = props.command.iter().map(|a| shell_word(a)).collect();
    let command = command.join(" ");
    let url = props
        .forward
        .as_ref()
        .map(|f| format!("http://127.0.0.1:{}/", f.host_port));
    html! {
        <section class="card" id="service-card" aria-labelledby="service-card-title"
            data-pid={props.pid.to_string()}
            data-port={props.forward.as_ref().map(|f| f.host_port.to_string())}>
            <header class="card-head">
                <h2 id="service-card-title">
                    <span class="ico service-dot" aria-hidden="true">{ "●" }</span>{ t.svc_title }
                </h2>
            </header>
            <p class="card-caption">{ t.svc_caption }</p>
            <dl class="service-facts">
                <div>
                    <dt>{ t.svc_command }</dt>
                    <dd><code class="service-command">{ &command }</code></dd>
                </div>
                <div>
                    <dt>{ t.svc_pid }</dt>
                    <dd><code class="service-pid">{ props.pid.to_string() }</code></dd>
                </div>
                <div>
                    <dt>{ t.svc_port }</dt>
                    <dd>
                        if let Some(f) = &props.forward {
                            <code>{ format!("{} → {}:{}", f.proxy, f.box_address, f.box_port) }</code>
                        } else {
                            <span class="muted">{ t.svc_no_forward }</span>
                        }
                    </dd>
                </div>
            </dl>
            if let Some(url) = url {
                if on_loopback() {
                    <p class="service-open">
                        <a id="service-link" class="btn btn-primary" href={url.clone()}
                            target="_blank" rel="noopener noreferrer">
                            <span class="ico" aria-hidden="true">{ "↗" }</span>
                            { t.svc_open }
                            <span class="service-url mono">{ url }</span>
                            <span class="muted-inverse">{ format!("({})", t.svc_new_tab) }</span>
                        </a>
                    </p>
                } else {
                    <p class="img-note">{ t.svc_remote }</p>
                    <CommandLine {lang} text={format!("curl {url}")} />
                }
            }
            <h3 class="sub-head">{ t.svc_docker }</h3>
            <CommandLine {lang} text={props.docker.clone()} />
        </section>
    }
}
