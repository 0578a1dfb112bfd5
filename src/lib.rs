//! secretfs: HashiCorp Vault / OpenBao KV secrets as files, over FUSE.
//!
//! Layers (see docs/ARCHITECTURE.md): `cli` → `mount` → `fuse` (thin
//! adapter) → `fs` (the FUSE-free core: inodes, cache, handles) → `store`
//! (the `SecretStore` trait, with `vault` and `memory` implementations).

pub mod access;
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
