//! log subsystem (work in progress).
