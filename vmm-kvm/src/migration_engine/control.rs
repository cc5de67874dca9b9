//! The control channel between the runner and a destination VMM process it started: once the
//! migration stream has arrived, the runner drives the destination guest with requests (run a
//! command, read or write the bulk buffer, copy tags) and the process answers each. A message
//! is a u32 length and a body whose first byte says what it is; integers are little-endian.

use std::io::{self, Read, Write};
use std::time::Duration;

use mte_protocol::{FaultRecord, Status};
use mte_suites::vmm::{Reply, VmmError};

/// Bodies larger than this are refused (the bulk buffer is the largest thing sent).
const MAX_BODY: u32 = 16 << 20;

#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    Exec {
        command: u32,
        args: [u64; 8],
    },
    ReadBulk {
        len: u64,
    },
    WriteBulk(Vec<u8>),
    ReadTags {
        ipa: u64,
        len: u64,
    },
    WriteTags {
        ipa: u64,
        tags: Vec<u8>,
    },
    Console,
    /// Power nothing off, just exit: the runner is done with this destination.
    Finish,
}

/// What the destination tells the runner once the stream is in and its vCPU restored.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ArrivedInfo {
    pub pages: u64,
    pub rounds: u32,
    pub tag_write_time: Duration,
    pub tag_write_bytes: u64,
    pub registers_differing: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Response {
    Arrived(ArrivedInfo),
    Reply(Reply),
    Bytes(Vec<u8>),
    Done,
    Failed(VmmError),
}

/// A body under construction.
#[derive(Default)]
struct Body(Vec<u8>);

impl Body {
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(self, v: &[u8]) -> Self {
        let mut body = self.u32(v.len() as u32);
        body.0.extend_from_slice(v);
        body
    }
    fn text(self, v: &str) -> Self {
        self.bytes(v.as_bytes())
    }
}

/// A body being read.
struct Fields<'a>(&'a [u8]);

fn malformed(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("control message: {what}"),
    )
}

impl Fields<'_> {
    fn take(&mut self, n: usize) -> io::Result<&[u8]> {
        if self.0.len() < n {
            return Err(malformed("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn bytes(&mut self) -> io::Result<Vec<u8>> {
        let len = self.u32()? as usize;
        Ok(self.take(len)?.to_vec())
    }
    fn text(&mut self) -> io::Result<String> {
        String::from_utf8(self.bytes()?).map_err(|_| malformed("text is not UTF-8"))
    }
    fn done(&self) -> io::Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(malformed("bytes left over"))
        }
    }
}

fn send(out: &mut impl Write, body: Body) -> io::Result<()> {
    let mut frame = (body.0.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&body.0);
    out.write_all(&frame)?;
    out.flush()
}

fn receive(input: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len);
    if len > MAX_BODY {
        return Err(malformed("longer than any message"));
    }
    let mut body = vec![0u8; len as usize];
    input.read_exact(&mut body)?;
    Ok(body)
}

impl Request {
    pub fn write(&self, out: &mut impl Write) -> io::Result<()> {
        let body = match self {
            Request::Exec { command, args } => args
                .iter()
                .fold(Body::default().u8(1).u32(*command), |b, &a| b.u64(a)),
            Request::ReadBulk { len } => Body::default().u8(2).u64(*len),
            Request::WriteBulk(bytes) => Body::default().u8(3).bytes(bytes),
            Request::ReadTags { ipa, len } => Body::default().u8(4).u64(*ipa).u64(*len),
            Request::WriteTags { ipa, tags } => Body::default().u8(5).u64(*ipa).bytes(tags),
            Request::Console => Body::default().u8(6),
            Request::Finish => Body::default().u8(7),
        };
        send(out, body)
    }

    pub fn read(input: &mut impl Read) -> io::Result<Self> {
        let body = receive(input)?;
        let mut f = Fields(&body);
        let request = match f.u8()? {
            1 => {
                let command = f.u32()?;
                let mut args = [0u64; 8];
                for a in &mut args {
                    *a = f.u64()?;
                }
                Request::Exec { command, args }
            }
            2 => Request::ReadBulk { len: f.u64()? },
            3 => Request::WriteBulk(f.bytes()?),
            4 => Request::ReadTags {
                ipa: f.u64()?,
                len: f.u64()?,
            },
            5 => Request::WriteTags {
                ipa: f.u64()?,
                tags: f.bytes()?,
            },
            6 => Request::Console,
            7 => Request::Finish,
            other => return Err(malformed(&format!("unknown request {other}"))),
        };
        f.done()?;
        Ok(request)
    }
}

fn error_body(body: Body, e: &VmmError) -> Body {
    match e {
        VmmError::Unsupported(why) => body.u8(0).text(why),
        VmmError::Sys { call, errno } => body.u8(1).text(call).u32(*errno as u32),
        VmmError::Timeout { what, seconds } => body.u8(2).text(what).u64(seconds.to_bits()),
        VmmError::Guest(why) => body.u8(3).text(why),
        VmmError::Host(why) => body.u8(4).text(why),
        VmmError::Documented(why) => body.u8(5).text(why),
    }
}

fn read_error(f: &mut Fields) -> io::Result<VmmError> {
    Ok(match f.u8()? {
        0 => VmmError::Unsupported(f.text()?),
        1 => VmmError::Sys {
            call: f.text()?,
            errno: f.u32()? as i32,
        },
        2 => VmmError::Timeout {
            what: f.text()?,
            seconds: f64::from_bits(f.u64()?),
        },
        3 => VmmError::Guest(f.text()?),
        4 => VmmError::Host(f.text()?),
        5 => VmmError::Documented(f.text()?),
        other => return Err(malformed(&format!("unknown error kind {other}"))),
    })
}

impl Response {
    pub fn write(&self, out: &mut impl Write) -> io::Result<()> {
        let body = match self {
            Response::Arrived(info) => {
                let body = Body::default()
                    .u8(1)
                    .u64(info.pages)
                    .u32(info.rounds)
                    .u64(info.tag_write_time.as_nanos() as u64)
                    .u64(info.tag_write_bytes)
                    .u32(info.registers_differing.len() as u32);
                info.registers_differing.iter().fold(body, |b, r| b.text(r))
            }
            Response::Reply(reply) => {
                let body = Body::default().u8(2).u32(reply.status as u32);
                let fault = reply.fault;
                reply
                    .result
                    .iter()
                    .chain(&[fault.count, fault.esr, fault.far, fault.elr, fault.vector])
                    .fold(body, |b, &v| b.u64(v))
            }
            Response::Bytes(bytes) => Body::default().u8(3).bytes(bytes),
            Response::Done => Body::default().u8(4),
            Response::Failed(e) => error_body(Body::default().u8(5), e),
        };
        send(out, body)
    }

    pub fn read(input: &mut impl Read) -> io::Result<Self> {
        let body = receive(input)?;
        let mut f = Fields(&body);
        let response = match f.u8()? {
            1 => {
                let mut info = ArrivedInfo {
                    pages: f.u64()?,
                    rounds: f.u32()?,
                    tag_write_time: Duration::from_nanos(f.u64()?),
                    tag_write_bytes: f.u64()?,
                    registers_differing: Vec::new(),
                };
                for _ in 0..f.u32()? {
                    info.registers_differing.push(f.text()?);
                }
                Response::Arrived(info)
            }
            2 => {
                let status = f.u32()?;
                let status = Status::from_u32(status)
                    .ok_or_else(|| malformed(&format!("status {status}")))?;
                let mut result = [0u64; 8];
                for r in &mut result {
                    *r = f.u64()?;
                }
                let fault = FaultRecord {
                    count: f.u64()?,
                    esr: f.u64()?,
                    far: f.u64()?,
                    elr: f.u64()?,
                    vector: f.u64()?,
                };
                Response::Reply(Reply {
                    status,
                    result,
                    fault,
                })
            }
            3 => Response::Bytes(f.bytes()?),
            4 => Response::Done,
            5 => Response::Failed(read_error(&mut f)?),
            other => return Err(malformed(&format!("unknown response {other}"))),
        };
        f.done()?;
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requests() -> Vec<Request> {
        vec![
            Request::Exec {
                command: 3,
                args: [1, 2, 3, 4, 5, 6, 7, u64::MAX],
            },
            Request::ReadBulk { len: 4096 },
            Request::WriteBulk(vec![1, 2, 3]),
            Request::ReadTags {
                ipa: 0x4100_0000,
                len: 0x4000,
            },
            Request::WriteTags {
                ipa: 0x4100_0000,
                tags: vec![9; 256],
            },
            Request::Console,
            Request::Finish,
        ]
    }

    fn responses() -> Vec<Response> {
        vec![
            Response::Arrived(ArrivedInfo {
                pages: 16384,
                rounds: 1,
                tag_write_time: Duration::from_micros(1500),
                tag_write_bytes: 1 << 20,
                registers_differing: vec!["PC".into(), "TCR_EL1".into()],
            }),
            Response::Reply(Reply {
                status: Status::Done,
                result: [1, 2, 3, 4, 5, 6, 7, 8],
                fault: FaultRecord {
                    count: 1,
                    esr: 0x9600_0011,
                    far: 2,
                    elr: 3,
                    vector: 4,
                },
            }),
            Response::Bytes(vec![7; 100]),
            Response::Done,
            Response::Failed(VmmError::Unsupported("no".into())),
            Response::Failed(VmmError::Sys {
                call: "KVM_RUN".into(),
                errno: 4,
            }),
            Response::Failed(VmmError::Timeout {
                what: "ReadTags".into(),
                seconds: 2.5,
            }),
            Response::Failed(VmmError::Guest("panic".into())),
            Response::Failed(VmmError::Host("short".into())),
        ]
    }

    #[test]
    fn messages_round_trip() {
        let mut wire = Vec::new();
        for r in requests() {
            r.write(&mut wire).unwrap();
        }
        let mut input = &wire[..];
        for r in requests() {
            assert_eq!(Request::read(&mut input).unwrap(), r);
        }
        let mut wire = Vec::new();
        for r in responses() {
            r.write(&mut wire).unwrap();
        }
        let mut input = &wire[..];
        for r in responses() {
            assert_eq!(Response::read(&mut input).unwrap(), r);
        }
        assert!(input.is_empty());
    }

    #[test]
    fn malformed_messages_are_errors() {
        let mut wire = Vec::new();
        Request::ReadBulk { len: 1 }.write(&mut wire).unwrap();
        // Cut short: the length promises more than there is.
        assert!(Request::read(&mut &wire[..wire.len() - 1]).is_err());
        // A body with bytes left over.
        let mut long = wire.clone();
        long[0] += 1;
        long.push(0);
        assert!(Request::read(&mut &long[..]).is_err());
        // Unknown kinds, and lengths beyond any message.
        assert!(Request::read(&mut &[1, 0, 0, 0, 99][..]).is_err());
        assert!(Response::read(&mut &[1, 0, 0, 0, 99][..]).is_err());
        assert!(Response::read(&mut &[0xff, 0xff, 0xff, 0xff][..]).is_err());
    }
}
