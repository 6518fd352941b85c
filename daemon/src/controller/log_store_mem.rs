//! A directory in memory that knows what a power loss keeps, for the store's
//! crash tests and the simulation. Each file is an inode with the bytes a
//! reader sees (the page cache) and the bytes on disk (as of its last
//! successful fsync); names are durable only as of the last directory
//! fsync. `power_loss` keeps only what is on disk. On command the k-th
//! mutating operation fails, and so does every one after it (the process
//! is stopping); a failed fsync leaves the disk as it was, as Linux does
//! after a writeback error.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::MetaDir;

#[derive(Debug, Default, Clone)]
struct Inode {
    cached: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Debug, Default)]
struct State {
    names: BTreeMap<String, u64>,
    durable_names: BTreeMap<String, u64>,
    inodes: HashMap<u64, Inode>,
    next_inode: u64,
    /// Mutating operations so far.
    operations: u64,
    /// The operation (1-based) that fails, and all after it.
    fail_from: Option<u64>,
}

#[derive(Debug)]
pub struct MemDir {
    path: PathBuf,
    state: Mutex<State>,
}

impl Default for MemDir {
    fn default() -> MemDir {
        MemDir::new()
    }
}

impl MemDir {
    pub fn new() -> MemDir {
        MemDir {
            path: PathBuf::from("/mem/__cluster_metadata"),
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The `k`-th mutating operation from the start (1-based) fails, and so
    /// does every later one.
    pub fn fail_from(&self, k: u64) {
        self.lock().fail_from = Some(k);
    }

    /// Mutating operations so far.
    pub fn operations(&self) -> u64 {
        self.lock().operations
    }

    /// Keeps what reached the disk: durable names, durable bytes. Faults
    /// are cleared: the machine restarts.
    pub fn power_loss(&self) {
        let mut state = self.lock();
        state.names = state.durable_names.clone();
        let live: Vec<u64> = state.names.values().copied().collect();
        state.inodes.retain(|id, _| live.contains(id));
        for inode in state.inodes.values_mut() {
            inode.cached = inode.durable.clone();
        }
        state.fail_from = None;
    }

    /// A file's bytes as a reader sees them.
    pub fn contents(&self, name: &str) -> Option<Vec<u8>> {
        let state = self.lock();
        let id = state.names.get(name)?;
        Some(state.inodes[id].cached.clone())
    }

    /// Replaces a file's bytes on disk and in cache (a test's tampering).
    pub fn tamper(&self, name: &str, bytes: Vec<u8>) {
        let mut state = self.lock();
        let id = state.names[name];
        let inode = state.inodes.get_mut(&id).expect("named inode exists");
        inode.cached = bytes.clone();
        inode.durable = bytes;
    }

    pub fn names(&self) -> Vec<String> {
        self.lock().names.keys().cloned().collect()
    }

    /// Counts a mutating operation; Err if it is to fail.
    fn operation(state: &mut State) -> io::Result<()> {
        state.operations += 1;
        match state.fail_from {
            Some(k) if state.operations >= k => Err(io::Error::other("injected failure (MemDir)")),
            _ => Ok(()),
        }
    }

    /// The file's inode, created (with a name not yet durable) if absent.
    fn create<'a>(state: &'a mut State, name: &str) -> &'a mut Inode {
        let id = match state.names.get(name) {
            Some(id) => *id,
            None => {
                let id = state.next_inode;
                state.next_inode += 1;
                state.names.insert(name.to_string(), id);
                id
            }
        };
        state.inodes.entry(id).or_default()
    }

    fn inode<'a>(state: &'a mut State, name: &str) -> io::Result<&'a mut Inode> {
        let id = *state
            .names
            .get(name)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        state
            .inodes
            .get_mut(&id)
            .ok_or_else(|| io::Error::other("dangling name"))
    }
}

impl MetaDir for MemDir {
    fn path(&self) -> &Path {
        &self.path
    }

    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.names())
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        self.contents(name)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn write_at(&self, name: &str, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let mut state = self.lock();
        Self::operation(&mut state)?;
        let inode = Self::create(&mut state, name);
        let end = offset as usize + bytes.len();
        if inode.cached.len() < end {
            inode.cached.resize(end, 0);
        }
        inode.cached[offset as usize..end].copy_from_slice(bytes);
        Ok(())
    }

    fn set_len(&self, name: &str, len: u64) -> io::Result<()> {
        let mut state = self.lock();
        Self::operation(&mut state)?;
        Self::create(&mut state, name)
            .cached
            .resize(len as usize, 0);
        Ok(())
    }

    fn sync(&self, name: &str) -> io::Result<()> {
        let mut state = self.lock();
        Self::operation(&mut state)?;
        let inode = Self::inode(&mut state, name)?;
        inode.durable = inode.cached.clone();
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut state = self.lock();
        Self::operation(&mut state)?;
        let id = state
            .names
            .remove(from)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        state.names.insert(to.to_string(), id);
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut state = self.lock();
        Self::operation(&mut state)?;
        state
            .names
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut state = self.lock();
        Self::operation(&mut state)?;
        state.durable_names = state.names.clone();
        // Forget inodes no name reaches any more, durable or not.
        let State {
            names,
            durable_names,
            inodes,
            ..
        } = &mut *state;
        inodes.retain(|id, _| {
            names.values().any(|n| n == id) || durable_names.values().any(|n| n == id)
        });
        Ok(())
    }
}
