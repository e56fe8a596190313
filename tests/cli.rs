//! The CLI against a real broker: topics, produce from stdin and files, consume as text and
//! JSON, following the tail, and clear messages with distinct exit codes.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::broker::{BrokerProcess, cli, consume_json, logbook_bin};
use logbook::client::{exit_code, partition_for_key};

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn topic_produce_and_consume_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let addr = broker.addr.as_str();

    let out = cli(addr, &["topic", "create", "lines", "--partitions", "1"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "created topic lines with 1 partition(s)\n");

    let out = cli(
        addr,
        &["produce", "--topic", "lines"],
        "first\nsecond\nthird\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("produced 3 record(s) to lines"));

    let out = cli(
        addr,
        &["consume", "--topic", "lines", "--from-beginning"],
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "first\nsecond\nthird\n");
    // Where they are: consecutive offsets (one request), not necessarily from 0.
    let json = consume_json(addr, &["--topic", "lines", "--from-beginning"]);
    let offsets: Vec<u64> = json.iter().map(|r| r["offset"].as_u64().unwrap()).collect();
    let values: Vec<&str> = json.iter().map(|r| r["value"].as_str().unwrap()).collect();
    assert_eq!(values, ["first", "second", "third"]);
    assert_eq!(offsets, [offsets[0], offsets[0] + 1, offsets[0] + 2]);
    let second = offsets[1].to_string();

    let out = cli(
        addr,
        &[
            "consume",
            "--topic",
            "lines",
            "--partition",
            "0",
            "--offset",
            &second,
            "--max-records",
            "1",
        ],
        "",
    );
    assert_eq!(stdout(&out), "second\n");

    let out = cli(addr, &["topic", "list"], "");
    assert_eq!(stdout(&out), "lines\t1\n");
    let out = cli(addr, &["topic", "describe", "lines"], "");
    let text = stdout(&out);
    assert!(text.contains("partitions: 1"), "{text}");
    let row = format!("0\t0\t{}\t", offsets[2] + 1);
    assert!(text.lines().any(|l| l.starts_with(&row)), "{text}");

    let out = cli(addr, &["topic", "delete", "lines"], "");
    assert!(out.status.success());
    assert_eq!(cli(addr, &["topic", "list"], "").stdout, b"");
}

#[test]
fn keyed_lines_go_to_their_partitions_and_print_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let addr = broker.addr.as_str();
    assert!(
        cli(addr, &["topic", "create", "kv", "--partitions", "3"], "")
            .status
            .success()
    );
    let input: String = (0..30)
        .map(|i| format!("user{}=event{i}\n", i % 5))
        .collect();
    let file = dir.path().join("input.txt");
    std::fs::write(&file, &input).unwrap();
    let out = cli(
        addr,
        &[
            "produce",
            "--topic",
            "kv",
            "--key-separator",
            "=",
            "--file",
            file.to_str().unwrap(),
        ],
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));

    let out = cli(
        addr,
        &[
            "consume",
            "--topic",
            "kv",
            "--from-beginning",
            "--format",
            "json",
        ],
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let records: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 30);
    for r in &records {
        let key = r["key"].as_str().unwrap();
        assert_eq!(
            r["partition"].as_u64().unwrap() as u32,
            partition_for_key(key.as_bytes(), 3)
        );
        assert_eq!(r["topic"], "kv");
        assert!(r["value"].as_str().unwrap().starts_with("event"));
    }
    // Per key, records keep their order.
    let user0: Vec<&str> = records
        .iter()
        .filter(|r| r["key"] == "user0")
        .map(|r| r["value"].as_str().unwrap())
        .collect();
    assert_eq!(
        user0,
        [
            "event0", "event5", "event10", "event15", "event20", "event25"
        ]
    );
}

#[test]
fn consume_follow_prints_records_produced_later() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let addr = broker.addr.clone();
    assert!(
        cli(&addr, &["topic", "create", "live", "--partitions", "1"], "")
            .status
            .success()
    );
    assert!(
        cli(&addr, &["produce", "--topic", "live"], "one\n")
            .status
            .success()
    );
    let mut follower = Command::new(logbook_bin())
        .args(["consume", "--topic", "live", "--from-beginning", "--follow"])
        .env("LOGBOOK_SERVER", &addr)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(30)).unwrap(), "one");
    assert!(
        cli(&addr, &["produce", "--topic", "live"], "two\nthree\n")
            .status
            .success()
    );
    assert_eq!(rx.recv_timeout(Duration::from_secs(30)).unwrap(), "two");
    assert_eq!(rx.recv_timeout(Duration::from_secs(30)).unwrap(), "three");
    follower.kill().unwrap();
    follower.wait().unwrap();
}

#[test]
fn failures_have_clear_messages_and_exit_codes() {
    // Nothing listens on this port.
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = unused.local_addr().unwrap().to_string();
    drop(unused);
    let out = cli(&dead, &["topic", "list"], "");
    assert_eq!(out.status.code(), Some(exit_code::UNAVAILABLE));
    assert!(
        stderr(&out).contains("cannot connect to logbook at"),
        "{}",
        stderr(&out)
    );

    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let addr = broker.addr.as_str();
    let out = cli(
        addr,
        &["consume", "--topic", "ghost", "--from-beginning"],
        "",
    );
    assert_eq!(out.status.code(), Some(exit_code::NOT_FOUND));
    assert_eq!(stderr(&out).trim(), "error: topic \"ghost\" does not exist");
    let out = cli(addr, &["produce", "--topic", "ghost"], "x\n");
    assert_eq!(out.status.code(), Some(exit_code::NOT_FOUND));

    assert!(
        cli(addr, &["topic", "create", "t", "--partitions", "1"], "")
            .status
            .success()
    );
    let out = cli(
        addr,
        &[
            "consume",
            "--topic",
            "t",
            "--partition",
            "0",
            "--offset",
            "42",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(exit_code::OUT_OF_RANGE));
    assert!(
        stderr(&out).contains("offset 42 is out of range"),
        "{}",
        stderr(&out)
    );

    let out = cli(addr, &["topic", "create", "t"], "");
    assert_eq!(out.status.code(), Some(exit_code::ALREADY_EXISTS));
    let out = cli(addr, &["topic", "create", "no/slashes"], "");
    assert_eq!(out.status.code(), Some(exit_code::INVALID));
    assert!(
        stderr(&out).contains("may only contain"),
        "{}",
        stderr(&out)
    );
    // Usage errors are clap's: exit code 2.
    let out = cli(addr, &["consume", "--topic", "t", "--offset", "3"], "");
    assert_eq!(out.status.code(), Some(exit_code::USAGE));
}

#[test]
fn a_large_input_in_many_small_requests_does_not_stall() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let addr = broker.addr.as_str();
    assert!(
        cli(addr, &["topic", "create", "many", "--partitions", "1"], "")
            .status
            .success()
    );
    let input: String = (0..5000)
        .map(|i| format!("line {i} {}\n", "p".repeat(100)))
        .collect();
    let out = cli(
        addr,
        &["produce", "--topic", "many", "--batch-records", "1"],
        &input,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("produced 5000 record(s)"));
    // Every line, in order, with increasing offsets.
    let json = consume_json(
        addr,
        &["--topic", "many", "--partition", "0", "--from-beginning"],
    );
    let values: Vec<&str> = json.iter().map(|r| r["value"].as_str().unwrap()).collect();
    let expected: Vec<&str> = input.lines().collect();
    assert_eq!(values, expected);
    let offsets: Vec<u64> = json.iter().map(|r| r["offset"].as_u64().unwrap()).collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "offsets increase");
    let last = offsets[4999].to_string();
    let out = cli(
        addr,
        &[
            "consume",
            "--topic",
            "many",
            "--partition",
            "0",
            "--offset",
            &last,
        ],
        "",
    );
    assert!(stdout(&out).starts_with("line 4999 "), "{}", stdout(&out));
}
