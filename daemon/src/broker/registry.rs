//! The topics this broker holds and how each came to exist, persisted in
//! `<data_dir>/meta/topics.toml`, so topics created through the Kafka API
//! (which the spec does not list) survive restarts with their id and settings.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

const REGISTRY_DIR: &str = "meta";
const REGISTRY_FILE: &str = "topics.toml";

#[derive(Debug, Error)]
pub enum RegistryError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid topic registry: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where a topic's definition lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TopicOrigin {
    /// Declared in the cluster spec; the spec is the source of its settings.
    Spec,
    /// Created by CreateTopics or on first use; settings recorded here.
    Api,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryEntry {
    /// Kafka topic id (UUID, hyphenated).
    pub id: String,
    pub origin: TopicOrigin,
    pub partitions: i32,
    /// Kafka-named config overrides given at creation (Api topics only).
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicRegistry {
    #[serde(default)]
    pub topics: BTreeMap<String, RegistryEntry>,
}

pub fn registry_path(data_dir: &Path) -> PathBuf {
    data_dir.join(REGISTRY_DIR).join(REGISTRY_FILE)
}

impl TopicRegistry {
    pub fn load(data_dir: &Path) -> Result<Self, RegistryError> {
        let path = registry_path(data_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => return Err(RegistryError::Read { path, source }),
        };
        toml::from_str(&text).map_err(|e| RegistryError::Parse {
            path,
            message: e.to_string(),
        })
    }

    /// Replaces the file atomically: write a temporary file, fsync it,
    /// rename over the old one, fsync the directory.
    pub fn store(&self, data_dir: &Path) -> Result<(), RegistryError> {
        let path = registry_path(data_dir);
        let dir = data_dir.join(REGISTRY_DIR);
        let text = toml::to_string(self).map_err(|e| RegistryError::Parse {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let write = |p: &Path| -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            let tmp = dir.join(format!("{REGISTRY_FILE}.tmp"));
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&tmp, p)?;
            std::fs::File::open(&dir)?.sync_all()
        };
        write(&path).map_err(|source| RegistryError::Write { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            TopicRegistry::load(dir.path()).unwrap(),
            TopicRegistry::default()
        );
        let mut registry = TopicRegistry::default();
        registry.topics.insert(
            "orders".into(),
            RegistryEntry {
                id: "5d0c5a43-7a4b-4c57-9d55-0d3f2f0f9a11".into(),
                origin: TopicOrigin::Api,
                partitions: 8,
                configs: [("retention.ms".to_string(), "1000".to_string())].into(),
            },
        );
        registry.store(dir.path()).unwrap();
        assert_eq!(TopicRegistry::load(dir.path()).unwrap(), registry);
    }

    #[test]
    fn a_damaged_file_is_an_error_not_an_empty_registry() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("meta")).unwrap();
        std::fs::write(registry_path(dir.path()), "topics = 3").unwrap();
        assert!(matches!(
            TopicRegistry::load(dir.path()),
            Err(RegistryError::Parse { .. })
        ));
    }
}
