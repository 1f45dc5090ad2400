//! Answer encoders. A command writes its answer through the [`Reply`] trait,
//! once, straight into the connection's output buffer: a GET copies the value
//! from the store into that buffer and allocates nothing else.

use super::resp;

/// Where a command writes its answer. Each protocol encodes the same calls
/// its own way.
pub trait Reply {
    /// A status such as `OK` or `PONG`.
    fn status(&mut self, s: &str);
    /// An error; `msg` starts with its code, e.g. `ERR unknown command 'x'`.
    fn error(&mut self, msg: &str);
    /// An integer.
    fn int(&mut self, n: i64);
    /// A value (binary-safe).
    fn bulk(&mut self, v: &[u8]);
    /// An absent value.
    fn nil(&mut self);
    /// Opens a list of `n` items; every item is then written, then
    /// [`Reply::end_list`] closes it. Lists may nest.
    fn list(&mut self, n: usize);
    /// Closes the innermost open list.
    fn end_list(&mut self);
    /// A multi-line report such as INFO: one bulk string in RESP, its lines
    /// followed by `END` in the text protocol.
    fn report(&mut self, text: &str);
    /// The answer to QUIT, sent just before the connection closes: `+OK` in
    /// RESP, as Redis clients expect; nothing in the text protocol, whose
    /// contract is that QUIT simply closes.
    fn quit(&mut self);
}

/// Encodes answers as RESP2.
pub struct RespReply<'a> {
    /// The connection's output buffer.
    pub out: &'a mut Vec<u8>,
}

impl Reply for RespReply<'_> {
    fn status(&mut self, s: &str) {
        resp::write_simple(self.out, s);
    }
    fn error(&mut self, msg: &str) {
        resp::write_error(self.out, msg);
    }
    fn int(&mut self, n: i64) {
        resp::write_int(self.out, n);
    }
    fn bulk(&mut self, v: &[u8]) {
        resp::write_bulk(self.out, v);
    }
    fn nil(&mut self) {
        resp::write_nil(self.out);
    }
    fn list(&mut self, n: usize) {
        resp::write_array_len(self.out, n);
    }
    fn end_list(&mut self) {}
    fn report(&mut self, text: &str) {
        resp::write_bulk(self.out, text.as_bytes());
    }
    fn quit(&mut self) {
        resp::write_simple(self.out, "OK");
    }
}

/// Encodes answers for the text protocol: one line per item, `NONE` for an
/// absent value, `ERR <reason>` for errors, and a list as its items, one a
/// line, followed by a line `END` (nested lists are flattened, with a single
/// `END` at the end). Lines end as the request did: `\r\n` for telnet, `\n`
/// for `nc`.
pub struct TextReply<'a> {
    /// The connection's output buffer.
    pub out: &'a mut Vec<u8>,
    /// End lines with `\r\n` instead of `\n`.
    pub crlf: bool,
    depth: usize,
}

impl<'a> TextReply<'a> {
    /// An encoder appending to `out`.
    pub fn new(out: &'a mut Vec<u8>, crlf: bool) -> Self {
        TextReply {
            out,
            crlf,
            depth: 0,
        }
    }

    fn line(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
        self.out
            .extend_from_slice(if self.crlf { b"\r\n" } else { b"\n" });
    }
}

impl Reply for TextReply<'_> {
    fn status(&mut self, s: &str) {
        self.line(s.as_bytes());
    }
    fn error(&mut self, msg: &str) {
        let clean: String = msg
            .chars()
            .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
            .collect();
        self.line(clean.as_bytes());
    }
    fn int(&mut self, n: i64) {
        self.line(n.to_string().as_bytes());
    }
    fn bulk(&mut self, v: &[u8]) {
        self.line(v);
    }
    fn nil(&mut self) {
        self.line(b"NONE");
    }
    fn list(&mut self, _n: usize) {
        self.depth += 1;
    }
    fn end_list(&mut self) {
        self.depth -= 1;
        if self.depth == 0 {
            self.line(b"END");
        }
    }
    fn report(&mut self, text: &str) {
        for line in text.lines() {
            self.line(line.as_bytes());
        }
        self.line(b"END");
    }
    fn quit(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(crlf: bool, f: impl FnOnce(&mut TextReply)) -> String {
        let mut out = Vec::new();
        f(&mut TextReply::new(&mut out, crlf));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_lines_follow_the_request_line_ending() {
        assert_eq!(text(false, |r| r.status("OK")), "OK\n");
        assert_eq!(text(true, |r| r.status("OK")), "OK\r\n");
        assert_eq!(text(false, |r| r.nil()), "NONE\n");
        assert_eq!(text(false, |r| r.bulk(b"a b")), "a b\n");
        assert_eq!(text(false, |r| r.int(-3)), "-3\n");
    }

    #[test]
    fn text_errors_stay_on_one_line() {
        assert_eq!(text(false, |r| r.error("ERR a\r\nb")), "ERR a  b\n");
    }

    #[test]
    fn text_lists_flatten_and_end_once() {
        let s = text(false, |r| {
            r.list(2);
            r.bulk(b"0");
            r.list(2);
            r.bulk(b"x");
            r.nil();
            r.end_list();
            r.end_list();
        });
        assert_eq!(s, "0\nx\nNONE\nEND\n");
    }

    #[test]
    fn text_reports_are_lines_then_end() {
        assert_eq!(
            text(true, |r| r.report("# Server\r\nuptime:1\r\n")),
            "# Server\r\nuptime:1\r\nEND\r\n"
        );
        assert_eq!(text(false, |r| r.quit()), "");
    }
}
