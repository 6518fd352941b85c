//! broker subsystem (work in progress).
