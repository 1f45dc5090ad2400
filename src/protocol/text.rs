//! The text protocol: one request per line, for telnet and `nc`.
//!
//! # Format
//! ```text
//! PUT <key> <value>   -> OK            (SET is a synonym)
//! GET <key>           -> <value>       or NONE when the key is absent
//! CLEAR <key>         -> OK            (DEL is a synonym)
//! PING                -> PONG
//! QUIT                -> the server closes the connection
//! anything else       -> ERR <reason>
//! ```
//! A line ends in `\n`; `\r\n` is accepted too. Command words are
//! case-insensitive and keys contain no whitespace. The value is the rest of
//! the line after the key and the one space that follows it, so it may hold
//! spaces. Besides the commands above, any command of the RESP side (`INFO`,
//! `PEERS`, `MGET`, `KEYS`, ...) works with whitespace-separated arguments.
//!
//! Framing is in two steps, as in mini-redis: [`LineCodec::next`] finds a
//! whole line in the read buffer (or says to read more), then [`parse_line`]
//! turns it into a [`Command`].

use super::command::{Command, CommandError};
use crate::blob::Blob;

/// What [`LineCodec::next`] found at the front of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Framed<'a> {
    /// A complete line, without its terminator.
    Line {
        /// The line's bytes.
        line: &'a [u8],
        /// The line ended in `\r\n` (answer likewise).
        crlf: bool,
        /// Bytes to drop from the buffer, terminator included.
        consumed: usize,
    },
    /// A line longer than the limit: answer `ERR line too long`. When
    /// `consumed` covers only part of the line, the codec discards the rest
    /// of it as it arrives.
    TooLong {
        /// Bytes to drop from the buffer.
        consumed: usize,
    },
    /// No complete line yet. `consumed` bytes (the tail of an over-long line
    /// being discarded) can be dropped before reading more.
    Incomplete {
        /// Bytes to drop from the buffer.
        consumed: usize,
    },
}

/// Splits a byte stream into lines of at most `max` bytes.
#[derive(Debug)]
pub struct LineCodec {
    max: usize,
    /// Inside an over-long line: drop bytes up to the next `\n`.
    discarding: bool,
}

impl LineCodec {
    /// A codec that accepts lines of up to `max` bytes, terminator excluded.
    pub fn new(max: usize) -> Self {
        LineCodec {
            max,
            discarding: false,
        }
    }

    /// Looks for the next line at the front of `buf`.
    pub fn next<'a>(&mut self, buf: &'a [u8]) -> Framed<'a> {
        let newline = buf.iter().position(|&b| b == b'\n');
        if self.discarding {
            return match newline {
                Some(i) => {
                    self.discarding = false;
                    Framed::Incomplete { consumed: i + 1 }
                }
                None => Framed::Incomplete {
                    consumed: buf.len(),
                },
            };
        }
        match newline {
            Some(i) => {
                let crlf = i > 0 && buf[i - 1] == b'\r';
                let line = &buf[..i - crlf as usize];
                if line.len() > self.max {
                    Framed::TooLong { consumed: i + 1 }
                } else {
                    Framed::Line {
                        line,
                        crlf,
                        consumed: i + 1,
                    }
                }
            }
            // `max` bytes of content plus a possible `\r` can still become a
            // valid line; anything longer cannot.
            None if buf.len() > self.max + 1 => {
                self.discarding = true;
                Framed::TooLong {
                    consumed: buf.len(),
                }
            }
            None => Framed::Incomplete { consumed: 0 },
        }
    }
}

/// Parses one text-protocol line.
///
/// ```
/// use piccolo::protocol::Command;
/// use piccolo::protocol::text::parse_line;
///
/// let cmd = parse_line(b"PUT greeting hello  world").unwrap();
/// assert_eq!(
///     cmd,
///     Command::Set {
///         key: b"greeting".into(),
///         value: b"hello  world".into(),
///         condition: None,
///         get: false,
///     }
/// );
/// assert_eq!(
///     parse_line(b"bogus command").unwrap_err().to_string(),
///     "ERR unknown command 'bogus'"
/// );
/// ```
pub fn parse_line(line: &[u8]) -> Result<Command, CommandError> {
    let (word, rest) = split_word(line);
    if word.is_empty() {
        return Err(CommandError::Empty);
    }
    let name = word.to_ascii_lowercase();
    match name.as_slice() {
        b"put" | b"set" | b"setnx" | b"getset" | b"append" => {
            let (key, value) = key_and_value(rest)
                .ok_or_else(|| CommandError::arity(&String::from_utf8_lossy(&name)))?;
            let (key, value) = (Blob::from(key), Blob::from(value));
            Ok(match name.as_slice() {
                b"setnx" => Command::SetNx { key, value },
                b"getset" => Command::GetSet { key, value },
                b"append" => Command::Append { key, value },
                _ => Command::Set {
                    key,
                    value,
                    condition: None,
                    get: false,
                },
            })
        }
        b"clear" | b"del" => match words(rest).as_slice() {
            [key] => Ok(Command::Clear { key: (*key).into() }),
            _ => Err(CommandError::arity(if name == b"del" {
                "del"
            } else {
                "clear"
            })),
        },
        _ => {
            let mut args = vec![word];
            args.extend(words(rest));
            Command::from_args(&args)
        }
    }
}

/// The first whitespace-separated word, and what follows the whitespace
/// after it.
fn split_word(line: &[u8]) -> (&[u8], &[u8]) {
    let start = line
        .iter()
        .position(|b| !is_space(*b))
        .unwrap_or(line.len());
    let line = &line[start..];
    let end = line.iter().position(|b| is_space(*b)).unwrap_or(line.len());
    let rest = &line[end..];
    let skip = rest
        .iter()
        .position(|b| !is_space(*b))
        .unwrap_or(rest.len());
    (&line[..end], &rest[skip..])
}

/// `<key> <value...>`: the key, and everything after the single space that
/// follows it (which may be empty, or hold more spaces).
fn key_and_value(rest: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = rest.iter().position(|b| is_space(*b))?;
    if end == 0 {
        return None;
    }
    Some((&rest[..end], &rest[end + 1..]))
}

fn words(s: &[u8]) -> Vec<&[u8]> {
    s.split(|b| is_space(*b))
        .filter(|w| !w.is_empty())
        .collect()
}

fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(codec: &mut LineCodec, mut buf: &[u8]) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            match codec.next(buf) {
                Framed::Line { line, consumed, .. } => {
                    seen.push(String::from_utf8_lossy(line).into_owned());
                    buf = &buf[consumed..];
                }
                Framed::TooLong { consumed } => {
                    seen.push("<too long>".into());
                    buf = &buf[consumed..];
                }
                Framed::Incomplete { consumed } => {
                    if consumed == 0 {
                        return seen;
                    }
                    buf = &buf[consumed..];
                }
            }
        }
    }

    #[test]
    fn lines_end_in_lf_or_crlf() {
        let mut c = LineCodec::new(100);
        assert_eq!(
            c.next(b"GET a\r\nPING\n"),
            Framed::Line {
                line: b"GET a",
                crlf: true,
                consumed: 7
            }
        );
        assert_eq!(
            c.next(b"PING\n"),
            Framed::Line {
                line: b"PING",
                crlf: false,
                consumed: 5
            }
        );
        assert_eq!(c.next(b"PIN"), Framed::Incomplete { consumed: 0 });
    }

    #[test]
    fn line_at_the_limit_is_accepted() {
        let mut c = LineCodec::new(4);
        assert_eq!(lines(&mut c, b"abcd\r\nabcd\n"), ["abcd", "abcd"]);
        // Four bytes and a pending `\r` may still be a valid line.
        assert_eq!(c.next(b"abcd\r"), Framed::Incomplete { consumed: 0 });
    }

    #[test]
    fn complete_over_long_line_is_one_error() {
        let mut c = LineCodec::new(4);
        assert_eq!(lines(&mut c, b"abcdef\nPING\n"), ["<too long>", "PING"]);
    }

    #[test]
    fn partial_over_long_line_is_discarded_as_it_arrives() {
        let mut c = LineCodec::new(4);
        assert_eq!(lines(&mut c, b"abcdefgh"), ["<too long>"]);
        // The rest of that line, in two reads, then a good line.
        assert_eq!(lines(&mut c, b"ijkl"), Vec::<String>::new());
        assert_eq!(lines(&mut c, b"mn\nPING\n"), ["PING"]);
    }

    fn parse(s: &str) -> Result<Command, CommandError> {
        parse_line(s.as_bytes())
    }

    #[test]
    fn put_value_keeps_its_spaces() {
        assert_eq!(
            parse("PUT k  some value ").unwrap(),
            Command::Set {
                key: b"k".into(),
                value: b" some value ".into(),
                condition: None,
                get: false
            }
        );
        assert_eq!(
            parse("set k v").unwrap(),
            Command::Set {
                key: b"k".into(),
                value: b"v".into(),
                condition: None,
                get: false
            }
        );
    }

    #[test]
    fn put_with_empty_value_after_the_space() {
        assert_eq!(
            parse("PUT k ").unwrap(),
            Command::Set {
                key: b"k".into(),
                value: Blob::default(),
                condition: None,
                get: false
            }
        );
    }

    #[test]
    fn command_words_are_case_insensitive() {
        assert_eq!(parse("gEt k").unwrap(), Command::Get { key: b"k".into() });
        assert_eq!(parse("ping").unwrap(), Command::Ping { msg: None });
        assert_eq!(parse("Quit").unwrap(), Command::Quit);
    }

    #[test]
    fn clear_and_del_are_synonyms() {
        assert_eq!(
            parse("CLEAR k").unwrap(),
            Command::Clear { key: b"k".into() }
        );
        assert_eq!(parse("del k").unwrap(), Command::Clear { key: b"k".into() });
    }

    #[test]
    fn error_paths() {
        assert_eq!(parse(""), Err(CommandError::Empty));
        assert_eq!(parse("   "), Err(CommandError::Empty));
        assert_eq!(
            parse("PUT k").unwrap_err().to_string(),
            "ERR wrong number of arguments for 'put' command"
        );
        assert_eq!(
            parse("PUT").unwrap_err().to_string(),
            "ERR wrong number of arguments for 'put' command"
        );
        assert_eq!(
            parse("GET").unwrap_err().to_string(),
            "ERR wrong number of arguments for 'get' command"
        );
        assert_eq!(
            parse("GET a b").unwrap_err().to_string(),
            "ERR wrong number of arguments for 'get' command"
        );
        assert_eq!(
            parse("CLEAR").unwrap_err().to_string(),
            "ERR wrong number of arguments for 'clear' command"
        );
        assert_eq!(
            parse("bogus command").unwrap_err().to_string(),
            "ERR unknown command 'bogus'"
        );
    }

    #[test]
    fn non_utf8_is_an_unknown_command_not_a_crash() {
        let e = parse_line(&[0xff, 0xfe, b' ', b'x']).unwrap_err();
        assert!(e.to_string().starts_with("ERR unknown command"), "{e}");
    }
}
