use damda_protocol::{PortForward, StepId};
use yew::prelude::*;

use crate::components::command_line::CommandLine;
use crate::i18n::{Lang, Texts};

#[derive(PartialEq, Properties)]
pub struct NetworkDriversProps {
    pub lang: Lang,
    pub step: StepId,
    /// The box's forwarded port, for the `-p` of the bridge command.
    pub forward: Option<PortForward>,
}

/// The Docker network drivers a single host has, in the order damda goes
/// through them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Driver {
    Host,
    None,
    Bridge,
}

impl Driver {
    fn name(self) -> &'static str {
        match self {
            Driver::Host => "host",
            Driver::None => "none",
            Driver::Bridge => "bridge",
        }
    }

    fn what(self, t: &Texts) -> &'static str {
        match self {
            Driver::Host => t.net_drv_host,
            Driver::None => t.net_drv_none,
            Driver::Bridge => t.net_drv_bridge,
        }
    }

    /// What the box's network is at a step: the host's own namespace before
    /// `net`, a namespace with only `lo` until `network`, the bridge after.
    fn at(step: StepId) -> Driver {
        if step < StepId::Net {
            Driver::Host
        } else if step < StepId::Network {
            Driver::None
        } else {
            Driver::Bridge
        }
    }
}

/// `docker run --network none|host|bridge`, and which one the box is now.
#[function_component(NetworkDrivers)]
pub fn network_drivers(props: &NetworkDriversProps) -> Html {
    let lang = props.lang;
    let t = lang.t();
    let current = Driver::at(props.step);
    let (host_port, box_port) = props
        .forward
        .as_ref()
        .map_or((8080, 80), |f| (f.host_port, f.box_port));
    let command = |driver: Driver| {
        match driver {
        Driver::Host | Driver::None => {
            format!("docker run --rm --network {} busybox ip addr", driver.name())
        }
        Driver::Bridge => format!(
            "docker run --rm --network bridge -p {host_port}:{box_port} busybox httpd -f -p {box_port}"
        ),
    }
    };
    html! {
        <section class="card" id="network-drivers" aria-labelledby="network-drivers-title"
            data-current={current.name()}>
            <header class="card-head">
                <h2 id="network-drivers-title">{ t.net_drv_title }</h2>
            </header>
            <p class="card-caption">{ t.net_drv_caption }</p>
            <ul class="net-drivers">
                for driver in [Driver::None, Driver::Host, Driver::Bridge] {
                    <li class={classes!("net-driver", (driver == current).then_some("is-current"))}
                        data-driver={driver.name()}
                        aria-current={(driver == current).then_some("true")}>
                        <p class="net-driver-head">
                            <code class="net-driver-name">{ driver.name() }</code>
                            if driver == current {
                                <span class="badge badge-current">
                                    <span class="ico" aria-hidden="true">{ "◀" }</span>{ t.net_drv_current }
                                </span>
                            }
                        </p>
                        <p class="net-driver-what">{ driver.what(t) }</p>
                        <CommandLine {lang} text={command(driver)} />
                    </li>
                }
            </ul>
            <p class="net-overlay"><code>{ "overlay" }</code>{ " " }{ t.net_drv_overlay }</p>
        </section>
    }
}
