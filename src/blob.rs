//! [`Blob`]: an immutable byte string that keeps short contents inline.
//!
//! Keys and values are mostly short (`user:42`, a counter, a flag). Kept in a
//! `Vec<u8>`, each would be a pointer to a separate heap allocation: looking
//! a key up would follow one pointer to compare it, replacing a value would
//! free one allocation and make another, and on a busy node those cache
//! misses and allocator calls were most of the cost of a write. A `Blob` is
//! the same 24 bytes as a `Vec<u8>`, but holds up to [`Blob::INLINE`] bytes
//! in place, so a short key sits in the hash-table slot it is compared in.
//! Longer contents live in one exact-size heap allocation.

use std::fmt;
use std::ops::Deref;

/// An immutable byte string; up to [`Blob::INLINE`] bytes need no allocation.
///
/// # Example
/// ```
/// use piccolo::blob::Blob;
///
/// let short = Blob::from(&b"user:42"[..]);
/// let long = Blob::from(vec![7u8; 100]);
/// assert_eq!(&short[..], b"user:42");
/// assert_eq!(long.len(), 100);
/// assert!(short.is_inline() && !long.is_inline());
/// ```
#[derive(Clone)]
pub struct Blob(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; Blob::INLINE] },
    Heap(Box<[u8]>),
}

// The point of the type: as small as a `Vec`, and `Option<Blob>` (a value or
// a tombstone) no bigger.
const _: () = assert!(size_of::<Blob>() == 24 && size_of::<Option<Blob>>() == 24);

impl Blob {
    /// The most bytes kept inline.
    pub const INLINE: usize = 22;

    /// An empty blob.
    pub const fn new() -> Self {
        Blob(Repr::Inline {
            len: 0,
            bytes: [0; Self::INLINE],
        })
    }

    /// True when the contents are kept inline (no heap allocation).
    pub fn is_inline(&self) -> bool {
        matches!(self.0, Repr::Inline { .. })
    }
}

impl Default for Blob {
    fn default() -> Self {
        Self::new()
    }
}

impl Deref for Blob {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..*len as usize],
            Repr::Heap(b) => b,
        }
    }
}

/// Lets a map keyed by `Blob` be searched with a `&[u8]`.
impl std::borrow::Borrow<[u8]> for Blob {
    fn borrow(&self) -> &[u8] {
        self
    }
}

impl From<&[u8]> for Blob {
    fn from(s: &[u8]) -> Self {
        if s.len() <= Self::INLINE {
            let mut bytes = [0; Self::INLINE];
            bytes[..s.len()].copy_from_slice(s);
            Blob(Repr::Inline {
                len: s.len() as u8,
                bytes,
            })
        } else {
            Blob(Repr::Heap(s.into()))
        }
    }
}

impl<const N: usize> From<&[u8; N]> for Blob {
    fn from(s: &[u8; N]) -> Self {
        Blob::from(&s[..])
    }
}

/// Short contents are copied inline (and the `Vec` freed); long ones keep
/// the `Vec`'s allocation, shrunk to fit.
impl From<Vec<u8>> for Blob {
    fn from(v: Vec<u8>) -> Self {
        if v.len() <= Self::INLINE {
            Blob::from(&v[..])
        } else {
            Blob(Repr::Heap(v.into_boxed_slice()))
        }
    }
}

impl From<&str> for Blob {
    fn from(s: &str) -> Self {
        Blob::from(s.as_bytes())
    }
}

impl PartialEq for Blob {
    fn eq(&self, other: &Blob) -> bool {
        self[..] == other[..]
    }
}

impl Eq for Blob {}

impl<const N: usize> PartialEq<&[u8; N]> for Blob {
    fn eq(&self, other: &&[u8; N]) -> bool {
        self[..] == other[..]
    }
}

impl std::hash::Hash for Blob {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self[..].hash(state)
    }
}

impl PartialOrd for Blob {
    fn partial_cmp(&self, other: &Blob) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Blob {
    fn cmp(&self, other: &Blob) -> std::cmp::Ordering {
        self[..].cmp(&other[..])
    }
}

/// Shown like a byte string literal: `b"user:42"`.
impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b\"{}\"", self.escape_ascii())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_contents_stay_inline_long_ones_go_to_the_heap() {
        for len in [0, 1, Blob::INLINE - 1, Blob::INLINE] {
            let b = Blob::from(vec![b'a'; len]);
            assert!(b.is_inline(), "{len} bytes");
            assert_eq!(&b[..], &vec![b'a'; len][..]);
        }
        for len in [Blob::INLINE + 1, 1 << 20] {
            let b = Blob::from(&vec![b'z'; len][..]);
            assert!(!b.is_inline(), "{len} bytes");
            assert_eq!(b.len(), len);
        }
    }

    #[test]
    fn equality_and_order_follow_the_contents() {
        let inline = Blob::from(&b"same"[..]);
        let heap = Blob(Repr::Heap(b"same".to_vec().into_boxed_slice()));
        assert_eq!(inline, heap);
        assert!(Blob::from("a") < Blob::from("b"));
        assert!(Blob::from("a") < Blob::from(vec![b'a'; 40]));
        assert_eq!(Blob::new(), Blob::from(""));
    }

    #[test]
    fn debug_shows_a_byte_string() {
        assert_eq!(format!("{:?}", Blob::from("a\r\n")), "b\"a\\r\\n\"");
        assert_eq!(
            format!("{:?}", Blob::from(&[0u8, 255][..])),
            "b\"\\x00\\xff\""
        );
    }
}
