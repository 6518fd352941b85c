//! The broker side of adopting a single node's data directory: what its
//! topic registry and producer-id block say, reported with the
//! registration (controller/adoption.rs has the controller's side).

use anyhow::Context;

use crate::broker::Broker;
use crate::config::ClusterSpec;
use crate::controller::adoption::{AdoptedTopic, Adoption};

/// What this member brings from a single node, if anything. A data
/// directory with a single node's topics on a broker the spec does not
/// name in `controller.adopt_broker` is refused: its topics would be
/// neither served nor safe from a topic created under the same name.
pub fn report(broker: &Broker, spec: &ClusterSpec) -> anyhow::Result<Option<Adoption>> {
    let Some((topics, producer_id_end)) = broker.pre_cluster_data() else {
        return Ok(None);
    };
    let node = broker.node_id();
    anyhow::ensure!(
        spec.controller.adopt_broker == Some(node),
        "the data directory holds topics of a single-node Sluice ({}); to bring them into \
         the cluster set controller.adopt_broker = {node} in the spec \
         (docs/OPERATIONS.md \"Growing a single node into a cluster\"), or start this broker \
         on an empty data directory",
        topics.keys().cloned().collect::<Vec<_>>().join(", ")
    );
    let topics = topics
        .into_iter()
        .map(|(name, entry)| {
            let topic_id = entry
                .id
                .parse()
                .with_context(|| format!("topic {name}: id {:?} in meta/topics.toml", entry.id))?;
            Ok(AdoptedTopic {
                topic_id,
                name,
                partitions: entry.partitions,
                settings: entry.configs,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    tracing::info!(
        event = "adoption_report",
        topics = topics.len(),
        producer_id_end
    );
    Ok(Some(Adoption {
        topics,
        producer_id_end,
    }))
}
