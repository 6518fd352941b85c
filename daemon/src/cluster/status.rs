//! What `GET /status` on a node's metrics address answers and `sluiced
//! status` prints: the node's own view (role, term, membership, spec), then
//! the metadata image it has applied: brokers, the applied spec, and every
//! partition with its replicas, ISR, leader and epochs. Plain text with
//! `key=value` fields, for people and for `grep`.

use std::fmt::Write;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use super::lifecycle::Membership;
use super::runtime::MemberStatus;
use crate::controller::image::MetadataImage;
use crate::controller::quorum::Role;
use crate::controller::reassign::{is_reassigning, reassigning_count};
use crate::controller::service::StatusReader;

/// Everything a status answer reads; cheap to clone into the HTTP task.
#[derive(Clone)]
pub struct StatusSource {
    pub node_id: i32,
    pub spec_hash: watch::Receiver<String>,
    pub member: watch::Receiver<MemberStatus>,
    pub image: watch::Receiver<Arc<MetadataImage>>,
    pub controller: Option<StatusReader>,
}

impl StatusSource {
    pub fn render(&self) -> String {
        let image = self.image.borrow().clone();
        let member = *self.member.borrow();
        let mut out = String::new();
        let _ = write!(out, "node {}:", self.node_id);
        match &self.controller {
            Some(reader) => {
                let status = reader.read();
                let role = match (status.active, status.role) {
                    (true, _) => "active-controller",
                    (false, Role::Leader) => "leader-activating",
                    (false, Role::Follower) => "voter",
                    (false, Role::PreCandidate | Role::Candidate) => "candidate",
                };
                let leader = status.leader.map_or("none".into(), |id| id.to_string());
                let _ = write!(out, " role={role} term={} controller={leader}", status.term);
            }
            None => out.push_str(" role=broker"),
        }
        match member.membership {
            Membership::Unregistered => out.push_str(" broker=unregistered"),
            Membership::Registered {
                broker_epoch,
                fenced,
            } => {
                let state = if fenced { "fenced" } else { "unfenced" };
                let lease = match member.lease_until {
                    Some(until) if until > Instant::now() => "valid",
                    _ => "none",
                };
                let _ = write!(
                    out,
                    " broker={state} broker_epoch={broker_epoch} lease={lease}"
                );
            }
        }
        let spec_hash = self.spec_hash.borrow().clone();
        let applied_spec = image.applied_spec().map(|s| s.hash.as_str());
        let drift = applied_spec.is_some_and(|hash| hash != spec_hash);
        let _ = writeln!(
            out,
            " applied_index={} spec={} applied_spec={} spec_drift={}",
            image.applied_index(),
            spec_hash,
            applied_spec.unwrap_or("none"),
            u8::from(drift)
        );
        render_image(&mut out, &image);
        out
    }
}

/// The image as a few tables.
pub fn render_image(out: &mut String, image: &MetadataImage) {
    let _ = writeln!(out, "reassigning partitions: {}", reassigning_count(image));
    let _ = writeln!(out, "brokers:");
    for entry in image.brokers() {
        let registration = &entry.registration;
        let _ = writeln!(
            out,
            "  broker {} {} broker_epoch={} kafka={} quic={} rack={}",
            registration.broker_id,
            if entry.fenced { "fenced" } else { "unfenced" },
            entry.broker_epoch,
            registration.kafka,
            registration.quic,
            registration.rack.as_deref().unwrap_or("-"),
        );
    }
    let _ = writeln!(out, "topics:");
    for topic in image.topics() {
        let _ = writeln!(
            out,
            "  topic {} id={} {} partitions={}",
            topic.name,
            topic.topic_id,
            if topic.declared {
                "declared"
            } else {
                "not-declared"
            },
            topic.partitions.len()
        );
        for (index, state) in topic.partitions.iter().enumerate() {
            let leader = match state.leader {
                id if id >= 0 => id.to_string(),
                _ => "none(offline)".to_string(),
            };
            let reassigning = match is_reassigning(state) {
                true => format!(
                    " reassigning adding={:?} removing={:?}",
                    state.adding, state.removing
                ),
                false => String::new(),
            };
            let _ = writeln!(
                out,
                "    partition {index} leader={leader} leader_epoch={} partition_epoch={} replicas={:?} isr={:?}{reassigning}",
                state.leader_epoch, state.partition_epoch, state.replicas, state.isr
            );
        }
    }
}

/// How long `sluiced status` waits for each node.
const NODE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// A status answer larger than this is cut off (a big image is still far below).
const ANSWER_BYTES_MAX: u64 = 64 << 20;

/// `sluiced status`: asks every broker of `spec` for its `/status` and
/// prints each node's line, then the image of the node that applied the
/// most (the active controller when it answers). `Err` when no node answers.
pub fn collect(spec: &crate::config::ClusterSpec) -> Result<String, String> {
    let mut out = String::new();
    let mut best: Option<(bool, u64, i32, String)> = None;
    for broker in &spec.brokers {
        match fetch_status(broker.metrics) {
            Ok(answer) => {
                let (first, rest) = answer.split_once('\n').unwrap_or((&answer, ""));
                let _ = writeln!(out, "{first}");
                let active = first.contains("role=active-controller");
                let applied = field(first, "applied_index").unwrap_or(0);
                let better = best
                    .as_ref()
                    .is_none_or(|(a, i, _, _)| (active, applied) > (*a, *i));
                if better {
                    best = Some((active, applied, broker.id, rest.to_string()));
                }
            }
            Err(error) => {
                let _ = writeln!(
                    out,
                    "node {}: unreachable at {}: {error}",
                    broker.id, broker.metrics
                );
            }
        }
    }
    let Some((active, applied, id, image)) = best else {
        return Err(format!("no node answered:\n{out}"));
    };
    let whose = if active {
        " (the active controller)"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "metadata as applied by node {id}{whose} up to index {applied}:"
    );
    out.push_str(&image);
    Ok(out)
}

/// Whether `broker` is back in sync by the image `collect` printed: its
/// line says unfenced, and every partition placed on it has it in its
/// ISR. Otherwise what it still waits for, for the operator.
pub fn in_sync(status: &str, broker: i32) -> Result<(), String> {
    let unfenced = format!("broker {broker} unfenced ");
    if !status
        .lines()
        .any(|l| l.trim_start().starts_with(&unfenced))
    {
        return Err(format!("broker {broker} is not registered and unfenced"));
    }
    let mut topic = "";
    let mut behind = Vec::new();
    for line in status.lines().map(str::trim_start) {
        if let Some(rest) = line.strip_prefix("topic ") {
            topic = rest.split_whitespace().next().unwrap_or("");
            continue;
        }
        let Some(rest) = line.strip_prefix("partition ") else {
            continue;
        };
        let list = |key: &str| -> Vec<i32> {
            rest.split(key)
                .nth(1)
                .and_then(|tail| tail.split(']').next())
                .map(|inner| {
                    inner
                        .trim_start_matches('[')
                        .split(',')
                        .filter_map(|id| id.trim().parse().ok())
                        .collect()
                })
                .unwrap_or_default()
        };
        if list(" replicas=").contains(&broker) && !list(" isr=").contains(&broker) {
            let index = rest.split_whitespace().next().unwrap_or("?");
            behind.push(format!("{topic}-{index}"));
        }
    }
    match behind.is_empty() {
        true => Ok(()),
        false => Err(format!(
            "broker {broker} is not yet in the ISR of {} partition(s): {}",
            behind.len(),
            behind.join(" ")
        )),
    }
}

fn field(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|part| part.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

fn fetch_status(address: std::net::SocketAddr) -> Result<String, String> {
    use std::io::{Read, Write as _};
    let mut stream =
        std::net::TcpStream::connect_timeout(&address, NODE_TIMEOUT).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(NODE_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /status HTTP/1.1\r\nHost: sluice\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .take(ANSWER_BYTES_MAX)
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or("not an HTTP answer")?;
    if !head.starts_with("HTTP/1.1 200") {
        let status = head.lines().next().unwrap_or_default();
        return Err(format!("{status}: {}", body.trim()));
    }
    Ok(body.to_string())
}

/// `sluiced status --bootstrap HOST:PORT`: what any broker's Metadata says
/// (live brokers, the controller, every partition's leader, leader epoch,
/// replicas and ISR). Terms and fenced brokers are not in Kafka's answer:
/// `--config` asks every node for those.
pub async fn collect_kafka(bootstrap: &str) -> anyhow::Result<String> {
    use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse};
    let mut connection = crate::client::Connection::open(bootstrap).await?;
    let request = MetadataRequest::default().with_topics(None);
    let metadata: MetadataResponse = connection.call(ApiKey::Metadata, 12, &request).await?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "metadata from {bootstrap}: controller={} cluster={}",
        metadata.controller_id.0,
        metadata.cluster_id.as_deref().unwrap_or("-")
    );
    let _ = writeln!(out, "brokers:");
    for broker in &metadata.brokers {
        let _ = writeln!(
            out,
            "  broker {} kafka={}:{} rack={}",
            broker.node_id.0,
            broker.host.as_str(),
            broker.port,
            broker.rack.as_deref().unwrap_or("-")
        );
    }
    let _ = writeln!(out, "topics:");
    let mut topics: Vec<_> = metadata.topics.iter().collect();
    topics.sort_by(|a, b| a.name.as_deref().cmp(&b.name.as_deref()));
    for topic in topics {
        let name = topic.name.as_ref().map_or("?", |n| n.as_str());
        let _ = writeln!(
            out,
            "  topic {name} id={} partitions={}",
            topic.topic_id,
            topic.partitions.len()
        );
        let mut partitions: Vec<_> = topic.partitions.iter().collect();
        partitions.sort_by_key(|p| p.partition_index);
        for p in partitions {
            let ids = |list: &[kafka_protocol::messages::BrokerId]| -> Vec<i32> {
                list.iter().map(|id| id.0).collect()
            };
            let leader = match p.leader_id.0 {
                id if id >= 0 => id.to_string(),
                _ => "none(offline)".to_string(),
            };
            let _ = writeln!(
                out,
                "    partition {} leader={leader} leader_epoch={} replicas={:?} isr={:?}",
                p.partition_index,
                p.leader_epoch,
                ids(&p.replica_nodes),
                ids(&p.isr_nodes)
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broker_is_in_sync_once_unfenced_and_in_every_isr_it_belongs_to() {
        let image = "brokers:\n  broker 1 unfenced broker_epoch=3 kafka=a:1 quic=a:2 rack=-\n  \
                     broker 2 fenced broker_epoch=9 kafka=b:1 quic=b:2 rack=-\n\
                     topics:\n  topic orders id=x declared partitions=2\n    \
                     partition 0 leader=1 leader_epoch=2 partition_epoch=4 replicas=[1, 2] isr=[1]\n    \
                     partition 1 leader=1 leader_epoch=2 partition_epoch=4 replicas=[1, 3] isr=[1, 3]\n";
        assert_eq!(in_sync(image, 1), Ok(()));
        assert_eq!(
            in_sync(image, 2).unwrap_err(),
            "broker 2 is not registered and unfenced"
        );
        let unfenced = image.replace("broker 2 fenced", "broker 2 unfenced");
        assert_eq!(
            in_sync(&unfenced, 2).unwrap_err(),
            "broker 2 is not yet in the ISR of 1 partition(s): orders-0"
        );
    }
}
