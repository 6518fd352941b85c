//! config subsystem (work in progress).
