//! A small synchronous client of the GDB remote serial protocol: packet framing and checksums,
//! escapes and run-length encoding, no-ack mode, and a deadline on every wait, so that a stub
//! that stops answering ends a step instead of hanging it.
//!
//! Hand-written: no maintained crate is a client of the protocol (`gdbstub` is the stub side).

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// What the client offers in `qSupported`: it can use the memory-tagging packets.
const CLIENT_FEATURES: &str = "qSupported:memory-tagging+";

/// The packet size assumed of a stub that does not announce one.
const DEFAULT_PACKET_SIZE: usize = 400;

/// Room in a packet for the command and its address and length fields, left out of the room
/// for data.
const PACKET_OVERHEAD: usize = 64;

/// The byte that interrupts a running target.
const INTERRUPT: u8 = 0x03;

/// How often a packet the stub asked to be sent again (`-`) is sent before giving up.
const RETRANSMISSIONS: usize = 3;

/// The longest packet taken from a stub, as received and as decoded: far above any reply the
/// client asks for (its requests stay within the stub's packet size), and a bound on what a
/// stub that never ends its packet, or expands run lengths without end, can make it hold.
pub const MAX_PACKET: usize = 1 << 20;

#[derive(Debug)]
pub enum RspError {
    /// Nothing (complete) arrived before the deadline.
    Timeout,
    /// The stub closed the connection.
    Closed,
    Io(io::Error),
    /// Bytes that are not the protocol: a bad checksum, a malformed reply.
    Protocol(String),
    /// The stub answered a request with an error (`E..`) or a reply the request does not allow.
    Refused {
        packet: String,
        reply: String,
    },
}

impl std::fmt::Display for RspError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RspError::Timeout => f.write_str("no answer before the deadline"),
            RspError::Closed => f.write_str("the stub closed the connection"),
            RspError::Io(e) => write!(f, "I/O error: {e}"),
            RspError::Protocol(why) => write!(f, "protocol error: {why}"),
            RspError::Refused { packet, reply } => {
                write!(f, "the stub answered `{packet}` with `{reply}`")
            }
        }
    }
}

/// Why the target stopped, from a stop reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReply {
    /// `S`/`T`: stopped with a signal (5, SIGTRAP, at a breakpoint; 2 after an interrupt).
    Signal(u8),
    /// `W`: the target exited with a status.
    Exited(u8),
    /// `X`: the target was terminated by a signal.
    Terminated(u8),
}

/// Parse a stop reply (`T05thread:...;`, `S05`, `W00`, `X09`); `None` for anything else.
pub fn parse_stop_reply(reply: &str) -> Option<StopReply> {
    let kind = reply.chars().next()?;
    let code = hex_byte(reply.get(1..3)?)?;
    match kind {
        'S' | 'T' => Some(StopReply::Signal(code)),
        'W' => Some(StopReply::Exited(code)),
        'X' => Some(StopReply::Terminated(code)),
        _ => None,
    }
}

/// The modulo-256 sum of a packet's bytes.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, &b| sum.wrapping_add(b))
}

/// `$payload#cs`, with the bytes the framing reserves escaped as `}` and the byte XOR 0x20.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(payload.len() + 8);
    for &b in payload {
        if matches!(b, b'$' | b'#' | b'}' | b'*') {
            body.extend_from_slice(&[b'}', b ^ 0x20]);
        } else {
            body.push(b);
        }
    }
    let mut framed = Vec::with_capacity(body.len() + 4);
    framed.push(b'$');
    framed.extend_from_slice(&body);
    framed.extend_from_slice(format!("#{:02x}", checksum(&body)).as_bytes());
    framed
}

/// Undo a received packet's escapes and run-length encoding (`x*n`: `x` and then `n - 29`
/// more of it), which a stub may apply in one pass.
pub fn decode(raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'}' => {
                let escaped = bytes.next().ok_or("an escape at the end of a packet")?;
                out.push(escaped ^ 0x20);
            }
            b'*' => {
                let count = bytes.next().ok_or("a run length at the end of a packet")?;
                let repeats = count
                    .checked_sub(29)
                    .ok_or_else(|| format!("run length byte {count:#04x} is below 29"))?;
                let last = *out.last().ok_or("a run length with nothing to repeat")?;
                out.extend(std::iter::repeat_n(last, repeats as usize));
            }
            _ => out.push(b),
        }
        if out.len() > MAX_PACKET {
            return Err(format!("a packet longer than {MAX_PACKET} bytes decoded"));
        }
    }
    Ok(out)
}

/// Bytes as lower-case hex, two digits each.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex pairs back to bytes; `None` unless every character is a hex digit and they pair up.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| hex_byte(text.get(i..i + 2)?))
        .collect()
}

/// Two hex digits as a byte. Not `u8::from_str_radix` alone, which takes a sign (`+8`).
fn hex_byte(digits: &str) -> Option<u8> {
    if digits.len() != 2 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u8::from_str_radix(digits, 16).ok()
}

/// Bytes received from a stub and not yet taken, taken apart into acknowledgements and
/// packets. Apart from the socket, so that what a stub may send is tested on its own.
#[derive(Debug, Default)]
pub struct Received {
    bytes: Vec<u8>,
}

impl Received {
    /// Bytes as they arrived.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    /// Bytes held, not yet taken.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The acknowledgement the bytes start with: `+` (true) or `-` (false: send again); `None`
    /// before anything arrived.
    pub fn take_acknowledgement(&mut self) -> Result<Option<bool>, RspError> {
        let ack = match self.bytes.first() {
            None => return Ok(None),
            Some(b'+') => true,
            Some(b'-') => false,
            Some(&other) => {
                return Err(RspError::Protocol(format!(
                    "expected an acknowledgement, received {:?}",
                    other as char
                )))
            }
        };
        self.bytes.remove(0);
        Ok(Some(ack))
    }

    /// The decoded payload of one whole packet, if the bytes hold one. Bytes before its `$`
    /// (acknowledgements) are dropped; a packet that grows past [`MAX_PACKET`] without its end
    /// is an error.
    pub fn take_packet(&mut self) -> Result<Option<String>, RspError> {
        let Some(start) = self.bytes.iter().position(|&b| b == b'$') else {
            self.bytes.clear();
            return Ok(None);
        };
        // An escaped `#` is sent as `}` 0x03, so the first `#` ends the packet.
        let Some(hash) = self.bytes[start..].iter().position(|&b| b == b'#') else {
            if self.bytes.len() - start > MAX_PACKET {
                return Err(RspError::Protocol(format!(
                    "a packet longer than {MAX_PACKET} bytes without its end"
                )));
            }
            return Ok(None);
        };
        let end = start + hash;
        let Some(sum) = self.bytes.get(end + 1..end + 3) else {
            return Ok(None);
        };
        let sum = std::str::from_utf8(sum)
            .ok()
            .and_then(|s| u8::from_str_radix(s, 16).ok());
        let body: Vec<u8> = self.bytes[start + 1..end].to_vec();
        self.bytes.drain(..end + 3);
        if sum != Some(checksum(&body)) {
            return Err(RspError::Protocol(format!(
                "bad checksum on `{}`",
                String::from_utf8_lossy(&body)
            )));
        }
        let payload = decode(&body).map_err(RspError::Protocol)?;
        Ok(Some(String::from_utf8_lossy(&payload).into_owned()))
    }
}

/// What a stub's answer to `qSupported` says: its features, one an entry, and the packet size
/// it announces (or the size assumed of one that does not).
pub fn parse_features(reply: &str) -> (Vec<String>, usize) {
    let features: Vec<String> = reply.split(';').map(str::to_string).collect();
    let packet_size = features
        .iter()
        .find_map(|f| f.strip_prefix("PacketSize="))
        .filter(|size| size.bytes().all(|b| b.is_ascii_hexdigit()))
        .and_then(|size| usize::from_str_radix(size, 16).ok())
        .unwrap_or(DEFAULT_PACKET_SIZE);
    (features, packet_size)
}

/// A session with a stub over a stream socket.
pub struct Connection {
    stream: UnixStream,
    received: Received,
    /// Whether packets are still acknowledged (until no-ack mode starts).
    acking: bool,
    packet_size: usize,
    features: Vec<String>,
}

impl Connection {
    /// Open a session: `qSupported` (offering the memory-tagging packets), then no-ack mode
    /// if the stub offers it. Every answer must come within `limit`.
    pub fn handshake(stream: UnixStream, limit: Duration) -> Result<Self, RspError> {
        let mut connection = Connection {
            stream,
            received: Received::default(),
            acking: true,
            packet_size: DEFAULT_PACKET_SIZE,
            features: Vec::new(),
        };
        let reply = connection.request(CLIENT_FEATURES, limit)?;
        (connection.features, connection.packet_size) = parse_features(&reply);
        if connection.supports("QStartNoAckMode") {
            connection.request_ok("QStartNoAckMode", limit)?;
            connection.acking = false;
        }
        Ok(connection)
    }

    /// The stub's answer to `qSupported`, one feature an entry.
    pub fn features(&self) -> &[String] {
        &self.features
    }

    /// Whether the stub announced `feature+`.
    pub fn supports(&self, feature: &str) -> bool {
        self.features
            .iter()
            .any(|f| f.strip_suffix('+') == Some(feature))
    }

    /// How many data bytes fit one packet when each is sent or received as two hex digits.
    pub fn hex_bytes_per_packet(&self) -> usize {
        (self.packet_size.saturating_sub(PACKET_OVERHEAD) / 2).max(1)
    }

    /// Send `packet` and wait for its reply.
    pub fn request(&mut self, packet: &str, limit: Duration) -> Result<String, RspError> {
        let deadline = Instant::now() + limit;
        self.send(packet, deadline)?;
        self.receive(deadline)
    }

    /// A request whose only good answer is `OK`.
    pub fn request_ok(&mut self, packet: &str, limit: Duration) -> Result<(), RspError> {
        let reply = self.request(packet, limit)?;
        if reply == "OK" {
            Ok(())
        } else {
            Err(refused(packet, reply))
        }
    }

    /// Read `len` bytes of target memory from `address`, as many packets as that takes.
    pub fn read_memory(
        &mut self,
        address: u64,
        len: usize,
        limit: Duration,
    ) -> Result<Vec<u8>, RspError> {
        let mut bytes = Vec::with_capacity(len);
        while bytes.len() < len {
            let chunk = (len - bytes.len()).min(self.hex_bytes_per_packet());
            let packet = format!("m{:x},{chunk:x}", address + bytes.len() as u64);
            let reply = self.request(&packet, limit)?;
            match unhex(&reply) {
                Some(data) if data.len() == chunk => bytes.extend_from_slice(&data),
                _ => return Err(refused(&packet, reply)),
            }
        }
        Ok(bytes)
    }

    /// Write `bytes` to target memory at `address`, as many packets as that takes.
    pub fn write_memory(
        &mut self,
        address: u64,
        bytes: &[u8],
        limit: Duration,
    ) -> Result<(), RspError> {
        for (i, chunk) in bytes.chunks(self.hex_bytes_per_packet()).enumerate() {
            let at = address + (i * self.hex_bytes_per_packet()) as u64;
            let packet = format!("M{at:x},{:x}:{}", chunk.len(), hex(chunk));
            self.request_ok(&packet, limit)?;
        }
        Ok(())
    }

    /// A 64-bit register by its number in the target description.
    pub fn read_register(&mut self, number: u32, limit: Duration) -> Result<u64, RspError> {
        let packet = format!("p{number:x}");
        let reply = self.request(&packet, limit)?;
        match unhex(&reply).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
            Some(le) => Ok(u64::from_le_bytes(le)),
            None => Err(refused(&packet, reply)),
        }
    }

    pub fn write_register(
        &mut self,
        number: u32,
        value: u64,
        limit: Duration,
    ) -> Result<(), RspError> {
        self.request_ok(&format!("P{number:x}={}", hex(&value.to_le_bytes())), limit)
    }

    /// Let the target run; its stop reply comes with [`Connection::wait_for_stop`].
    pub fn resume(&mut self, limit: Duration) -> Result<(), RspError> {
        self.send("c", Instant::now() + limit)
    }

    /// Wait for the running target to stop, until `deadline`.
    pub fn wait_for_stop(&mut self, deadline: Instant) -> Result<StopReply, RspError> {
        let reply = self.receive(deadline)?;
        parse_stop_reply(&reply).ok_or_else(|| refused("c", reply))
    }

    /// Ask a running target to stop (it then sends a stop reply).
    pub fn interrupt(&mut self) -> Result<(), RspError> {
        self.stream.write_all(&[INTERRUPT]).map_err(RspError::Io)
    }

    fn send(&mut self, packet: &str, deadline: Instant) -> Result<(), RspError> {
        let framed = frame(packet.as_bytes());
        self.stream
            .set_write_timeout(Some(remaining(deadline)?))
            .map_err(RspError::Io)?;
        for _ in 0..=RETRANSMISSIONS {
            self.stream.write_all(&framed).map_err(|e| match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => RspError::Timeout,
                _ => RspError::Io(e),
            })?;
            if !self.acking || self.acknowledged(deadline)? {
                return Ok(());
            }
        }
        Err(RspError::Protocol(format!(
            "the stub asked for `{packet}` {} times again",
            RETRANSMISSIONS + 1
        )))
    }

    /// Wait for the stub's `+` (true) or `-` (false: send again).
    fn acknowledged(&mut self, deadline: Instant) -> Result<bool, RspError> {
        loop {
            match self.received.take_acknowledgement()? {
                Some(ack) => return Ok(ack),
                None => self.fill(deadline)?,
            }
        }
    }

    /// The next packet's decoded payload, waiting until `deadline` for it.
    pub fn receive(&mut self, deadline: Instant) -> Result<String, RspError> {
        loop {
            if let Some(packet) = self.take_packet()? {
                return Ok(packet);
            }
            self.fill(deadline)?;
        }
    }

    /// Take one whole packet off the received bytes, if they hold one, and acknowledge it.
    fn take_packet(&mut self) -> Result<Option<String>, RspError> {
        let packet = self.received.take_packet()?;
        if packet.is_some() && self.acking {
            // Best effort: a stub may close right after its last packet (an exit report),
            // and then the packet still counts; the next exchange finds the connection gone.
            let _ = self.stream.write_all(b"+");
        }
        Ok(packet)
    }

    /// Read what the stub has sent, waiting until `deadline` for at least one byte.
    fn fill(&mut self, deadline: Instant) -> Result<(), RspError> {
        let mut buffer = [0u8; 8192];
        loop {
            self.stream
                .set_read_timeout(Some(remaining(deadline)?))
                .map_err(RspError::Io)?;
            match self.stream.read(&mut buffer) {
                Ok(0) => return Err(RspError::Closed),
                Ok(n) => {
                    self.received.extend(&buffer[..n]);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The read timed out: the loop's head decides whether the deadline has passed.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Err(RspError::Closed)
                }
                Err(e) => return Err(RspError::Io(e)),
            }
        }
    }
}

/// Time left until `deadline`, or a timeout if none is; never zero, which a socket timeout
/// does not accept.
fn remaining(deadline: Instant) -> Result<Duration, RspError> {
    match deadline.checked_duration_since(Instant::now()) {
        Some(left) if !left.is_zero() => Ok(left.max(Duration::from_millis(1))),
        _ => Err(RspError::Timeout),
    }
}

fn refused(packet: &str, reply: String) -> RspError {
    // Long packets (memory writes) are cut: their start says what they were.
    const SHOWN: usize = 80;
    let packet = match packet.char_indices().nth(SHOWN) {
        Some((at, _)) => format!("{}...", &packet[..at]),
        None => packet.to_string(),
    };
    RspError::Refused { packet, reply }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn packets_are_framed_with_their_checksum() {
        assert_eq!(frame(b"c"), b"$c#63");
        assert_eq!(frame(b"qSupported"), b"$qSupported#37");
        assert_eq!(frame(b""), b"$#00");
    }

    #[test]
    fn reserved_bytes_are_escaped_and_the_checksum_covers_the_escapes() {
        let framed = frame(b"a$b#c}d*");
        let body = b"a}\x04b}\x03c}]d}\x0a";
        let mut expected = vec![b'$'];
        expected.extend_from_slice(body);
        expected.extend_from_slice(format!("#{:02x}", checksum(body)).as_bytes());
        assert_eq!(framed, expected);
        assert_eq!(decode(body).unwrap(), b"a$b#c}d*");
    }

    #[test]
    fn run_lengths_repeat_the_previous_byte() {
        // '*' then ' ' (32): three more, so four zeros in all.
        assert_eq!(decode(b"0* ").unwrap(), b"0000");
        assert_eq!(decode(b"ab*\"c").unwrap(), b"abbbbbbc");
        // A run of an escaped byte repeats the byte, not the escape.
        assert_eq!(decode(b"}\x03* ").unwrap(), b"####");
        assert!(decode(b"*  ").is_err(), "nothing to repeat");
        assert!(decode(b"a*").is_err(), "no count");
        assert!(decode(b"a*\x10").is_err(), "count below 29");
        assert!(decode(b"a}").is_err(), "dangling escape");
    }

    #[test]
    fn hex_round_trips_and_rejects_what_is_not_hex() {
        assert_eq!(hex(&[0x00, 0xab, 0x0f]), "00ab0f");
        assert_eq!(unhex("00AB0f"), Some(vec![0x00, 0xab, 0x0f]));
        assert_eq!(unhex(""), Some(vec![]));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("E01x"), None);
    }

    /// Found by the `gdb_replies` fuzz target: the packet `$+8#63` (amid a session's bytes)
    /// read as the byte 8, since `from_str_radix` takes a sign.
    #[test]
    fn hex_is_digits_only_without_a_sign() {
        let mut received = Received::default();
        received.extend(b"+$+8#63");
        let reply = received.take_packet().unwrap().unwrap();
        assert_eq!(reply, "+8");
        assert_eq!(unhex(&reply), None);
        assert_eq!(unhex("-1"), None);
        assert_eq!(parse_stop_reply("S+5"), None);
        assert_eq!(parse_stop_reply("T+5thread:01;"), None);
        assert_eq!(parse_features("PacketSize=+1000").1, DEFAULT_PACKET_SIZE);
        assert_eq!(parse_features("PacketSize=1000").1, 4096);
    }

    #[test]
    fn packets_are_bounded_received_and_decoded() {
        let mut received = Received::default();
        received.extend(b"$");
        received.extend(&vec![b'0'; MAX_PACKET - 1]);
        assert!(
            received.take_packet().unwrap().is_none(),
            "not yet too long"
        );
        received.extend(b"0");
        assert!(matches!(
            received.take_packet(),
            Err(RspError::Protocol(why)) if why.contains("without its end")
        ));
        // Each `0*~` (126 - 29 = 97 more) grows the payload 98 times its three bytes.
        let runs = b"0*~".repeat(MAX_PACKET / 98 + 1);
        assert!(decode(&runs).unwrap_err().contains("longer than"));
        assert_eq!(decode(&b"0*~".repeat(10)).unwrap().len(), 980);
    }

    #[test]
    fn stop_replies_say_why_the_target_stopped() {
        assert_eq!(
            parse_stop_reply("T05thread:p01.01;"),
            Some(StopReply::Signal(5))
        );
        assert_eq!(parse_stop_reply("S02"), Some(StopReply::Signal(2)));
        assert_eq!(parse_stop_reply("W00"), Some(StopReply::Exited(0)));
        assert_eq!(parse_stop_reply("X09"), Some(StopReply::Terminated(9)));
        assert_eq!(parse_stop_reply("OK"), None);
        assert_eq!(parse_stop_reply("E01"), None);
        assert_eq!(parse_stop_reply("T"), None);
    }

    /// A packet as a stub may send it: the payload as given, run lengths included.
    fn raw_frame(payload: &str) -> Vec<u8> {
        format!("${payload}#{:02x}", checksum(payload.as_bytes())).into_bytes()
    }

    /// A stub that answers each packet it receives with the next of `replies` (acking while
    /// the client does) and hands back what it received.
    fn scripted_stub(replies: &[&str]) -> (UnixStream, thread::JoinHandle<Vec<String>>) {
        let (client, mut stub) = UnixStream::pair().unwrap();
        let replies: Vec<String> = replies.iter().map(|r| r.to_string()).collect();
        let handle = thread::spawn(move || {
            let mut seen = Vec::new();
            let mut acking = true;
            let mut pending = Vec::new();
            let mut buffer = [0u8; 4096];
            let mut replies = replies.into_iter();
            loop {
                let n = match stub.read(&mut buffer) {
                    Ok(0) | Err(_) => return seen,
                    Ok(n) => n,
                };
                pending.extend_from_slice(&buffer[..n]);
                while let Some(start) = pending.iter().position(|&b| b == b'$') {
                    let Some(hash) = pending.iter().position(|&b| b == b'#') else {
                        break;
                    };
                    if pending.len() < hash + 3 {
                        break;
                    }
                    let packet = String::from_utf8_lossy(&pending[start + 1..hash]).into_owned();
                    pending.drain(..hash + 3);
                    if acking {
                        stub.write_all(b"+").unwrap();
                    }
                    if packet == "QStartNoAckMode" {
                        acking = false;
                    }
                    seen.push(packet);
                    match replies.next() {
                        Some(reply) => stub.write_all(&raw_frame(&reply)).unwrap(),
                        None => return seen,
                    }
                }
            }
        });
        (client, handle)
    }

    const LIMIT: Duration = Duration::from_secs(5);

    #[test]
    fn the_handshake_learns_features_and_packet_size_then_stops_acking() {
        let (client, stub) = scripted_stub(&[
            "PacketSize=1000;qXfer:features:read+;QStartNoAckMode+;memory-tagging+",
            "OK",
            "0* 1234",
        ]);
        let mut connection = Connection::handshake(client, LIMIT).unwrap();
        assert!(connection.supports("memory-tagging"));
        assert!(!connection.supports("multiprocess"));
        assert_eq!(
            connection.hex_bytes_per_packet(),
            (4096 - PACKET_OVERHEAD) / 2
        );
        assert_eq!(connection.request("m0,4", LIMIT).unwrap(), "00001234");
        assert!(!connection.acking);
        drop(connection);
        assert_eq!(
            stub.join().unwrap(),
            ["qSupported:memory-tagging+", "QStartNoAckMode", "m0,4"]
        );
    }

    #[test]
    fn registers_and_memory_go_as_little_endian_hex() {
        let first_chunk = "ab".repeat(32);
        let (client, stub) = scripted_stub(&[
            "PacketSize=80",
            "4801084000000000",
            "OK",
            &first_chunk,
            "0304",
            "0102",
            "OK",
            "E14",
        ]);
        let mut connection = Connection::handshake(client, LIMIT).unwrap();
        assert_eq!(connection.read_register(32, LIMIT).unwrap(), 0x4008_0148);
        connection.write_register(32, 0x4008_014c, LIMIT).unwrap();
        // 128-byte packets leave room for 32 data bytes: 34 take two reads.
        assert_eq!(connection.hex_bytes_per_packet(), 32);
        let bytes = connection.read_memory(0x4000_0000, 34, LIMIT).unwrap();
        assert_eq!(
            (bytes.len(), bytes[31], bytes[32], bytes[33]),
            (34, 0xab, 3, 4)
        );
        assert_eq!(
            connection
                .read_memory(0x10, 4, LIMIT)
                .unwrap_err()
                .to_string(),
            "the stub answered `m10,4` with `0102`"
        );
        connection
            .write_memory(0x4000_0010, &[0xaa], LIMIT)
            .unwrap();
        assert!(matches!(
            connection.write_memory(0x10, &[1], LIMIT),
            Err(RspError::Refused { reply, .. }) if reply == "E14"
        ));
        drop(connection);
        let seen = stub.join().unwrap();
        assert_eq!(
            seen[1..],
            [
                "p20",
                "P20=4c01084000000000",
                "m40000000,20",
                "m40000020,2",
                "m10,4",
                "M40000010,1:aa",
                "M10,1:01"
            ]
        );
    }

    #[test]
    fn a_silent_stub_times_out_and_a_closed_one_is_told() {
        let (client, stub) = scripted_stub(&["PacketSize=1000"]);
        let mut connection = Connection::handshake(client, LIMIT).unwrap();
        // The stub's script ends with the handshake: it closes the connection.
        assert!(matches!(
            connection.request("c", LIMIT),
            Err(RspError::Closed | RspError::Io(_))
        ));
        stub.join().unwrap();

        let (client, _silent) = UnixStream::pair().unwrap();
        let started = Instant::now();
        assert!(matches!(
            Connection::handshake(client, Duration::from_millis(100)),
            Err(RspError::Timeout)
        ));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn a_bad_checksum_is_an_error() {
        let (client, mut stub) = UnixStream::pair().unwrap();
        let mut connection = Connection {
            stream: client,
            received: Received::default(),
            acking: false,
            packet_size: DEFAULT_PACKET_SIZE,
            features: Vec::new(),
        };
        stub.write_all(b"$OK#00").unwrap();
        assert!(matches!(
            connection.receive(Instant::now() + LIMIT),
            Err(RspError::Protocol(why)) if why.contains("checksum")
        ));
    }
}
