//! The one [`Command`] type both protocols parse into, and [`apply`], the one
//! place where commands are carried out.
//!
//! Parsing follows mini-redis: [`Command::from_args`] matches the name
//! (ignoring case), reads the arguments through a small cursor ([`Args`]) and
//! calls [`Args::finish`] so that extra arguments are an error. An unknown
//! name is an error reply; the connection stays open.

use std::fmt;

use crate::blob::Blob;
use crate::replication::{Output, Replicator};
use crate::store::Change;

use super::reply::Reply;

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `GET key`: the value, or nil.
    Get { key: Blob },
    /// `SET key value [NX|XX] [GET]` (text: `PUT key value`).
    Set {
        key: Blob,
        value: Blob,
        /// `Some(true)`: only if absent (NX); `Some(false)`: only if present (XX).
        condition: Option<bool>,
        /// Answer with the previous value instead of OK.
        get: bool,
    },
    /// `SETNX key value`: 1 if set, 0 if the key existed.
    SetNx { key: Blob, value: Blob },
    /// `GETSET key value`: set, answer the previous value.
    GetSet { key: Blob, value: Blob },
    /// `APPEND key value`: the new length.
    Append { key: Blob, value: Blob },
    /// `CLEAR key` (text protocol): delete, answer OK.
    Clear { key: Blob },
    /// `DEL key [key ...]`: the number of keys deleted.
    Del { keys: Vec<Blob> },
    /// `EXISTS key [key ...]`: how many of them exist.
    Exists { keys: Vec<Blob> },
    /// `MGET key [key ...]`: a list of values or nils.
    MGet { keys: Vec<Blob> },
    /// `MSET key value [key value ...]`: OK.
    MSet { pairs: Vec<(Blob, Blob)> },
    /// `STRLEN key`: the value's length, 0 when absent.
    StrLen { key: Blob },
    /// `KEYS pattern`: every live key matching a glob.
    Keys { pattern: Blob },
    /// `SCAN cursor [MATCH pattern] [COUNT n]`: a page of keys.
    Scan {
        cursor: u64,
        pattern: Option<Blob>,
        count: usize,
    },
    /// `DBSIZE`: the number of live keys.
    DbSize,
    /// `INFO [section]`: server figures.
    Info { section: Option<String> },
    /// `PEERS`: the known members, their state and link status.
    Peers,
    /// `PING [message]`.
    Ping { msg: Option<Blob> },
    /// `ECHO message`.
    Echo { msg: Blob },
    /// `SELECT db`: only database 0 exists.
    Select { db: i64 },
    /// `QUIT`.
    Quit,
    /// `HELLO [protover ...]`: only RESP2 is spoken.
    Hello { version: Option<i64> },
    /// `COMMAND [subcommand ...]`: an empty command table, so clients fall
    /// back to their built-in one.
    CommandInfo,
    /// `CONFIG GET parameter`: the few values clients ask for.
    ConfigGet { parameter: Blob },
    /// `CLIENT subcommand ...`: accepted so client libraries start cleanly.
    Client { sub: String },
}

/// Why a request could not become a [`Command`]. Its `Display` is the reply
/// text, code included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// An empty request line.
    Empty,
    /// A command name we do not know.
    Unknown(String),
    /// A known command with the wrong number of arguments.
    Arity(String),
    /// Any other malformed request.
    Invalid(String),
}

impl CommandError {
    /// Wrong number of arguments for `name`.
    pub fn arity(name: &str) -> Self {
        CommandError::Arity(name.to_string())
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Empty => write!(f, "ERR empty command"),
            CommandError::Unknown(name) => write!(f, "ERR unknown command '{name}'"),
            CommandError::Arity(name) => {
                write!(f, "ERR wrong number of arguments for '{name}' command")
            }
            CommandError::Invalid(reason) => write!(f, "ERR {reason}"),
        }
    }
}

impl std::error::Error for CommandError {}

/// A cursor over a request's arguments (mini-redis's `Parse`).
pub struct Args<'a, A> {
    name: &'static str,
    rest: std::slice::Iter<'a, A>,
}

impl<A: AsRef<[u8]>> Args<'_, A> {
    /// The next argument, or an arity error when there is none.
    pub fn next_bytes(&mut self) -> Result<Blob, CommandError> {
        self.rest
            .next()
            .map(|a| a.as_ref().into())
            .ok_or_else(|| CommandError::arity(self.name))
    }

    /// The next argument, if any.
    pub fn next_optional(&mut self) -> Option<Blob> {
        self.rest.next().map(|a| a.as_ref().into())
    }

    /// The next argument as an integer.
    pub fn next_int(&mut self) -> Result<i64, CommandError> {
        let raw = self.next_bytes()?;
        parse_int(&raw)
    }

    /// Every remaining argument; at least one.
    pub fn rest_at_least_one(&mut self) -> Result<Vec<Blob>, CommandError> {
        let all: Vec<Blob> = self.rest.by_ref().map(|a| a.as_ref().into()).collect();
        if all.is_empty() {
            return Err(CommandError::arity(self.name));
        }
        Ok(all)
    }

    /// Fails when arguments are left over.
    pub fn finish(&mut self) -> Result<(), CommandError> {
        match self.rest.next() {
            None => Ok(()),
            Some(_) => Err(CommandError::arity(self.name)),
        }
    }
}

fn parse_int(raw: &[u8]) -> Result<i64, CommandError> {
    std::str::from_utf8(raw)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| CommandError::Invalid("value is not an integer or out of range".into()))
}

/// Command names we know, so that `Args` can name them in arity errors
/// without allocating.
const NAMES: &[&str] = &[
    "get", "set", "setnx", "getset", "append", "del", "exists", "mget", "mset", "strlen", "keys",
    "scan", "dbsize", "info", "peers", "ping", "echo", "select", "quit", "hello", "command",
    "config", "client",
];

impl Command {
    /// Parses a request given as its arguments, the command name first.
    pub fn from_args<A: AsRef<[u8]>>(args: &[A]) -> Result<Command, CommandError> {
        let Some((raw_name, rest)) = args.split_first() else {
            return Err(CommandError::Empty);
        };
        let raw_name = raw_name.as_ref();
        let Some(&name) = NAMES
            .iter()
            .find(|n| n.as_bytes().eq_ignore_ascii_case(raw_name))
        else {
            return Err(CommandError::Unknown(printable(raw_name)));
        };
        let mut a = Args {
            name,
            rest: rest.iter(),
        };
        let cmd = match name {
            "get" => Command::Get {
                key: a.next_bytes()?,
            },
            "set" => parse_set(&mut a)?,
            "setnx" => Command::SetNx {
                key: a.next_bytes()?,
                value: a.next_bytes()?,
            },
            "getset" => Command::GetSet {
                key: a.next_bytes()?,
                value: a.next_bytes()?,
            },
            "append" => Command::Append {
                key: a.next_bytes()?,
                value: a.next_bytes()?,
            },
            "del" => Command::Del {
                keys: a.rest_at_least_one()?,
            },
            "exists" => Command::Exists {
                keys: a.rest_at_least_one()?,
            },
            "mget" => Command::MGet {
                keys: a.rest_at_least_one()?,
            },
            "mset" => {
                if rest.is_empty() || rest.len() % 2 != 0 {
                    return Err(CommandError::arity("mset"));
                }
                let pairs = rest
                    .chunks_exact(2)
                    .map(|kv| (kv[0].as_ref().into(), kv[1].as_ref().into()))
                    .collect();
                a.rest.by_ref().for_each(drop);
                Command::MSet { pairs }
            }
            "strlen" => Command::StrLen {
                key: a.next_bytes()?,
            },
            "keys" => Command::Keys {
                pattern: a.next_bytes()?,
            },
            "scan" => parse_scan(&mut a)?,
            "dbsize" => Command::DbSize,
            "info" => Command::Info {
                section: a.next_optional().map(|s| printable(&s).to_lowercase()),
            },
            "peers" => Command::Peers,
            "ping" => Command::Ping {
                msg: a.next_optional(),
            },
            "echo" => Command::Echo {
                msg: a.next_bytes()?,
            },
            "select" => Command::Select { db: a.next_int()? },
            "quit" => Command::Quit,
            "hello" => {
                let version = a.next_optional().map(|v| parse_int(&v)).transpose()?;
                // AUTH and SETNAME options may follow; there is nothing to
                // check them against, so they are accepted and ignored.
                a.rest.by_ref().for_each(drop);
                Command::Hello { version }
            }
            "command" => {
                a.rest.by_ref().for_each(drop);
                Command::CommandInfo
            }
            "config" => {
                let sub = a.next_bytes()?;
                if !sub.eq_ignore_ascii_case(b"get") {
                    return Err(CommandError::Invalid(format!(
                        "CONFIG {} is not supported",
                        printable(&sub).to_uppercase()
                    )));
                }
                Command::ConfigGet {
                    parameter: a.next_bytes()?,
                }
            }
            "client" => {
                let sub = printable(&a.next_bytes()?).to_lowercase();
                a.rest.by_ref().for_each(drop);
                Command::Client { sub }
            }
            _ => unreachable!("every name in NAMES has an arm"),
        };
        a.finish()?;
        Ok(cmd)
    }
}

fn parse_set<A: AsRef<[u8]>>(a: &mut Args<A>) -> Result<Command, CommandError> {
    let key = a.next_bytes()?;
    let value = a.next_bytes()?;
    let mut condition = None;
    let mut get = false;
    while let Some(opt) = a.next_optional() {
        match opt.to_ascii_uppercase().as_slice() {
            b"NX" if condition.is_none() => condition = Some(true),
            b"XX" if condition.is_none() => condition = Some(false),
            b"GET" => get = true,
            b"EX" | b"PX" | b"EXAT" | b"PXAT" | b"KEEPTTL" => {
                return Err(CommandError::Invalid(
                    "expiry (EX, PX, EXAT, PXAT, KEEPTTL) is not supported: piccolo keys do not expire"
                        .into(),
                ));
            }
            _ => return Err(CommandError::Invalid("syntax error".into())),
        }
    }
    Ok(Command::Set {
        key,
        value,
        condition,
        get,
    })
}

fn parse_scan<A: AsRef<[u8]>>(a: &mut Args<A>) -> Result<Command, CommandError> {
    let cursor = a.next_bytes()?;
    let cursor = std::str::from_utf8(&cursor)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| CommandError::Invalid("invalid cursor".into()))?;
    let mut pattern = None;
    let mut count = 10;
    while let Some(opt) = a.next_optional() {
        match opt.to_ascii_uppercase().as_slice() {
            b"MATCH" => pattern = Some(a.next_bytes()?),
            b"COUNT" => {
                let n = a.next_int()?;
                if n < 1 {
                    return Err(CommandError::Invalid("syntax error".into()));
                }
                count = n as usize;
            }
            _ => return Err(CommandError::Invalid("syntax error".into())),
        }
    }
    Ok(Command::Scan {
        cursor,
        pattern,
        count,
    })
}

/// A name or argument as text fit for an error message: lossy UTF-8, control
/// characters dropped, at most 64 characters.
fn printable(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw)
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect()
}

/// What the connection does after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep serving.
    Continue,
    /// Flush the answer and close the connection.
    Close,
}

/// What commands need from the node that runs them.
pub trait Host {
    /// The replication core: reads go to its store, writes through it.
    fn replicator(&self) -> &Replicator;
    /// Sends the replication outputs of a write to the linked peers.
    fn publish(&self, outputs: &mut Vec<Output>);
    /// The `INFO` text for one section, or all of them.
    fn info(&self, section: Option<&str>) -> String;
    /// One line per known member, for `PEERS`.
    fn peers(&self) -> Vec<String>;
    /// The largest value a write may leave in the store.
    fn max_value_bytes(&self) -> usize;
}

/// Carries out `cmd` and writes its answer to `reply`. Writes go through
/// the replicator, which appends what the peers must hear to `outputs`; the
/// caller publishes them with [`Host::publish`], once for all the commands
/// of one read, so that a pipeline of writes travels as one message.
pub fn apply(
    cmd: Command,
    host: &impl Host,
    reply: &mut impl Reply,
    outputs: &mut Vec<Output>,
) -> Flow {
    let rep = host.replicator();
    let store = rep.store();
    match cmd {
        Command::Get { key } => store.get_with(&key, |v| match v {
            Some(v) => reply.bulk(v),
            None => reply.nil(),
        }),
        Command::Set {
            key,
            value,
            condition,
            get,
        } => {
            let (done, old) = rep.local_write(
                &key,
                |cur| {
                    let allowed = match condition {
                        None => true,
                        Some(only_if_absent) => cur.is_none() == only_if_absent,
                    };
                    let old = if get { cur.map(<[u8]>::to_vec) } else { None };
                    (allowed.then_some(Change::Set(value)), (allowed, old))
                },
                outputs,
            );
            match (get, done, old) {
                (true, _, Some(old)) => reply.bulk(&old),
                (true, _, None) | (false, false, _) => reply.nil(),
                (false, true, _) => reply.status("OK"),
            }
        }
        Command::SetNx { key, value } => {
            let set = rep.local_write(
                &key,
                |cur| match cur {
                    Some(_) => (None, false),
                    None => (Some(Change::Set(value)), true),
                },
                outputs,
            );
            reply.int(set as i64);
        }
        Command::GetSet { key, value } => {
            let old = rep.local_write(
                &key,
                |cur| (Some(Change::Set(value)), cur.map(<[u8]>::to_vec)),
                outputs,
            );
            match old {
                Some(old) => reply.bulk(&old),
                None => reply.nil(),
            }
        }
        Command::Append { key, value } => {
            // A value no client could SET must not grow by APPEND either:
            // peers and replies are sized for values within the limit.
            let max = host.max_value_bytes();
            let len = rep.local_write(
                &key,
                |cur| {
                    let cur = cur.unwrap_or_default();
                    if cur.len() + value.len() > max {
                        return (None, None);
                    }
                    let mut next = Vec::with_capacity(cur.len() + value.len());
                    next.extend_from_slice(cur);
                    next.extend_from_slice(&value);
                    let len = next.len();
                    (Some(Change::Set(next.into())), Some(len))
                },
                outputs,
            );
            match len {
                Some(len) => reply.int(len as i64),
                None => reply.error(&format!(
                    "ERR string exceeds maximum allowed size ({max} bytes, limits.max_bulk_bytes)"
                )),
            }
        }
        Command::Clear { key } => {
            delete(rep, &key, outputs);
            reply.status("OK");
        }
        Command::Del { keys } => {
            let n = keys.iter().filter(|k| delete(rep, k, outputs)).count();
            reply.int(n as i64);
        }
        Command::Exists { keys } => {
            let n = keys
                .iter()
                .filter(|k| store.get_with(k, |v| v.is_some()))
                .count();
            reply.int(n as i64);
        }
        Command::MGet { keys } => {
            reply.list(keys.len());
            for k in &keys {
                store.get_with(k, |v| match v {
                    Some(v) => reply.bulk(v),
                    None => reply.nil(),
                });
            }
            reply.end_list();
        }
        Command::MSet { pairs } => {
            rep.local_set_all(pairs, outputs);
            reply.status("OK");
        }
        Command::StrLen { key } => {
            let len = store.get_with(&key, |v| v.map_or(0, <[u8]>::len));
            reply.int(len as i64);
        }
        Command::Keys { pattern } => {
            let mut keys = Vec::new();
            store.scan_live(0, |k| {
                if glob_match(&pattern, k) {
                    keys.push(k.to_vec());
                }
                true
            });
            reply.list(keys.len());
            keys.iter().for_each(|k| reply.bulk(k));
            reply.end_list();
        }
        Command::Scan {
            cursor,
            pattern,
            count,
        } => {
            let mut keys = Vec::new();
            let mut visited = 0;
            let next = match usize::try_from(cursor) {
                Ok(start) if start < crate::store::BUCKETS => store.scan_live(start, |k| {
                    visited += 1;
                    if pattern.as_ref().is_none_or(|p| glob_match(p, k)) {
                        keys.push(k.to_vec());
                    }
                    visited < count
                }),
                _ => None,
            };
            reply.list(2);
            reply.bulk(next.unwrap_or(0).to_string().as_bytes());
            reply.list(keys.len());
            keys.iter().for_each(|k| reply.bulk(k));
            reply.end_list();
            reply.end_list();
        }
        Command::DbSize => reply.int(store.stats().keys as i64),
        Command::Info { section } => {
            reply.report(&host.info(section.as_deref()));
        }
        Command::Peers => {
            let lines = host.peers();
            reply.list(lines.len());
            lines.iter().for_each(|l| reply.bulk(l.as_bytes()));
            reply.end_list();
        }
        Command::Ping { msg: None } => reply.status("PONG"),
        Command::Ping { msg: Some(m) } | Command::Echo { msg: m } => reply.bulk(&m),
        Command::Select { db: 0 } => reply.status("OK"),
        Command::Select { .. } => reply.error("ERR DB index is out of range"),
        Command::Quit => {
            reply.quit();
            return Flow::Close;
        }
        Command::Hello { version } => match version {
            None | Some(2) => {
                let pairs: [(&str, &[u8]); 5] = [
                    ("server", b"piccolo"),
                    ("version", env!("CARGO_PKG_VERSION").as_bytes()),
                    ("mode", b"cluster"),
                    ("role", b"master"),
                    ("proto", b"2"),
                ];
                reply.list(pairs.len() * 2);
                for (k, v) in pairs {
                    reply.bulk(k.as_bytes());
                    reply.bulk(v);
                }
                reply.end_list();
            }
            Some(_) => reply.error("NOPROTO unsupported protocol version"),
        },
        Command::CommandInfo => {
            reply.list(0);
            reply.end_list();
        }
        Command::ConfigGet { parameter } => {
            // redis-benchmark asks for these two at start and warns when it
            // cannot read them; piccolo neither saves nor appends to disk.
            let known: &[(&[u8], &[u8])] = &[(b"save", b""), (b"appendonly", b"no")];
            let hits: Vec<_> = known
                .iter()
                .filter(|(name, _)| glob_match(&parameter.to_ascii_lowercase(), name))
                .collect();
            reply.list(hits.len() * 2);
            for (name, value) in hits {
                reply.bulk(name);
                reply.bulk(value);
            }
            reply.end_list();
        }
        Command::Client { sub } => match sub.as_str() {
            "getname" => reply.nil(),
            "id" => reply.int(0),
            _ => reply.status("OK"),
        },
    }
    Flow::Continue
}

/// Deletes `key` if it has a live value; true when it did.
fn delete(rep: &Replicator, key: &[u8], outputs: &mut Vec<Output>) -> bool {
    rep.local_write(
        key,
        |cur| match cur {
            Some(_) => (Some(Change::Delete), true),
            None => (None, false),
        },
        outputs,
    )
}

/// Redis-style glob: `*`, `?`, `[abc]`, `[^a-z]`, and `\` to escape.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative with one backtrack point for the last `*`: linear in
    // practice, and never recursive, so a hostile pattern cannot blow the
    // coroutine's small stack.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p, t));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class_match(pattern, p, text[t]) {
                        if matched {
                            p = next;
                            t += 1;
                            continue;
                        }
                    } else if text[t] == b'[' {
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() && pattern[p + 1] == text[t] => {
                    p += 2;
                    t += 1;
                    continue;
                }
                b'\\' if p + 1 < pattern.len() => {}
                c if c == text[t] => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, st)) => {
                p = sp + 1;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class starting at `pattern[open] == '['`.
/// Returns whether it matched and the index after the class, or `None` when
/// the class is not closed (then `[` is literal).
fn class_match(pattern: &[u8], open: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = open + 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < pattern.len() {
        let mut lo = pattern[i];
        if lo == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if lo == b'\\' && i + 1 < pattern.len() {
            i += 1;
            lo = pattern[i];
        }
        if pattern.get(i + 1) == Some(&b'-') && i + 2 < pattern.len() && pattern[i + 2] != b']' {
            let hi = pattern[i + 2];
            let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
            matched |= (lo..=hi).contains(&c);
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&str]) -> Result<Command, CommandError> {
        let raw: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        Command::from_args(&raw)
    }

    #[test]
    fn names_are_case_insensitive() {
        assert_eq!(
            cmd(&["GeT", "k"]).unwrap(),
            Command::Get { key: b"k".into() }
        );
    }

    #[test]
    fn arity_errors_name_the_command() {
        for (args, name) in [
            (&["get"][..], "get"),
            (&["get", "a", "b"][..], "get"),
            (&["set", "k"][..], "set"),
            (&["del"][..], "del"),
            (&["mset", "a"][..], "mset"),
            (&["mset", "a", "b", "c"][..], "mset"),
            (&["echo"][..], "echo"),
            (&["dbsize", "x"][..], "dbsize"),
        ] {
            assert_eq!(cmd(args), Err(CommandError::arity(name)), "{args:?}");
        }
    }

    #[test]
    fn unknown_command_is_named() {
        assert_eq!(
            cmd(&["FLY", "x"]).unwrap_err().to_string(),
            "ERR unknown command 'FLY'"
        );
    }

    #[test]
    fn set_options() {
        assert_eq!(
            cmd(&["set", "k", "v", "nx", "get"]).unwrap(),
            Command::Set {
                key: b"k".into(),
                value: b"v".into(),
                condition: Some(true),
                get: true
            }
        );
        let e = cmd(&["set", "k", "v", "EX", "10"]).unwrap_err().to_string();
        assert!(e.contains("not supported"), "{e}");
        assert_eq!(
            cmd(&["set", "k", "v", "NX", "XX"]).unwrap_err().to_string(),
            "ERR syntax error"
        );
    }

    #[test]
    fn scan_options() {
        assert_eq!(
            cmd(&["scan", "5", "MATCH", "a*", "COUNT", "100"]).unwrap(),
            Command::Scan {
                cursor: 5,
                pattern: Some(b"a*".into()),
                count: 100
            }
        );
        assert!(cmd(&["scan", "x"]).is_err());
        assert!(cmd(&["scan", "0", "COUNT", "0"]).is_err());
        assert!(cmd(&["scan", "0", "BOGUS"]).is_err());
    }

    #[test]
    fn mset_pairs_up() {
        assert_eq!(
            cmd(&["mset", "a", "1", "b", "2"]).unwrap(),
            Command::MSet {
                pairs: vec![(b"a".into(), b"1".into()), (b"b".into(), b"2".into())]
            }
        );
    }

    #[test]
    fn select_needs_an_integer() {
        assert!(cmd(&["select", "x"]).is_err());
        assert_eq!(cmd(&["select", "0"]).unwrap(), Command::Select { db: 0 });
    }

    #[test]
    fn glob() {
        let m = |p: &str, t: &str| glob_match(p.as_bytes(), t.as_bytes());
        assert!(m("*", ""));
        assert!(m("*", "anything"));
        assert!(m("user:*", "user:42"));
        assert!(!m("user:*", "usr:42"));
        assert!(m("h?llo", "hello"));
        assert!(!m("h?llo", "hllo"));
        assert!(m("h[ae]llo", "hallo"));
        assert!(!m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo"));
        assert!(!m("h[^e]llo", "hello"));
        assert!(m("h[a-c]llo", "hbllo"));
        assert!(m("a\\*b", "a*b"));
        assert!(!m("a\\*b", "axb"));
        assert!(m("*a*b*c*", "xxaxxbxxcxx"));
        assert!(!m("*a*b*c*", "xxaxxcxxbxx"));
        assert!(m("[", "["));
        assert!(m(&"*a".repeat(50), &"a".repeat(200)));
    }
}
