//! The subcommands besides `serve`.

pub mod doctor;
pub mod sweep;
pub mod walk;
