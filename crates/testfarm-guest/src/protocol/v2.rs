//! Version 2: length-prefixed binary frames, so test output can contain any byte sequence
//! (including `TAP_END`) without confusing the reader.
//!
//! Every frame is a 10-byte header and a payload:
//!
//! ```text
//! offset 0  u8      magic 0x54 ('T'): catches a v1 line or garbage at once
//! offset 1  u8      kind (0x01.. host→guest, 0x81.. guest→host)
//! offset 2  u32 BE  request id (0 for unsolicited frames such as heartbeats)
//! offset 6  u32 BE  payload length (at most MAX_PAYLOAD)
//! offset 10 …       payload: fields in order; integers big endian, strings and blobs as
//!                   u32 length + bytes, lists as u32 count + items, options as u8 0/1 + value
//! ```
//!
//! The decoders are pure functions over a byte slice (`decode_*` returns `Ok(None)` when more
//! bytes are needed), used by the blocking guest and the async host alike, and fuzzed with
//! proptest. Every malformed input is a [`FrameError`] naming the frame and field at fault.

use thiserror::Error;

pub const MAGIC: u8 = 0x54;
pub const HEADER_LEN: usize = 10;
/// Largest payload either side accepts: bounds memory per frame (file pushes are chunked by
/// nobody; a file larger than this is refused, not streamed).
pub const MAX_PAYLOAD: usize = 16 * 1024 * 1024;
/// Output is sent in chunks of at most this many bytes.
pub const OUTPUT_CHUNK: usize = 32 * 1024;

#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum FrameError {
    #[error("bad frame magic byte 0x{got:02x} (expected 0x54): not a v2 frame")]
    BadMagic { got: u8 },
    #[error("unknown {direction} frame kind 0x{kind:02x}")]
    UnknownKind { kind: u8, direction: &'static str },
    #[error("frame payload of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("truncated frame: stream ended with {have} of {need} bytes")]
    Truncated { have: usize, need: usize },
    #[error("malformed {frame} frame: {what}")]
    Payload { frame: &'static str, what: String },
}

/// A decoded frame: the request it belongs to and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<M> {
    pub id: u32,
    pub msg: M,
}

/// Run a command (argv, no shell) in its own process group.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Exec {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    /// 0: no timeout. Otherwise the guest kills the process group when it expires.
    pub timeout_ms: u64,
    /// Run in a throw-away mount namespace and cgroup (`--isolate test`).
    pub isolate: bool,
}

/// Host → guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMsg {
    Exec(Exec),
    /// Kill the process group of the request `id` (the frame's id).
    Cancel,
    /// Write a file in the guest (parent directories are created).
    Push {
        path: String,
        mode: u32,
        data: Vec<u8>,
    },
    /// Read a file from the guest, answered with `FileData`.
    Pull {
        path: String,
    },
    Ping,
    /// End the session; the guest answers `Bye` and reopens its port.
    Bye,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExitStatus {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub cancelled: bool,
    pub duration_us: u64,
}

/// Guest → host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestMsg {
    /// The command started (its pid is its process group id).
    Started {
        pid: u32,
    },
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(ExitStatus),
    /// The request failed before or instead of running (bad path, spawn error, bad frame).
    Error(String),
    Pong,
    FileData(Vec<u8>),
    /// A `Push` was written.
    Done,
    /// Unsolicited, id 0, about once a second: the guest is alive even when nothing runs.
    Heartbeat {
        uptime_ms: u64,
    },
    Bye,
}

/// A message of one direction: its kind byte and payload codec.
pub trait Message: Sized {
    const DIRECTION: &'static str;
    fn kind(&self) -> u8;
    fn encode_payload(&self, out: &mut Vec<u8>);
    fn decode_payload(kind: u8, payload: &[u8]) -> Result<Self, FrameError>;
}

/// Encodes one frame.
pub fn encode<M: Message>(id: u32, msg: &M) -> Vec<u8> {
    let mut payload = Vec::new();
    msg.encode_payload(&mut payload);
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.push(MAGIC);
    out.push(msg.kind());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Decodes the first frame of `buf`: `Ok(Some((frame, bytes_used)))`, `Ok(None)` when `buf`
/// holds only part of a frame (read more), or the error that makes the stream unusable.
pub fn decode<M: Message>(buf: &[u8]) -> Result<Option<(Frame<M>, usize)>, FrameError> {
    let Some(&magic) = buf.first() else {
        return Ok(None);
    };
    if magic != MAGIC {
        return Err(FrameError::BadMagic { got: magic });
    }
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let kind = buf[1];
    let id = u32::from_be_bytes([buf[2], buf[3], buf[4], buf[5]]);
    let len = u32::from_be_bytes([buf[6], buf[7], buf[8], buf[9]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_PAYLOAD,
        });
    }
    // Check the kind before waiting for the payload: garbage must fail fast, not wait for
    // up to 16 MiB that will never come.
    M::decode_payload(kind, &[])
        .map(|_| ())
        .or_else(|e| match e {
            FrameError::UnknownKind { .. } => Err(e),
            _ => Ok(()),
        })?;
    let total = HEADER_LEN + len;
    if buf.len() < total {
        return Ok(None);
    }
    let msg = M::decode_payload(kind, &buf[HEADER_LEN..total])?;
    Ok(Some((Frame { id, msg }, total)))
}

/// What to say when the stream ends with `rest` undecoded bytes.
pub fn check_eof(rest: &[u8]) -> Result<(), FrameError> {
    if rest.is_empty() {
        return Ok(());
    }
    let need = if rest.len() >= HEADER_LEN {
        HEADER_LEN + u32::from_be_bytes([rest[6], rest[7], rest[8], rest[9]]) as usize
    } else {
        HEADER_LEN
    };
    Err(FrameError::Truncated {
        have: rest.len(),
        need,
    })
}

mod kind {
    pub const EXEC: u8 = 0x01;
    pub const CANCEL: u8 = 0x02;
    pub const PUSH: u8 = 0x03;
    pub const PULL: u8 = 0x04;
    pub const PING: u8 = 0x05;
    pub const BYE: u8 = 0x06;

    pub const STARTED: u8 = 0x80;
    pub const STDOUT: u8 = 0x81;
    pub const STDERR: u8 = 0x82;
    pub const EXIT: u8 = 0x83;
    pub const ERROR: u8 = 0x84;
    pub const PONG: u8 = 0x85;
    pub const FILE_DATA: u8 = 0x86;
    pub const DONE: u8 = 0x87;
    pub const HEARTBEAT: u8 = 0x88;
    pub const GUEST_BYE: u8 = 0x89;
}

impl Message for HostMsg {
    const DIRECTION: &'static str = "host-to-guest";

    fn kind(&self) -> u8 {
        match self {
            HostMsg::Exec(_) => kind::EXEC,
            HostMsg::Cancel => kind::CANCEL,
            HostMsg::Push { .. } => kind::PUSH,
            HostMsg::Pull { .. } => kind::PULL,
            HostMsg::Ping => kind::PING,
            HostMsg::Bye => kind::BYE,
        }
    }

    fn encode_payload(&self, out: &mut Vec<u8>) {
        match self {
            HostMsg::Exec(e) => {
                put_u32(out, e.argv.len() as u32);
                for a in &e.argv {
                    put_bytes(out, a.as_bytes());
                }
                put_u32(out, e.env.len() as u32);
                for (k, v) in &e.env {
                    put_bytes(out, k.as_bytes());
                    put_bytes(out, v.as_bytes());
                }
                match &e.cwd {
                    Some(c) => {
                        out.push(1);
                        put_bytes(out, c.as_bytes());
                    }
                    None => out.push(0),
                }
                out.extend_from_slice(&e.timeout_ms.to_be_bytes());
                out.push(u8::from(e.isolate));
            }
            HostMsg::Push { path, mode, data } => {
                put_bytes(out, path.as_bytes());
                put_u32(out, *mode);
                put_bytes(out, data);
            }
            HostMsg::Pull { path } => put_bytes(out, path.as_bytes()),
            HostMsg::Cancel | HostMsg::Ping | HostMsg::Bye => {}
        }
    }

    fn decode_payload(k: u8, payload: &[u8]) -> Result<Self, FrameError> {
        let name = match k {
            kind::EXEC => "Exec",
            kind::CANCEL => "Cancel",
            kind::PUSH => "Push",
            kind::PULL => "Pull",
            kind::PING => "Ping",
            kind::BYE => "Bye",
            _ => {
                return Err(FrameError::UnknownKind {
                    kind: k,
                    direction: Self::DIRECTION,
                });
            }
        };
        let mut c = Cursor::new(name, payload);
        let msg = match k {
            kind::EXEC => {
                let n = c.count("argv", 4)?;
                let mut argv = Vec::with_capacity(n);
                for _ in 0..n {
                    argv.push(c.string("argv item")?);
                }
                if argv.is_empty() {
                    return Err(c.err("argv is empty"));
                }
                let n = c.count("env", 8)?;
                let mut env = Vec::with_capacity(n);
                for _ in 0..n {
                    let key = c.string("env key")?;
                    if key.is_empty() || key.contains('=') || key.contains('\0') {
                        return Err(c.err(format!("env key {key:?} is not a variable name")));
                    }
                    env.push((key, c.string("env value")?));
                }
                let cwd = match c.u8("cwd tag")? {
                    0 => None,
                    1 => Some(c.string("cwd")?),
                    t => return Err(c.err(format!("cwd option tag {t} is neither 0 nor 1"))),
                };
                let timeout_ms = c.u64("timeout_ms")?;
                let isolate = c.bool("isolate")?;
                HostMsg::Exec(Exec {
                    argv,
                    env,
                    cwd,
                    timeout_ms,
                    isolate,
                })
            }
            kind::CANCEL => HostMsg::Cancel,
            kind::PUSH => HostMsg::Push {
                path: c.string("path")?,
                mode: c.u32("mode")?,
                data: c.bytes("data")?.to_vec(),
            },
            kind::PULL => HostMsg::Pull {
                path: c.string("path")?,
            },
            kind::PING => HostMsg::Ping,
            _ => HostMsg::Bye,
        };
        c.finish()?;
        Ok(msg)
    }
}

impl Message for GuestMsg {
    const DIRECTION: &'static str = "guest-to-host";

    fn kind(&self) -> u8 {
        match self {
            GuestMsg::Started { .. } => kind::STARTED,
            GuestMsg::Stdout(_) => kind::STDOUT,
            GuestMsg::Stderr(_) => kind::STDERR,
            GuestMsg::Exit(_) => kind::EXIT,
            GuestMsg::Error(_) => kind::ERROR,
            GuestMsg::Pong => kind::PONG,
            GuestMsg::FileData(_) => kind::FILE_DATA,
            GuestMsg::Done => kind::DONE,
            GuestMsg::Heartbeat { .. } => kind::HEARTBEAT,
            GuestMsg::Bye => kind::GUEST_BYE,
        }
    }

    fn encode_payload(&self, out: &mut Vec<u8>) {
        match self {
            GuestMsg::Started { pid } => put_u32(out, *pid),
            GuestMsg::Stdout(d) | GuestMsg::Stderr(d) | GuestMsg::FileData(d) => out.extend(d),
            GuestMsg::Exit(s) => {
                put_opt_i32(out, s.code);
                put_opt_i32(out, s.signal);
                out.push(u8::from(s.timed_out));
                out.push(u8::from(s.cancelled));
                out.extend_from_slice(&s.duration_us.to_be_bytes());
            }
            GuestMsg::Error(m) => put_bytes(out, m.as_bytes()),
            GuestMsg::Heartbeat { uptime_ms } => out.extend_from_slice(&uptime_ms.to_be_bytes()),
            GuestMsg::Pong | GuestMsg::Done | GuestMsg::Bye => {}
        }
    }

    fn decode_payload(k: u8, payload: &[u8]) -> Result<Self, FrameError> {
        let name = match k {
            kind::STARTED => "Started",
            kind::STDOUT => "Stdout",
            kind::STDERR => "Stderr",
            kind::EXIT => "Exit",
            kind::ERROR => "Error",
            kind::PONG => "Pong",
            kind::FILE_DATA => "FileData",
            kind::DONE => "Done",
            kind::HEARTBEAT => "Heartbeat",
            kind::GUEST_BYE => "Bye",
            _ => {
                return Err(FrameError::UnknownKind {
                    kind: k,
                    direction: Self::DIRECTION,
                });
            }
        };
        let mut c = Cursor::new(name, payload);
        let msg = match k {
            kind::STARTED => GuestMsg::Started { pid: c.u32("pid")? },
            // Raw data frames: the whole payload is the data.
            kind::STDOUT => return Ok(GuestMsg::Stdout(payload.to_vec())),
            kind::STDERR => return Ok(GuestMsg::Stderr(payload.to_vec())),
            kind::FILE_DATA => return Ok(GuestMsg::FileData(payload.to_vec())),
            kind::EXIT => GuestMsg::Exit(ExitStatus {
                code: c.opt_i32("code")?,
                signal: c.opt_i32("signal")?,
                timed_out: c.bool("timed_out")?,
                cancelled: c.bool("cancelled")?,
                duration_us: c.u64("duration_us")?,
            }),
            kind::ERROR => GuestMsg::Error(c.string("message")?),
            kind::PONG => GuestMsg::Pong,
            kind::DONE => GuestMsg::Done,
            kind::HEARTBEAT => GuestMsg::Heartbeat {
                uptime_ms: c.u64("uptime_ms")?,
            },
            _ => GuestMsg::Bye,
        };
        c.finish()?;
        Ok(msg)
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len() as u32);
    out.extend_from_slice(b);
}

fn put_opt_i32(out: &mut Vec<u8>, v: Option<i32>) {
    match v {
        Some(v) => {
            out.push(1);
            out.extend_from_slice(&v.to_be_bytes());
        }
        None => out.push(0),
    }
}

/// Reads payload fields, naming the frame and field in every error.
struct Cursor<'a> {
    frame: &'static str,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(frame: &'static str, buf: &'a [u8]) -> Self {
        Cursor { frame, buf, pos: 0 }
    }

    fn err(&self, what: impl Into<String>) -> FrameError {
        FrameError::Payload {
            frame: self.frame,
            what: what.into(),
        }
    }

    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8], FrameError> {
        let left = self.buf.len() - self.pos;
        if n > left {
            return Err(self.err(format!(
                "field {field} needs {n} bytes at offset {}, only {left} left",
                self.pos
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self, field: &str) -> Result<u8, FrameError> {
        Ok(self.take(1, field)?[0])
    }

    fn bool(&mut self, field: &str) -> Result<bool, FrameError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(self.err(format!("field {field} is {v}, expected 0 or 1"))),
        }
    }

    fn u32(&mut self, field: &str) -> Result<u32, FrameError> {
        let b = self.take(4, field)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, field: &str) -> Result<u64, FrameError> {
        let b = self.take(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn opt_i32(&mut self, field: &str) -> Result<Option<i32>, FrameError> {
        match self.u8(field)? {
            0 => Ok(None),
            1 => Ok(Some(self.u32(field)? as i32)),
            t => Err(self.err(format!("field {field} option tag {t} is neither 0 nor 1"))),
        }
    }

    /// A list count, checked against the bytes left so a forged count cannot allocate.
    fn count(&mut self, field: &str, min_item: usize) -> Result<usize, FrameError> {
        let n = self.u32(field)? as usize;
        let left = self.buf.len() - self.pos;
        if n.saturating_mul(min_item) > left {
            return Err(self.err(format!(
                "list {field} claims {n} items but only {left} bytes are left"
            )));
        }
        Ok(n)
    }

    fn bytes(&mut self, field: &str) -> Result<&'a [u8], FrameError> {
        let n = self.u32(field)? as usize;
        self.take(n, field)
    }

    fn string(&mut self, field: &str) -> Result<String, FrameError> {
        let b = self.bytes(field)?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(s.to_string()),
            Err(_) => Err(self.err(format!("field {field} is not UTF-8"))),
        }
    }

    fn finish(&self) -> Result<(), FrameError> {
        let extra = self.buf.len() - self.pos;
        if extra != 0 {
            return Err(self.err(format!("{extra} trailing bytes after the last field")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn host_msgs() -> impl Strategy<Value = HostMsg> {
        let s = ".{0,12}";
        prop_oneof![
            (
                prop::collection::vec(s, 1..4),
                prop::collection::vec(("[A-Z_]{1,6}", s), 0..3),
                prop::option::of(s),
                any::<u64>(),
                any::<bool>()
            )
                .prop_map(|(argv, env, cwd, timeout_ms, isolate)| HostMsg::Exec(
                    Exec {
                        argv,
                        env,
                        cwd,
                        timeout_ms,
                        isolate
                    }
                )),
            Just(HostMsg::Cancel),
            (s, any::<u32>(), prop::collection::vec(any::<u8>(), 0..64))
                .prop_map(|(path, mode, data)| HostMsg::Push { path, mode, data }),
            s.prop_map(|path| HostMsg::Pull { path }),
            Just(HostMsg::Ping),
            Just(HostMsg::Bye),
        ]
    }

    fn guest_msgs() -> impl Strategy<Value = GuestMsg> {
        prop_oneof![
            any::<u32>().prop_map(|pid| GuestMsg::Started { pid }),
            prop::collection::vec(any::<u8>(), 0..64).prop_map(GuestMsg::Stdout),
            prop::collection::vec(any::<u8>(), 0..64).prop_map(GuestMsg::Stderr),
            (
                prop::option::of(any::<i32>()),
                prop::option::of(any::<i32>()),
                any::<bool>(),
                any::<bool>(),
                any::<u64>()
            )
                .prop_map(|(code, signal, timed_out, cancelled, duration_us)| {
                    GuestMsg::Exit(ExitStatus {
                        code,
                        signal,
                        timed_out,
                        cancelled,
                        duration_us,
                    })
                }),
            ".{0,20}".prop_map(GuestMsg::Error),
            Just(GuestMsg::Pong),
            prop::collection::vec(any::<u8>(), 0..64).prop_map(GuestMsg::FileData),
            Just(GuestMsg::Done),
            any::<u64>().prop_map(|uptime_ms| GuestMsg::Heartbeat { uptime_ms }),
            Just(GuestMsg::Bye),
        ]
    }

    /// Feeds `bytes` in `chunk`-sized pieces to a streaming decoder, as both sides do.
    fn stream_decode<M: Message>(bytes: &[u8], chunk: usize) -> Result<Vec<Frame<M>>, FrameError> {
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for piece in bytes.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            while let Some((f, used)) = decode::<M>(&buf)? {
                buf.drain(..used);
                out.push(f);
            }
        }
        check_eof(&buf)?;
        Ok(out)
    }

    proptest! {
        #[test]
        fn host_frames_round_trip(msgs in prop::collection::vec((any::<u32>(), host_msgs()), 0..6), chunk in 1usize..40) {
            let bytes: Vec<u8> = msgs.iter().flat_map(|(id, m)| encode(*id, m)).collect();
            let got = stream_decode::<HostMsg>(&bytes, chunk).unwrap();
            let want: Vec<_> = msgs.into_iter().map(|(id, msg)| Frame { id, msg }).collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn guest_frames_round_trip(msgs in prop::collection::vec((any::<u32>(), guest_msgs()), 0..6), chunk in 1usize..40) {
            let bytes: Vec<u8> = msgs.iter().flat_map(|(id, m)| encode(*id, m)).collect();
            let got = stream_decode::<GuestMsg>(&bytes, chunk).unwrap();
            let want: Vec<_> = msgs.into_iter().map(|(id, msg)| Frame { id, msg }).collect();
            prop_assert_eq!(got, want);
        }

        /// Any byte soup: an error or frames, never a panic, and never a frame beyond the input.
        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256), chunk in 1usize..64) {
            let _ = stream_decode::<HostMsg>(&bytes, chunk);
            let _ = stream_decode::<GuestMsg>(&bytes, chunk);
        }

        /// Garbage that starts like a frame (right magic, a known kind) exercises payload parsing.
        #[test]
        fn framed_garbage_is_an_error_or_a_frame(kind in any::<u8>(), id in any::<u32>(), payload in prop::collection::vec(any::<u8>(), 0..128)) {
            let mut bytes = vec![MAGIC, kind];
            bytes.extend_from_slice(&id.to_be_bytes());
            bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            bytes.extend_from_slice(&payload);
            let h = decode::<HostMsg>(&bytes);
            let g = decode::<GuestMsg>(&bytes);
            prop_assert!(!matches!(h, Ok(None)));
            prop_assert!(!matches!(g, Ok(None)));
        }

        /// Cutting a valid stream anywhere is reported as truncation at EOF, never accepted.
        #[test]
        fn truncation_is_named(msg in host_msgs(), cut in 1usize..200) {
            let bytes = encode(7, &msg);
            let cut = cut.min(bytes.len() - 1);
            let err = stream_decode::<HostMsg>(&bytes[..cut], 3).unwrap_err();
            let is_truncated = matches!(err, FrameError::Truncated { .. });
            prop_assert!(is_truncated);
        }

        /// Mutating one byte of a valid frame: an error, or a (different) valid frame.
        #[test]
        fn bit_flips_never_panic(msg in guest_msgs(), pos in any::<prop::sample::Index>(), val in any::<u8>()) {
            let mut bytes = encode(1, &msg);
            let i = pos.index(bytes.len());
            bytes[i] = val;
            let _ = stream_decode::<GuestMsg>(&bytes, 5);
        }
    }

    #[test]
    fn errors_name_what_is_wrong() {
        assert_eq!(
            decode::<GuestMsg>(b"PONG\n"),
            Err(FrameError::BadMagic { got: b'P' })
        );
        let bad_kind = [MAGIC, 0x7f, 0, 0, 0, 1, 0, 0, 0, 0];
        assert!(
            decode::<HostMsg>(&bad_kind)
                .unwrap_err()
                .to_string()
                .contains("unknown host-to-guest frame kind 0x7f")
        );
        let huge = [MAGIC, 0x81, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            decode::<GuestMsg>(&huge),
            Err(FrameError::TooLarge { .. })
        ));
        // Exec with argv count 1000 and no bytes for them.
        let mut f = vec![MAGIC, 0x01, 0, 0, 0, 1, 0, 0, 0, 4];
        f.extend_from_slice(&1000u32.to_be_bytes());
        let e = decode::<HostMsg>(&f).unwrap_err().to_string();
        assert!(
            e.contains("malformed Exec frame") && e.contains("argv"),
            "{e}"
        );
        assert_eq!(
            check_eof(&[MAGIC, 0x81]),
            Err(FrameError::Truncated { have: 2, need: 10 })
        );
    }
}
