//! Configuration layering, through `logbook config` (which prints the effective configuration):
//! defaults < logbook.toml (or --config) < LOGBOOK_* environment < flags; unknown keys and bad
//! values are errors that name the key and where it came from.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::broker::logbook_bin;

fn config_cmd(cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(logbook_bin());
    command.arg("config").args(args).current_dir(cwd);
    // Start from a clean slate: no LOGBOOK_* from the environment of the test run.
    for (key, _) in std::env::vars() {
        if key.starts_with("LOGBOOK_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied()).output().unwrap()
}

fn effective(output: &Output) -> toml::Table {
    assert!(
        output.status.success(),
        "logbook config failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).parse().unwrap()
}

#[test]
fn file_then_environment_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("logbook.toml"),
        "fsync = \"never\"\nretention_ms = 1000\ndefault_partitions = 2\nsegment_max_bytes = 2097152\n",
    )
    .unwrap();
    let env = [
        ("LOGBOOK_DEFAULT_PARTITIONS", "3"),
        ("LOGBOOK_SEGMENT_MAX_BYTES", "4194304"),
    ];

    // Defaults only (no file in this directory).
    let empty = tempfile::tempdir().unwrap();
    let defaults = effective(&config_cmd(empty.path(), &[], &[]));
    assert_eq!(defaults["fsync"].as_str(), Some("always"));
    assert_eq!(defaults["default_partitions"].as_integer(), Some(1));

    // The file over the defaults.
    let file = effective(&config_cmd(dir.path(), &[], &[]));
    assert_eq!(file["fsync"].as_str(), Some("never"));
    assert_eq!(file["default_partitions"].as_integer(), Some(2));

    // The environment over the file; the flag over both.
    let all = effective(&config_cmd(
        dir.path(),
        &env,
        &["--default-partitions", "4"],
    ));
    assert_eq!(all["fsync"].as_str(), Some("never"), "from the file");
    assert_eq!(
        all["retention_ms"].as_integer(),
        Some(1000),
        "from the file"
    );
    assert_eq!(
        all["segment_max_bytes"].as_integer(),
        Some(4194304),
        "from the environment"
    );
    assert_eq!(
        all["default_partitions"].as_integer(),
        Some(4),
        "from the flag"
    );
    assert_eq!(
        all["listen_addr"].as_str(),
        Some("127.0.0.1:7400"),
        "default"
    );

    // --config names another file (and LOGBOOK_CONFIG does the same).
    let other = dir.path().join("other.toml");
    std::fs::write(&other, "data_dir = \"/var/lib/logbook\"\n").unwrap();
    let named = effective(&config_cmd(
        empty.path(),
        &[],
        &["--config", other.to_str().unwrap()],
    ));
    assert_eq!(named["data_dir"].as_str(), Some("/var/lib/logbook"));
    let via_env = effective(&config_cmd(
        empty.path(),
        &[("LOGBOOK_CONFIG", other.to_str().unwrap())],
        &[],
    ));
    assert_eq!(via_env["data_dir"].as_str(), Some("/var/lib/logbook"));
}

fn fails_with(output: Output, needles: &[&str]) {
    assert_eq!(
        output.status.code(),
        Some(2),
        "should fail with exit code 2"
    );
    let err = String::from_utf8_lossy(&output.stderr);
    for needle in needles {
        assert!(err.contains(needle), "{needle:?} not in: {err}");
    }
}

#[test]
fn unknown_keys_and_bad_values_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("logbook.toml"), "segment_max_byte = 5\n").unwrap();
    fails_with(
        config_cmd(dir.path(), &[], &[]),
        &["segment_max_byte", "logbook.toml"],
    );

    let clean = tempfile::tempdir().unwrap();
    fails_with(
        config_cmd(clean.path(), &[("LOGBOOK_SEGMENT_MAX_BYTES", "lots")], &[]),
        &["SEGMENT_MAX_BYTES", "LOGBOOK_", "lots"],
    );
    fails_with(
        config_cmd(clean.path(), &[("LOGBOOK_NO_SUCH_KEY", "1")], &[]),
        &["no_such_key"],
    );
    fails_with(
        config_cmd(clean.path(), &[("LOGBOOK_FSYNC", "sometimes")], &[]),
        &["fsync", "sometimes"],
    );
    fails_with(
        config_cmd(clean.path(), &[], &["--segment-max-bytes", "2048"]),
        &["max_batch_bytes", "segment_max_bytes"],
    );
    fails_with(
        config_cmd(clean.path(), &[], &["--config", "/no/such/file.toml"]),
        &["/no/such/file.toml", "does not exist"],
    );
    // A bad flag value is clap's usage error.
    let out = config_cmd(clean.path(), &[], &["--fsync", "sometimes"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn serve_refuses_to_start_with_a_bad_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(logbook_bin())
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("LOGBOOK_DEFAULT_PARTITIONS", "0")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("default_partitions"), "{err}");
    assert!(
        !dir.path().join("data").exists(),
        "nothing is created when the config is invalid"
    );
}
