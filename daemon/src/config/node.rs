//! Which broker of the spec this host is.
//!
//! The spec is identical on every host, so each host needs one small local fact:
//! its broker id. Sources, first match wins:
//! 1. the `--node` command-line flag;
//! 2. the `SLUICE_NODE_ID` environment variable (empty counts as unset);
//! 3. the node file, `/etc/sluice/node.toml` by default, holding `node_id = 1`
//!    (a missing file counts as unset; an unreadable or invalid one is an error);
//! 4. the only broker, when the spec declares exactly one.
//!
//! Whatever the source, the id must be a broker declared in the spec.

use std::path::Path;

use super::error::line_column;
use super::spec::{ClusterSpec, NodeFile};

pub const NODE_ID_ENV: &str = "SLUICE_NODE_ID";
pub const DEFAULT_NODE_FILE: &str = "/etc/sluice/node.toml";

/// Finds this host's broker id; the error says every source that was tried.
pub fn resolve_node_id(
    flag: Option<i32>,
    env: Option<&str>,
    node_file: Option<&Path>,
    spec: &ClusterSpec,
) -> Result<i32, String> {
    let mut tried = Vec::new();
    match flag {
        Some(id) => return declared(spec, id, "the --node flag"),
        None => tried.push("no --node flag".to_string()),
    }
    match env.map(str::trim).filter(|value| !value.is_empty()) {
        Some(value) => {
            let id = value.parse::<i32>().map_err(|_| {
                format!("{NODE_ID_ENV}={value:?} is not a broker id (expected an integer)")
            })?;
            return declared(spec, id, NODE_ID_ENV);
        }
        None => tried.push(format!("{NODE_ID_ENV} is not set")),
    }
    if let Some(path) = node_file {
        match read_node_file(path)? {
            Some(id) => return declared(spec, id, &path.display().to_string()),
            None => tried.push(format!("{} does not exist", path.display())),
        }
    }
    if let [only] = spec.brokers.as_slice() {
        return Ok(only.id);
    }
    Err(format!(
        "cannot tell which broker this host is: {}, and the spec declares {} brokers ({}); \
         set one of these",
        tried.join(", "),
        spec.brokers.len(),
        declared_list(spec)
    ))
}

fn declared_list(spec: &ClusterSpec) -> String {
    let ids: Vec<String> = spec.brokers.iter().map(|b| b.id.to_string()).collect();
    ids.join(", ")
}

fn declared(spec: &ClusterSpec, id: i32, source: &str) -> Result<i32, String> {
    if spec.broker(id).is_some() {
        return Ok(id);
    }
    Err(format!(
        "node id {id} (from {source}) is not a broker declared in the spec (declared: {})",
        declared_list(spec)
    ))
}

/// `Ok(None)` if the file does not exist.
fn read_node_file(path: &Path) -> Result<Option<i32>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(format!("cannot read {}: {error}", path.display())),
    };
    match toml::from_str::<NodeFile>(&text) {
        Ok(file) => Ok(Some(file.node_id)),
        Err(error) => {
            let (line, column) = line_column(&text, error.span().map_or(0, |span| span.start));
            let message = error
                .message()
                .trim_end()
                .replace("missing field", "missing key");
            Err(format!("{}:{line}:{column}: {message}", path.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DEFAULT_SPEC_TOML, parse_spec};

    fn three_brokers() -> ClusterSpec {
        let text = include_str!("../../../etc/cluster-3.toml");
        parse_spec(text, "cluster-3.toml").unwrap()
    }

    fn one_broker() -> ClusterSpec {
        parse_spec(DEFAULT_SPEC_TOML, "<embedded default>").unwrap()
    }

    fn node_file(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    #[test]
    fn precedence_flag_env_file_single_broker() {
        let spec = three_brokers();
        let file = node_file("node_id = 3\n");
        let path = Some(file.path());
        assert_eq!(resolve_node_id(Some(1), Some("2"), path, &spec), Ok(1));
        assert_eq!(resolve_node_id(None, Some("2"), path, &spec), Ok(2));
        assert_eq!(resolve_node_id(None, Some(" "), path, &spec), Ok(3));
        assert_eq!(resolve_node_id(None, None, path, &spec), Ok(3));
        let missing = Path::new("/nonexistent/sluice/node.toml");
        assert_eq!(
            resolve_node_id(None, None, Some(missing), &one_broker()),
            Ok(1)
        );
        assert_eq!(resolve_node_id(None, None, None, &one_broker()), Ok(1));
    }

    #[test]
    fn nothing_set_with_many_brokers_says_what_was_tried() {
        let missing = Path::new("/nonexistent/sluice/node.toml");
        let error = resolve_node_id(None, Some(""), Some(missing), &three_brokers()).unwrap_err();
        assert_eq!(
            error,
            "cannot tell which broker this host is: no --node flag, SLUICE_NODE_ID is not set, \
             /nonexistent/sluice/node.toml does not exist, and the spec declares 3 brokers (1, 2, 3); \
             set one of these"
        );
    }

    #[test]
    fn undeclared_ids_are_refused_whatever_the_source() {
        let spec = three_brokers();
        assert_eq!(
            resolve_node_id(Some(7), None, None, &spec).unwrap_err(),
            "node id 7 (from the --node flag) is not a broker declared in the spec (declared: 1, 2, 3)"
        );
        assert_eq!(
            resolve_node_id(None, Some("4"), None, &spec).unwrap_err(),
            "node id 4 (from SLUICE_NODE_ID) is not a broker declared in the spec (declared: 1, 2, 3)"
        );
        let file = node_file("node_id = 9\n");
        let error = resolve_node_id(None, None, Some(file.path()), &spec).unwrap_err();
        assert!(error.starts_with("node id 9 (from /"), "{error}");
        assert_eq!(
            resolve_node_id(Some(2), None, None, &one_broker()).unwrap_err(),
            "node id 2 (from the --node flag) is not a broker declared in the spec (declared: 1)"
        );
    }

    #[test]
    fn bad_env_and_bad_file_are_errors() {
        let spec = three_brokers();
        assert_eq!(
            resolve_node_id(None, Some("one"), None, &spec).unwrap_err(),
            "SLUICE_NODE_ID=\"one\" is not a broker id (expected an integer)"
        );
        let file = node_file("# this host\nnode = 2\n");
        let error = resolve_node_id(None, None, Some(file.path()), &spec).unwrap_err();
        let expected = format!(
            "{}:2:1: unknown field `node`, expected `node_id`",
            file.path().display()
        );
        assert_eq!(error, expected);
        let file = node_file("node_id = \"2\"\n");
        let error = resolve_node_id(None, None, Some(file.path()), &spec).unwrap_err();
        assert!(
            error.ends_with(":1:11: invalid type: string \"2\", expected i32"),
            "{error}"
        );
    }
}
