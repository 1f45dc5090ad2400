//! RESP2 codec: request parsing and reply encoding, with no I/O inside.
//!
//! redis-cli, redis-benchmark and Redis client libraries talk to piccolo in
//! RESP2, so this module follows Redis's own request parser
//! (`processMultibulkBuffer` / `processInlineBuffer` in `networking.c`) closely
//! enough that those tools work unchanged, and it words its errors the way Redis
//! does wherever Redis has a wording.
//!
//! # Format
//! A request is either
//! - an **array of bulk strings**, what every client library sends:
//!   `*<count>\r\n` then `count` times `$<len>\r\n<len bytes>\r\n`. It is
//!   binary-safe: the payload may hold `\r`, `\n` and NUL.
//! - an **inline command**, any request whose first byte is not `*`: one line
//!   ending in `\n` (or `\r\n`), split on blanks, with Redis's quoting rules
//!   (see [`parse_request`]).
//!
//! Replies are written by the `write_*` functions, which append to an output
//! buffer so that a whole batch of pipelined replies goes out in one
//! `write_all` (see DESIGN.md §3 on delayed-ACK stalls).
//!
//! # Framing in two steps
//! As in mini-redis, parsing a request first *checks* that a whole frame is in
//! the buffer, touching only headers (a bulk payload is skipped by its length,
//! never scanned), and only then *parses* it into borrowed slices. "Incomplete"
//! means "read more and call again"; only a real protocol error closes the
//! connection. A declared length is never trusted for allocation: the argument
//! vector is sized by what the check found in the buffer, not by `*<count>`.
//!
//! Checking a frame is O(number of elements) and copies nothing. A caller that
//! re-parses from the start of a frame after every read can make a frame of
//! very many small elements trickling in cost quadratic time; such a caller
//! uses [`parse_request_resumable`], which remembers how far the check got.

use std::borrow::Cow;
use std::fmt;

/// Longest `*<count>` / `$<len>` header line, in bytes after the type byte,
/// before we give up waiting for its `\r`. A valid header needs at most 20
/// (`-9223372036854775808`), so this never rejects a valid prefix, and a
/// stranger cannot make us buffer (and rescan) an endless header.
const MAX_HEADER_LEN: usize = 64;

/// Smallest encoding of one array element (`$0\r\n\r\n`); bounds how many
/// elements a buffer of a given size can hold.
const MIN_ELEMENT_LEN: usize = 6;

/// Caps applied while parsing; they come from the `[limits]` config section.
///
/// They bound what one request can make us hold: a frame is at most about
/// `max_args * (max_bulk + 25)` bytes, and an inline line at most
/// `max_inline` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RespLimits {
    /// Largest bulk string (`$<len>`), in bytes; a larger declared length is
    /// "invalid bulk length", as with Redis's `proto-max-bulk-len`.
    pub max_bulk: usize,
    /// Most elements in one array (`*<count>`); more is
    /// "invalid multibulk length". Also caps the arguments of an inline command.
    pub max_args: usize,
    /// Longest inline command line, excluding its `\n` / `\r\n`; longer is
    /// "too big inline request".
    pub max_inline: usize,
}

impl From<&crate::config::Limits> for RespLimits {
    fn from(limits: &crate::config::Limits) -> Self {
        RespLimits {
            max_bulk: limits.max_bulk_bytes,
            max_args: limits.max_args,
            max_inline: limits.max_line_bytes,
        }
    }
}

/// A protocol error: the request cannot be framed, so the connection gets
/// `-ERR Protocol error: <msg>\r\n` (see [`ProtocolError::write_reply`]) and
/// is closed, as Redis does. After such an error we no longer know where the
/// next request starts, so carrying on would only misread the stream.
///
/// The field holds the message without the `Protocol error: ` prefix, in
/// Redis's wording where Redis has one (e.g. `invalid multibulk length`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl ProtocolError {
    fn new(msg: impl Into<String>) -> Self {
        ProtocolError(msg.into())
    }

    /// Appends the reply Redis sends before closing the connection.
    ///
    /// # Format
    /// `-ERR Protocol error: <msg>\r\n`
    pub fn write_reply(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"-ERR Protocol error: ");
        push_line(out, self.0.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Protocol error: {}", self.0)
    }
}

impl std::error::Error for ProtocolError {}

/// One parsed request: the command name and its arguments, in order.
///
/// Arguments borrow from the input buffer, so parsing copies no payload. The
/// one exception is an inline argument whose bytes are not a contiguous run of
/// the input (a quoted argument with escapes such as `"a\x00b"`, or a token
/// glued from several quoted parts): it is owned. Hence `Cow`; it derefs to
/// `[u8]`, and [`Request::arg`] / [`Request::iter`] hand out plain slices.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request<'a> {
    /// The arguments; `args[0]` is the command name. Empty for an empty
    /// inline line, `*0\r\n` or `*-1\r\n`, which the caller skips (as Redis
    /// does).
    pub args: Vec<Cow<'a, [u8]>>,
}

impl<'a> Request<'a> {
    /// Number of arguments, command name included.
    pub fn len(&self) -> usize {
        self.args.len()
    }

    /// True for a request to skip (empty inline line, `*0`, `*-1`).
    pub fn is_empty(&self) -> bool {
        self.args.is_empty()
    }

    /// Argument `i` (0 is the command name), if present.
    pub fn arg(&self, i: usize) -> Option<&[u8]> {
        self.args.get(i).map(|a| &**a)
    }

    /// The arguments as plain byte slices.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.args.iter().map(|a| &**a)
    }
}

/// How far checking an incomplete frame got, so that the next call for the
/// same frame can resume instead of rescanning. Positions are relative to the
/// start of the frame, so the caller may move the frame within its buffer
/// (e.g. compact it to the front) between calls.
///
/// Start with `ParseProgress::default()`; [`parse_request_resumable`] resets
/// it whenever it returns a request or an error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParseProgress {
    /// Array elements already found complete and valid.
    elements: usize,
    /// Where the next unchecked element (array) or unscanned byte (inline)
    /// starts.
    offset: usize,
}

/// Parses one request from the front of `buf`.
///
/// Returns `Ok(None)` when `buf` holds only part of a request (read more and
/// call again with the grown buffer), or `Ok(Some((request, consumed)))` when
/// the first `consumed` bytes are one whole request. An incomplete but valid
/// prefix is never an error.
///
/// # Format
/// - `*<count>\r\n` followed by `count` bulk strings `$<len>\r\n<data>\r\n`.
///   `*0\r\n` and `*-1\r\n` give zero arguments. Numbers are strict decimal
///   as in Redis's `string2ll` (no `+`, no leading zeros, no blanks).
/// - Any other first byte starts an inline command: a line ending in `\n`,
///   with one `\r` before it stripped. Arguments are separated by blanks.
///   Inside `"..."`, `\n \r \t \b \a`, `\xHH` and `\<any>` escapes apply;
///   inside `'...'`, only `\'`. A closing quote must be followed by a blank
///   or the end of the line. An empty line gives zero arguments.
///
/// # Errors
/// Redis's wording: `invalid multibulk length` (count not a number, below -1,
/// or above `max_args`), `expected '$', got 'X'`, `invalid bulk length` (not a
/// number, negative, or above `max_bulk`), `too big mbulk count string` /
/// `too big bulk count string` (a header line of 64 bytes without `\r`),
/// `too big inline request`, `unbalanced quotes in request`. Ours, where Redis
/// silently skips two bytes: `expected CRLF after bulk data`.
pub fn parse_request<'a>(
    buf: &'a [u8],
    limits: &RespLimits,
) -> Result<Option<(Request<'a>, usize)>, ProtocolError> {
    parse_request_resumable(buf, limits, &mut ParseProgress::default())
}

/// [`parse_request`] that remembers, in `progress`, how far it checked an
/// incomplete frame, so feeding a frame in `k` reads costs O(frame) in total
/// rather than O(k × elements).
///
/// `buf` must start at the same frame on every call until a request or an
/// error is returned (it may have grown or moved); `progress` is then reset
/// for the next frame. A stale `progress` cannot make a malformed frame pass:
/// the final parse re-validates every header.
pub fn parse_request_resumable<'a>(
    buf: &'a [u8],
    limits: &RespLimits,
    progress: &mut ParseProgress,
) -> Result<Option<(Request<'a>, usize)>, ProtocolError> {
    let result = match buf.first() {
        None => return Ok(None),
        Some(b'*') => parse_array(buf, limits, progress),
        Some(_) => parse_inline(buf, limits, progress),
    };
    if !matches!(result, Ok(None)) {
        *progress = ParseProgress::default();
    }
    result
}

/// Which header line is being read; picks the error wording.
#[derive(Clone, Copy)]
enum Header {
    /// `*<count>`
    Count,
    /// `$<len>`
    Bulk,
}

impl Header {
    fn invalid(self) -> ProtocolError {
        match self {
            Header::Count => ProtocolError::new("invalid multibulk length"),
            Header::Bulk => ProtocolError::new("invalid bulk length"),
        }
    }

    fn too_big(self) -> ProtocolError {
        match self {
            Header::Count => ProtocolError::new("too big mbulk count string"),
            Header::Bulk => ProtocolError::new("too big bulk count string"),
        }
    }
}

fn parse_array<'a>(
    buf: &'a [u8],
    limits: &RespLimits,
    progress: &mut ParseProgress,
) -> Result<Option<(Request<'a>, usize)>, ProtocolError> {
    let Some((count, body)) = read_header(buf, 0, Header::Count)? else {
        return Ok(None);
    };
    if count < -1 {
        return Err(Header::Count.invalid());
    }
    // -1 and 0: Redis ignores such a request; so do we, after consuming it.
    let count = match usize::try_from(count) {
        Ok(0) | Err(_) => return Ok(Some((Request::default(), body))),
        Ok(n) if n > limits.max_args => return Err(Header::Count.invalid()),
        Ok(n) => n,
    };

    // Step 1: check that all `count` elements are here, resuming if we can.
    let (mut done, mut at) = if progress.elements > 0 {
        (progress.elements, progress.offset)
    } else {
        (0, body)
    };
    while done < count {
        match check_bulk(buf, at, limits)? {
            Some((_, next)) => {
                at = next;
                done += 1;
            }
            None => {
                *progress = ParseProgress {
                    elements: done,
                    offset: at,
                };
                return Ok(None);
            }
        }
    }

    // Step 2: the frame is whole; collect the arguments. The capacity is
    // bounded by what the buffer can hold, never by the declared count alone.
    let mut args = Vec::with_capacity(count.min((buf.len() - body) / MIN_ELEMENT_LEN + 1));
    let mut at = body;
    for _ in 0..count {
        match check_bulk(buf, at, limits)? {
            Some((data, next)) => {
                args.push(Cow::Borrowed(&buf[data..next - 2]));
                at = next;
            }
            // Only reachable with a `progress` from another frame.
            None => {
                *progress = ParseProgress::default();
                return Ok(None);
            }
        }
    }
    Ok(Some((Request { args }, at)))
}

/// Checks the bulk string starting at `at`. Returns the start of its data and
/// the position just past its trailing `\r\n`, or `None` if incomplete.
/// Costs O(1) whatever the payload size: the payload is skipped, not scanned.
fn check_bulk(
    buf: &[u8],
    at: usize,
    limits: &RespLimits,
) -> Result<Option<(usize, usize)>, ProtocolError> {
    match buf.get(at) {
        None => return Ok(None),
        Some(b'$') => {}
        // Fail at once rather than wait for the line as Redis does: no
        // continuation can make this frame valid.
        Some(&other) => {
            return Err(ProtocolError(format!(
                "expected '$', got '{}'",
                other.escape_ascii()
            )));
        }
    }
    let Some((len, data)) = read_header(buf, at, Header::Bulk)? else {
        return Ok(None);
    };
    let len = usize::try_from(len)
        .ok()
        .filter(|&len| len <= limits.max_bulk)
        .ok_or_else(|| Header::Bulk.invalid())?;
    let Some(end) = data.checked_add(len) else {
        return Err(Header::Bulk.invalid());
    };
    // Compare whatever part of the trailing CRLF has arrived, so a wrong byte
    // fails now, and a missing one means "read more".
    let tail = buf.get(end..).unwrap_or_default();
    let have = tail.len().min(2);
    if tail[..have] != b"\r\n"[..have] {
        return Err(ProtocolError::new("expected CRLF after bulk data"));
    }
    if have < 2 {
        return Ok(None);
    }
    Ok(Some((data, end + 2)))
}

/// Reads the `*<n>\r\n` or `$<n>\r\n` header whose type byte is at `at`.
/// Returns the number and the position after the `\r\n`, or `None` if the
/// line is not complete yet. Scans at most [`MAX_HEADER_LEN`] bytes.
fn read_header(buf: &[u8], at: usize, kind: Header) -> Result<Option<(i64, usize)>, ProtocolError> {
    let start = at + 1;
    let window = buf
        .get(start..buf.len().min(start + MAX_HEADER_LEN))
        .unwrap_or_default();
    // Stop at the first byte that cannot belong to a number: if it is not the
    // line's `\r`, the header is already known to be invalid.
    match window
        .iter()
        .position(|&b| !(b.is_ascii_digit() || b == b'-'))
    {
        None if window.len() >= MAX_HEADER_LEN => Err(kind.too_big()),
        None => Ok(None),
        Some(i) if window[i] != b'\r' => Err(kind.invalid()),
        Some(i) => {
            let cr = start + i;
            match buf.get(cr + 1) {
                None => Ok(None),
                Some(b'\n') => match parse_i64(&window[..i]) {
                    Some(n) => Ok(Some((n, cr + 2))),
                    None => Err(kind.invalid()),
                },
                Some(_) => Err(kind.invalid()),
            }
        }
    }
}

/// Strict decimal, as Redis's `string2ll`: optional `-`, then `0` alone or a
/// non-zero digit followed by digits; no `+`, no `-0`, no leading zeros, no
/// overflow.
fn parse_i64(s: &[u8]) -> Option<i64> {
    let (negative, digits) = match s {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, s),
    };
    match digits {
        [] => return None,
        [b'0'] if !negative => return Some(0),
        [b'0', ..] => return None,
        _ => {}
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let d = i64::from(d - b'0');
        n = n.checked_mul(10)?;
        n = if negative {
            n.checked_sub(d)?
        } else {
            n.checked_add(d)?
        };
    }
    Some(n)
}

fn parse_inline<'a>(
    buf: &'a [u8],
    limits: &RespLimits,
    progress: &mut ParseProgress,
) -> Result<Option<(Request<'a>, usize)>, ProtocolError> {
    // A line of `max_inline` bytes plus `\r\n` ends within this window, so
    // searching further is never needed, and the scan per call is bounded.
    let window_end = buf.len().min(limits.max_inline.saturating_add(2));
    let from = progress.offset.min(window_end);
    let Some(newline) = buf[from..window_end]
        .iter()
        .position(|&b| b == b'\n')
        .map(|i| from + i)
    else {
        if buf.len() >= limits.max_inline.saturating_add(2) {
            return Err(ProtocolError::new("too big inline request"));
        }
        progress.offset = window_end;
        return Ok(None);
    };
    let line = match &buf[..newline] {
        [line @ .., b'\r'] => line,
        line => line,
    };
    if line.len() > limits.max_inline {
        return Err(ProtocolError::new("too big inline request"));
    }
    let args = split_inline(line, limits)?;
    Ok(Some((Request { args }, newline + 1)))
}

/// Blanks as C's `isspace`, which Redis's `sdssplitargs` uses between
/// arguments and after a closing quote.
fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn unbalanced() -> ProtocolError {
    ProtocolError::new("unbalanced quotes in request")
}

/// Splits an inline line as Redis's `sdssplitargs` does (except that a NUL
/// byte is ordinary data here, where C would end the string at it).
fn split_inline<'a>(
    line: &'a [u8],
    limits: &RespLimits,
) -> Result<Vec<Cow<'a, [u8]>>, ProtocolError> {
    let mut args = Vec::new();
    let mut p = 0;
    loop {
        while line.get(p).is_some_and(|&b| is_blank(b)) {
            p += 1;
        }
        if p >= line.len() {
            return Ok(args);
        }
        if args.len() == limits.max_args {
            return Err(ProtocolError::new("too many arguments in inline request"));
        }
        let mut token = Token::default();
        let mut quote = None;
        loop {
            let c = line.get(p).copied();
            match (quote, c) {
                (Some(_), None) => return Err(unbalanced()),
                (None, None | Some(b' ' | b'\t' | b'\r' | b'\n')) => break,
                (None, Some(q @ (b'"' | b'\''))) => {
                    quote = Some(q);
                    p += 1;
                }
                (Some(q), Some(b)) if b == q => {
                    // A closing quote must end the argument.
                    if line.get(p + 1).is_some_and(|&b| !is_blank(b)) {
                        return Err(unbalanced());
                    }
                    p += 1;
                    break;
                }
                (Some(b'"'), Some(b'\\')) if p + 1 < line.len() => {
                    let hex = (
                        line.get(p + 2).and_then(|&h| hex_value(h)),
                        line.get(p + 3).and_then(|&h| hex_value(h)),
                    );
                    match (line[p + 1], hex) {
                        (b'x', (Some(hi), Some(lo))) => {
                            token.push_byte(line, hi << 4 | lo);
                            p += 4;
                        }
                        (escaped, _) => {
                            token.push_byte(
                                line,
                                match escaped {
                                    b'n' => b'\n',
                                    b'r' => b'\r',
                                    b't' => b'\t',
                                    b'b' => 0x08,
                                    b'a' => 0x07,
                                    other => other,
                                },
                            );
                            p += 2;
                        }
                    }
                }
                (Some(b'\''), Some(b'\\')) if line.get(p + 1) == Some(&b'\'') => {
                    token.push_byte(line, b'\'');
                    p += 2;
                }
                (_, Some(_)) => {
                    token.push_at(line, p);
                    p += 1;
                }
            }
        }
        args.push(token.finish(line));
    }
}

fn hex_value(h: u8) -> Option<u8> {
    char::from(h).to_digit(16).map(|d| d as u8)
}

/// An inline argument being built: a borrowed run `start..end` of the line
/// while its bytes are contiguous in the input, owned once they are not.
#[derive(Default)]
struct Token {
    start: usize,
    end: usize,
    owned: Option<Vec<u8>>,
}

impl Token {
    /// Appends the input byte at `p`, borrowing when it extends the run.
    fn push_at(&mut self, line: &[u8], p: usize) {
        match &mut self.owned {
            Some(v) => v.push(line[p]),
            None if self.start == self.end => (self.start, self.end) = (p, p + 1),
            None if self.end == p => self.end += 1,
            None => self.own(line).push(line[p]),
        }
    }

    /// Appends a byte that is not a copy of the input at this point.
    fn push_byte(&mut self, line: &[u8], b: u8) {
        self.own(line).push(b);
    }

    fn own(&mut self, line: &[u8]) -> &mut Vec<u8> {
        let (start, end) = (self.start, self.end);
        self.owned.get_or_insert_with(|| line[start..end].to_vec())
    }

    fn finish(self, line: &[u8]) -> Cow<'_, [u8]> {
        match self.owned {
            Some(v) => Cow::Owned(v),
            None => Cow::Borrowed(&line[self.start..self.end]),
        }
    }
}

// ---------------------------------------------------------------------------
// Reply encoders. These run for every reply, so they format numbers on the
// stack and never allocate beyond growing `out`.

/// Appends `s` with any `\r` or `\n` replaced by a space: a simple string or
/// error line must not contain them, or the client would misread the stream.
fn push_line(out: &mut Vec<u8>, s: &[u8]) {
    if s.iter().any(|&b| b == b'\r' || b == b'\n') {
        out.extend(s.iter().map(|&b| match b {
            b'\r' | b'\n' => b' ',
            b => b,
        }));
    } else {
        out.extend_from_slice(s);
    }
}

/// Appends the decimal digits of `n`, with a `-` when `negative`.
fn push_decimal(out: &mut Vec<u8>, negative: bool, mut n: u64) {
    let mut digits = [0u8; 20]; // u64::MAX has 20 digits
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if negative {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends a simple string reply, such as `OK` or `PONG`.
///
/// # Format
/// `+<s>\r\n`. The line cannot carry `\r` or `\n`, so any are replaced by
/// spaces; for arbitrary bytes use [`write_bulk`].
pub fn write_simple(out: &mut Vec<u8>, s: &str) {
    out.push(b'+');
    push_line(out, s.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends an error reply. `msg` carries its own error code prefix, by
/// Redis convention `ERR ` (or `WRONGTYPE `, ...), which clients show or
/// match on.
///
/// # Format
/// `-<msg>\r\n`, with any `\r` or `\n` in `msg` replaced by spaces, so an
/// error built from user input cannot break the framing.
pub fn write_error(out: &mut Vec<u8>, msg: &str) {
    out.push(b'-');
    push_line(out, msg.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends an integer reply (e.g. the count from `DEL`).
///
/// # Format
/// `:<n>\r\n`, `n` in decimal with a leading `-` when negative.
pub fn write_int(out: &mut Vec<u8>, n: i64) {
    out.push(b':');
    push_decimal(out, n < 0, n.unsigned_abs());
    out.extend_from_slice(b"\r\n");
}

/// Appends a bulk string reply, the binary-safe reply for a value.
///
/// # Format
/// `$<len>\r\n<v>\r\n`: the length comes first, so `v` may hold any bytes.
pub fn write_bulk(out: &mut Vec<u8>, v: &[u8]) {
    out.reserve(v.len() + 25); // `$`, 20 digits, two CRLFs
    out.push(b'$');
    push_decimal(out, false, v.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(v);
    out.extend_from_slice(b"\r\n");
}

/// Appends the null bulk string, RESP2's "no value" (e.g. `GET` of a missing
/// key).
///
/// # Format
/// `$-1\r\n`
pub fn write_nil(out: &mut Vec<u8>) {
    out.extend_from_slice(b"$-1\r\n");
}

/// Appends the header of an array reply; the caller then writes its `n`
/// elements with the other `write_*` functions.
///
/// # Format
/// `*<n>\r\n`
pub fn write_array_len(out: &mut Vec<u8>, n: usize) {
    out.push(b'*');
    push_decimal(out, false, n as u64);
    out.extend_from_slice(b"\r\n");
}

/// Appends the null array, RESP2's "no array" (distinct from an empty one).
///
/// # Format
/// `*-1\r\n`
pub fn write_null_array(out: &mut Vec<u8>) {
    out.extend_from_slice(b"*-1\r\n");
}

/// Appends `args` encoded as a request, the way client libraries send one;
/// for tests and for clients written in Rust.
///
/// # Format
/// `*<args.len()>\r\n` then `$<len>\r\n<arg>\r\n` for each argument.
pub fn encode_request(out: &mut Vec<u8>, args: &[&[u8]]) {
    write_array_len(out, args.len());
    for arg in args {
        write_bulk(out, arg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMITS: RespLimits = RespLimits {
        max_bulk: 16 * 1024 * 1024,
        max_args: 1024,
        max_inline: 64 * 1024,
    };

    type Args = Vec<Vec<u8>>;

    /// Parses one whole request that must take all of `input`.
    fn one(input: &[u8]) -> Args {
        match parse_request(input, &LIMITS) {
            Ok(Some((req, consumed))) => {
                assert_eq!(
                    consumed,
                    input.len(),
                    "consumed for {:?}",
                    input.escape_ascii().to_string()
                );
                req.iter().map(<[u8]>::to_vec).collect()
            }
            other => panic!("{:?}: {other:?}", input.escape_ascii().to_string()),
        }
    }

    fn err_with(input: &[u8], limits: &RespLimits) -> String {
        match parse_request(input, limits) {
            Err(ProtocolError(msg)) => msg,
            other => panic!(
                "{:?}: expected an error, got {other:?}",
                input.escape_ascii().to_string()
            ),
        }
    }

    fn err(input: &[u8]) -> String {
        err_with(input, &LIMITS)
    }

    fn incomplete(input: &[u8]) -> bool {
        matches!(parse_request(input, &LIMITS), Ok(None))
    }

    fn args(list: &[&[u8]]) -> Args {
        list.iter().map(|a| a.to_vec()).collect()
    }

    fn encode(list: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_request(&mut out, list);
        out
    }

    /// Parses every request in `buf`, front to back.
    fn parse_all(buf: &[u8], limits: &RespLimits) -> Vec<Args> {
        let mut at = 0;
        let mut out = Vec::new();
        while at < buf.len() {
            let (req, consumed) = parse_request(&buf[at..], limits).unwrap().unwrap();
            assert!(consumed > 0);
            out.push(req.iter().map(<[u8]>::to_vec).collect());
            at += consumed;
        }
        out
    }

    /// Feeds `input` as a connection would, in chunks ending at `cuts`:
    /// append, then parse (resumably or not) until incomplete.
    fn feed(input: &[u8], cuts: &[usize], resumable: bool) -> Vec<Args> {
        let mut buf = Vec::new();
        let mut progress = ParseProgress::default();
        let mut out = Vec::new();
        let mut last = 0;
        for &cut in cuts.iter().chain([&input.len()]) {
            let cut = cut.clamp(last, input.len());
            buf.extend_from_slice(&input[last..cut]);
            last = cut;
            loop {
                let parsed = if resumable {
                    parse_request_resumable(&buf, &LIMITS, &mut progress)
                } else {
                    parse_request(&buf, &LIMITS)
                };
                match parsed.unwrap() {
                    Some((req, consumed)) => {
                        out.push(req.iter().map(<[u8]>::to_vec).collect());
                        buf.drain(..consumed);
                    }
                    None => break,
                }
            }
        }
        assert!(
            buf.is_empty(),
            "left over: {:?}",
            buf.escape_ascii().to_string()
        );
        out
    }

    #[test]
    fn array_of_bulk_strings() {
        assert_eq!(one(b"*1\r\n$4\r\nPING\r\n"), args(&[b"PING"]));
        assert_eq!(
            one(b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n"),
            args(&[b"GET", b"key"])
        );
        assert_eq!(
            one(b"*3\r\n$3\r\nSET\r\n$0\r\n\r\n$5\r\nvalue\r\n"),
            args(&[b"SET", b"", b"value"])
        );
    }

    #[test]
    fn empty_and_null_arrays_give_zero_args() {
        assert_eq!(one(b"*0\r\n"), Args::new());
        assert_eq!(one(b"*-1\r\n"), Args::new());
    }

    #[test]
    fn array_args_borrow_from_the_input() {
        let input = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        let (req, _) = parse_request(input, &LIMITS).unwrap().unwrap();
        assert!(req.args.iter().all(|a| matches!(a, Cow::Borrowed(_))));
        assert_eq!(req.len(), 2);
        assert_eq!(req.arg(1), Some(&b"k"[..]));
        assert_eq!(req.arg(2), None);
    }

    #[test]
    fn bulk_strings_are_binary_safe() {
        let value = b"a\r\nb\0c\r\n\n\r$3\r\n*1\r\n";
        assert_eq!(
            one(&encode(&[b"SET", b"k\0\r\n", value])),
            args(&[b"SET", b"k\0\r\n", value])
        );
    }

    #[test]
    fn one_mebibyte_bulk() {
        let value: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        let input = encode(&[b"SET", b"big", &value]);
        assert_eq!(one(&input), args(&[b"SET", b"big", &value]));
        for cut in [1, 20, 30, input.len() / 2, input.len() - 2, input.len() - 1] {
            assert!(incomplete(&input[..cut]), "cut at {cut}");
        }
    }

    #[test]
    fn inline_commands() {
        assert_eq!(one(b"PING\r\n"), args(&[b"PING"]));
        assert_eq!(one(b"PING\n"), args(&[b"PING"]));
        assert_eq!(one(b"  set \t k   v  \r\n"), args(&[b"set", b"k", b"v"]));
        assert_eq!(one(b"GET k\0ey\n"), args(&[b"GET", b"k\0ey"]));
        // `$` starts an inline command, as in Redis: only `*` is an array.
        assert_eq!(one(b"$3\r\n"), args(&[b"$3"]));
    }

    #[test]
    fn empty_inline_lines_give_zero_args() {
        assert_eq!(one(b"\r\n"), Args::new());
        assert_eq!(one(b"\n"), Args::new());
        assert_eq!(one(b"  \t \r\n"), Args::new());
    }

    #[test]
    fn inline_quotes_and_escapes() {
        assert_eq!(
            one(b"SET \"a b\" 'c d'\r\n"),
            args(&[b"SET", b"a b", b"c d"])
        );
        assert_eq!(
            one(b"SET k \"\\x41\\x7a\\n\\r\\t\\b\\a\\\"\\\\\\q\"\n"),
            args(&[b"SET", b"k", b"Az\n\r\t\x08\x07\"\\q"])
        );
        // `\x` without two hex digits is a plain `x`.
        assert_eq!(one(b"\"\\x4g\"\n"), args(&[b"x4g"]));
        assert_eq!(one(b"'it\\'s' 'a\\b'\n"), args(&[b"it's", b"a\\b"]));
        assert_eq!(one(b"\"\" ''\n"), args(&[b"", b""]));
        // A quote may open mid-argument, but must close at its end.
        assert_eq!(one(b"foo\"bar baz\" x'y'\n"), args(&[b"foobar baz", b"xy"]));
        assert_eq!(one(b"\"\\x00\\xFF\"\n"), args(&[b"\x00\xff"]));
    }

    #[test]
    fn inline_args_borrow_unless_escaped() {
        let (req, _) = parse_request(b"SET \"a b\" \"c\\nd\"\n", &LIMITS)
            .unwrap()
            .unwrap();
        assert!(matches!(req.args[0], Cow::Borrowed(b"SET")));
        assert!(matches!(req.args[1], Cow::Borrowed(b"a b")));
        assert!(matches!(req.args[2], Cow::Owned(_)));
    }

    #[test]
    fn unbalanced_quotes() {
        for input in [
            &b"SET \"abc\n"[..],
            b"SET 'abc\n",
            b"SET \"a\"b\n",
            b"SET 'a'b\n",
            b"SET \"abc\\\"\n",
            b"\"abc\\\n",
        ] {
            assert_eq!(err(input), "unbalanced quotes in request");
        }
    }

    #[test]
    fn pipelined_requests_parse_one_after_another() {
        let mut input = encode(&[b"SET", b"k", b"v"]);
        input.extend_from_slice(b"PING\r\n");
        input.extend_from_slice(&encode(&[b"GET", b"k"]));
        input.extend_from_slice(b"*0\r\n\n");
        let (first, consumed) = parse_request(&input, &LIMITS).unwrap().unwrap();
        assert_eq!(consumed, 27);
        assert_eq!(first.arg(0), Some(&b"SET"[..]));
        assert_eq!(
            parse_all(&input, &LIMITS),
            vec![
                args(&[b"SET", b"k", b"v"]),
                args(&[b"PING"]),
                args(&[b"GET", b"k"]),
                vec![],
                vec![]
            ]
        );
    }

    fn sample_pipeline() -> Vec<u8> {
        let mut input = encode(&[b"SET", b"key", b"va\r\nl\0ue"]);
        input.extend_from_slice(b"GET  \"quoted key\"\r\n");
        input.extend_from_slice(&encode(&[b"GET", b"key"]));
        input.extend_from_slice(b"*-1\r\n");
        input.extend_from_slice(&encode(&[b"DEL", b"", b"x"]));
        input.extend_from_slice(b"PING\n");
        input
    }

    #[test]
    fn every_prefix_is_incomplete_until_whole() {
        let input = sample_pipeline();
        let expected = parse_all(&input, &LIMITS);
        assert_eq!(expected.len(), 6);
        let mut at = 0;
        for req in &expected {
            let mut progress = ParseProgress::default();
            let mut end = at;
            loop {
                end += 1;
                let rest = &input[at..end];
                match parse_request(rest, &LIMITS).unwrap() {
                    None => {
                        assert!(
                            parse_request_resumable(rest, &LIMITS, &mut progress)
                                .unwrap()
                                .is_none()
                        );
                    }
                    Some((got, consumed)) => {
                        assert_eq!(consumed, rest.len());
                        assert_eq!(got.iter().map(<[u8]>::to_vec).collect::<Args>(), *req);
                        let (again, _) = parse_request_resumable(rest, &LIMITS, &mut progress)
                            .unwrap()
                            .unwrap();
                        assert_eq!(again, got);
                        assert_eq!(progress, ParseProgress::default());
                        break;
                    }
                }
            }
            at = end;
        }
        assert_eq!(at, input.len());
    }

    #[test]
    fn split_at_every_boundary_gives_the_same_requests() {
        let input = sample_pipeline();
        let expected = parse_all(&input, &LIMITS);
        for cut in 0..=input.len() {
            for resumable in [false, true] {
                assert_eq!(feed(&input, &[cut], resumable), expected, "cut at {cut}");
            }
        }
        let every_byte: Vec<usize> = (0..input.len()).collect();
        assert_eq!(feed(&input, &every_byte, false), expected);
        assert_eq!(feed(&input, &every_byte, true), expected);
    }

    #[test]
    fn resumable_parse_of_a_trickled_many_element_frame() {
        let elements: Vec<Vec<u8>> = (0..1000).map(|i| i.to_string().into_bytes()).collect();
        let refs: Vec<&[u8]> = elements.iter().map(Vec::as_slice).collect();
        let input = encode(&refs);
        let cuts: Vec<usize> = (0..input.len()).step_by(3).collect();
        assert_eq!(feed(&input, &cuts, true), vec![elements]);
    }

    #[test]
    fn array_count_errors() {
        let small = RespLimits {
            max_args: 3,
            ..LIMITS
        };
        assert_eq!(err_with(b"*4\r\n", &small), "invalid multibulk length");
        assert!(matches!(parse_request(b"*3\r\n", &small), Ok(None)));
        for input in [
            &b"*-2\r\n"[..],
            b"*abc\r\n",
            b"*\r\n",
            b"*-\r\n",
            b"*-0\r\n",
            b"*01\r\n",
            b"*+1\r\n",
            b"*1 \r\n",
            b"*1\rX",
            b"*1\n",
            b"*99999999999999999999\r\n",
        ] {
            assert_eq!(
                err(input),
                "invalid multibulk length",
                "{:?}",
                input.escape_ascii().to_string()
            );
        }
        // Known bad before the line ends: no need to wait for it.
        assert_eq!(err(b"*1x"), "invalid multibulk length");
    }

    #[test]
    fn bulk_length_errors() {
        let small = RespLimits {
            max_bulk: 10,
            ..LIMITS
        };
        assert_eq!(err_with(b"*1\r\n$11\r\n", &small), "invalid bulk length");
        assert!(matches!(parse_request(b"*1\r\n$10\r\n", &small), Ok(None)));
        for input in [
            &b"*1\r\n$-1\r\n"[..],
            b"*1\r\n$-5\r\n",
            b"*1\r\n$abc\r\n",
            b"*1\r\n$\r\n",
            b"*1\r\n$03\r\nfoo\r\n",
            b"*1\r\n$3 \r\n",
            b"*1\r\n$3\rX",
            b"*1\r\n$99999999999999999999\r\n",
        ] {
            assert_eq!(
                err(input),
                "invalid bulk length",
                "{:?}",
                input.escape_ascii().to_string()
            );
        }
    }

    #[test]
    fn wrong_type_byte_inside_an_array() {
        assert_eq!(err(b"*2\r\n$3\r\nGET\r\n:1\r\n"), "expected '$', got ':'");
        assert_eq!(err(b"*1\r\n+OK\r\n"), "expected '$', got '+'");
        assert_eq!(err(b"*1\r\n*1\r\n"), "expected '$', got '*'");
        assert_eq!(err(b"*1\r\n\r\n"), "expected '$', got '\\r'");
        assert_eq!(err(b"*1\r\nG"), "expected '$', got 'G'");
    }

    #[test]
    fn missing_crlf_after_bulk_data() {
        for input in [
            &b"*1\r\n$3\r\nfooXY"[..],
            b"*1\r\n$3\r\nfoo\rX",
            b"*1\r\n$3\r\nfoo\n\r",
            b"*1\r\n$3\r\nfoooo\r\n",
            // Wrong at the first byte after the data: fail without waiting.
            b"*1\r\n$3\r\nfooX",
        ] {
            assert_eq!(
                err(input),
                "expected CRLF after bulk data",
                "{:?}",
                input.escape_ascii().to_string()
            );
        }
        assert!(incomplete(b"*1\r\n$3\r\nfoX"));
        assert!(incomplete(b"*1\r\n$3\r\nfoo"));
        assert!(incomplete(b"*1\r\n$3\r\nfoo\r"));
    }

    #[test]
    fn header_lines_are_capped() {
        let mut count = b"*".to_vec();
        count.extend(std::iter::repeat_n(b'1', 63));
        assert!(
            incomplete(&count),
            "63 digits could still be followed by CRLF"
        );
        count.push(b'1');
        assert_eq!(err(&count), "too big mbulk count string");

        let mut bulk = b"*1\r\n$".to_vec();
        bulk.extend(std::iter::repeat_n(b'0', 64));
        assert_eq!(err(&bulk), "too big bulk count string");
    }

    #[test]
    fn declared_lengths_are_not_trusted() {
        // A huge count or bulk length within limits is just "read more".
        let big = RespLimits {
            max_args: usize::MAX,
            max_bulk: usize::MAX,
            ..LIMITS
        };
        assert!(matches!(
            parse_request(b"*9223372036854775807\r\n$1\r\na\r\n", &big),
            Ok(None)
        ));
        assert!(matches!(
            parse_request(b"*1\r\n$9223372036854775807\r\nab", &big),
            Ok(None)
        ));
        let (req, _) = parse_request(b"*2\r\n$1\r\na\r\n$1\r\nb\r\n", &big)
            .unwrap()
            .unwrap();
        assert!(req.args.capacity() <= 4);
    }

    #[test]
    fn inline_length_cap() {
        let small = RespLimits {
            max_inline: 8,
            ..LIMITS
        };
        assert_eq!(parse_all(b"12345678\n", &small), vec![args(&[b"12345678"])]);
        assert_eq!(
            parse_all(b"12345678\r\n", &small),
            vec![args(&[b"12345678"])]
        );
        assert!(matches!(parse_request(b"123456789", &small), Ok(None)));
        assert_eq!(err_with(b"1234567890", &small), "too big inline request");
        assert_eq!(err_with(b"123456789\n", &small), "too big inline request");
        assert_eq!(err_with(b"123456789\r\n", &small), "too big inline request");
        assert_eq!(err(&vec![b'a'; 64 * 1024 + 2]), "too big inline request");
    }

    #[test]
    fn inline_argument_count_cap() {
        let small = RespLimits {
            max_args: 2,
            ..LIMITS
        };
        assert_eq!(parse_all(b"a b\n", &small).len(), 1);
        assert_eq!(
            err_with(b"a b c\n", &small),
            "too many arguments in inline request"
        );
    }

    #[test]
    fn protocol_error_reply_and_display() {
        let e = ProtocolError("invalid bulk length".into());
        assert_eq!(e.to_string(), "Protocol error: invalid bulk length");
        let mut out = Vec::new();
        e.write_reply(&mut out);
        assert_eq!(out, b"-ERR Protocol error: invalid bulk length\r\n");
        out.clear();
        ProtocolError("expected '$', got '\n'".into()).write_reply(&mut out);
        assert_eq!(out, b"-ERR Protocol error: expected '$', got ' '\r\n");
    }

    #[test]
    fn encoders_write_exact_bytes() {
        let mut out = Vec::new();
        write_simple(&mut out, "OK");
        write_simple(&mut out, "a\r\nb");
        write_error(&mut out, "ERR unknown command");
        write_error(&mut out, "ERR bad\r\nline\n");
        write_int(&mut out, 0);
        write_int(&mut out, 42);
        write_int(&mut out, -7);
        write_int(&mut out, i64::MAX);
        write_int(&mut out, i64::MIN);
        write_bulk(&mut out, b"");
        write_bulk(&mut out, b"a\r\n\0");
        write_nil(&mut out);
        write_array_len(&mut out, 0);
        write_array_len(&mut out, 12);
        write_null_array(&mut out);
        let expected: &[u8] = b"+OK\r\n+a  b\r\n-ERR unknown command\r\n-ERR bad  line \r\n\
            :0\r\n:42\r\n:-7\r\n:9223372036854775807\r\n:-9223372036854775808\r\n\
            $0\r\n\r\n$4\r\na\r\n\0\r\n$-1\r\n*0\r\n*12\r\n*-1\r\n";
        assert_eq!(
            out.escape_ascii().to_string(),
            expected.escape_ascii().to_string()
        );
    }

    #[test]
    fn encode_request_bytes() {
        assert_eq!(encode(&[b"GET", b"k"]), b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        assert_eq!(encode(&[]), b"*0\r\n");
        assert_eq!(encode(&[b""]), b"*1\r\n$0\r\n\r\n");
    }

    #[test]
    fn limits_from_config() {
        let config = crate::config::Limits::default();
        let limits = RespLimits::from(&config);
        assert_eq!(limits.max_bulk, config.max_bulk_bytes);
        assert_eq!(limits.max_args, config.max_args);
        assert_eq!(limits.max_inline, config.max_line_bytes);
    }

    fn arg_lists() -> impl Strategy<Value = Vec<Vec<u8>>> {
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..8)
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(
            bytes in prop::collection::vec(any::<u8>(), 0..300),
            star in any::<bool>(),
            max in 0usize..40,
        ) {
            let mut input = bytes;
            if star {
                input.insert(0, b'*');
            }
            for limits in [LIMITS, RespLimits { max_bulk: max, max_args: max, max_inline: max }] {
                let mut progress = ParseProgress::default();
                for end in 0..=input.len() {
                    if let Ok(Some((req, consumed))) = parse_request(&input[..end], &limits) {
                        prop_assert!(consumed > 0 && consumed <= end);
                        prop_assert!(req.len() <= limits.max_args.max(1) || input[0] != b'*');
                    }
                    let _ = parse_request_resumable(&input[..end], &limits, &mut progress);
                }
            }
        }

        #[test]
        fn mutated_frames_never_panic(
            list in arg_lists(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<bool>()), 1..4),
        ) {
            let refs: Vec<&[u8]> = list.iter().map(Vec::as_slice).collect();
            let mut input = encode(&refs);
            for (at, byte, insert) in edits {
                let at = at.index(input.len());
                if insert {
                    input.insert(at, byte);
                } else {
                    input[at] = byte;
                }
            }
            let mut progress = ParseProgress::default();
            for end in 0..=input.len() {
                if let Ok(Some((_, consumed))) = parse_request(&input[..end], &LIMITS) {
                    prop_assert!(consumed > 0 && consumed <= end);
                }
                if let Ok(Some(_)) | Err(_) = parse_request_resumable(&input[..end], &LIMITS, &mut progress) {
                    break;
                }
            }
        }

        #[test]
        fn encoded_args_roundtrip(list in arg_lists()) {
            let refs: Vec<&[u8]> = list.iter().map(Vec::as_slice).collect();
            let input = encode(&refs);
            let (req, consumed) = parse_request(&input, &LIMITS).unwrap().unwrap();
            prop_assert_eq!(consumed, input.len());
            prop_assert_eq!(req.iter().map(<[u8]>::to_vec).collect::<Args>(), list);
        }

        #[test]
        fn hex_escaped_inline_args_roundtrip(list in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..20), 1..6)) {
            let mut line = Vec::new();
            for arg in &list {
                line.extend_from_slice(b" \"");
                for b in arg {
                    line.extend_from_slice(format!("\\x{b:02x}").as_bytes());
                }
                line.push(b'"');
            }
            line.extend_from_slice(b"\r\n");
            prop_assert_eq!(one(&line), list);
        }

        #[test]
        fn random_splits_parse_identically(
            requests in prop::collection::vec(arg_lists(), 1..6),
            mut cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
            inline in any::<bool>(),
        ) {
            let mut input = Vec::new();
            for list in &requests {
                let refs: Vec<&[u8]> = list.iter().map(Vec::as_slice).collect();
                encode_request(&mut input, &refs);
            }
            if inline {
                input.extend_from_slice(b"SET 'a b' \"c\\td\"\r\n\n");
            }
            let expected = parse_all(&input, &LIMITS);
            let mut points: Vec<usize> = cuts.drain(..).map(|i| i.index(input.len() + 1)).collect();
            points.sort_unstable();
            prop_assert_eq!(&feed(&input, &points, false), &expected);
            prop_assert_eq!(&feed(&input, &points, true), &expected);
        }
    }
}
