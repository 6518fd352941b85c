//! What a single-node daemon can serve: it runs one replica of every
//! partition, so a spec that asks for more (a reload that turns the file
//! into a cluster's) is refused whole rather than run with replication
//! settings it would silently ignore. A spec of several brokers is served
//! by starting each as a cluster member (cluster/runtime.rs).

use std::fmt;

use super::document::join_key;
use super::spec::ClusterSpec;

/// Why every `Unservable` is refused by a single-node daemon.
pub const SINGLE_NODE_ONE_REPLICA: &str = "this daemon runs as a single node, which keeps one \
     replica per partition; a spec with replicated topics runs on a cluster: restart sluiced on \
     every broker it declares";

/// One key whose value needs replication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unservable {
    /// Dotted TOML path, as in spec errors: `topics.orders.replication_factor`.
    pub key: String,
    /// The value as written, e.g. `3` or `[1, 2, 3]`.
    pub value: String,
}

/// `KEY = VALUE: reason`; callers put the file name in front.
impl fmt::Display for Unservable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} = {}: {SINGLE_NODE_ONE_REPLICA}",
            self.key, self.value
        )
    }
}

/// Every key of `spec` that needs replication, in file order (defaults,
/// then topics by name); empty when this build can serve it.
/// Keys are the ones written in the file: a value inherited from
/// `[topic_defaults]` is reported there once, not on every topic.
pub fn unservable(spec: &ClusterSpec) -> Vec<Unservable> {
    let mut found = Vec::new();
    let defaults = &spec.topic_defaults;
    above_one(
        &mut found,
        "topic_defaults.replication_factor".to_string(),
        defaults.replication_factor,
    );
    above_one(
        &mut found,
        "topic_defaults.min_insync_replicas".to_string(),
        defaults.min_insync_replicas,
    );
    for (name, topic) in &spec.topics {
        let path = join_key("topics", name);
        let settings = &topic.settings;
        above_one(
            &mut found,
            format!("{path}.replication_factor"),
            settings.replication_factor,
        );
        // Without replication_factor written, the lists' length is the factor.
        let listed = topic.replicas.as_ref().filter(|lists| {
            settings.replication_factor.is_none() && lists.first().is_some_and(|l| l.len() > 1)
        });
        if let Some(lists) = listed {
            found.push(Unservable {
                key: format!("{path}.replicas"),
                value: format!("{lists:?}"),
            });
        }
        above_one(
            &mut found,
            format!("{path}.min_insync_replicas"),
            settings.min_insync_replicas,
        );
    }
    found
}

/// Records `key` when a replica count written there is above one.
fn above_one(found: &mut Vec<Unservable>, key: String, value: Option<i16>) {
    if let Some(value) = value.filter(|v| *v > 1) {
        found.push(Unservable {
            key,
            value: value.to_string(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_spec;

    fn keys(text: &str) -> Vec<String> {
        let spec = parse_spec(text, "cluster.toml").unwrap();
        unservable(&spec).iter().map(ToString::to_string).collect()
    }

    const ONE: &str = "[cluster]\nname = \"t\"\n\n[controller]\nvoters = [1]\n\n[[brokers]]\n\
        id = 1\nkafka = \"127.0.0.1:9092\"\nquic = \"127.0.0.1:9093\"\n\
        metrics = \"127.0.0.1:9644\"\ndata_dir = \"data\"\n";

    #[test]
    fn single_broker_specs_are_servable() {
        assert_eq!(keys(crate::config::DEFAULT_SPEC_TOML), Vec::<String>::new());
        let explicit = format!(
            "{ONE}\n[topic_defaults]\nreplication_factor = 1\nmin_insync_replicas = 1\n\n\
             [topics.a]\nreplicas = [[1], [1]]\nmin_insync_replicas = 1\n"
        );
        assert_eq!(keys(&explicit), Vec::<String>::new());
    }

    #[test]
    fn the_three_broker_example_names_every_replicated_key() {
        let reasons = keys(include_str!("../../../etc/cluster-3.toml"));
        let reason = SINGLE_NODE_ONE_REPLICA;
        assert_eq!(
            reasons,
            vec![
                format!("topic_defaults.replication_factor = 3: {reason}"),
                format!("topic_defaults.min_insync_replicas = 2: {reason}"),
                format!("topics.audit-log.replicas = [[1, 2, 3], [2, 3, 1], [3, 1, 2]]: {reason}"),
                format!("topics.orders.replication_factor = 3: {reason}"),
                format!("topics.payments.replication_factor = 3: {reason}"),
                format!("topics.payments.min_insync_replicas = 2: {reason}"),
            ]
        );
    }

    #[test]
    fn more_brokers_alone_are_servable() {
        let second = "\n[[brokers]]\nid = 2\nkafka = \"127.0.0.2:9092\"\n\
                      quic = \"127.0.0.2:9093\"\nmetrics = \"127.0.0.2:9644\"\ndata_dir = \"data2\"\n";
        let spec = parse_spec(&format!("{ONE}{second}"), "cluster.toml").unwrap();
        assert_eq!(unservable(&spec), Vec::new());
    }

    #[test]
    fn a_quoted_topic_name_keeps_its_quotes() {
        let spec = parse_spec(
            &format!(
                "{ONE}\n[[brokers]]\nid = 2\nkafka = \"127.0.0.2:9092\"\n\
                 quic = \"127.0.0.2:9093\"\nmetrics = \"127.0.0.2:9644\"\ndata_dir = \"d2\"\n\n\
                 [topics.\"orders.v2\"]\nreplication_factor = 2\n"
            ),
            "cluster.toml",
        )
        .unwrap();
        let keys: Vec<String> = unservable(&spec).into_iter().map(|u| u.key).collect();
        assert_eq!(keys, vec!["topics.\"orders.v2\".replication_factor"]);
    }
}
