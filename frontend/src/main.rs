//! damda's page: Korean lessons next to live views of a container being built
//! one kernel primitive at a time. It renders what the server observed and
//! never invents state.

mod api;
mod app;
mod components;
mod dom;
mod hooks;
mod i18n;
mod state;

fn main() {
    yew::Renderer::<app::App>::new().render();
}
