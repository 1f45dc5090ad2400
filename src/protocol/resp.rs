//! RESP2 codec (in progress).
