//! Background maintenance: a thread that periodically runs retention and compaction on a log.

use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::compaction::MaintenanceReport;
use super::partition::{PartitionLog, now_ms};

/// Progress shared with the handle.
#[derive(Debug, Default)]
struct Progress {
    /// Completed passes.
    passes: u64,
    /// Result of the latest pass (errors as text).
    last: Option<Result<MaintenanceReport, String>>,
}

/// Handle of a running maintenance thread; stops it when dropped.
#[derive(Debug)]
pub struct Maintenance {
    /// Dropping this stops the thread.
    stop: Option<mpsc::Sender<()>>,
    /// The thread.
    thread: Option<JoinHandle<()>>,
    /// Pass counter and the latest report, with a condvar to wait on.
    progress: Arc<(Mutex<Progress>, Condvar)>,
}

impl Maintenance {
    /// Runs [`PartitionLog::run_maintenance`] on `log` every `every`.
    pub fn spawn(log: Arc<PartitionLog>, every: Duration) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let progress = Arc::new((Mutex::new(Progress::default()), Condvar::new()));
        let shared = progress.clone();
        let thread = std::thread::Builder::new()
            .name("logbook-maintenance".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    let outcome = log.run_maintenance(now_ms()).map_err(|e| {
                        tracing::error!(dir = %log.dir().display(), error = %e, "maintenance pass failed");
                        e.to_string()
                    });
                    let (lock, cv) = &*shared;
                    let mut p = lock.lock();
                    p.passes += 1;
                    p.last = Some(outcome);
                    cv.notify_all();
                }
            })?;
        Ok(Maintenance {
            stop: Some(stop),
            thread: Some(thread),
            progress,
        })
    }

    /// Waits until at least `passes` passes have completed or `timeout` passes; returns the
    /// latest report if the count was reached.
    pub fn wait_for_passes(
        &self,
        passes: u64,
        timeout: Duration,
    ) -> Option<Result<MaintenanceReport, String>> {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.progress;
        let mut p = lock.lock();
        while p.passes < passes {
            if cv.wait_until(&mut p, deadline).timed_out() {
                return None;
            }
        }
        p.last.clone()
    }

    /// Completed passes so far.
    pub fn passes(&self) -> u64 {
        self.progress.0.lock().passes
    }
}

impl Drop for Maintenance {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
