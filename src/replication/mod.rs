//! Replication core (in progress).
