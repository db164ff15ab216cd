//! One component per thing the page shows.

pub mod busy_indicator;
pub mod cgroup_card;
pub mod commands_panel;
pub mod connection_status;
pub mod controls;
pub mod copy_button;
pub mod demo_panel;
pub mod error_banner;
pub mod header;
pub mod ipc_probe;
pub mod lesson_pane;
pub mod limits_form;
pub mod links_view;
pub mod namespace_diagram;
pub mod namespace_map;
pub mod network_drivers;
pub mod network_rules;
pub mod network_topology;
pub mod proc_files;
pub mod process_card;
pub mod process_tree;
pub mod rebuild_note;
pub mod stepper;
pub mod terminal;
pub mod usage_gauges;
