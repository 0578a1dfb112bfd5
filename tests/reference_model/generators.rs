//! Random cases: proptest strategies for operations, and the runner that
//! takes its seed and size from the environment (see main.rs).

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestError, TestRunner};
use serde_json::Value;

use crate::harness::run_case;
use crate::ops::{Closes, Op, WriteCall, Writer};
use crate::reference::*;

pub(crate) fn any_of(names: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
    proptest::sample::select(names)
}

/// A directory: mostly one, so that operations meet each other often.
pub(crate) fn dir() -> impl Strategy<Value = &'static str> {
    prop_oneof![2 => Just(DIRS[0]), 3 => any_of(DIRS)]
}

pub(crate) fn file_name() -> impl Strategy<Value = &'static str> {
    prop_oneof![3 => any_of(KEYS), 1 => any_of(SCRATCH)]
}

pub(crate) fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => "[a-z]{0,6}".prop_map(Value::String),
        1 => (0u32..10_000).prop_map(Value::from),
    ]
}

pub(crate) fn write_call() -> impl Strategy<Value = WriteCall> {
    prop_oneof![
        8 => (any::<u8>(), "[a-z0-9]{0,5}").prop_map(|(offset_pick, s)| WriteCall {
            offset_pick,
            bytes: s.into_bytes(),
        }),
        1 => any::<u8>().prop_map(|offset_pick| WriteCall {
            offset_pick,
            bytes: vec![0xff, 0xfe],
        }),
    ]
}

pub(crate) fn closes() -> impl Strategy<Value = Closes> {
    prop_oneof![
        Just(Closes::BeforeRm),
        Just(Closes::AfterRm),
        Just(Closes::AfterRmdir)
    ]
}

pub(crate) fn writer() -> impl Strategy<Value = Writer> {
    (any::<bool>(), proptest::collection::vec(write_call(), 0..3))
        .prop_map(|(truncate, writes)| Writer { truncate, writes })
}

pub(crate) fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (dir(), file_name(), any::<bool>(), proptest::collection::vec(write_call(), 0..3))
            .prop_map(|(dir, name, truncate, writes)| Op::WriteFile { dir, name, truncate, writes }),
        2 => (dir(), any_of(KEYS), writer(), writer(), any::<bool>())
            .prop_map(|(dir, name, first, second, late_release)| Op::TwoWriters { dir, name, first, second, late_release }),
        1 => (dir(), any_of(KEYS), proptest::collection::vec(write_call(), 0..3))
            .prop_map(|(dir, name, writes)| Op::ClosedTruncationThenWrite { dir, name, writes }),
        2 => (dir(), any_of(&["K", "L", "K~", ".K.swp", "sedAb12Cd"]))
            .prop_map(|(dir, name)| Op::Unlink { dir, name }),
        2 => (dir(), any_of(TEMPS), proptest::collection::vec(write_call(), 0..3),
              prop_oneof![4 => Just(None), 1 => dir().prop_map(Some)], any_of(KEYS), any::<bool>())
            .prop_map(|(dir, temp, writes, to_dir, to_name, no_replace)| Op::TempThenRename {
                dir,
                temp,
                writes,
                to_dir: to_dir.unwrap_or(dir),
                to_name,
                no_replace,
            }),
        1 => (dir(), any_of(KEYS), proptest::collection::vec(write_call(), 0..3))
            .prop_map(|(dir, name, writes)| Op::Replace { dir, name, writes }),
        // Mostly within one directory, as editors and tools rename.
        4 => (dir(), file_name(), prop_oneof![4 => Just(None), 1 => dir().prop_map(Some)], file_name(), any::<bool>())
            .prop_map(|(dir, name, to_dir, to_name, no_replace)| Op::Rename {
                dir,
                name,
                to_dir: to_dir.unwrap_or(dir),
                to_name,
                no_replace,
            }),
        1 => any_of(DIRS).prop_map(|path| Op::Mkdir { path }),
        1 => any_of(DIRS).prop_map(|path| Op::Rmdir { path }),
        2 => (dir(), proptest::collection::btree_map(any_of(KEYS), value(), 0..3))
            .prop_map(|(secret, data)| Op::ExternalPut { secret, data }),
        1 => dir().prop_map(|secret| Op::ExternalDelete { secret }),
        1 => dir().prop_map(|secret| Op::ExternalUndelete { secret }),
        1 => (0u64..45).prop_map(|secs| Op::Advance { secs }),
        1 => Just(Op::KernelForgets),
        2 => (dir(), any_of(KEYS), writer(), writer(), closes(), any::<bool>())
            .prop_map(|(dir, name, first, second, closes, second_closes_first)| Op::WritersAcrossRemoval {
                dir,
                name,
                first,
                second,
                closes,
                second_closes_first,
            }),
        1 => (dir(), any_of(KEYS), proptest::collection::vec(write_call(), 1..3))
            .prop_map(|(dir, name, writes)| Op::FailedWrite { dir, name, writes }),
        1 => (dir(), any_of(KEYS)).prop_map(|(dir, name)| Op::FailedUnlink { dir, name }),
        1 => (dir(), any_of(KEYS), any_of(KEYS))
            .prop_map(|(dir, name, to_name)| Op::FailedRename { dir, name, to_name }),
        1 => any_of(DIRS).prop_map(|path| Op::FailedRmdir { path }),
        1 => (dir(), any_of(KEYS), any::<bool>())
            .prop_map(|(dir, name, remove)| Op::Refused { dir, name, remove }),
    ]
}

pub(crate) fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

pub(crate) fn run_model(kv: Kv) {
    let seed = std::env::var("SECRETFS_MODEL_SEED")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let cases = env_number("SECRETFS_MODEL_CASES", 256);
    // Each write to the store file encrypts and replaces it: an eighth as
    // many cases keeps the run's time near the memory stores' (about 7 s
    // on a CI machine; run it longer with SECRETFS_MODEL_CASES).
    let cases = if kv == Kv::File {
        cases.div_ceil(8)
    } else {
        cases
    };
    let steps = env_number("SECRETFS_MODEL_STEPS", 40) as usize;
    let config = Config {
        cases: u32::try_from(cases).unwrap_or(u32::MAX),
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&proptest::collection::vec(op(), 1..=steps), |ops| {
        run_case(kv, &ops)
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, ops)) => panic!(
            "the core departs from the model ({kv:?}): {reason}\n\
             smallest failing sequence: {ops:#?}\n\
             repeat with SECRETFS_MODEL_SEED={seed}"
        ),
        Err(e) => panic!("model run aborted ({kv:?}): {e}; seed {seed}"),
    }
}
