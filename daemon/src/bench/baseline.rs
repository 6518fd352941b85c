//! What the hardware does without Sluice, measured in the same run: raw
//! buffered sequential writes to the data disk, and TCP over loopback.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Instant;

/// Size of each write in both baselines.
const CHUNK_BYTES: usize = 1024 * 1024;

/// Buffered (page-cache) sequential write rate, in bytes per second, of
/// `total_bytes` into the new file `path`, starting with no dirty data
/// outstanding, as a log writes its segments (the caller settles what it
/// leaves dirty before timing the next phase). The caller keeps the file
/// until the broker's runs are done: page cache freed by a deletion is
/// reused at memory speed for a few seconds, while on a VM that hands free
/// guest memory back to its host (free page reporting) every later first
/// touch of a page is a host fault, several times slower; deleting would
/// favour whichever phase writes next.
pub fn disk_write_bytes_per_sec(path: &Path, total_bytes: u64) -> std::io::Result<f64> {
    let chunk = vec![0x5Au8; CHUNK_BYTES];
    if let Some(dir) = path.parent() {
        settle_writeback(dir)?;
    }
    let started = Instant::now();
    let mut file = std::fs::File::create_new(path)?;
    let mut written = 0u64;
    while written < total_bytes {
        file.write_all(&chunk)?;
        written += CHUNK_BYTES as u64;
    }
    Ok(written as f64 / started.elapsed().as_secs_f64())
}

/// Waits until the file system holding `dir` has written back its dirty
/// data, so a timed write phase does not pay for the one before it.
pub fn settle_writeback(dir: &Path) -> std::io::Result<()> {
    use crate::log::Storage;
    crate::log::OsStorage.sync_filesystem(dir)
}

/// Loopback TCP rate, in bytes per second, of `total_bytes` from one thread
/// to another through 127.0.0.1.
pub fn loopback_tcp_bytes_per_sec(total_bytes: u64) -> std::io::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut socket, _) = listener.accept()?;
        let mut buffer = vec![0u8; CHUNK_BYTES];
        let mut received = 0u64;
        loop {
            let n = socket.read(&mut buffer)?;
            if n == 0 {
                return Ok(received);
            }
            received += n as u64;
        }
    });
    let chunk = vec![0xA5u8; CHUNK_BYTES];
    let started = Instant::now();
    let mut socket = TcpStream::connect(address)?;
    let mut sent = 0u64;
    while sent < total_bytes {
        socket.write_all(&chunk)?;
        sent += CHUNK_BYTES as u64;
    }
    drop(socket);
    let received = reader
        .join()
        .map_err(|_| std::io::Error::other("loopback reader panicked"))??;
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(received, sent);
    Ok(received as f64 / seconds)
}
