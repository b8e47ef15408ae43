//! Macros for vmsdb services (placeholder while being written).
