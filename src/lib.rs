//! secretfs: HashiCorp Vault / OpenBao KV secrets as files, over FUSE.
//!
//! Layers (see docs/ARCHITECTURE.md): `cli` → the app layer (`app`,
//! `mount`), which converts the command line into each layer's options →
//! `fuse` (thin adapter) → `fs` (the FUSE-free core: inodes, cache,
//! handles) → `store` (the `SecretStore` trait, with `vault` and `memory`
//! implementations). Options flow one way: see docs/DEVELOPMENT.md.

pub mod access;
pub mod app;
pub mod audit;
pub mod cli;
pub mod daemon;
pub mod error;
pub mod exec;
pub mod fs;
pub mod fuse;
pub mod hardening;
pub mod hook;
pub mod metrics;
pub mod mount;
pub mod mounted_over;
pub mod start_error;
pub mod status;
pub mod store;
pub mod trusted;
pub mod zeroing_alloc;
