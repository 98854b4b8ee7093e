//! Property test: random sequences of append / read / truncate / roll /
//! retention / close / crash / reopen agree with a `Vec` model of the log.
//! proptest prints the failing sequence and persists its seed, so every
//! failure replays (`PROPTEST_CASES` raises the number of runs).

mod common;

use brook_record::{LeaderEpoch, Offset};
use brook_storage::{LogConfig, PartitionLog};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<Vec<u8>>),
    Read { from_fraction: f64, max_bytes: u64 },
    Truncate { fraction: f64 },
    Roll,
    Retention { keep_bytes: u64 },
    CloseAndReopen,
    CrashAndReopen,
}

fn op() -> impl Strategy<Value = Op> {
    let values = proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..60), 1..6);
    prop_oneof![
        6 => values.prop_map(Op::Append),
        3 => (0.0..1.0f64, 1u64..600).prop_map(|(from_fraction, max_bytes)| Op::Read { from_fraction, max_bytes }),
        1 => (0.0..1.0f64).prop_map(|fraction| Op::Truncate { fraction }),
        1 => Just(Op::Roll),
        1 => (200u64..3000).prop_map(|keep_bytes| Op::Retention { keep_bytes }),
        1 => Just(Op::CloseAndReopen),
        1 => Just(Op::CrashAndReopen),
    ]
}

/// The model: the batches the log should hold, as (base offset, values).
#[derive(Debug, Default)]
struct Model {
    log_start: u64,
    batches: Vec<(u64, Vec<Vec<u8>>)>,
}

impl Model {
    fn log_end(&self) -> u64 {
        self.batches.last().map_or(self.log_start, |(base, values)| base + values.len() as u64)
    }

    fn records_from(&self, from: u64) -> Vec<(u64, Vec<u8>)> {
        self.batches
            .iter()
            .flat_map(|(base, values)| values.iter().enumerate().map(move |(i, v)| (base + i as u64, v.clone())))
            .filter(|(offset, _)| *offset >= from)
            .collect()
    }
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 100,
        max_batch_bytes: 1024,
        retention_ms: None,
        ..LogConfig::default()
    }
}

fn check(log: &PartitionLog, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(log.log_start_offset(), Offset(model.log_start));
    prop_assert_eq!(log.log_end_offset(), Offset(model.log_end()));
    prop_assert_eq!(common::all_records(log), model.records_from(model.log_start));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: common::cases(64), ..ProptestConfig::default() })]

    #[test]
    fn log_agrees_with_a_vec_model(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut log = PartitionLog::open(dir.path(), config()).expect("open");
        let mut model = Model::default();
        let epoch = LeaderEpoch(1);
        for op in ops {
            match op {
                Op::Append(values) => {
                    let mut batch = common::batch(&values, common::now_ms());
                    let info = log.append(&mut batch, epoch).expect("append");
                    prop_assert_eq!(info.base_offset, Offset(model.log_end()));
                    prop_assert_eq!(info.last_offset, Offset(model.log_end() + values.len() as u64 - 1));
                    model.batches.push((model.log_end(), values));
                }
                Op::Read { from_fraction, max_bytes } => {
                    let span = model.log_end() - model.log_start;
                    let from = model.log_start + (span as f64 * from_fraction) as u64;
                    let got = common::read_all(&log.reader(), Offset(from), max_bytes);
                    prop_assert_eq!(got, model.records_from(from));
                }
                Op::Truncate { fraction } => {
                    let span = model.log_end() - model.log_start;
                    let to = model.log_start + (span as f64 * fraction) as u64;
                    let new_end = log.truncate_to(Offset(to)).expect("truncate");
                    if to <= model.log_start {
                        model.batches.clear();
                        model.log_start = to;
                    } else {
                        model.batches.retain(|(base, values)| base + values.len() as u64 - 1 < to);
                    }
                    prop_assert_eq!(new_end, Offset(model.log_end()));
                }
                Op::Roll => log.roll().expect("roll"),
                Op::Retention { keep_bytes } => {
                    let mut config = config();
                    config.retention_bytes = Some(keep_bytes);
                    log.set_config(config).expect("config");
                    let outcome = log.apply_retention(common::now_ms(), log.log_end_offset()).expect("retention");
                    log.set_config(self::config()).expect("config");
                    let start = outcome.log_start_offset.0;
                    prop_assert!(start >= model.log_start && start <= model.log_end());
                    prop_assert!(
                        start == model.log_end() && outcome.segments_deleted == 0
                            || model.batches.iter().any(|(base, _)| *base == start)
                            || start == model.log_start,
                        "the log start moves to a batch boundary"
                    );
                    // Which segments go is retention.rs's unit tests' job; here,
                    // that deleting them keeps the rest of the log intact.
                    prop_assert_eq!(outcome.segments_deleted > 0, outcome.bytes_deleted > 0);
                    model.batches.retain(|(base, _)| *base >= start);
                    model.log_start = start;
                }
                Op::CloseAndReopen => {
                    log.close().expect("close");
                    log = PartitionLog::open(dir.path(), config()).expect("reopen");
                    prop_assert!(log.truncations_on_open().is_empty());
                }
                Op::CrashAndReopen => {
                    drop(log);
                    log = PartitionLog::open(dir.path(), config()).expect("reopen after crash");
                    prop_assert!(log.truncations_on_open().is_empty(), "{:?}", log.truncations_on_open());
                }
            }
            check(&log, &model)?;
        }
    }
}
