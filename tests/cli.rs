//! The command line: `default-config` prints a spec that `check-config`
//! accepts; a bad spec makes `check-config` exit non-zero naming file, line,
//! column and key; a broker refuses to start on a bad spec or a locked dir.

mod common;

use std::process::Command;

use common::{Daemon, sluiced_bin};

#[test]
fn default_config_is_a_valid_spec() {
    let output = Command::new(sluiced_bin())
        .arg("default-config")
        .output()
        .unwrap();
    assert!(output.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.toml");
    std::fs::write(&path, &output.stdout).unwrap();
    let check = Command::new(sluiced_bin())
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(String::from_utf8_lossy(&check.stdout).contains("ok (1 broker(s), 0 topic(s))"));
}

#[test]
fn check_config_names_file_line_column_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let text = String::from_utf8(
        Command::new(sluiced_bin())
            .arg("default-config")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let text = text.replace("partitions = 1", "partitions = 0");
    std::fs::write(&path, &text).unwrap();
    let line = text
        .lines()
        .position(|l| l.starts_with("partitions = 0"))
        .unwrap()
        + 1;
    let check = Command::new(sluiced_bin())
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&check.stderr);
    let expected = format!("{}:{line}:14: topic_defaults.partitions:", path.display());
    assert!(
        stderr.contains(&expected),
        "expected {expected:?} in:\n{stderr}"
    );
    let missing = Command::new(sluiced_bin())
        .arg("check-config")
        .arg(dir.path().join("absent.toml"))
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("absent.toml"));
}

#[test]
fn a_second_daemon_on_the_same_data_dir_is_refused() {
    let daemon = Daemon::start("");
    let output = Command::new(sluiced_bin())
        .arg("--config")
        .arg(&daemon.spec_path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("in use by another sluiced"), "{stderr}");
}

#[test]
fn sigterm_stops_cleanly_and_the_daemon_restarts() {
    let mut daemon = Daemon::start("[topics.t]\npartitions = 2\n");
    assert_eq!(daemon.terminate(), Some(0), "{}", daemon.log());
    let log = daemon.log();
    assert!(log.contains("event=\"stopped\""), "{log}");
    daemon.spawn();
    assert!(daemon.log().contains("event=\"ready\""));
}

/// The packaged conffile is the embedded default with the data under
/// /var/lib/sluice, and nothing else may drift between them.
#[test]
fn the_packaged_spec_is_the_default_with_the_system_data_dir() {
    let packaged = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../packaging/cluster.toml"
    ))
    .unwrap();
    let expected = sluice::config::DEFAULT_SPEC_TOML
        .replace("data_dir = \"data\"", "data_dir = \"/var/lib/sluice\"");
    assert_eq!(packaged, expected);
    sluice::config::parse_spec(&packaged, "packaging/cluster.toml").unwrap();
}
