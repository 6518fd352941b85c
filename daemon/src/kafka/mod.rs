//! kafka subsystem (work in progress).
