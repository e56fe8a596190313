//! Benchmark programs (`logbook bench ...`). They print numbers next to the machine's own limits
//! measured in the same run; they are never run as timed assertions in the test suite.

pub mod broker;
pub mod cluster;
pub mod log;
pub mod snapshot;

use std::time::Duration;

/// The value at quantile `q` (0..=1) of `samples` (sorted in place).
pub fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let i = ((samples.len() - 1) as f64 * q).round() as usize;
    samples[i]
}

/// Median of floats (sorted in place).
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
