//! Group commit: many producers' appends share one write and one fdatasync.
//!
//! Two threads per log. The writer drains every pending append (up to [`MAX_GROUP_BYTES`]),
//! writes them with one vectored write and hands the group to the syncer. The syncer drains every
//! group handed to it, calls [`PartitionLog::sync`] once, and acknowledges them all. While the
//! syncer waits on fdatasync the writer is already writing the next group, so the disk sees
//! back-to-back writes and syncs. With `fsync = interval(ms)` or `never` appends are acknowledged
//! after the write, and a timer thread (interval) syncs in the background.

use std::ops::Range;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, oneshot, watch};

use super::batch::ValidatedBatch;
use super::config::FsyncPolicy;
use super::error::{LogError, Result};
use super::partition::PartitionLog;

/// Most bytes the writer puts into one group (one write, one sync).
pub const MAX_GROUP_BYTES: usize = 4 << 20;
/// Appends that may wait for the writer before `append` applies backpressure.
const QUEUE_DEPTH: usize = 4096;

/// Reply channel of one append.
type Reply = oneshot::Sender<Result<Range<u64>>>;

/// One append waiting for the writer.
struct Pending {
    batch: ValidatedBatch,
    leader_epoch: i32,
    reply: Reply,
}

/// Written appends waiting for the syncer.
struct Written {
    replies: Vec<(Reply, Range<u64>)>,
    end: u64,
    /// Truncation epoch they were written in: if it moved, they may be gone.
    epoch: u64,
}

/// A queued append, waiting for its acknowledgement.
#[derive(Debug)]
pub struct AppendTicket {
    /// Resolves with the offsets once acknowledged.
    done: oneshot::Receiver<Result<Range<u64>>>,
    /// The partition directory (for the error if the writer goes away).
    dir: std::path::PathBuf,
}

impl AppendTicket {
    /// Waits for the acknowledgement: the offsets the batch got.
    pub async fn acknowledged(self) -> Result<Range<u64>> {
        match self.done.await {
            Ok(outcome) => outcome,
            Err(_) => Err(LogError::Closed { dir: self.dir }),
        }
    }
}

/// The asynchronous, group-committing front of a [`PartitionLog`].
#[derive(Debug)]
pub struct GroupCommit {
    /// The log written to.
    log: Arc<PartitionLog>,
    /// Queue to the writer thread (`None` once closed).
    queue: RwLock<Option<mpsc::Sender<Pending>>>,
    /// End offset of acknowledged appends (durable ones under `fsync = always`).
    acked: watch::Receiver<u64>,
    /// Writer, syncer and timer threads.
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Stops the interval timer.
    stop_timer: Mutex<Option<std_mpsc::Sender<()>>>,
}

impl GroupCommit {
    /// Starts the writer (and syncer or timer, per `policy`) threads for `log`.
    pub fn start(log: Arc<PartitionLog>, policy: FsyncPolicy) -> std::io::Result<Self> {
        let (queue, pending) = mpsc::channel(QUEUE_DEPTH);
        let (acked_tx, acked) = watch::channel(log.log_end_offset());
        let acked_tx = Arc::new(acked_tx);
        let mut threads = Vec::new();
        let mut stop_timer = None;
        let to_syncer = match policy {
            FsyncPolicy::Always => {
                let (tx, rx) = std_mpsc::channel();
                let (log, acked_tx) = (log.clone(), acked_tx.clone());
                threads.push(spawn("logbook-sync", move || {
                    syncer_loop(&log, rx, &acked_tx)
                })?);
                Some(tx)
            }
            FsyncPolicy::Interval { ms } => {
                let (tx, rx) = std_mpsc::channel();
                let log = log.clone();
                let every = Duration::from_millis(ms);
                threads.push(spawn("logbook-fsync-timer", move || {
                    timer_loop(&log, rx, every)
                })?);
                stop_timer = Some(tx);
                None
            }
            FsyncPolicy::Never => None,
        };
        {
            let log = log.clone();
            threads.push(spawn("logbook-write", move || {
                writer_loop(&log, pending, to_syncer, &acked_tx)
            })?);
        }
        Ok(GroupCommit {
            log,
            queue: RwLock::new(Some(queue)),
            acked,
            threads: Mutex::new(threads),
            stop_timer: Mutex::new(stop_timer),
        })
    }

    /// The log behind this writer.
    pub fn log(&self) -> &Arc<PartitionLog> {
        &self.log
    }

    /// Appends one batch and resolves once it is acknowledged (durable under `fsync = always`),
    /// with the offsets it was given.
    pub async fn append(&self, batch: ValidatedBatch, leader_epoch: i32) -> Result<Range<u64>> {
        self.submit(batch, leader_epoch).await?.acknowledged().await
    }

    /// Queues one batch and returns once it is queued (waiting only for queue space). Batches
    /// get offsets in the order they were queued, so a caller that submits one after another
    /// keeps its order in the log while waiting for many acknowledgements at once.
    pub async fn submit(&self, batch: ValidatedBatch, leader_epoch: i32) -> Result<AppendTicket> {
        let (reply, done) = oneshot::channel();
        let queue = self.queue.read().clone().ok_or_else(|| self.closed())?;
        queue
            .send(Pending {
                batch,
                leader_epoch,
                reply,
            })
            .await
            .map_err(|_| self.closed())?;
        Ok(AppendTicket {
            done,
            dir: self.log.dir().to_path_buf(),
        })
    }

    fn closed(&self) -> LogError {
        LogError::Closed {
            dir: self.log.dir().to_path_buf(),
        }
    }

    /// Watches the end offset of acknowledged appends (for consumers following the tail).
    pub fn acked_offsets(&self) -> watch::Receiver<u64> {
        self.acked.clone()
    }

    /// Stops accepting appends, finishes the queued ones, stops the threads and syncs.
    /// Later appends fail with `Closed`; closing twice is fine.
    pub async fn close(&self) -> Result<()> {
        drop(self.queue.write().take());
        drop(self.stop_timer.lock().take());
        let threads = std::mem::take(&mut *self.threads.lock());
        let joined =
            tokio::task::spawn_blocking(move || threads.into_iter().all(|t| t.join().is_ok()))
                .await;
        if !matches!(joined, Ok(true)) {
            return Err(LogError::Failed {
                dir: self.log.dir().to_path_buf(),
                reason: "a group-commit thread panicked".into(),
            });
        }
        self.log.sync().map(|_| ())
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name.to_string()).spawn(f)
}

fn writer_loop(
    log: &PartitionLog,
    mut pending: mpsc::Receiver<Pending>,
    to_syncer: Option<std_mpsc::Sender<Written>>,
    acked: &watch::Sender<u64>,
) {
    let mut group: Vec<Pending> = Vec::new();
    while let Some(first) = pending.blocking_recv() {
        let mut bytes = first.batch.len();
        group.push(first);
        while bytes < MAX_GROUP_BYTES {
            match pending.try_recv() {
                Ok(next) => {
                    bytes += next.batch.len();
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        // Appends with the same leader epoch go in one write.
        while !group.is_empty() {
            let epoch = group[0].leader_epoch;
            let run = group
                .iter()
                .position(|p| p.leader_epoch != epoch)
                .unwrap_or(group.len());
            let rest = group.split_off(run);
            let (mut batches, replies): (Vec<_>, Vec<_>) =
                group.drain(..).map(|p| (p.batch, p.reply)).unzip();
            group = rest;
            match log.append_in_epoch(&mut batches, epoch) {
                Ok((range, truncation_epoch)) => {
                    let replies = replies
                        .into_iter()
                        .zip(&batches)
                        .map(|(r, b)| (r, b.header().base_offset..b.header().next_offset()))
                        .collect();
                    let written = Written {
                        replies,
                        end: range.end,
                        epoch: truncation_epoch,
                    };
                    match &to_syncer {
                        Some(syncer) => {
                            if let Err(std_mpsc::SendError(written)) = syncer.send(written) {
                                acknowledge(written, Err(closed(log)), acked);
                            }
                        }
                        None => acknowledge(written, Ok(()), acked),
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }
}

fn closed(log: &PartitionLog) -> LogError {
    LogError::Closed {
        dir: log.dir().to_path_buf(),
    }
}

fn acknowledge(written: Written, outcome: Result<()>, acked: &watch::Sender<u64>) {
    if outcome.is_ok() {
        // Under `fsync = always` the syncer only calls this once the group is durable.
        acked.send_if_modified(|end| {
            let moved = written.end > *end;
            *end = (*end).max(written.end);
            moved
        });
    }
    for (reply, range) in written.replies {
        // A dropped receiver means the producer went away; nothing to do.
        let _ = reply.send(outcome.clone().map(|_| range));
    }
}

/// The outcome of a sync for one written group: durable, or truncated away in between.
fn synced(log: &PartitionLog, group: &Written, sync: &Result<u64>) -> Result<()> {
    match sync {
        Err(e) => Err(e.clone()),
        Ok(durable) if *durable >= group.end && log.truncation_epoch() == group.epoch => Ok(()),
        Ok(_) => Err(LogError::Truncated {
            start: group.replies.first().map_or(group.end, |(_, r)| r.start),
            end: group.end,
        }),
    }
}

fn syncer_loop(
    log: &PartitionLog,
    written: std_mpsc::Receiver<Written>,
    acked: &watch::Sender<u64>,
) {
    while let Ok(first) = written.recv() {
        let mut groups = vec![first];
        groups.extend(written.try_iter());
        let sync = log.sync();
        for group in groups {
            let outcome = synced(log, &group, &sync);
            acknowledge(group, outcome, acked);
        }
    }
}

fn timer_loop(log: &PartitionLog, stop: std_mpsc::Receiver<()>, every: Duration) {
    while let Err(std_mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(every) {
        if let Err(error) = log.sync() {
            tracing::error!(dir = %log.dir().display(), %error, "background fsync failed");
        }
    }
}
