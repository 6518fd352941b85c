//! systemd integration (`Type=notify`): READY only once recovery is done and
//! the listener is bound, STATUS lines saying what the daemon does, WATCHDOG
//! keep-alives sent *from the runtime that serves requests* (a stuck runtime
//! misses them and systemd restarts it), RELOADING/READY around a reload and
//! STOPPING on shutdown. Outside systemd (no NOTIFY_SOCKET) every call is a
//! no-op.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(event = "sd_notify_failed", error = %e);
    }
}

pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

pub fn ready(text: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(text)]);
}

pub fn reloading() {
    // MONOTONIC_USEC lets systemd ≥ 253 (Type=notify-reload) match the reply.
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[
            NotifyState::Reloading,
            now,
            NotifyState::Status("reloading the cluster spec"),
        ]),
        Err(_) => send(&[
            NotifyState::Reloading,
            NotifyState::Status("reloading the cluster spec"),
        ]),
    }
}

pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: draining connections, flushing partitions"),
    ]);
}

/// Sends WATCHDOG=1 at half the interval systemd asked for, for as long as
/// the runtime running this task makes progress. Returns at once when no
/// watchdog is configured.
pub async fn run_watchdog() {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let period = (interval / 2).max(Duration::from_millis(100));
    tracing::info!(
        event = "watchdog_enabled",
        interval_ms = interval.as_millis() as u64
    );
    let mut ticker = tokio::time::interval(period);
    loop {
        ticker.tick().await;
        send(&[NotifyState::Watchdog]);
    }
}
