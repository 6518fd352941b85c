//! Fail-stop on a failing disk, with a real filesystem that runs out of
//! space (an ext4 image on a loop device, mounted by the test; CI runs as
//! root): the broker's next write fails with ENOSPC, and it stops at once
//! with exit status 74 and a log line naming the file and the error, rather
//! than limping on. Once space is freed it restarts and every acknowledged
//! acks=all message is there, once, at its acknowledged offset.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Acked, Daemon};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const TOPIC: &str = "full";
/// What `sluiced` exits with after a failed write or fsync.
const STORAGE_FAILURE_EXIT_CODE: i32 = 74;

/// A small ext4 filesystem mounted for the test; unmounted on drop.
struct SmallDisk {
    _dir: tempfile::TempDir,
    image: PathBuf,
    mount: PathBuf,
}

impl SmallDisk {
    fn new(megabytes: u32) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.img");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).unwrap();
        let run = |program: &str, args: &[&std::ffi::OsStr]| {
            let output = Command::new(program)
                .args(args)
                .output()
                .unwrap_or_else(|e| {
                    panic!("{program}: {e} (the test needs e2fsprogs and mount, as root)")
                });
            assert!(
                output.status.success(),
                "{program} {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        run(
            "truncate",
            &[
                "-s".as_ref(),
                format!("{megabytes}M").as_ref(),
                image.as_os_str(),
            ],
        );
        // No blocks reserved for root: the broker (root in CI) sees ENOSPC.
        run(
            "mkfs.ext4",
            &[
                "-q".as_ref(),
                "-F".as_ref(),
                "-m".as_ref(),
                "0".as_ref(),
                image.as_os_str(),
            ],
        );
        run(
            "mount",
            &[
                "-o".as_ref(),
                "loop".as_ref(),
                image.as_os_str(),
                mount.as_os_str(),
            ],
        );
        SmallDisk {
            _dir: dir,
            image,
            mount,
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        let _ = std::fs::remove_file(&self.image);
    }
}

fn payload(i: usize) -> String {
    format!("full-{i:08}-{}", "f".repeat(200))
}

#[test]
fn a_full_disk_stops_the_broker_and_loses_no_acknowledged_write() {
    let disk = SmallDisk::new(32);
    // Ballast the test deletes to give the restarted broker room again.
    let ballast = disk.mount.join("ballast");
    std::fs::write(&ballast, vec![1u8; 6 * 1024 * 1024]).unwrap();
    let data_dir = disk.mount.join("data");
    let topic = format!(
        "[topics.{TOPIC}]\npartitions = 2\nsegment_bytes = \"1MiB\"\nmax_message_bytes = \"256KiB\"\nsegment_index_bytes = \"64KiB\"\n"
    );
    let mut daemon = Daemon::start_with_data_dir(&topic, &data_dir);
    let acked = Arc::new(Mutex::new(HashMap::new()));
    let delivery_errors = Arc::new(Mutex::new(Vec::new()));
    let producer: BaseProducer<Acked> = ClientConfig::new()
        .set("bootstrap.servers", daemon.bootstrap())
        .set("acks", "all")
        .set("linger.ms", "2")
        // Batches below the topic's 256 KiB max.message.bytes.
        .set("batch.size", "100000")
        .set("message.timeout.ms", "5000")
        .set("reconnect.backoff.max.ms", "1000")
        .create_with_context(Acked(acked.clone(), delivery_errors.clone()))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut exit = None;
    // Bounded in time and count: more than the disk holds, sent until the
    // broker stops.
    for i in 0..1_000_000 {
        assert!(Instant::now() < deadline, "the disk never filled");
        if i % 200 == 0 && !daemon.running() {
            exit = daemon.wait_for_exit(Duration::from_secs(10));
            break;
        }
        let value = payload(i);
        let record = BaseRecord::with_opaque_to(TOPIC, i)
            .key(&value[..13])
            .payload(&value);
        if producer.send(record).is_err() {
            producer.poll(Duration::from_millis(10));
        }
        // Keep at most a few thousand unacknowledged, as a real producer
        // waiting on its acks would.
        while producer.in_flight_count() > 5_000 && daemon.running() {
            producer.poll(Duration::from_millis(5));
        }
        producer.poll(Duration::ZERO);
    }
    let exit = exit.or_else(|| daemon.wait_for_exit(Duration::from_secs(30)));
    assert_eq!(
        exit,
        Some(Some(STORAGE_FAILURE_EXIT_CODE)),
        "the broker stops itself on a failed write (delivery errors {:?}):\n{}",
        delivery_errors.lock().unwrap(),
        daemon.log()
    );
    let log = daemon.log();
    let failure = log
        .lines()
        .find(|l| l.contains("event=\"storage_failure\""))
        .unwrap_or_else(|| panic!("no storage_failure line:\n{log}"));
    assert!(
        failure.contains(&data_dir.display().to_string())
            && failure.contains("No space left on device"),
        "the line names the file and the error: {failure}"
    );
    // Let the producer give up on what was never acknowledged.
    producer.poll(Duration::from_millis(100));
    drop(producer);
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 1000,
        "only {} acknowledged before the disk filled",
        acked.len()
    );

    std::fs::remove_file(&ballast).unwrap();
    daemon.spawn();
    common::assert_acknowledged_readable(&daemon.bootstrap(), TOPIC, 2, &acked, payload);
}
