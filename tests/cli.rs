//! The command line: `default-config` prints a spec that `check-config`
//! accepts; a bad spec makes `check-config` exit non-zero naming file, line,
//! column and key; a broker refuses to start on a bad spec or a locked dir.

mod common;

use std::path::Path;
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
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(stdout.contains("ok (1 broker(s), 0 topic(s))"));
    assert!(!stdout.contains("cannot serve"), "{stdout}");
}

/// Runs `check-config` on a shipped spec, which must be valid; checks that
/// each of `expected` (given the path) is a line of its output.
fn check_shipped_spec(name: &str, expected: impl Fn(&str) -> Vec<String>) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../etc")
        .join(name);
    let check = Command::new(sluiced_bin())
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    for expected in expected(&path.display().to_string()) {
        assert!(stdout.contains(&expected), "no {expected:?} in:\n{stdout}");
    }
    stdout.into_owned()
}

#[test]
fn check_config_accepts_the_three_broker_replicated_spec() {
    let stdout = check_shipped_spec("cluster-3.toml", |file| {
        vec![format!("{file}: ok (3 broker(s), 3 topic(s))")]
    });
    assert!(!stdout.contains("cannot serve"), "{stdout}");
}

/// etc/local-3.toml, three brokers on 127.0.0.1/2/3 with one replica per
/// partition, is valid and servable.
#[test]
fn check_config_accepts_the_local_three_broker_spec() {
    let stdout = check_shipped_spec("local-3.toml", |file| {
        vec![format!("{file}: ok (3 broker(s), 2 topic(s))")]
    });
    assert!(!stdout.contains("cannot serve"), "{stdout}");
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

/// `sluiced certs` makes a CA and one certificate per broker of the spec,
/// keeps them on a second run, and refuses what it cannot do with a reason.
#[test]
fn certs_makes_a_ca_and_a_certificate_per_broker_and_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../etc/cluster-3.toml");
    let out = dir.path().join("tls");
    let certs = |extra: &[&str]| {
        Command::new(sluiced_bin())
            .arg("certs")
            .arg("--spec")
            .arg(&spec)
            .arg("--out")
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    let first = certs(&[]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let stdout = String::from_utf8_lossy(&first.stdout);
    for id in 1..=3 {
        assert!(
            stdout.contains(&format!("issued node-{id}.pem for node-{id}.sluice")),
            "{stdout}"
        );
        assert!(out.join(format!("node-{id}.key")).exists());
    }
    assert!(out.join("ca-bundle.pem").exists() && out.join("ca/ca.key").exists());
    let node_one = std::fs::read(out.join("node-1.pem")).unwrap();

    let second = certs(&[]);
    assert!(second.status.success());
    assert!(String::from_utf8_lossy(&second.stdout).contains("kept node-1.pem"));
    assert_eq!(std::fs::read(out.join("node-1.pem")).unwrap(), node_one);

    for (args, reason) in [
        (&["--renew", "7"][..], "broker 7 is not declared"),
        (&["--renew", "x"][..], "expected a broker id or `all`"),
        (
            &["--rotate-ca", "later"][..],
            "expected start, reissue or finish",
        ),
        (&["--rotate-ca", "finish"][..], "no rotation under way"),
        (&["--days", "0"][..], "--days must be between 1 and 3650"),
    ] {
        let refused = certs(args);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }
}
