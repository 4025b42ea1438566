//! Internode frames and the handshake that authenticates a connection,
//! both without I/O. docs/cluster.md, "Internode frames" and "Handshake".
//!
//! **Owns:** the frame layout, an incremental decoder over a `BytesMut`
//! that the connection task fills, and the HMAC-SHA256 challenge–response
//! state machine on the cluster secret. The caller moves the bytes, draws
//! the random nonces, and closes the connection on any error here.
//!
//! A frame is `[u32 BE length][u8 version][u8 kind][u64 BE request id]
//! [u64 BE epoch][payload]`, the length counting every byte after itself.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

use crate::NodeId;

/// The frame format version this code speaks.
pub const FRAME_VERSION: u8 = 1;

/// Bytes of the length prefix.
const LENGTH_BYTES: usize = 4;

/// Bytes after the length prefix and before the payload: version, kind,
/// request id, epoch.
pub const HEADER_BYTES: usize = 1 + 1 + 8 + 8;

/// Default largest frame (length field value): one value at the largest
/// `max-value-size` (512 MiB, as Redis' `proto-max-bulk-len`) plus 1 MiB
/// for its key, envelope and causal context. The decoder refuses anything
/// larger before buffering it.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 512 * 1024 * 1024 + 1024 * 1024;

/// Largest frame before the handshake completes: a peer that has not
/// proved it knows the secret may not make us buffer more than this.
pub const HANDSHAKE_MAX_FRAME_BYTES: usize = 1024;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Handshake step 1, initiator → responder: [`Hello`].
    Hello = 1,
    /// Handshake step 2, responder → initiator: [`Challenge`].
    Challenge = 2,
    /// Handshake step 3, initiator → responder: [`Proof`].
    Proof = 3,
    /// A request; the reply carries the same request id.
    Request = 16,
    /// A reply to a request.
    Response = 17,
    /// A refusal: the request's epoch is older than the receiver's; the
    /// sender refreshes its slot map and retries.
    StaleEpoch = 18,
    /// A request the receiver accepted but could not answer; the payload is
    /// a UTF-8 message (docs/cluster.md, "Transport").
    Error = 19,
}

impl FrameKind {
    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => Self::Hello,
            2 => Self::Challenge,
            3 => Self::Proof,
            16 => Self::Request,
            17 => Self::Response,
            18 => Self::StaleEpoch,
            19 => Self::Error,
            _ => return None,
        })
    }
}

/// One internode frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What the payload is.
    pub kind: FrameKind,
    /// Matches a response to its request on a multiplexed connection.
    pub request_id: u64,
    /// The sender's cluster epoch (0 before it knows one).
    pub epoch: u64,
    /// The body; its layout depends on `kind`.
    pub payload: Bytes,
}

/// A frame that cannot be accepted; the caller closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The length field is smaller than the fixed header.
    #[error("frame length {0} is shorter than the {HEADER_BYTES}-byte header")]
    TooShort(u32),
    /// The length field is larger than the limit.
    #[error("frame length {length} exceeds the limit of {max} bytes")]
    TooLarge {
        /// The announced length.
        length: u64,
        /// The limit in force.
        max: usize,
    },
    /// A version this code does not speak.
    #[error("frame version {0} is not supported (this node speaks {FRAME_VERSION})")]
    BadVersion(u8),
    /// A kind byte this code does not know.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
}

impl Frame {
    /// Appends the frame to `out`; refuses a payload that would make the
    /// frame larger than `max_frame_bytes`.
    pub fn encode(&self, out: &mut BytesMut, max_frame_bytes: usize) -> Result<(), FrameError> {
        let length = HEADER_BYTES as u64 + self.payload.len() as u64;
        if length > max_frame_bytes as u64 || length > u64::from(u32::MAX) {
            return Err(FrameError::TooLarge {
                length,
                max: max_frame_bytes,
            });
        }
        out.reserve(LENGTH_BYTES + length as usize);
        out.put_u32(length as u32);
        out.put_u8(FRAME_VERSION);
        out.put_u8(self.kind as u8);
        out.put_u64(self.request_id);
        out.put_u64(self.epoch);
        out.put_slice(&self.payload);
        Ok(())
    }

    /// Takes one frame off the front of `buffer`: `Ok(None)` while it is
    /// incomplete (read more and call again), an error as soon as the
    /// buffered prefix is already invalid (checked before waiting for the
    /// rest, so a hostile length never makes us buffer it).
    pub fn decode(
        buffer: &mut BytesMut,
        max_frame_bytes: usize,
    ) -> Result<Option<Frame>, FrameError> {
        if buffer.len() < LENGTH_BYTES {
            return Ok(None);
        }
        let length = u32::from_be_bytes([buffer[0], buffer[1], buffer[2], buffer[3]]);
        if (length as usize) < HEADER_BYTES {
            return Err(FrameError::TooShort(length));
        }
        if length as usize > max_frame_bytes {
            return Err(FrameError::TooLarge {
                length: u64::from(length),
                max: max_frame_bytes,
            });
        }
        if let Some(&version) = buffer.get(LENGTH_BYTES) {
            if version != FRAME_VERSION {
                return Err(FrameError::BadVersion(version));
            }
        }
        let kind = match buffer.get(LENGTH_BYTES + 1) {
            Some(&byte) => FrameKind::from_byte(byte).ok_or(FrameError::UnknownKind(byte))?,
            None => return Ok(None),
        };
        if buffer.len() < LENGTH_BYTES + length as usize {
            return Ok(None);
        }
        buffer.advance(LENGTH_BYTES + 2);
        let request_id = buffer.get_u64();
        let epoch = buffer.get_u64();
        let payload = buffer.split_to(length as usize - HEADER_BYTES).freeze();
        Ok(Some(Frame {
            kind,
            request_id,
            epoch,
            payload,
        }))
    }
}

// ---------------------------------------------------------------------------
// Handshake
// ---------------------------------------------------------------------------

/// Bytes of each side's random nonce.
pub const NONCE_BYTES: usize = 32;

/// Bytes of an HMAC-SHA256 proof.
pub const PROOF_BYTES: usize = 32;

/// Shortest cluster secret accepted: 16 bytes (128 bits), so the secret
/// cannot be guessed offline from a recorded handshake.
pub const MIN_SECRET_BYTES: usize = 16;

/// Domain-separation labels: a proof made for one role never verifies as
/// the other's, so a responder's proof cannot be reflected back to it.
const INITIATOR_LABEL: &[u8] = b"ringkv-handshake-v1 initiator";
const RESPONDER_LABEL: &[u8] = b"ringkv-handshake-v1 responder";

/// Why a handshake failed; the caller closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HandshakeError {
    /// The configured secret is shorter than [`MIN_SECRET_BYTES`].
    #[error("cluster secret must be at least {MIN_SECRET_BYTES} bytes")]
    WeakSecret,
    /// A handshake message had the wrong size.
    #[error("malformed handshake message: {0}")]
    Malformed(&'static str),
    /// The peer's proof did not verify: it does not know the secret, or the
    /// message was replayed or reflected.
    #[error("peer failed authentication")]
    BadProof,
    /// The peer named a node id other than the one we dialled, or our own.
    #[error("peer claims node id {found}, expected {expected}")]
    WrongPeer {
        /// The id the peer sent.
        found: NodeId,
        /// The id we expected.
        expected: NodeId,
    },
}

/// The cluster secret, checked for length once.
#[derive(Clone)]
pub struct ClusterSecret(Vec<u8>);

impl ClusterSecret {
    /// Wraps the configured secret; refuses one shorter than
    /// [`MIN_SECRET_BYTES`].
    pub fn new(secret: &[u8]) -> Result<Self, HandshakeError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(HandshakeError::WeakSecret);
        }
        Ok(Self(secret.to_vec()))
    }

    /// `HMAC(secret, label || own nonce || peer nonce || own id || peer id)`,
    /// before finalising. Both nonces bind the proof to this connection
    /// (no replay); the label and the id order bind it to one role (no
    /// reflection).
    fn transcript(&self, label: &[u8], own: &Side, peer: &Side) -> Hmac<Sha256> {
        // HMAC takes a key of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(label);
        mac.update(&own.nonce);
        mac.update(&peer.nonce);
        mac.update(&own.node.to_be_bytes());
        mac.update(&peer.node.to_be_bytes());
        mac
    }

    fn proof(&self, label: &[u8], own: &Side, peer: &Side) -> [u8; PROOF_BYTES] {
        self.transcript(label, own, peer)
            .finalize()
            .into_bytes()
            .into()
    }

    /// Verifies a proof in constant time (`hmac`'s `verify_slice`).
    fn verify(
        &self,
        label: &[u8],
        own: &Side,
        peer: &Side,
        proof: &[u8; PROOF_BYTES],
    ) -> Result<(), HandshakeError> {
        self.transcript(label, own, peer)
            .verify_slice(proof)
            .map_err(|_| HandshakeError::BadProof)
    }
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

#[derive(Debug, Clone, Copy)]
struct Side {
    node: NodeId,
    nonce: [u8; NONCE_BYTES],
}

/// Step 1 (initiator → responder): who I am and my nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// The initiator's node id.
    pub node: NodeId,
    /// The initiator's fresh random nonce.
    pub nonce: [u8; NONCE_BYTES],
}

/// Step 2 (responder → initiator): who I am, my nonce, and my proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Challenge {
    /// The responder's node id.
    pub node: NodeId,
    /// The responder's fresh random nonce.
    pub nonce: [u8; NONCE_BYTES],
    /// `HMAC(secret, responder label || responder nonce || initiator nonce
    /// || responder id || initiator id)`.
    pub proof: [u8; PROOF_BYTES],
}

/// Step 3 (initiator → responder): the initiator's proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proof {
    /// `HMAC(secret, initiator label || initiator nonce || responder nonce
    /// || initiator id || responder id)`.
    pub proof: [u8; PROOF_BYTES],
}

// Format: Hello = [u64 BE node][32-byte nonce];
// Challenge = [u64 BE node][32-byte nonce][32-byte proof]; Proof = [32-byte proof].
impl Hello {
    /// The frame payload.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(8 + NONCE_BYTES);
        out.put_u64(self.node);
        out.put_slice(&self.nonce);
        out.freeze()
    }

    /// Parses a payload.
    pub fn decode(payload: &[u8]) -> Result<Self, HandshakeError> {
        let (node, rest) = split_node(payload, NONCE_BYTES, "hello")?;
        Ok(Self {
            node,
            nonce: array(rest),
        })
    }
}

impl Challenge {
    /// The frame payload.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(8 + NONCE_BYTES + PROOF_BYTES);
        out.put_u64(self.node);
        out.put_slice(&self.nonce);
        out.put_slice(&self.proof);
        out.freeze()
    }

    /// Parses a payload.
    pub fn decode(payload: &[u8]) -> Result<Self, HandshakeError> {
        let (node, rest) = split_node(payload, NONCE_BYTES + PROOF_BYTES, "challenge")?;
        Ok(Self {
            node,
            nonce: array(&rest[..NONCE_BYTES]),
            proof: array(&rest[NONCE_BYTES..]),
        })
    }
}

impl Proof {
    /// The frame payload.
    pub fn encode(&self) -> Bytes {
        Bytes::copy_from_slice(&self.proof)
    }

    /// Parses a payload.
    pub fn decode(payload: &[u8]) -> Result<Self, HandshakeError> {
        if payload.len() != PROOF_BYTES {
            return Err(HandshakeError::Malformed("proof has the wrong size"));
        }
        Ok(Self {
            proof: array(payload),
        })
    }
}

fn split_node<'a>(
    payload: &'a [u8],
    rest: usize,
    what: &'static str,
) -> Result<(NodeId, &'a [u8]), HandshakeError> {
    if payload.len() != 8 + rest {
        return Err(HandshakeError::Malformed(what));
    }
    let (id, rest) = payload.split_at(8);
    Ok((NodeId::from_be_bytes(array(id)), rest))
}

/// Copies a slice whose length the caller has checked.
fn array<const N: usize>(slice: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&slice[..N]);
    out
}

/// A completed handshake: the peer proved it knows the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authenticated {
    /// The authenticated peer's node id.
    pub peer: NodeId,
}

/// The dialling side, waiting for the [`Challenge`].
#[derive(Debug)]
pub struct Initiator {
    secret: ClusterSecret,
    own: Side,
    expected_peer: Option<NodeId>,
}

impl Initiator {
    /// Starts a handshake as node `own` with a fresh random `nonce`
    /// (drawn by the caller); `expected_peer` is the node we meant to
    /// dial, if known. Returns the state and the [`Hello`] to send.
    pub fn start(
        secret: ClusterSecret,
        own: NodeId,
        expected_peer: Option<NodeId>,
        nonce: [u8; NONCE_BYTES],
    ) -> (Self, Hello) {
        let own = Side { node: own, nonce };
        let hello = Hello {
            node: own.node,
            nonce,
        };
        (
            Self {
                secret,
                own,
                expected_peer,
            },
            hello,
        )
    }

    /// Checks the responder's proof; on success returns the [`Proof`] to
    /// send and the authenticated peer.
    pub fn on_challenge(
        self,
        challenge: &Challenge,
    ) -> Result<(Authenticated, Proof), HandshakeError> {
        let expected = self.expected_peer.unwrap_or(challenge.node);
        if challenge.node != expected || challenge.node == self.own.node {
            return Err(HandshakeError::WrongPeer {
                found: challenge.node,
                expected,
            });
        }
        let peer = Side {
            node: challenge.node,
            nonce: challenge.nonce,
        };
        self.secret
            .verify(RESPONDER_LABEL, &peer, &self.own, &challenge.proof)?;
        let proof = Proof {
            proof: self.secret.proof(INITIATOR_LABEL, &self.own, &peer),
        };
        Ok((Authenticated { peer: peer.node }, proof))
    }
}

/// The accepting side, waiting for the [`Hello`].
#[derive(Debug)]
pub struct Responder {
    secret: ClusterSecret,
    own: Side,
}

impl Responder {
    /// Prepares to answer as node `own` with a fresh random `nonce`.
    pub fn new(secret: ClusterSecret, own: NodeId, nonce: [u8; NONCE_BYTES]) -> Self {
        Self {
            secret,
            own: Side { node: own, nonce },
        }
    }

    /// Answers a [`Hello`] with a [`Challenge`] carrying our proof.
    pub fn on_hello(self, hello: &Hello) -> Result<(AwaitingProof, Challenge), HandshakeError> {
        if hello.node == self.own.node {
            return Err(HandshakeError::WrongPeer {
                found: hello.node,
                expected: hello.node,
            });
        }
        // Our own nonce coming back means a reflection of our challenge.
        if hello.nonce == self.own.nonce {
            return Err(HandshakeError::BadProof);
        }
        let peer = Side {
            node: hello.node,
            nonce: hello.nonce,
        };
        let challenge = Challenge {
            node: self.own.node,
            nonce: self.own.nonce,
            proof: self.secret.proof(RESPONDER_LABEL, &self.own, &peer),
        };
        Ok((
            AwaitingProof {
                secret: self.secret,
                own: self.own,
                peer,
            },
            challenge,
        ))
    }
}

/// The accepting side, waiting for the initiator's [`Proof`].
#[derive(Debug)]
pub struct AwaitingProof {
    secret: ClusterSecret,
    own: Side,
    peer: Side,
}

impl AwaitingProof {
    /// Checks the initiator's proof.
    pub fn on_proof(self, proof: &Proof) -> Result<Authenticated, HandshakeError> {
        self.secret
            .verify(INITIATOR_LABEL, &self.peer, &self.own, &proof.proof)?;
        Ok(Authenticated {
            peer: self.peer.node,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: usize = 1 << 20;

    fn frame(kind: FrameKind, payload: &'static [u8]) -> Frame {
        Frame {
            kind,
            request_id: 0x0102_0304_0506_0708,
            epoch: 42,
            payload: Bytes::from_static(payload),
        }
    }

    fn encoded(f: &Frame) -> BytesMut {
        let mut out = BytesMut::new();
        f.encode(&mut out, MAX).unwrap();
        out
    }

    #[test]
    fn layout_is_as_documented() {
        let bytes = encoded(&frame(FrameKind::Request, b"xy"));
        assert_eq!(
            &bytes[..],
            &[0, 0, 0, 20, 1, 16, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 42, b'x', b'y']
        );
    }

    #[test]
    fn round_trips_back_to_back_frames() {
        let frames = [
            frame(FrameKind::Request, b"get key"),
            frame(FrameKind::Response, b""),
            frame(FrameKind::StaleEpoch, b"7"),
            frame(FrameKind::Error, b"handler failed"),
        ];
        let mut buffer = BytesMut::new();
        for f in &frames {
            f.encode(&mut buffer, MAX).unwrap();
        }
        for f in &frames {
            assert_eq!(Frame::decode(&mut buffer, MAX).unwrap().as_ref(), Some(f));
        }
        assert_eq!(Frame::decode(&mut buffer, MAX), Ok(None));
        assert!(buffer.is_empty());
    }

    #[test]
    fn every_truncation_is_incomplete_and_consumes_nothing() {
        let whole = encoded(&frame(FrameKind::Response, b"payload"));
        for len in 0..whole.len() {
            let mut partial = BytesMut::from(&whole[..len]);
            assert_eq!(Frame::decode(&mut partial, MAX), Ok(None), "prefix {len}");
            assert_eq!(partial.len(), len);
        }
    }

    #[test]
    fn hostile_headers_are_refused_early() {
        let check = |bytes: &[u8], expected: FrameError| {
            let mut buffer = BytesMut::from(bytes);
            assert_eq!(Frame::decode(&mut buffer, MAX), Err(expected));
        };
        check(
            &[0xff, 0xff, 0xff, 0xff],
            FrameError::TooLarge {
                length: u64::from(u32::MAX),
                max: MAX,
            },
        );
        check(&[0, 0, 0, 0], FrameError::TooShort(0));
        check(&[0, 0, 0, 17, 1, 16], FrameError::TooShort(17));
        check(&[0, 0, 0, 18, 2], FrameError::BadVersion(2));
        check(&[0, 0, 0, 18, 1, 99], FrameError::UnknownKind(99));
        // A small pre-handshake limit refuses an ordinary frame.
        let mut big = encoded(&frame(FrameKind::Hello, &[0; 2000]));
        assert!(matches!(
            Frame::decode(&mut big, HANDSHAKE_MAX_FRAME_BYTES),
            Err(FrameError::TooLarge { .. })
        ));
        let mut out = BytesMut::new();
        assert!(frame(FrameKind::Hello, &[0; 2000])
            .encode(&mut out, HANDSHAKE_MAX_FRAME_BYTES)
            .is_err());
        assert!(out.is_empty());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128), max in 0..256usize) {
            let mut buffer = BytesMut::from(&bytes[..]);
            // Decode until error or incomplete; every frame consumes bytes.
            while let Ok(Some(_)) = Frame::decode(&mut buffer, max) {}
        }

        #[test]
        fn arbitrary_frames_round_trip_in_any_chunking(
            request_id in any::<u64>(),
            epoch in any::<u64>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            chunk in 1..16usize,
        ) {
            let f = Frame { kind: FrameKind::Request, request_id, epoch, payload: Bytes::from(payload) };
            let bytes = encoded(&f);
            let mut buffer = BytesMut::new();
            let mut decoded = None;
            for piece in bytes.chunks(chunk) {
                prop_assert!(decoded.is_none());
                buffer.extend_from_slice(piece);
                decoded = Frame::decode(&mut buffer, MAX).unwrap();
            }
            prop_assert_eq!(decoded, Some(f));
        }
    }

    // Handshake.

    fn secret(s: &str) -> ClusterSecret {
        ClusterSecret::new(s.as_bytes()).unwrap()
    }

    const GOOD: &str = "correct horse battery staple";

    /// Runs a full handshake through encoded payloads.
    fn run(
        initiator_secret: &str,
        responder_secret: &str,
    ) -> Result<(Authenticated, Authenticated), HandshakeError> {
        let (initiator, hello) =
            Initiator::start(secret(initiator_secret), 1, Some(2), [1; NONCE_BYTES]);
        let responder = Responder::new(secret(responder_secret), 2, [2; NONCE_BYTES]);
        let (awaiting, challenge) = responder.on_hello(&Hello::decode(&hello.encode())?)?;
        let (left, proof) = initiator.on_challenge(&Challenge::decode(&challenge.encode())?)?;
        let right = awaiting.on_proof(&Proof::decode(&proof.encode())?)?;
        Ok((left, right))
    }

    #[test]
    fn handshake_succeeds_with_the_same_secret() {
        let (left, right) = run(GOOD, GOOD).unwrap();
        assert_eq!(left.peer, 2);
        assert_eq!(right.peer, 1);
    }

    #[test]
    fn handshake_fails_with_a_wrong_secret_on_either_side() {
        assert_eq!(
            run(GOOD, "another secret, 16+ bytes"),
            Err(HandshakeError::BadProof)
        );
        // And the responder refuses an initiator that fakes its proof.
        let responder = Responder::new(secret(GOOD), 2, [2; NONCE_BYTES]);
        let (awaiting, _) = responder
            .on_hello(&Hello {
                node: 1,
                nonce: [1; NONCE_BYTES],
            })
            .unwrap();
        assert_eq!(
            awaiting.on_proof(&Proof {
                proof: [0; PROOF_BYTES]
            }),
            Err(HandshakeError::BadProof)
        );
    }

    #[test]
    fn short_secrets_and_bad_sizes_are_refused() {
        assert_eq!(
            ClusterSecret::new(b"short").unwrap_err(),
            HandshakeError::WeakSecret
        );
        assert!(Hello::decode(&[0; 39]).is_err());
        assert!(Challenge::decode(&[0; 73]).is_err());
        assert!(Proof::decode(&[0; 31]).is_err());
    }

    #[test]
    fn a_replayed_proof_fails_against_a_fresh_nonce() {
        // Record a whole good handshake.
        let (initiator, hello) = Initiator::start(secret(GOOD), 1, Some(2), [1; NONCE_BYTES]);
        let (awaiting, challenge) = Responder::new(secret(GOOD), 2, [2; NONCE_BYTES])
            .on_hello(&hello)
            .unwrap();
        let (_, recorded_proof) = initiator.on_challenge(&challenge).unwrap();
        awaiting.on_proof(&recorded_proof).unwrap();
        // An attacker replays Hello and Proof; the responder's nonce is new.
        let (awaiting, _) = Responder::new(secret(GOOD), 2, [3; NONCE_BYTES])
            .on_hello(&hello)
            .unwrap();
        assert_eq!(
            awaiting.on_proof(&recorded_proof),
            Err(HandshakeError::BadProof)
        );
        // Replaying the old Challenge to a fresh initiator fails too.
        let (initiator, _) = Initiator::start(secret(GOOD), 1, Some(2), [4; NONCE_BYTES]);
        assert_eq!(
            initiator.on_challenge(&challenge).unwrap_err(),
            HandshakeError::BadProof
        );
    }

    #[test]
    fn a_reflected_challenge_fails() {
        // Node 1 dials node 2; the attacker, posing as node 2, opens a
        // connection back to node 1's responder with node 1's own nonce
        // and relays node 1's challenge as its answer.
        let (initiator, hello) = Initiator::start(secret(GOOD), 1, Some(2), [1; NONCE_BYTES]);
        let responder_of_1 = Responder::new(secret(GOOD), 1, [5; NONCE_BYTES]);
        let (_, challenge_from_1) = responder_of_1
            .on_hello(&Hello {
                node: 2,
                nonce: hello.nonce,
            })
            .unwrap();
        let forged = Challenge {
            node: 2,
            ..challenge_from_1
        };
        assert_eq!(
            initiator.on_challenge(&forged).unwrap_err(),
            HandshakeError::BadProof
        );
        // And a responder refuses its own nonce or its own id coming back.
        let responder = Responder::new(secret(GOOD), 2, [2; NONCE_BYTES]);
        assert!(responder
            .on_hello(&Hello {
                node: 1,
                nonce: [2; NONCE_BYTES]
            })
            .is_err());
        let responder = Responder::new(secret(GOOD), 2, [2; NONCE_BYTES]);
        assert!(responder
            .on_hello(&Hello {
                node: 2,
                nonce: [9; NONCE_BYTES]
            })
            .is_err());
    }

    #[test]
    fn initiator_refuses_an_unexpected_peer() {
        let (initiator, hello) = Initiator::start(secret(GOOD), 1, Some(3), [1; NONCE_BYTES]);
        let (_, challenge) = Responder::new(secret(GOOD), 2, [2; NONCE_BYTES])
            .on_hello(&hello)
            .unwrap();
        assert_eq!(
            initiator.on_challenge(&challenge).unwrap_err(),
            HandshakeError::WrongPeer {
                found: 2,
                expected: 3
            }
        );
    }
}
