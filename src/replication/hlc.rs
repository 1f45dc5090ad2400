//! Hybrid logical clock: versions that follow wall time and never go back.
//!
//! A version timestamp must satisfy two needs at once. It should follow real
//! time, so that "last writer wins" means roughly what a user expects and so
//! that tombstones can be aged by it. And it must be strictly increasing on
//! each node, and higher than anything the node has already seen, so that a
//! local write always beats the value it replaces, even when this node's wall
//! clock lags behind a peer's or jumps backwards.
//!
//! A hybrid logical clock gives both. A reading is a `u64`: the physical time
//! in milliseconds since the UNIX epoch in the high 48 bits (enough until the
//! year 10889), and a logical counter in the low 16 bits. [`Hlc::now`] returns
//! `max(last + 1, wall << 16)`: it moves with the wall clock, and when the wall
//! clock stands still or goes backwards the counter carries the order.
//! [`Hlc::observe`] folds in every timestamp received from a peer, so the next
//! local reading is higher than anything seen.
//!
//! The state is one `AtomicU64`, so many client coroutines can take versions
//! concurrently without a lock.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bits of a reading that hold the logical counter.
pub const LOGICAL_BITS: u32 = 16;

/// The largest physical time (ms) a reading can hold.
pub const MAX_PHYSICAL_MS: u64 = u64::MAX >> LOGICAL_BITS;

/// The physical part of a reading, in milliseconds since the UNIX epoch.
pub fn physical_ms(ts: u64) -> u64 {
    ts >> LOGICAL_BITS
}

/// The lowest reading at wall time `ms` (logical counter zero). Times past
/// [`MAX_PHYSICAL_MS`] saturate rather than wrap, so a wild clock cannot
/// produce a small timestamp.
pub fn from_ms(ms: u64) -> u64 {
    ms.min(MAX_PHYSICAL_MS) << LOGICAL_BITS
}

/// A hybrid logical clock. Share it; every method takes `&self`.
#[derive(Debug, Default)]
pub struct Hlc {
    /// The highest reading handed out or observed.
    last: AtomicU64,
}

impl Hlc {
    /// A clock that has seen nothing yet.
    pub const fn new() -> Self {
        Hlc {
            last: AtomicU64::new(0),
        }
    }

    /// A fresh reading at wall time `wall_ms`: strictly higher than every
    /// reading returned or observed before, and at least `wall_ms << 16`.
    pub fn now(&self, wall_ms: u64) -> u64 {
        let wall = from_ms(wall_ms);
        let mut last = self.last.load(Ordering::Acquire);
        loop {
            let next = wall.max(last.saturating_add(1));
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return next,
                Err(current) => last = current,
            }
        }
    }

    /// Folds in a timestamp seen from elsewhere, so that every later
    /// [`Hlc::now`] returns a higher reading.
    pub fn observe(&self, ts: u64) {
        self.last.fetch_max(ts, Ordering::AcqRel);
    }

    /// The highest reading handed out or observed so far.
    pub fn last(&self) -> u64 {
        self.last.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn follows_wall_clock() {
        let c = Hlc::new();
        assert_eq!(c.now(1000), from_ms(1000));
        assert_eq!(c.now(2000), from_ms(2000));
        assert_eq!(physical_ms(c.last()), 2000);
    }

    #[test]
    fn counts_when_wall_clock_stands_still() {
        let c = Hlc::new();
        let a = c.now(5);
        let b = c.now(5);
        assert_eq!(b, a + 1);
        assert_eq!(physical_ms(b), 5);
    }

    #[test]
    fn never_goes_back_when_wall_clock_does() {
        let c = Hlc::new();
        let a = c.now(10_000);
        let b = c.now(9_000);
        let d = c.now(1);
        assert!(a < b && b < d);
        assert_eq!(physical_ms(d), 10_000);
    }

    #[test]
    fn observe_raises_the_next_reading() {
        let c = Hlc::new();
        c.now(100);
        let remote = from_ms(500) + 7;
        c.observe(remote);
        let next = c.now(100);
        assert!(next > remote);
        // Observing something older changes nothing.
        c.observe(from_ms(1));
        assert!(c.now(100) > next);
    }

    #[test]
    fn saturates_instead_of_wrapping() {
        assert_eq!(physical_ms(from_ms(u64::MAX)), MAX_PHYSICAL_MS);
        let c = Hlc::new();
        c.observe(u64::MAX);
        assert_eq!(c.now(0), u64::MAX);
    }

    #[test]
    fn monotonic_and_unique_under_concurrency() {
        let c = Arc::new(Hlc::new());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let c = Arc::clone(&c);
                std::thread::spawn(move || {
                    let mut seen = Vec::with_capacity(20_000);
                    for i in 0..20_000u64 {
                        // A jittery wall clock that sometimes steps back.
                        let wall = 1_000 + (i / 100) - (i % 7) * t;
                        let ts = c.now(wall);
                        if i % 1000 == 0 {
                            c.observe(ts + 3);
                        }
                        seen.push(ts);
                    }
                    seen
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in threads {
            let seen = t.join().unwrap();
            assert!(seen.windows(2).all(|w| w[0] < w[1]), "per-thread order");
            all.extend(seen);
        }
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "every reading is unique");
    }
}
