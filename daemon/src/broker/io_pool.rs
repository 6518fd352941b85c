//! The storage threads: work that reads or writes partition files, checks
//! CRCs or decompresses batches must not hold up the async workers. A worker
//! stuck behind a large compressed batch or a slow disk would stall every
//! connection it polls; a blocking thread stalls only the request it runs.
//! At most `size` jobs run at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use thiserror::Error;
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::Semaphore;

/// Storage jobs running at once, per core. Enough to keep every core busy
/// validating batches while some jobs wait on the disk; few enough that a
/// flood of large produces cannot grow tokio's blocking pool (512 threads,
/// shared with the syncer and housekeeping) without bound.
const JOBS_PER_CORE: usize = 2;
/// Floor of the bound on a machine with one or two cores: a job that waits
/// on a slow disk must not leave nothing to validate the next batch.
const JOBS_MIN: usize = 4;

#[derive(Debug, Error)]
pub enum IoPoolError {
    #[error("{what}: the runtime is shutting down")]
    ShuttingDown { what: &'static str },
}

/// How long a job may take, as far as its caller can tell cheaply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobCost {
    /// Small uncompressed appends (at most a MiB in all): well under a
    /// millisecond, unless the disk stalls, which the free worker left by
    /// `IoPool::run` covers.
    Short,
    /// Decompression, large reads or writes, fsyncs: anything else.
    Long,
}

/// A bounded gate in front of blocking work; waiting for a slot is async.
#[derive(Debug)]
pub struct IoPool {
    slots: Arc<Semaphore>,
    /// Short jobs running on the worker that dispatched them.
    inline_jobs: AtomicUsize,
}

impl Default for IoPool {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::new((cores * JOBS_PER_CORE).max(JOBS_MIN))
    }
}

impl IoPool {
    pub fn new(size: usize) -> Self {
        assert!(size > 0, "an I/O pool needs at least one slot");
        Self {
            slots: Arc::new(Semaphore::new(size)),
            inline_jobs: AtomicUsize::new(0),
        }
    }

    /// Runs `job` once a slot is free (first come, first served) and returns
    /// its result, never holding up the async workers:
    ///
    /// - On a multi-threaded runtime a `Long` job runs on the calling thread
    ///   with `block_in_place`, after that thread hands its worker role (and
    ///   the tasks queued on it) to another thread. The caller waits for the
    ///   job anyway; sending the job to another thread and waking the caller
    ///   after would cost two thread wake-ups per request (it halved produce
    ///   throughput in `sluiced bench`).
    /// - A `Short` job skips even that hand-over (one wake-up of a blocking
    ///   thread, a fifth of `sluiced bench`'s produce throughput on two
    ///   cores) and runs on the calling worker, but only while another
    ///   worker is left that runs no such job: a short job then delays no
    ///   other connection, which that worker serves (and it takes the queued
    ///   tasks over), even if the disk stalls the job.
    /// - A current-thread runtime (unit tests) cannot hand its worker over:
    ///   there every job goes to `spawn_blocking`.
    ///
    /// A panic in `job` is resumed here; the daemon's panic hook has already
    /// ended the process by then.
    pub async fn run<T, F>(
        &self,
        what: &'static str,
        cost: JobCost,
        job: F,
    ) -> Result<T, IoPoolError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| IoPoolError::ShuttingDown { what })?;
        let runtime = Handle::current();
        if runtime.runtime_flavor() == RuntimeFlavor::MultiThread {
            let inline = match cost {
                JobCost::Short => self.try_inline(runtime.metrics().num_workers()),
                JobCost::Long => None,
            };
            let result = match inline {
                Some(_inline) => job(),
                None => tokio::task::block_in_place(job),
            };
            drop(slot);
            return Ok(result);
        }
        let joined = tokio::task::spawn_blocking(move || {
            let result = job();
            drop(slot);
            result
        })
        .await;
        match joined {
            Ok(result) => Ok(result),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(IoPoolError::ShuttingDown { what }),
        }
    }

    /// A place for a short job on the calling worker, while at least one of
    /// the runtime's `workers` is left without one.
    fn try_inline(&self, workers: usize) -> Option<InlineJob<'_>> {
        let running = self.inline_jobs.fetch_add(1, Ordering::AcqRel);
        let guard = InlineJob(&self.inline_jobs);
        (running + 1 < workers).then_some(guard)
    }
}

/// Counts one job running on a worker until dropped.
struct InlineJob<'a>(&'a AtomicUsize);

impl Drop for InlineJob<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// With two slots held, a third job waits for one to be given back.
    #[test]
    fn no_more_jobs_run_at_once_than_the_pool_has_slots() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let pool = Arc::new(IoPool::new(2));
        let (started_tx, started) = mpsc::channel::<usize>();
        let mut releases = Vec::new();
        let mut jobs = Vec::new();
        for id in 0..3 {
            let (release_tx, release) = mpsc::channel::<()>();
            releases.push(release_tx);
            let (pool, started_tx) = (pool.clone(), started_tx.clone());
            jobs.push(runtime.spawn(async move {
                pool.run("test", JobCost::Long, move || {
                    started_tx.send(id).unwrap();
                    release.recv().unwrap();
                })
                .await
            }));
            if id < 2 {
                assert_eq!(started.recv_timeout(Duration::from_secs(10)), Ok(id));
            }
        }
        // Both slots are taken: the third job must not start (a bounded
        // wait for something that must not happen).
        assert!(started.recv_timeout(Duration::from_millis(300)).is_err());
        releases[0].send(()).unwrap();
        assert_eq!(started.recv_timeout(Duration::from_secs(10)), Ok(2));
        releases[1].send(()).unwrap();
        releases[2].send(()).unwrap();
        for job in jobs {
            runtime.block_on(job).unwrap().unwrap();
        }
    }

    /// On a runtime with a single worker, a job blocked until another task
    /// acts does not stop that task: the worker role was handed over.
    #[test]
    fn a_blocked_job_leaves_the_worker_to_other_tasks() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let pool = Arc::new(IoPool::new(1));
        let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
        let (wake_tx, wake) = mpsc::channel::<()>();
        let blocked = runtime.spawn(async move {
            pool.run("test", JobCost::Long, move || {
                started_tx.send(()).unwrap();
                wake.recv_timeout(Duration::from_secs(10))
            })
            .await
        });
        let waker = runtime.spawn(async move {
            started.await.unwrap();
            wake_tx.send(()).unwrap();
        });
        runtime.block_on(waker).unwrap();
        assert_eq!(runtime.block_on(blocked).unwrap().unwrap(), Ok(()));
    }

    /// With two workers, a short job blocked on the first keeps the second
    /// from taking one: the second short job leaves its worker, so a task
    /// that must run for it to finish still runs.
    #[test]
    fn short_jobs_always_leave_one_worker_free() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let pool = Arc::new(IoPool::new(4));
        let (first_started_tx, first_started) = mpsc::channel::<()>();
        let (release_first, first_release) = mpsc::channel::<()>();
        let first = runtime.spawn({
            let pool = pool.clone();
            async move {
                pool.run("test", JobCost::Short, move || {
                    first_started_tx.send(()).unwrap();
                    first_release.recv_timeout(Duration::from_secs(20))
                })
                .await
            }
        });
        first_started.recv_timeout(Duration::from_secs(10)).unwrap();
        let (second_started_tx, second_started) = tokio::sync::oneshot::channel::<()>();
        let (wake_tx, wake) = mpsc::channel::<()>();
        let second = runtime.spawn({
            let pool = pool.clone();
            async move {
                pool.run("test", JobCost::Short, move || {
                    second_started_tx.send(()).unwrap();
                    wake.recv_timeout(Duration::from_secs(10))
                })
                .await
            }
        });
        let waker = runtime.spawn(async move {
            second_started.await.unwrap();
            wake_tx.send(()).unwrap();
        });
        runtime.block_on(waker).unwrap();
        assert_eq!(runtime.block_on(second).unwrap().unwrap(), Ok(()));
        release_first.send(()).unwrap();
        assert_eq!(runtime.block_on(first).unwrap().unwrap(), Ok(()));
        assert_eq!(pool.inline_jobs.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_job_returns_its_value() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let pool = IoPool::new(1);
        assert_eq!(
            runtime
                .block_on(pool.run("test", JobCost::Short, || 41 + 1))
                .unwrap(),
            42
        );
    }
}
