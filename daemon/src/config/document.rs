//! From TOML text to a typed `ClusterSpec`, keeping every key's position.
//!
//! 1. The text is parsed into toml's spanned document (`DeTable`). Syntax errors
//!    stop here, all of them reported.
//! 2. A `SpanIndex` records the dotted path, key span and value span of every
//!    entry, so that any later problem can be pointed at.
//! 3. Each table is checked for unknown keys (all reported), then deserialized with
//!    serde on its own, so one bad broker does not hide a bad topic.
//! 4. The typed spec is validated (validate.rs); every issue is located by path.

use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::error::{SpecError, SpecErrors, line_column};
use super::spec::{
    BrokerSpec, ClusterSection, ClusterSpec, ControllerSection, Limits, ReplicationSection,
    TopicOnlyKeys, TopicSettings, TopicSpec,
};
use super::validate;

/// Spec files are small; anything bigger is a mistake (and bounds our work).
pub const SPEC_BYTES_MAX: usize = 16 << 20;

const TOP_LEVEL_KEYS: [&str; 7] = [
    "cluster",
    "controller",
    "brokers",
    "limits",
    "replication",
    "topic_defaults",
    "topics",
];

pub(crate) fn parse(text: &str, origin: &str) -> Result<ClusterSpec, SpecErrors> {
    let source = Source { origin, text };
    if text.len() > SPEC_BYTES_MAX {
        let message = format!(
            "the spec is {} bytes; the limit is {SPEC_BYTES_MAX} bytes",
            text.len()
        );
        return Err(SpecErrors(vec![source.error_at(0, "", message)]));
    }
    let (root, syntax_errors) = DeTable::parse_recoverable(text);
    let index = SpanIndex::build(root.get_ref());
    if !syntax_errors.is_empty() {
        let errors = syntax_errors
            .iter()
            .map(|error| source.toml_error(error, &index, true))
            .collect();
        return Err(source.sorted(errors));
    }
    let mut problems = Vec::new();
    let builder = Builder {
        source: &source,
        index: &index,
    };
    let spec = builder.build(root.into_inner(), &mut problems);
    let spec = match spec {
        Some(spec) if problems.is_empty() => spec,
        _ => {
            assert!(!problems.is_empty(), "a part failed without saying why");
            return Err(source.sorted(problems));
        }
    };
    let issues = validate::validate(&spec);
    if issues.is_empty() {
        return Ok(spec);
    }
    let errors = issues
        .into_iter()
        .map(|issue| source.error_at(index.locate(&issue.key), &issue.key, issue.message))
        .collect();
    Err(source.sorted(errors))
}

/// FNV-1a, 64 bits: a stable fingerprint of the file text (not a security hash).
pub(crate) fn fnv1a_64_hex(text: &str) -> String {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = text.bytes().fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    });
    format!("{hash:016x}")
}

struct Source<'a> {
    origin: &'a str,
    text: &'a str,
}

impl Source<'_> {
    fn error_at(&self, offset: usize, key: &str, message: impl Into<String>) -> SpecError {
        let (line, column) = line_column(self.text, offset);
        SpecError {
            file: self.origin.to_string(),
            line,
            column,
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// A toml or serde error; `syntax` errors sit between keys, so the enclosing
    /// table is named rather than the entry containing the position.
    fn toml_error(&self, error: &toml::de::Error, index: &SpanIndex, syntax: bool) -> SpecError {
        let span = error.span().unwrap_or(0..0);
        let key = if syntax {
            header_at(self.text, span.start).unwrap_or_else(|| {
                let near = index.path_near(span.start);
                let key_text = self.text.get(span.clone()).unwrap_or("");
                // A repeated key is not in the index (the first one is): name it.
                match error.message().starts_with("duplicate key") && !key_text.is_empty() {
                    true if near.is_empty() => key_text.to_string(),
                    true => format!("{near}.{key_text}"),
                    false => near,
                }
            })
        } else {
            index.path_at(&span)
        };
        self.error_at(span.start, &key, humanize(error.message()))
    }

    fn sorted(&self, mut errors: Vec<SpecError>) -> SpecErrors {
        assert!(!errors.is_empty());
        errors.sort_by_key(|error| (error.line, error.column));
        SpecErrors(errors)
    }
}

/// The table named by a (possibly broken) `[header]` on the line holding `offset`.
fn header_at(text: &str, offset: usize) -> Option<String> {
    let line_start = text
        .get(..offset)?
        .rfind('\n')
        .map_or(0, |newline| newline + 1);
    let line = text[line_start..].lines().next()?.trim_start();
    let inner = line.strip_prefix('[')?;
    let inner = inner.strip_prefix('[').unwrap_or(inner);
    let name = inner.split([']', '#']).next()?.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// Rewords serde's messages for people who write TOML, not Rust.
fn humanize(message: &str) -> String {
    let message = message
        .trim_end()
        .replace("missing field", "missing required key")
        .replace("unknown variant", "unknown value")
        .replace("unknown field", "unknown key");
    let invalid_value = message.starts_with("invalid value");
    let replacements: [(&str, &str, &str); 8] = [
        (
            ", expected i16",
            "an integer",
            "an integer from -32768 to 32767",
        ),
        (
            ", expected i32",
            "an integer",
            "an integer from -2147483648 to 2147483647",
        ),
        (", expected u16", "an integer", "an integer from 0 to 65535"),
        (
            ", expected u32",
            "an integer",
            "an integer from 0 to 4294967295",
        ),
        (", expected u64", "an integer", "a non-negative integer"),
        (", expected a sequence", "an array", "an array"),
        (", expected path string", "a string", "a string"),
        (", expected a borrowed string", "a string", "a string"),
    ];
    for (suffix, as_type, as_value) in replacements {
        if let Some(stripped) = message.strip_suffix(suffix) {
            let expected = if invalid_value { as_value } else { as_type };
            return format!("{stripped}, expected {expected}");
        }
    }
    message
}

/// Every entry of the document with its dotted path and spans.
pub(crate) struct SpanIndex {
    entries: Vec<IndexEntry>,
}

struct IndexEntry {
    path: String,
    depth: usize,
    key_span: Range<usize>,
    value_span: Range<usize>,
    is_table: bool,
}

/// The TOML spelling of one key: bare when possible, else a quoted string.
pub(crate) fn key_segment(name: &str) -> String {
    let bare = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if !name.is_empty() && name.chars().all(bare) {
        name.to_string()
    } else {
        format!("{name:?}")
    }
}

/// `prefix.name`, quoting `name` if needed.
pub(crate) fn join_key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        key_segment(name)
    } else {
        format!("{prefix}.{}", key_segment(name))
    }
}

/// The path one level up: `a.b[2]` → `a.b`, `a."x.y".z` → `a."x.y"`, `a` → ``.
fn parent_path(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let mut in_quotes = false;
    let mut escaped = false;
    let mut cut = 0;
    for (position, character) in path.char_indices() {
        match character {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '.' | '[' if !in_quotes => cut = position,
            _ => {}
        }
    }
    Some(&path[..cut])
}

impl SpanIndex {
    pub(crate) fn build(root: &DeTable<'_>) -> SpanIndex {
        let mut index = SpanIndex {
            entries: Vec::new(),
        };
        index.walk_table("", 0, root);
        index
    }

    fn walk_table(&mut self, prefix: &str, depth: usize, table: &DeTable<'_>) {
        for (key, value) in table.iter() {
            let path = join_key(prefix, key.get_ref());
            self.walk_value(path, depth + 1, key.span(), value);
        }
    }

    fn walk_value(
        &mut self,
        path: String,
        depth: usize,
        key_span: Range<usize>,
        value: &Spanned<DeValue<'_>>,
    ) {
        let is_table = matches!(value.get_ref(), DeValue::Table(_));
        self.entries.push(IndexEntry {
            path: path.clone(),
            depth,
            key_span,
            value_span: value.span(),
            is_table,
        });
        match value.get_ref() {
            DeValue::Table(table) => self.walk_table(&path, depth, table),
            DeValue::Array(array) => {
                for (position, element) in array.iter().enumerate() {
                    let element_path = format!("{path}[{position}]");
                    self.walk_value(element_path, depth + 1, element.span(), element);
                }
            }
            _ => {}
        }
    }

    /// Byte offset of the value at `path`, or of its closest ancestor that exists.
    pub(crate) fn locate(&self, path: &str) -> usize {
        let mut candidate = Some(path);
        while let Some(current) = candidate {
            if let Some(entry) = self.entries.iter().find(|entry| entry.path == current) {
                return entry.value_span.start;
            }
            candidate = parent_path(current);
        }
        0
    }

    /// The most specific entry whose key or value covers `span`.
    pub(crate) fn path_at(&self, span: &Range<usize>) -> String {
        let covers = |outer: &Range<usize>| {
            outer.start <= span.start && span.end <= outer.end.max(outer.start + 1)
        };
        self.entries
            .iter()
            .filter_map(|entry| {
                let key = covers(&entry.key_span).then(|| entry.key_span.len());
                let value = covers(&entry.value_span).then(|| entry.value_span.len());
                let width = key.into_iter().chain(value).min()?;
                Some((width, std::cmp::Reverse(entry.depth), entry.path.as_str()))
            })
            .min()
            .map(|(_, _, path)| path.to_string())
            .unwrap_or_default()
    }

    /// For positions between entries (syntax errors): the table the last entry
    /// starting before `offset` belongs to, or the entry itself if it is a table.
    pub(crate) fn path_near(&self, offset: usize) -> String {
        let inside = self.path_at(&(offset..offset));
        if !inside.is_empty() {
            return inside;
        }
        let before = self
            .entries
            .iter()
            .filter(|entry| entry.key_span.start <= offset)
            .max_by_key(|entry| (entry.key_span.start, entry.depth));
        match before {
            Some(entry) if entry.is_table => entry.path.clone(),
            Some(entry) => parent_path(&entry.path).unwrap_or("").to_string(),
            None => String::new(),
        }
    }
}

/// The names of a serde struct's fields, read from its derived `Deserialize`.
fn struct_fields<T: DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{Error as _, Visitor};
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Probe<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(Self::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(Self::Error::custom("fields recorded"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
            enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    assert!(
        !fields.is_empty(),
        "struct_fields used on a type that is not a struct"
    );
    fields
}

/// Edit distance, for "did you mean" hints on misspelt keys.
fn edit_distance(left: &str, right: &str) -> usize {
    let right: Vec<char> = right.chars().collect();
    let mut previous: Vec<usize> = (0..=right.len()).collect();
    for (row, left_char) in left.chars().enumerate() {
        let mut current = vec![row + 1];
        for (column, right_char) in right.iter().enumerate() {
            let substitution = previous[column] + usize::from(left_char != *right_char);
            let best = substitution
                .min(previous[column + 1] + 1)
                .min(current[column] + 1);
            current.push(best);
        }
        previous = current;
    }
    previous[right.len()]
}

fn unknown_key_message(key: &str, allowed: &[&str]) -> String {
    let closest = allowed
        .iter()
        .map(|candidate| (edit_distance(key, candidate), *candidate))
        .min();
    match closest {
        Some((distance, candidate)) if distance <= 2.max(key.len() / 4) => {
            format!("unknown key; did you mean `{candidate}`?")
        }
        _ => format!("unknown key; allowed keys: {}", allowed.join(", ")),
    }
}

/// Turns the spanned document into typed parts, collecting every problem.
struct Builder<'a> {
    source: &'a Source<'a>,
    index: &'a SpanIndex,
}

type Value<'i> = Spanned<DeValue<'i>>;

impl Builder<'_> {
    fn build(&self, mut root: DeTable<'_>, problems: &mut Vec<SpecError>) -> Option<ClusterSpec> {
        self.check_keys("", &root, &TOP_LEVEL_KEYS, &[], problems);
        let cluster = self.required_table::<ClusterSection>(&mut root, "cluster", problems);
        let controller =
            self.required_table::<ControllerSection>(&mut root, "controller", problems);
        let brokers = self.brokers(root.remove("brokers"), problems);
        let limits = self.optional_table::<Limits>(&mut root, "limits", &[], problems);
        let replication =
            self.optional_table::<ReplicationSection>(&mut root, "replication", &[], problems);
        let topic_only = struct_fields::<TopicOnlyKeys>();
        let topic_defaults =
            self.optional_table::<TopicSettings>(&mut root, "topic_defaults", topic_only, problems);
        let topics = self.topics(root.remove("topics"), problems);
        Some(ClusterSpec {
            cluster: cluster?,
            controller: controller?,
            brokers: brokers?,
            limits: limits?,
            replication: replication?,
            topic_defaults: topic_defaults?,
            topics: topics?,
            source_hash: fnv1a_64_hex(self.source.text),
            source_text: std::sync::Arc::from(self.source.text),
        })
    }

    /// Reports every key of `table` that is not in `allowed`. Keys in `elsewhere`
    /// are legal in a related table, which the message says.
    fn check_keys(
        &self,
        path: &str,
        table: &DeTable<'_>,
        allowed: &[&str],
        elsewhere: &[&str],
        problems: &mut Vec<SpecError>,
    ) -> bool {
        let mut clean = true;
        for key in table.keys() {
            let name: &str = key.get_ref();
            if allowed.contains(&name) {
                continue;
            }
            clean = false;
            let message = if elsewhere.contains(&name) {
                format!("`{name}` can only be set in a [topics.NAME] table")
            } else {
                unknown_key_message(name, allowed)
            };
            let key_path = join_key(path, name);
            problems.push(self.source.error_at(key.span().start, &key_path, message));
        }
        clean
    }

    fn type_error(&self, path: &str, value: &Value<'_>, expected: &str) -> SpecError {
        let message = format!("expected {expected}, got {}", value.get_ref().type_str());
        self.source.error_at(value.span().start, path, message)
    }

    /// Checks keys, then deserializes one table. `None` if anything was wrong.
    fn table<T: DeserializeOwned>(
        &self,
        path: &str,
        value: Value<'_>,
        elsewhere: &[&str],
        problems: &mut Vec<SpecError>,
    ) -> Option<T> {
        let DeValue::Table(table) = value.get_ref() else {
            problems.push(self.type_error(path, &value, "a table"));
            return None;
        };
        if !self.check_keys(path, table, struct_fields::<T>(), elsewhere, problems) {
            return None;
        }
        match T::deserialize(ValueDeserializer::from(value)) {
            Ok(parsed) => Some(parsed),
            Err(error) => {
                problems.push(self.source.toml_error(&error, self.index, false));
                None
            }
        }
    }

    fn required_table<T: DeserializeOwned>(
        &self,
        root: &mut DeTable<'_>,
        name: &str,
        problems: &mut Vec<SpecError>,
    ) -> Option<T> {
        let Some(value) = root.remove(name) else {
            let message = format!("missing required table [{name}]");
            problems.push(self.source.error_at(0, name, message));
            return None;
        };
        self.table(name, value, &[], problems)
    }

    fn optional_table<T: DeserializeOwned + Default>(
        &self,
        root: &mut DeTable<'_>,
        name: &str,
        elsewhere: &[&str],
        problems: &mut Vec<SpecError>,
    ) -> Option<T> {
        match root.remove(name) {
            Some(value) => self.table(name, value, elsewhere, problems),
            None => Some(T::default()),
        }
    }

    fn brokers(
        &self,
        value: Option<Value<'_>>,
        problems: &mut Vec<SpecError>,
    ) -> Option<Vec<BrokerSpec>> {
        let Some(value) = value else {
            let message = "missing required [[brokers]] tables: declare at least one broker";
            problems.push(self.source.error_at(0, "brokers", message));
            return None;
        };
        let span = value.span();
        let DeValue::Array(array) = value.into_inner() else {
            let message = "expected an array of tables, written [[brokers]]";
            problems.push(self.source.error_at(span.start, "brokers", message));
            return None;
        };
        let mut brokers = Some(Vec::with_capacity(array.len()));
        for (position, element) in array.into_iter().enumerate() {
            let path = format!("brokers[{position}]");
            match (
                self.table::<BrokerSpec>(&path, element, &[], problems),
                &mut brokers,
            ) {
                (Some(broker), Some(brokers)) => brokers.push(broker),
                _ => brokers = None,
            }
        }
        brokers
    }

    fn topics(
        &self,
        value: Option<Value<'_>>,
        problems: &mut Vec<SpecError>,
    ) -> Option<std::collections::BTreeMap<String, TopicSpec>> {
        let mut topics = Some(std::collections::BTreeMap::new());
        let Some(value) = value else {
            return topics;
        };
        let span = value.span();
        let DeValue::Table(table) = value.into_inner() else {
            let message = "expected a table of topics, written [topics.NAME]";
            problems.push(self.source.error_at(span.start, "topics", message));
            return None;
        };
        for (name, topic_value) in table {
            let name: String = name.get_ref().to_string();
            let path = join_key("topics", &name);
            match (self.topic(&path, topic_value, problems), &mut topics) {
                (Some(topic), Some(topics)) => {
                    topics.insert(name, topic);
                }
                _ => topics = None,
            }
        }
        topics
    }

    /// A topic table holds `TopicSettings` keys plus `TopicOnlyKeys`; each part is
    /// deserialized on its own so that both keep `deny_unknown_fields`.
    fn topic(
        &self,
        path: &str,
        value: Value<'_>,
        problems: &mut Vec<SpecError>,
    ) -> Option<TopicSpec> {
        let span = value.span();
        let DeValue::Table(table) = value.get_ref() else {
            problems.push(self.type_error(path, &value, "a table"));
            return None;
        };
        let settings_keys = struct_fields::<TopicSettings>();
        let only_keys = struct_fields::<TopicOnlyKeys>();
        let allowed: Vec<&str> = settings_keys.iter().chain(only_keys).copied().collect();
        if !self.check_keys(path, table, &allowed, &[], problems) {
            return None;
        }
        let DeValue::Table(table) = value.into_inner() else {
            unreachable!("checked above");
        };
        let (mut settings, mut only) = (DeTable::new(), DeTable::new());
        for (key, entry) in table {
            let name: &str = key.get_ref();
            if only_keys.contains(&name) {
                only.insert(key, entry);
            } else {
                settings.insert(key, entry);
            }
        }
        let settings_value = Spanned::new(span.clone(), DeValue::Table(settings));
        let only_value = Spanned::new(span, DeValue::Table(only));
        let settings = self.table::<TopicSettings>(path, settings_value, &[], problems);
        let only = self.table::<TopicOnlyKeys>(path, only_value, &[], problems);
        Some(TopicSpec {
            settings: settings?,
            replicas: only.as_ref()?.replicas.clone(),
            allow_delete: only?.allow_delete,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_quote_when_needed() {
        assert_eq!(join_key("topics", "orders"), "topics.orders");
        assert_eq!(join_key("topics", "orders.v2"), "topics.\"orders.v2\"");
        assert_eq!(join_key("", "cluster"), "cluster");
        assert_eq!(
            parent_path("topics.\"orders.v2\".partitions"),
            Some("topics.\"orders.v2\"")
        );
        assert_eq!(parent_path("topics.\"orders.v2\""), Some("topics"));
        assert_eq!(parent_path("brokers[1].id"), Some("brokers[1]"));
        assert_eq!(parent_path("brokers[1]"), Some("brokers"));
        assert_eq!(parent_path("brokers"), Some(""));
        assert_eq!(parent_path(""), None);
    }

    #[test]
    fn index_finds_paths_by_position() {
        let text = "[cluster]\nname = \"x\"\n\n[[brokers]]\nid = 1\n\n[topics.\"a.b\"]\nreplicas = [[1, 2]]\n";
        let (root, errors) = DeTable::parse_recoverable(text);
        assert!(errors.is_empty());
        let index = SpanIndex::build(root.get_ref());
        let at = |needle: &str| {
            let start = text.find(needle).unwrap();
            index.path_at(&(start..start + needle.len()))
        };
        assert_eq!(at("\"x\""), "cluster.name");
        assert_eq!(at("id"), "brokers[0].id");
        assert_eq!(at("[[brokers]]"), "brokers[0]");
        assert_eq!(at("2"), "topics.\"a.b\".replicas[0][1]");
        assert_eq!(at("[topics.\"a.b\"]"), "topics.\"a.b\"");
        assert_eq!(
            index.locate("topics.\"a.b\".partitions"),
            text.find("[topics").unwrap()
        );
        assert_eq!(index.locate("nothing.here"), 0);
    }

    #[test]
    fn struct_fields_reads_serde_names() {
        assert_eq!(
            struct_fields::<TopicOnlyKeys>(),
            &["replicas", "allow_delete"]
        );
        assert!(struct_fields::<TopicSettings>().contains(&"retention_ms"));
    }

    #[test]
    fn hints_for_misspelt_keys() {
        assert_eq!(
            unknown_key_message("partitons", &["partitions", "replicas"]),
            "unknown key; did you mean `partitions`?"
        );
        assert_eq!(
            unknown_key_message("colour", &["name", "id"]),
            "unknown key; allowed keys: name, id"
        );
    }

    #[test]
    fn fnv_matches_reference_vectors() {
        assert_eq!(fnv1a_64_hex(""), "cbf29ce484222325");
        assert_eq!(fnv1a_64_hex("a"), "af63dc4c8601ec8c");
    }
}
