//! The app layer: what `main` starts (`secretfs mount`, `exec`, `status`)
//! and the conversions from the command line's clap structs into the
//! options each layer owns. Options flow one way: this layer (with
//! `main.rs` and `mount`) is the only one that reads `crate::cli`; the
//! layers below take their own types (docs/DEVELOPMENT.md).

pub mod exec;
pub mod vault;
