//! Every sequence the model (or a fuzzer driving real syscalls) found a
//! bug with, pinned as a plain test that runs on every `cargo test`,
//! whatever the random runs draw.
