//! STUB (replaced by the resp branch).
#![allow(missing_docs, dead_code, unused_variables)]
#[derive(Clone, Copy, Debug)]
pub struct RespLimits { pub max_bulk: usize, pub max_args: usize, pub max_inline: usize }
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);
impl std::fmt::Display for ProtocolError { fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { write!(f, "Protocol error: {}", self.0) } }
pub struct Request<'a> { pub args: Vec<&'a [u8]> }
pub fn parse_request<'a>(buf: &'a [u8], limits: &RespLimits) -> Result<Option<(Request<'a>, usize)>, ProtocolError> { Ok(None) }
pub fn write_simple(out: &mut Vec<u8>, s: &str) { out.push(b'+'); out.extend(s.as_bytes()); out.extend(b"\r\n"); }
pub fn write_error(out: &mut Vec<u8>, msg: &str) { out.push(b'-'); out.extend(msg.as_bytes()); out.extend(b"\r\n"); }
pub fn write_int(out: &mut Vec<u8>, n: i64) { out.extend(format!(":{n}\r\n").as_bytes()); }
pub fn write_bulk(out: &mut Vec<u8>, v: &[u8]) { out.extend(format!("${}\r\n", v.len()).as_bytes()); out.extend(v); out.extend(b"\r\n"); }
pub fn write_nil(out: &mut Vec<u8>) { out.extend(b"$-1\r\n"); }
pub fn write_array_len(out: &mut Vec<u8>, n: usize) { out.extend(format!("*{n}\r\n").as_bytes()); }
pub fn write_null_array(out: &mut Vec<u8>) { out.extend(b"*-1\r\n"); }
pub fn encode_request(out: &mut Vec<u8>, args: &[&[u8]]) {}
