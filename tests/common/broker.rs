//! Runs the real `logbook` binary as a broker process for black-box tests.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use logbook::client::Client;

/// Path of the binary under test.
/// Access key of the S3 servers tests start.
pub const S3_KEY: &str = "logbook-test";
/// Its secret.
pub const S3_SECRET: &str = "logbook-test-secret";

pub fn logbook_bin() -> &'static str {
    env!("CARGO_BIN_EXE_logbook")
}

/// A broker child process listening on a free port.
pub struct BrokerProcess {
    child: Option<Child>,
    /// host:port it listens on.
    pub addr: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its stderr log.
    pub log_path: PathBuf,
    /// host:port of its admin HTTP server (`/metrics`, `/healthz`, `/readyz`).
    pub admin_addr: String,
}

impl BrokerProcess {
    /// Starts `logbook serve` on `data_dir` (port 0) with extra flags and waits for its
    /// readiness line.
    pub fn start(data_dir: &Path, extra: &[&str]) -> BrokerProcess {
        Self::start_in(None, "127.0.0.1:0", data_dir, extra)
    }

    /// Starts `logbook serve` listening on `listen`, inside network namespace `netns` if given.
    pub fn start_in(
        netns: Option<&str>,
        listen: &str,
        data_dir: &Path,
        extra: &[&str],
    ) -> BrokerProcess {
        let log_path = data_dir.with_extension("broker.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, logbook_bin()]);
                c
            }
            None => Command::new(logbook_bin()),
        };
        // A free admin port unless the test picks one (brokers run side by side).
        let admin: &[&str] = match extra.contains(&"--admin-addr") {
            true => &[],
            false => &["--admin-addr", "127.0.0.1:0"],
        };
        let mut child = command
            .args(["serve", "--listen-addr", listen, "--data-dir"])
            .arg(data_dir)
            .args(admin)
            .args(extra)
            .env_remove("LOGBOOK_CONFIG")
            // Credentials of the S3 servers tests start (through the standard AWS chain).
            .env("AWS_ACCESS_KEY_ID", S3_KEY)
            .env("AWS_SECRET_ACCESS_KEY", S3_SECRET)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let next_line = || {
            rx.recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| {
                    panic!(
                        "broker did not start; its log:\n{}",
                        std::fs::read_to_string(&log_path).unwrap_or_default()
                    )
                })
        };
        let line = next_line();
        let admin_addr = line
            .strip_prefix("logbook admin listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        let line = next_line();
        let addr = line
            .strip_prefix("logbook listening on ")
            .unwrap_or_else(|| panic!("unexpected second line {line:?}"))
            .to_string();
        BrokerProcess {
            child: Some(child),
            addr,
            data_dir: data_dir.to_path_buf(),
            log_path,
            admin_addr,
        }
    }

    /// A client connected to it.
    pub async fn client(&self) -> Client {
        Client::connect(&self.addr).await.unwrap()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILL.
    pub fn kill(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, then waits (up to 60 s) for the process to exit.
    pub fn terminate(mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        rx.recv_timeout(Duration::from_secs(60))
            .expect("broker did not exit within 60 s of SIGTERM")
            .unwrap()
    }

    /// Its stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs the CLI against `addr` with `args`, feeding `stdin`.
pub fn cli(addr: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(logbook_bin())
        .args(args)
        .env("LOGBOOK_SERVER", addr)
        .env("AWS_ACCESS_KEY_ID", S3_KEY)
        .env("AWS_SECRET_ACCESS_KEY", S3_SECRET)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Every record of `partition` from offset 0 up to the high watermark of the first fetch (control batches skipped).
pub async fn read_partition(
    client: &mut Client,
    topic: &str,
    partition: u32,
) -> Vec<logbook::log::Record> {
    let first = client
        .consume(topic, partition, 0, 1 << 20, Duration::ZERO)
        .await
        .unwrap();
    let high = first.high_watermark;
    let mut offset = first.next_offset;
    let mut out = first.records;
    while offset < high {
        let fetched = client
            .consume(topic, partition, offset, 1 << 20, Duration::ZERO)
            .await
            .unwrap();
        assert!(fetched.next_offset > offset, "reads must make progress");
        offset = fetched.next_offset;
        out.extend(fetched.records);
    }
    out.retain(|r| r.offset < high);
    out
}

/// `(offset, value as UTF-8)` of records.
pub fn offsets_and_values(records: &[logbook::log::Record]) -> Vec<(u64, String)> {
    records
        .iter()
        .map(|r| {
            let value = r.value.as_deref().unwrap_or_default();
            (r.offset, String::from_utf8(value.to_vec()).unwrap())
        })
        .collect()
}

/// Asserts that an acknowledgement covers `count` contiguous offsets.
pub fn assert_contiguous(ack: &logbook::proto::v1::ProduceResponse, count: u64) {
    assert!(
        ack.last_offset >= ack.base_offset && ack.last_offset - ack.base_offset + 1 == count,
        "an ack of {count} record(s) spans contiguous offsets: {ack:?}"
    );
}

/// Runs `logbook consume --format json` with `args` and parses one JSON object per line.
pub fn consume_json(addr: &str, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["consume", "--format", "json"];
    all.extend_from_slice(args);
    let out = cli(addr, &all, "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// GETs `path` from an admin port (`host:port`): (status code, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    std::io::Read::read_to_string(&mut stream, &mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of the series `series` (name and labels, exactly) in a metrics text.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}
