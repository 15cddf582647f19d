//! Helpers for P2PS's multi-process and multi-host tests.
//!
//! The tests themselves live in `tests/`; they start real `p2ps` processes (and, for the NAT lab,
//! network namespaces) and check what crosses between them.
