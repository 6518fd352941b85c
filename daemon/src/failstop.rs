//! Fail-stop (DESIGN §2): a storage failure or a panic ends the process at
//! once. systemd restarts it and recovery reads what is really on disk; the
//! process never limps on with a partition whose state it can no longer
//! trust, and never retries an fsync whose writeback failed.

use std::fmt::Display;

/// Exit status after a failed write or fsync (sysexits' EX_IOERR).
pub const STORAGE_FAILURE_EXIT_CODE: i32 = 74;
/// Exit status after a panic on any thread (sysexits' EX_SOFTWARE).
pub const PANIC_EXIT_CODE: i32 = 70;

/// Ends the process after a storage failure: one log line naming what
/// failed (the error carries the file), then exit without running any
/// shutdown path (a clean close would write markers vouching for data the
/// failed sync may have lost).
pub fn storage_failure(what: &str, error: &dyn Display) -> ! {
    tracing::error!(event = "storage_failure", what, error = %error, "stopping: a write or fsync failed");
    eprintln!("sluiced: stopping after a storage failure: {what}: {error}");
    std::process::exit(STORAGE_FAILURE_EXIT_CODE)
}

/// Ends the process when state it must trust breaks a rule (a committed
/// metadata entry that does not apply): as a panic would, without unwinding
/// through whatever holds the state.
pub fn invariant_failure(what: &str, error: &dyn Display) -> ! {
    tracing::error!(event = "invariant_failure", what, error = %error, "stopping: state breaks an invariant");
    eprintln!("sluiced: stopping: {what}: {error}");
    std::process::exit(PANIC_EXIT_CODE)
}

/// Makes a panic on any thread end the process (after the default report):
/// a background task that panics must not leave a dead partition or group
/// behind a process that still looks healthy.
pub fn install_panic_hook() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        tracing::error!(event = "panic", info = %info, "stopping: a thread panicked");
        std::process::exit(PANIC_EXIT_CODE);
    }));
}
