//! Small files replaced atomically: write `name.tmp`, fsync it, rename over
//! `name`, fsync the directory. A reader sees the old or the new file, never
//! a mix (POSIX rename atomicity; docs/log-format.md "Disk assumptions").

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::error::LogError;

/// Suffix of a half-written checkpoint; such files are removed on open.
pub(crate) const TMP_SUFFIX: &str = ".tmp";
/// Checkpoint files are tiny; refuse to read anything bigger than this.
const CHECKPOINT_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// Version line of the checkpoint formats we write.
pub(crate) const CHECKPOINT_VERSION: u32 = 0;

/// Replaces `path` with `contents` atomically and durably.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), LogError> {
    let tmp = tmp_path(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(LogError::io("create", &tmp))?;
    file.write_all(contents)
        .map_err(LogError::io("write", &tmp))?;
    file.sync_all().map_err(LogError::io("fsync", &tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(LogError::io("rename", &tmp))?;
    sync_dir(parent_of(path))
}

/// Replaces `path` atomically (old or new contents, never a mix) without
/// syncing: for files whose loss in a crash only costs recovery time.
pub(crate) fn write_atomic_unsynced(path: &Path, contents: &[u8]) -> Result<(), LogError> {
    let tmp = tmp_path(path);
    fs::write(&tmp, contents).map_err(LogError::io("write", &tmp))?;
    fs::rename(&tmp, path).map_err(LogError::io("rename", &tmp))
}

/// Reads a checkpoint; `Ok(None)` when it does not exist.
pub(crate) fn read(path: &Path) -> Result<Option<String>, LogError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(LogError::io("open", path)(error)),
    };
    let len = file.metadata().map_err(LogError::io("stat", path))?.len();
    if len > CHECKPOINT_BYTES_MAX {
        return Err(LogError::CorruptCheckpoint {
            path: path.to_path_buf(),
            reason: format!("{len} bytes is larger than any checkpoint"),
        });
    }
    let text = fs::read_to_string(path).map_err(LogError::io("read", path))?;
    Ok(Some(text))
}

/// Makes creations, renames and deletions in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    let handle = File::open(dir).map_err(LogError::io("open dir", dir))?;
    handle.sync_all().map_err(LogError::io("fsync dir", dir))
}

/// Removes `path` if present.
pub(crate) fn remove_if_exists(path: &Path) -> Result<bool, LogError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(LogError::io("remove", path)(error)),
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(TMP_SUFFIX);
    PathBuf::from(name)
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Parses Kafka's checkpoint text: a version line, a count line, then
/// exactly `count` lines, each handed to `parse_line`.
pub(crate) fn parse_lines<T>(
    path: &Path,
    text: &str,
    parse_line: impl Fn(&str) -> Option<T>,
) -> Result<Vec<T>, LogError> {
    let corrupt = |reason: String| LogError::CorruptCheckpoint {
        path: path.to_path_buf(),
        reason,
    };
    let mut lines = text.lines();
    let version = lines.next().map(str::trim);
    if version != Some("0") {
        return Err(corrupt(format!("unknown version line {version:?}")));
    }
    let count: usize = lines
        .next()
        .and_then(|line| line.trim().parse().ok())
        .ok_or_else(|| corrupt("missing or bad count line".to_string()))?;
    let entries: Vec<T> = lines
        .filter(|line| !line.trim().is_empty())
        .map(|line| parse_line(line).ok_or_else(|| corrupt(format!("bad line {line:?}"))))
        .collect::<Result<_, _>>()?;
    if entries.len() != count {
        return Err(corrupt(format!(
            "count says {count}, found {}",
            entries.len()
        )));
    }
    Ok(entries)
}

/// Formats Kafka's checkpoint text from already formatted lines.
pub(crate) fn format_lines(lines: &[String]) -> String {
    let mut text = format!("{CHECKPOINT_VERSION}\n{}\n", lines.len());
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp");
        assert_eq!(read(&path).unwrap(), None);
        write_atomic(
            &path,
            format_lines(&["1 0".into(), "3 10".into()]).as_bytes(),
        )
        .unwrap();
        write_atomic(&path, format_lines(&["1 0".into()]).as_bytes()).unwrap();
        let text = read(&path).unwrap().unwrap();
        let parsed = parse_lines(&path, &text, |l| Some(l.to_string())).unwrap();
        assert_eq!(parsed, vec!["1 0".to_string()]);
        assert!(!tmp_path(&path).exists());
    }

    #[test]
    fn bad_checkpoints_are_reported() {
        let path = Path::new("x");
        assert!(parse_lines(path, "1\n0\n", |_| Some(())).is_err());
        assert!(parse_lines(path, "0\n2\n5\n", |l| l.parse::<i64>().ok()).is_err());
        assert!(parse_lines(path, "0\n1\nabc\n", |l| l.parse::<i64>().ok()).is_err());
        assert_eq!(
            parse_lines(path, "0\n1\n5\n", |l| l.parse::<i64>().ok()).unwrap(),
            vec![5]
        );
    }
}
