//! Property test: random sequences of append / sync / read / roll / reopen (clean and unclean) /
//! truncate / delete_before on a real `PartitionLog` agree with a simple in-memory model.

mod common;

use bytes::Bytes;
use logbook::log::{LogError, PartitionLog, split_batches};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Append batches; each inner vec holds the value lengths of one batch's records.
    Append(Vec<Vec<u16>>),
    Sync,
    /// Read at a position chosen by `at` in [start-2, end+2] with a byte budget.
    Read {
        at: u16,
        max_bytes: u16,
    },
    Roll,
    Reopen {
        clean: bool,
    },
    /// truncate_from(base of a batch picked by `pick`).
    TruncateAtBatch(u16),
    /// truncate_after(last offset of a picked batch).
    TruncateAfterBatch(u16),
    /// truncate_from(an offset inside a readable multi-record batch): must be refused.
    TruncateInsideBatch(u16),
    /// delete_before(a position chosen in [start, end+1]).
    DeleteBefore(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => prop::collection::vec(prop::collection::vec(0u16..600, 1..5), 1..4).prop_map(Op::Append),
        1 => Just(Op::Sync),
        5 => (any::<u16>(), 1u16..6000).prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
        1 => Just(Op::Roll),
        2 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
        1 => any::<u16>().prop_map(Op::TruncateAtBatch),
        1 => any::<u16>().prop_map(Op::TruncateAfterBatch),
        1 => any::<u16>().prop_map(Op::TruncateInsideBatch),
        1 => any::<u16>().prop_map(Op::DeleteBefore),
    ]
}

/// A batch as the model remembers it.
#[derive(Debug, Clone)]
struct ModelBatch {
    base: u64,
    values: Vec<Bytes>,
}

impl ModelBatch {
    fn next(&self) -> u64 {
        self.base + self.values.len() as u64
    }
}

#[derive(Debug, Default)]
struct Model {
    batches: Vec<ModelBatch>,
    start: u64,
    end: u64,
    /// Makes every record's value unique.
    counter: u64,
}

impl Model {
    fn pick(&self, n: u16) -> Option<&ModelBatch> {
        if self.batches.is_empty() {
            None
        } else {
            Some(&self.batches[n as usize % self.batches.len()])
        }
    }

    fn truncate_from(&mut self, offset: u64) {
        self.batches.retain(|b| b.base < offset);
        self.end = self
            .batches
            .last()
            .map_or(offset, ModelBatch::next)
            .min(offset);
        if self.end < self.start {
            self.start = self.end;
        }
    }
}

fn value(counter: u64, len: u16) -> Bytes {
    let mut v = format!("{counter}:").into_bytes();
    v.extend((0..len).map(|i| (counter as u8).wrapping_mul(31).wrapping_add(i as u8)));
    Bytes::from(v)
}

fn check_read(log: &PartitionLog, model: &Model, offset: u64, max_bytes: usize) {
    let result = log.read(offset, max_bytes);
    if offset < model.start || offset > model.end {
        match result {
            Err(LogError::OffsetOutOfRange {
                requested,
                log_start_offset,
                log_end_offset,
            }) => {
                assert_eq!(
                    (requested, log_start_offset, log_end_offset),
                    (offset, model.start, model.end)
                );
            }
            other => panic!(
                "read at {offset} outside {}..{}: {other:?}",
                model.start, model.end
            ),
        }
        return;
    }
    let read = result.expect("read in range");
    assert_eq!(
        (read.log_start_offset, read.log_end_offset),
        (model.start, model.end)
    );
    if offset == model.end {
        assert!(read.batches.is_empty());
        assert_eq!(read.next_offset, offset);
        return;
    }
    let first = model
        .batches
        .iter()
        .position(|b| b.base <= offset && offset < b.next())
        .expect("model has a batch containing the offset");
    let got: Vec<_> = split_batches(read.batches.clone())
        .collect::<Result<_, _>>()
        .expect("returned batches are valid");
    assert!(
        !got.is_empty(),
        "a read below the end returns at least one batch"
    );
    if got.len() > 1 {
        assert!(
            read.batches.len() <= max_bytes,
            "budget exceeded with several batches"
        );
    }
    for (i, stored) in got.iter().enumerate() {
        let want = &model.batches[first + i];
        assert_eq!(stored.header.base_offset, want.base);
        let values: Vec<Bytes> = stored
            .records()
            .expect("records")
            .map(|r| r.expect("record").value.expect("value"))
            .collect();
        assert_eq!(values, want.values, "batch at {}", want.base);
    }
    assert_eq!(
        read.next_offset,
        model.batches[first + got.len() - 1].next()
    );
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let config = common::small_config();
    let mut log = Some(PartitionLog::open(dir.path(), config.clone()).unwrap());
    let mut model = Model::default();
    for op in ops {
        let l = log.as_ref().unwrap();
        match op {
            Op::Append(batches) => {
                let mut validated = Vec::new();
                let mut expected = Vec::new();
                for lens in batches {
                    let values: Vec<Bytes> = lens
                        .iter()
                        .map(|len| {
                            model.counter += 1;
                            value(model.counter, *len)
                        })
                        .collect();
                    let records: Vec<_> = values
                        .iter()
                        .enumerate()
                        .map(|(i, v)| {
                            common::record(&format!("k{}", i % 3), v, model.counter as i64)
                        })
                        .collect();
                    validated.push(common::batch(&records));
                    expected.push(values);
                }
                let range = l.append(&mut validated, 3).unwrap();
                assert_eq!(range.start, model.end);
                for values in expected {
                    let base = model.end;
                    model.end += values.len() as u64;
                    model.batches.push(ModelBatch { base, values });
                }
                assert_eq!(range.end, model.end);
            }
            Op::Sync => {
                assert_eq!(l.sync().unwrap(), model.end);
                assert_eq!(l.durable_offset(), model.end);
            }
            Op::Read { at, max_bytes } => {
                let lo = model.start.saturating_sub(2);
                let span = model.end + 2 - lo + 1;
                check_read(l, &model, lo + at as u64 % span, max_bytes as usize);
            }
            Op::Roll => {
                let before = l.segments().unwrap().len();
                let had_data = l.segments().unwrap().last().unwrap().size_bytes > 0;
                l.roll().unwrap();
                assert_eq!(l.segments().unwrap().len(), before + usize::from(had_data));
            }
            Op::Reopen { clean } => {
                let old = log.take().unwrap();
                if clean {
                    old.close().unwrap();
                }
                drop(old);
                log = Some(PartitionLog::open(dir.path(), config.clone()).unwrap());
            }
            Op::TruncateAtBatch(pick) => {
                if let Some(b) = model.pick(pick).cloned() {
                    l.truncate_from(b.base).unwrap();
                    model.truncate_from(b.base);
                }
            }
            Op::TruncateAfterBatch(pick) => {
                if let Some(b) = model.pick(pick).cloned() {
                    l.truncate_after(b.next() - 1).unwrap();
                    model.truncate_from(b.next());
                }
            }
            Op::TruncateInsideBatch(pick) => {
                // Only batches that still hold readable offsets exist for sure on disk.
                let multi: Vec<_> = model
                    .batches
                    .iter()
                    .filter(|b| b.values.len() > 1 && b.next() > model.start)
                    .collect();
                if !multi.is_empty() {
                    let b = multi[pick as usize % multi.len()];
                    match l.truncate_from(b.base + 1) {
                        Err(LogError::NotBatchBoundary {
                            offset,
                            batch_base_offset,
                            batch_last_offset,
                        }) => assert_eq!(
                            (offset, batch_base_offset, batch_last_offset),
                            (b.base + 1, b.base, b.next() - 1)
                        ),
                        other => panic!("truncating inside a batch: {other:?}"),
                    }
                }
            }
            Op::DeleteBefore(at) => {
                let offset = model.start + at as u64 % (model.end - model.start + 2);
                let result = l.delete_before(offset);
                if offset > model.end {
                    assert!(
                        matches!(result, Err(LogError::OffsetOutOfRange { .. })),
                        "{result:?}"
                    );
                } else {
                    result.unwrap();
                    model.start = model.start.max(offset);
                }
            }
        }
        let l = log.as_ref().unwrap();
        assert_eq!(
            (l.log_start_offset(), l.log_end_offset()),
            (model.start, model.end),
            "offsets after an operation"
        );
    }
    // Finally everything readable matches the model, record by record.
    let l = log.as_ref().unwrap();
    let got: Vec<(u64, Bytes)> = common::read_all(l)
        .into_iter()
        .map(|r| (r.offset, r.value.unwrap()))
        .collect();
    let want: Vec<(u64, Bytes)> = model
        .batches
        .iter()
        .flat_map(|b| {
            b.values
                .iter()
                .enumerate()
                .map(move |(i, v)| (b.base + i as u64, v.clone()))
        })
        .filter(|(o, _)| *o >= model.start)
        .collect();
    assert_eq!(got, want);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn partition_log_agrees_with_model(ops in prop::collection::vec(op(), 1..60)) {
        run(ops);
    }
}
