//! Crash tests with real processes killed by SIGKILL.
//!
//! The test binary runs itself as a child (`log_crash child-append DIR RUN` or
//! `child-compact DIR RUN`). The child writes to a log and prints a line for every write once it
//! is acknowledged (fsync returned); the parent kills it with SIGKILL at a random moment, many
//! times over the same directory, and after each kill reopens the log and checks:
//! - every acknowledged record reads back intact at its offset;
//! - every record in the log is well-formed and self-consistent (values are derived from an id
//!   carried in a header), so nothing unacknowledged reads back as garbage;
//! - for compaction: the newest record of every key is at least as new as the newest
//!   acknowledged write of that key.
//!
//! `harness = false`: this file has its own `main`, which runs the scenarios below (a name
//! filter given on the command line selects among them).

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use bytes::Bytes;
use logbook::log::{
    CleanupPolicy, FsyncPolicy, GroupCommit, LogConfig, NewRecord, PartitionLog, Record,
    RecordHeader, now_ms,
};

/// Kills in the append scenario.
const APPEND_RUNS: u32 = 40;
/// Kills in the compaction scenario.
const COMPACT_RUNS: u32 = 40;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("child-append") => return child_append(Path::new(&args[2]), args[3].parse().unwrap()),
        Some("child-compact") => {
            return child_compact(Path::new(&args[2]), args[3].parse().unwrap());
        }
        _ => {}
    }
    let filter = args.iter().skip(1).find(|a| !a.starts_with('-')).cloned();
    let scenarios: [(&str, fn()); 2] = [
        (
            "sigkill_during_group_commit_appends_loses_no_acknowledged_record",
            crash_appends,
        ),
        ("sigkill_during_compaction_loses_nothing", crash_compaction),
    ];
    let mut ran = 0;
    for (name, scenario) in scenarios {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        println!("test {name} ...");
        let start = Instant::now();
        scenario();
        println!("test {name} ... ok ({:.1}s)", start.elapsed().as_secs_f64());
        ran += 1;
    }
    println!("\ntest result: ok. {ran} passed; 0 failed");
}

// ---------------------------------------------------------------------------------------------
// Self-verifying records: the value is a function of the id header.

fn id_hash(id: &str) -> u64 {
    // FNV-1a: stable across processes.
    id.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

fn value_for(id: &str) -> Bytes {
    let h = id_hash(id);
    let len = 16 + (h % 700) as usize;
    (0..len)
        .map(|j| (h.rotate_left((j % 64) as u32) as u8).wrapping_add(j as u8))
        .collect::<Vec<u8>>()
        .into()
}

fn header<'a>(record: &'a Record, name: &str) -> Option<&'a str> {
    record
        .headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value.as_deref())
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// Checks that `record` is exactly what some writer wrote: returns its id and whether it is a tombstone.
fn check_self_consistent(record: &Record) -> (String, bool) {
    let id = header(record, "id")
        .unwrap_or_else(|| panic!("record at {} has no id header: garbage", record.offset))
        .to_string();
    let tomb = header(record, "tomb").is_some();
    if tomb {
        assert!(
            record.value.is_none(),
            "tombstone {id} at {} has a value",
            record.offset
        );
    } else {
        assert_eq!(
            record.value.as_ref(),
            Some(&value_for(&id)),
            "value of {id} at offset {} does not match its id",
            record.offset
        );
    }
    (id, tomb)
}

fn new_record(key: String, id: &str, tomb: bool) -> NewRecord {
    let mut headers = vec![RecordHeader {
        key: "id".into(),
        value: Some(Bytes::from(id.to_string())),
    }];
    if tomb {
        headers.push(RecordHeader {
            key: "tomb".into(),
            value: Some(Bytes::from_static(b"1")),
        });
    }
    NewRecord {
        key: Some(Bytes::from(key)),
        value: (!tomb).then(|| value_for(id)),
        headers,
        timestamp_ms: now_ms(),
    }
}

// ---------------------------------------------------------------------------------------------
// Child processes.

fn append_config() -> LogConfig {
    LogConfig {
        segment_max_bytes: 64 * 1024,
        max_batch_bytes: 16 * 1024,
        index_max_bytes: 64 * 16,
        retention_ms: None,
        ..LogConfig::default()
    }
}

/// Four producers appending through group commit with fsync = always; prints
/// `acked RUN TASK SEQ START END` after each acknowledgement.
fn child_append(dir: &Path, run: u32) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let log = Arc::new(PartitionLog::open(dir, append_config()).unwrap());
    let writer = Arc::new(GroupCommit::start(log, FsyncPolicy::Always).unwrap());
    runtime.block_on(async move {
        let mut tasks = Vec::new();
        for task in 0..4u32 {
            let writer = writer.clone();
            tasks.push(tokio::spawn(async move {
                for seq in 0u64.. {
                    let records: Vec<NewRecord> = (0..1 + (seq % 4))
                        .map(|i| {
                            new_record(
                                format!("t{task}"),
                                &format!("{run}:{task}:{seq}:{i}"),
                                false,
                            )
                        })
                        .collect();
                    let range = writer.append(common::batch(&records), 1).await.unwrap();
                    println!("acked {run} {task} {seq} {} {}", range.start, range.end);
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
}

fn compact_config() -> LogConfig {
    LogConfig {
        segment_max_bytes: 16 * 1024,
        max_batch_bytes: 4 * 1024,
        cleanup_policy: CleanupPolicy::Compact,
        delete_retention_ms: 24 * 3600 * 1000,
        retention_ms: None,
        ..LogConfig::default()
    }
}

/// Overwrites 40 keys (one in ten writes a tombstone), syncing each write and printing
/// `acked KEY RUN N OFFSET`; after every 64 writes rolls and compacts, printing
/// `compact-start` and `compact-end`.
fn child_compact(dir: &Path, run: u32) {
    let log = PartitionLog::open(dir, compact_config()).unwrap();
    let mut n = 0u64;
    loop {
        for _ in 0..64 {
            n += 1;
            let key = format!("key{}", fastrand::u32(0..40));
            let id = format!("{run}:{n}");
            let tomb = fastrand::u32(0..10) == 0;
            let range = log
                .append_batch(common::batch(&[new_record(key.clone(), &id, tomb)]), 1)
                .unwrap();
            log.sync().unwrap();
            println!("acked {key} {run} {n} {}", range.start);
        }
        log.roll().unwrap();
        println!("compact-start");
        let report = log.compact(now_ms()).unwrap();
        println!(
            "compact-end {} {}",
            report.groups_rewritten, report.superseded_removed
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The parent side.

/// A child process and the lines it has printed so far.
struct Victim {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Victim {
    fn spawn(kind: &str, dir: &Path, run: u32) -> Victim {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([kind, dir.to_str().unwrap(), &run.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Victim {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (up to 60 s) until a printed line satisfies `done`.
    fn wait_for(&mut self, mut done: impl FnMut(&[String]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done(&self.seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(e) => panic!(
                    "child stopped making progress ({e:?}) after {:?}",
                    self.seen.last()
                ),
            }
        }
    }

    /// SIGKILLs the child and returns everything it printed.
    fn kill(mut self) -> Vec<String> {
        self.child.kill().unwrap(); // SIGKILL
        let status = self.child.wait().unwrap();
        assert!(!status.success(), "child should have died from the signal");
        // The reader thread ends at EOF; take what was printed before the kill.
        self.seen.extend(self.lines.iter());
        self.seen
    }
}

/// Kills a child at a random moment after `min_lines` lines of progress.
fn random_kill(victim: &mut Victim, min_lines: usize, max_delay_ms: u64) {
    victim.wait_for(|seen| seen.len() >= min_lines);
    std::thread::sleep(Duration::from_millis(fastrand::u64(0..=max_delay_ms)));
}

fn crash_appends() {
    let dir = tempfile::tempdir().unwrap();
    // offset -> (id of the record there)
    let mut acked: BTreeMap<u64, String> = BTreeMap::new();
    let (mut kills, mut truncations) = (0, 0);
    for run in 0..APPEND_RUNS {
        let mut victim = Victim::spawn("child-append", dir.path(), run);
        random_kill(&mut victim, 1 + fastrand::usize(0..50), 40);
        let lines = victim.kill();
        kills += 1;
        for line in lines {
            let f: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(f[0], "acked", "unexpected child output {line}");
            let (start, end): (u64, u64) = (f[4].parse().unwrap(), f[5].parse().unwrap());
            for (i, offset) in (start..end).enumerate() {
                let previous = acked.insert(offset, format!("{}:{}:{}:{i}", f[1], f[2], f[3]));
                assert!(previous.is_none(), "offset {offset} acknowledged twice");
            }
        }
        let log = PartitionLog::open(dir.path(), append_config()).unwrap();
        if log.recovery_report().tail.truncated_bytes > 0 {
            truncations += 1;
        }
        let records = common::read_all(&log);
        let mut by_offset = HashMap::new();
        for (expected_offset, record) in records.iter().enumerate() {
            assert_eq!(
                record.offset, expected_offset as u64,
                "offsets must be contiguous"
            );
            let (id, _) = check_self_consistent(record);
            by_offset.insert(record.offset, id);
        }
        for (offset, id) in &acked {
            assert_eq!(
                by_offset.get(offset),
                Some(id),
                "acknowledged record {id} at offset {offset} is missing after kill #{kills}"
            );
        }
        if run % 2 == 0 {
            log.close().unwrap();
        } // odd runs: dropped without close, so the next child opens an unclean log too
    }
    println!(
        "  {kills} kills, {} acknowledged records all intact, {truncations} reopen(s) truncated a tail",
        acked.len()
    );
    assert!(
        acked.len() > 100,
        "the children acknowledged too little to mean anything"
    );
}

fn crash_compaction() {
    let dir = tempfile::tempdir().unwrap();
    // key -> newest acknowledged (run, n)
    let mut newest: HashMap<String, (u32, u64)> = HashMap::new();
    let (mut mid_compaction, mut rolled_forward, mut compactions) = (0, 0, 0);
    let mut written = 0u64;
    for run in 0..COMPACT_RUNS {
        let mut victim = Victim::spawn("child-compact", dir.path(), run);
        if run % 2 == 0 {
            random_kill(&mut victim, 1 + fastrand::usize(0..200), 30);
        } else {
            // Aim at a compaction: wait for one to start, then kill a little later.
            victim.wait_for(|seen| seen.last().is_some_and(|l| l == "compact-start"));
            std::thread::sleep(Duration::from_micros(fastrand::u64(0..4000)));
        }
        let lines = victim.kill();
        if lines.last().is_some_and(|l| l == "compact-start") {
            mid_compaction += 1;
        }
        for line in &lines {
            let f: Vec<&str> = line.split_whitespace().collect();
            match f[0] {
                "acked" => {
                    written += 1;
                    let stamp = (f[2].parse().unwrap(), f[3].parse().unwrap());
                    let entry = newest.entry(f[1].to_string()).or_insert(stamp);
                    *entry = (*entry).max(stamp);
                }
                "compact-end" => compactions += 1,
                _ => {}
            }
        }

        let log = PartitionLog::open(dir.path(), compact_config()).unwrap();
        if log.recovery_report().compaction_rolled_forward {
            rolled_forward += 1;
        }
        let records = common::read_all(&log);
        let mut ids = HashSet::new();
        let mut latest: HashMap<String, (u32, u64)> = HashMap::new();
        let mut last_offset = None;
        for record in &records {
            assert!(last_offset < Some(record.offset), "offsets must increase");
            last_offset = Some(record.offset);
            let (id, _) = check_self_consistent(record);
            assert!(ids.insert(id.clone()), "record {id} appears twice");
            let (r, n) = id.split_once(':').unwrap();
            let key = String::from_utf8(record.key.clone().unwrap().to_vec()).unwrap();
            latest.insert(key, (r.parse().unwrap(), n.parse().unwrap()));
        }
        for (key, acked) in &newest {
            let found = latest.get(key);
            assert!(
                found.is_some_and(|f| f >= acked),
                "key {key}: newest acknowledged write {acked:?}, log has {found:?} (run {run})"
            );
        }
        drop(log);
    }
    // One last full compaction: superseded records really go away.
    let log = PartitionLog::open(dir.path(), compact_config()).unwrap();
    log.roll().unwrap();
    log.compact(now_ms()).unwrap();
    let remaining = common::read_all(&log).len() as u64;
    println!(
        "  {COMPACT_RUNS} kills ({mid_compaction} mid-compaction, {rolled_forward} interrupted swaps \
         rolled forward on open), {compactions} compactions finished, {written} writes acknowledged, \
         {remaining} records left after a final compaction"
    );
    assert!(mid_compaction >= 1, "no kill landed inside a compaction");
    assert!(
        remaining <= 40,
        "after rolling and compacting, one record per key (40 keys) may remain, found {remaining}"
    );
}
