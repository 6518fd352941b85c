//! Scrape-time gauges: partition offsets and sizes read from the broker,
//! so a deleted partition's series disappear with it. The per-partition
//! traffic counters get a zero series for every partition held (a new
//! partition shows 0, not a gap) and lose those of partitions gone.

use std::collections::HashSet;

use prometheus::IntCounterVec;
use prometheus::core::Collector;

use super::metrics;
use crate::broker::Broker;

pub fn refresh(broker: &Broker, groups: Option<&crate::group::GroupCoordinator>) {
    let m = metrics();
    let gauges = &m.partition;
    for family in [
        &gauges.log_size_bytes,
        &gauges.log_segments,
        &gauges.log_start_offset,
        &gauges.log_end_offset,
        &gauges.high_watermark,
        &gauges.hw_lag_messages,
        &gauges.follower_lag_messages,
    ] {
        family.reset();
    }
    let counters = [&m.bytes_in, &m.bytes_out, &m.records_in, &m.records_out];
    let mut held: HashSet<(String, String)> = HashSet::new();
    let (mut partitions, mut led, mut under_min_isr) = (0i64, 0i64, 0i64);
    let (mut under_replicated, mut offline) = (0i64, 0i64);
    for topic in broker.topics() {
        let min_insync = usize::try_from(topic.config.min_insync_replicas).unwrap_or(1);
        for partition in topic.hosted_partitions() {
            partitions += 1;
            let leadership = partition.leadership();
            if leadership.is_leader() {
                led += 1;
            }
            if matches!(
                leadership,
                crate::broker::Leadership::NotLeader { leader: None, .. }
            ) {
                offline += 1;
            }
            // Counted by the leader, as Kafka does.
            if let Some(sizes) = partition.isr_sizes() {
                under_replicated += i64::from(sizes.committed < sizes.replicas);
                under_min_isr += i64::from(sizes.committed < min_insync);
            }
            let index = partition.index.to_string();
            let labels = [&*topic.name, index.as_str()];
            for family in counters {
                family.with_label_values(&labels);
            }
            held.insert((topic.name.to_string(), index.clone()));
            let stats = partition.stats();
            gauges
                .log_size_bytes
                .with_label_values(&labels)
                .set(stats.size_bytes as i64);
            gauges
                .log_segments
                .with_label_values(&labels)
                .set(stats.segments as i64);
            gauges
                .log_start_offset
                .with_label_values(&labels)
                .set(stats.offsets.log_start_offset);
            gauges
                .log_end_offset
                .with_label_values(&labels)
                .set(stats.offsets.log_end_offset);
            gauges
                .high_watermark
                .with_label_values(&labels)
                .set(stats.offsets.high_watermark);
            if leadership.is_leader() {
                gauges
                    .hw_lag_messages
                    .with_label_values(&labels)
                    .set(stats.offsets.log_end_offset - stats.offsets.high_watermark);
            }
            for (replica, lag) in partition.follower_lags() {
                let replica = replica.to_string();
                gauges
                    .follower_lag_messages
                    .with_label_values(&[&*topic.name, index.as_str(), replica.as_str()])
                    .set(lag);
            }
        }
    }
    for family in counters {
        drop_partitions_not_held(family, &held);
    }
    let b = &m.broker;
    b.partitions.set(partitions);
    b.leader_partitions.set(led);
    b.under_replicated.set(under_replicated);
    b.under_min_isr.set(under_min_isr);
    b.offline.set(offline);
    if let Some((free, size)) = filesystem_bytes(broker.data_dir()) {
        b.data_dir_free_bytes.set(free);
        b.data_dir_size_bytes.set(size);
    }
    refresh_group_lag(broker, groups);
}

/// Removes the series of partitions this broker no longer holds (a deleted
/// topic). A produce racing the deletion may bring one back until the next scrape.
fn drop_partitions_not_held(family: &IntCounterVec, held: &HashSet<(String, String)>) {
    let mut gone = Vec::new();
    for metric_family in family.collect() {
        for metric in metric_family.get_metric() {
            let label = |name: &str| {
                metric
                    .get_label()
                    .iter()
                    .find(|pair| pair.name() == name)
                    .map(|pair| pair.value().to_string())
            };
            if let (Some(topic), Some(partition)) = (label("topic"), label("partition")) {
                let key = (topic, partition);
                if !held.contains(&key) {
                    gone.push(key);
                }
            }
        }
    }
    for (topic, partition) in gone {
        // Absent already is fine: nothing to remove.
        let _ = family.remove_label_values(&[topic.as_str(), partition.as_str()]);
    }
}

/// `sluice_consumer_group_lag`: one series per committed partition of each
/// group this broker coordinates; a deleted group's series disappear.
fn refresh_group_lag(broker: &Broker, groups: Option<&crate::group::GroupCoordinator>) {
    let family = &metrics().consumer_group_lag;
    family.reset();
    let Some(coordinator) = groups else {
        return;
    };
    for row in crate::group::lag::broker_lag(broker, coordinator) {
        if let Some(lag) = row.lag {
            let partition = row.partition.to_string();
            family
                .with_label_values(&[row.group.as_str(), row.topic.as_str(), partition.as_str()])
                .set(lag);
        }
    }
}

/// (available, total) bytes of the filesystem holding `path`.
fn filesystem_bytes(path: &std::path::Path) -> Option<(i64, i64)> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a NUL-terminated path and a pointer to writable statvfs storage.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs succeeded and filled the struct.
    let stat = unsafe { stat.assume_init() };
    let block = stat.f_frsize as i64;
    Some((stat.f_bavail as i64 * block, stat.f_blocks as i64 * block))
}

/// The QUIC path families from the transport, when a cluster node gave a
/// source: RTT and connection series only for peers connected now; the
/// counters follow the transport's sums, which never go back.
pub fn refresh_quic() {
    let m = metrics();
    let source = m
        .quic_source
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let Some(source) = source else {
        return;
    };
    let figures = source();
    let q = &m.cluster().quic;
    q.rtt_seconds.reset();
    q.connections.reset();
    q.open_streams.reset();
    for peer in figures {
        let id = peer.peer.to_string();
        let id = id.as_str();
        if let Some(rtt) = peer.rtt_seconds {
            q.rtt_seconds.with_label_values(&[id]).set(rtt);
        }
        q.connections
            .with_label_values(&[id])
            .set(i64::try_from(peer.open_connections).unwrap_or(i64::MAX));
        for (kind, open) in &peer.open_streams {
            q.open_streams
                .with_label_values(&[id, kind])
                .set(i64::try_from(*open).unwrap_or(i64::MAX));
        }
        let c = &peer.counts;
        let counters = [
            (&q.sent_packets, vec![id], c.sent_packets),
            (&q.lost_packets, vec![id], c.lost_packets),
            (&q.congestion_events, vec![id], c.congestion_events),
            (&q.bytes, vec![id, "sent"], c.sent_bytes),
            (&q.bytes, vec![id, "received"], c.received_bytes),
            (&q.stream_frames, vec![id, "sent"], c.stream_frames_sent),
            (
                &q.stream_frames,
                vec![id, "received"],
                c.stream_frames_received,
            ),
        ];
        for (family, labels, total) in counters {
            let counter = family.with_label_values(&labels);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }
}
