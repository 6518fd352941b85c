//! The APIs and versions this broker really implements; ApiVersions
//! advertises exactly this table and dispatch refuses anything outside it.

use kafka_protocol::messages::ApiKey;

/// One advertised API with its inclusive version range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SupportedApi {
    pub key: ApiKey,
    pub min_version: i16,
    pub max_version: i16,
}

const fn api(key: ApiKey, min_version: i16, max_version: i16) -> SupportedApi {
    SupportedApi {
        key,
        min_version,
        max_version,
    }
}

/// Versions chosen so that every field we must honour is implemented:
/// Fetch stops at 12 (v13+ addresses topics by id only), Produce at 9
/// (v10+ adds leader-discovery tags we do not fill yet).
pub const SUPPORTED_APIS: &[SupportedApi] = &[
    api(ApiKey::Produce, 3, 9),
    api(ApiKey::Fetch, 4, 12),
    api(ApiKey::ListOffsets, 1, 7),
    api(ApiKey::Metadata, 0, 12),
    api(ApiKey::ApiVersions, 0, 3),
    api(ApiKey::CreateTopics, 2, 7),
    // Consumer groups (issue 3): the ranges librdkafka 2.x uses, each field
    // of them honoured. OffsetFetch stops at 7 (v8+ batches groups),
    // LeaveGroup at 1 (v3+ batches members).
    api(ApiKey::FindCoordinator, 0, 2),
    api(ApiKey::JoinGroup, 0, 5),
    api(ApiKey::SyncGroup, 0, 3),
    api(ApiKey::Heartbeat, 0, 3),
    api(ApiKey::LeaveGroup, 0, 1),
    api(ApiKey::OffsetCommit, 2, 9),
    api(ApiKey::OffsetFetch, 1, 7),
    api(ApiKey::ListGroups, 0, 5),
    api(ApiKey::DescribeGroups, 0, 4),
    api(ApiKey::DeleteGroups, 0, 1),
    api(ApiKey::OffsetDelete, 0, 0),
    // Idempotent producers (issue 12); transactional ids are refused.
    api(ApiKey::InitProducerId, 0, 5),
    // Admin APIs (issue 12): declared topics refuse changes (the spec owns
    // them); API-created topics take every call.
    api(ApiKey::DescribeConfigs, 1, 4),
    api(ApiKey::AlterConfigs, 0, 2),
    api(ApiKey::IncrementalAlterConfigs, 0, 1),
    api(ApiKey::CreatePartitions, 0, 3),
    api(ApiKey::DeleteTopics, 1, 6),
    api(ApiKey::DeleteRecords, 0, 2),
    api(ApiKey::DescribeCluster, 0, 2),
    api(ApiKey::OffsetForLeaderEpoch, 2, 4),
];

/// The advertised range for `key`, if we implement it at all.
pub fn supported_range(key: ApiKey) -> Option<SupportedApi> {
    SUPPORTED_APIS.iter().copied().find(|a| a.key == key)
}

/// Whether `version` of `key` is one we implement.
pub fn is_supported(key: ApiKey, version: i16) -> bool {
    supported_range(key).is_some_and(|a| (a.min_version..=a.max_version).contains(&version))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::VersionRange;

    #[test]
    fn every_advertised_range_is_within_what_the_codec_knows() {
        for a in SUPPORTED_APIS {
            let codec: VersionRange = a.key.valid_versions();
            assert!(a.min_version <= a.max_version, "{:?}", a.key);
            assert!(
                a.min_version >= codec.min && a.max_version <= codec.max,
                "{:?}",
                a.key
            );
        }
    }

    #[test]
    fn unsupported_versions_are_refused() {
        assert!(is_supported(ApiKey::Fetch, 12));
        assert!(!is_supported(ApiKey::Fetch, 13));
        assert!(!is_supported(ApiKey::Fetch, 3));
        assert!(!is_supported(ApiKey::JoinGroup, 6));
    }
}
