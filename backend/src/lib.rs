//! damda (담다): builds a real container one kernel primitive at a time, and
//! serves a page that shows what each primitive changed.

pub mod cgroups;
pub mod cli;
pub mod compare;
pub mod engine;
pub mod helper;
pub mod image;
pub mod kernel;
pub mod ledger;
pub mod lessons;
pub mod lines;
pub mod mqueue;
pub mod netlink;
pub mod network;
pub mod observe;
pub mod paths;
pub mod rootfs;
pub mod server;
pub mod steps;
pub mod terminal;
pub mod vm;
