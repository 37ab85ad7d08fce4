//! Who wrote an op, provably: the proof trailer every stored op carries, the origin's genesis,
//! the seal that signs a run of ops, and the keys that make and check them.
//!
//! A stored op (a log record's payload, and what sync sends) is the op's canonical encoding
//! followed by a trailer, read from its end:
//!
//! ```text
//! op encoding | [genesis: spki, nonce (16), spki length (u16 LE)] | [seal: first seq (u64 LE), signature (64)] | [certificate: DER, length (u16 LE)] | flags (u8)
//! ```
//!
//! `flags` bit 0 says a genesis block is present, bit 1 a seal, bit 2 a certificate; other
//! bits are zero. The certificate rides only beside a genesis: the cluster CA's certificate
//! for the genesis key, which binds the origin to a node the CA issued. It is outside the
//! signed part (the CA's signature is its proof): a writer that had no certificate when it
//! wrote seq 1 attaches it when it sends the op, and a receiver stores it with the op. The
//! genesis rides on seq 1 of an origin: the writer's public key (SubjectPublicKeyInfo, DER,
//! ECDSA P-256) and a nonce, and the origin id is [`origin_of`] them, so no other key can
//! claim that origin. A seal rides on the last op of a run (consecutive seqs of one origin,
//! written in one group commit) and signs, with the origin's key, the run's digest: SHA-256
//! over the run's *link* (SHA-256 of the signed part of the origin's op just before the run;
//! 32 zero bytes for a run from seq 1), then each op's *signed part* (its bytes without
//! seal, certificate and flags, so the genesis is covered), each prefixed by its length as
//! u32 LE. The signed message is `"feral-seal/2" | origin | first seq | last seq | digest`.
//! The link chains every run to the whole history of its origin: a run of another branch (a
//! fork) never verifies on top of this one. One signature covers up to [`SEAL_RUN_OPS_MAX`]
//! ops, so checking costs little per op.

use std::fmt;

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair};

use crate::op::Origin;

/// The flag bit of a genesis block.
pub const FLAG_GENESIS: u8 = 0x01;
/// The flag bit of a seal.
pub const FLAG_SEAL: u8 = 0x02;
/// The flag bit of an attached certificate (beside a genesis only).
pub const FLAG_CERTIFICATE: u8 = 0x04;
/// Largest certificate (DER) an op may carry.
pub const CERTIFICATE_BYTES_MAX: usize = 4096;
/// Bytes of a seal block: first seq and an ECDSA P-256 signature (fixed form).
pub const SEAL_BYTES: usize = 8 + SIGNATURE_BYTES;
/// Bytes of a signature (r and s, 32 bytes each).
pub const SIGNATURE_BYTES: usize = 64;
/// Bytes of a genesis nonce.
pub const NONCE_BYTES: usize = 16;
/// Bytes of the SubjectPublicKeyInfo of an ECDSA P-256 key (the only kind accepted).
pub const SPKI_BYTES: usize = 91;
/// Most bytes the trailer of a local write adds to an op's encoding (a writer never attaches
/// a certificate when it writes: that happens when its seq 1 is sent, and a received op is
/// stored at its exact size).
pub const TRAILER_BYTES_MAX: usize = SPKI_BYTES + NONCE_BYTES + 2 + SEAL_BYTES + 1;
/// Most ops one seal covers (a run closes here even inside a group commit).
pub const SEAL_RUN_OPS_MAX: usize = 512;
/// A run closes once its payload bytes reach this (so a run is at most this plus one op).
pub const SEAL_RUN_BYTES_MAX: usize = 256 * 1024;

/// The DER prefix of an ECDSA P-256 SubjectPublicKeyInfo, before its 65-byte point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
const SEAL_DOMAIN: &[u8] = b"feral-seal/2";
/// The link of a run from seq 1 (no op before it).
pub const LINK_NONE: [u8; 32] = [0; 32];
const ORIGIN_DOMAIN: &[u8] = b"feral-origin/1";

/// The genesis of an origin: the key that owns it and the nonce its id was made with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Genesis {
    /// SubjectPublicKeyInfo (DER) of the writer's key.
    pub spki: Vec<u8>,
    /// The nonce hashed with the key into the origin id.
    pub nonce: [u8; NONCE_BYTES],
}

/// The signature over a run of one origin's ops, ending with the op that carries it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Seal {
    /// The run's first seq (the op carrying the seal is its last).
    pub first_seq: u64,
    /// ECDSA P-256 SHA-256 signature, fixed form.
    pub signature: [u8; SIGNATURE_BYTES],
}

impl fmt::Debug for Seal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Seal {{ first_seq: {} }}", self.first_seq)
    }
}

/// A parsed trailer, and where the op's encoding and its signed part end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trailer {
    /// Present on seq 1 of an origin.
    pub genesis: Option<Genesis>,
    /// Present on the last op of a run.
    pub seal: Option<Seal>,
    /// The certificate (DER) of the genesis key, when attached.
    pub certificate: Option<Vec<u8>>,
    /// Length of the op's encoding (the front of the payload).
    pub op_len: usize,
    /// Length of the signed part (op encoding and genesis block).
    pub signed_len: usize,
}

/// True when a stored op's flags say it carries a seal (read from its last byte only).
pub fn is_sealed(payload: &[u8]) -> bool {
    payload.last().is_some_and(|f| f & FLAG_SEAL != 0)
}

/// Reads the trailer of a stored op from its end. Unknown flags, a genesis that is not an
/// ECDSA P-256 key, or a payload too short for what its flags announce are refused.
pub fn parse_trailer(payload: &[u8]) -> Result<Trailer, String> {
    let (&flags, rest) = payload.split_last().ok_or("an empty op payload")?;
    if flags & !(FLAG_GENESIS | FLAG_SEAL | FLAG_CERTIFICATE) != 0 {
        return Err(format!("unknown proof flags {flags:#04x}"));
    }
    if flags & FLAG_CERTIFICATE != 0 && flags & FLAG_GENESIS == 0 {
        return Err("a certificate without a genesis".into());
    }
    let mut end = rest.len();
    let certificate = if flags & FLAG_CERTIFICATE != 0 {
        let len_at = end.checked_sub(2).ok_or("a certificate cut short")?;
        let len = usize::from(u16::from_le_bytes([rest[len_at], rest[len_at + 1]]));
        if len > CERTIFICATE_BYTES_MAX {
            return Err(format!("a certificate of {len} bytes (at most {CERTIFICATE_BYTES_MAX})"));
        }
        let start = len_at.checked_sub(len).ok_or("a certificate cut short")?;
        end = start;
        Some(rest[start..len_at].to_vec())
    } else {
        None
    };
    let seal = if flags & FLAG_SEAL != 0 {
        let start = end.checked_sub(SEAL_BYTES).ok_or("a seal cut short")?;
        let block = &rest[start..end];
        end = start;
        let mut first = [0u8; 8];
        first.copy_from_slice(&block[..8]);
        let mut sig = [0u8; SIGNATURE_BYTES];
        sig.copy_from_slice(&block[8..]);
        Some(Seal { first_seq: u64::from_le_bytes(first), signature: sig })
    } else {
        None
    };
    let signed_len = end;
    let genesis = if flags & FLAG_GENESIS != 0 {
        let len_at = end.checked_sub(2).ok_or("a genesis cut short")?;
        let spki_len = usize::from(u16::from_le_bytes([rest[len_at], rest[len_at + 1]]));
        if spki_len != SPKI_BYTES {
            return Err(format!(
                "a genesis key of {spki_len} bytes (an ECDSA P-256 key is {SPKI_BYTES})"
            ));
        }
        let nonce_at = len_at.checked_sub(NONCE_BYTES).ok_or("a genesis cut short")?;
        let spki_at = nonce_at.checked_sub(spki_len).ok_or("a genesis cut short")?;
        let spki = rest[spki_at..nonce_at].to_vec();
        if spki[..P256_SPKI_PREFIX.len()] != P256_SPKI_PREFIX {
            return Err("a genesis key that is not ECDSA P-256".into());
        }
        let mut nonce = [0u8; NONCE_BYTES];
        nonce.copy_from_slice(&rest[nonce_at..len_at]);
        end = spki_at;
        Some(Genesis { spki, nonce })
    } else {
        None
    };
    Ok(Trailer { genesis, seal, certificate, op_len: end, signed_len })
}

/// Appends a trailer: the genesis block (if any), the seal (if any) and the flags.
pub fn write_trailer(out: &mut Vec<u8>, genesis: Option<&Genesis>, seal: Option<&Seal>) {
    write_genesis(out, genesis);
    finish_trailer(out, genesis.is_some(), seal);
}

/// Appends the genesis block (part of the signed bytes).
pub fn write_genesis(out: &mut Vec<u8>, genesis: Option<&Genesis>) {
    if let Some(g) = genesis {
        out.extend_from_slice(&g.spki);
        out.extend_from_slice(&g.nonce);
        out.extend_from_slice(&(g.spki.len() as u16).to_le_bytes());
    }
}

/// Appends the seal (if any) and the flags after the signed part.
pub fn finish_trailer(out: &mut Vec<u8>, genesis: bool, seal: Option<&Seal>) {
    let mut flags = 0u8;
    if genesis {
        flags |= FLAG_GENESIS;
    }
    if let Some(s) = seal {
        out.extend_from_slice(&s.first_seq.to_le_bytes());
        out.extend_from_slice(&s.signature);
        flags |= FLAG_SEAL;
    }
    out.push(flags);
}

/// Attaches `certificate` (DER) to a stored op that carries a genesis and no certificate yet;
/// any other op, or a certificate too large, is left as it is (false).
pub fn attach_certificate(payload: &mut Vec<u8>, certificate: &[u8]) -> bool {
    let Some(&flags) = payload.last() else { return false };
    if flags & FLAG_GENESIS == 0
        || flags & FLAG_CERTIFICATE != 0
        || certificate.len() > CERTIFICATE_BYTES_MAX
    {
        return false;
    }
    payload.pop();
    payload.extend_from_slice(certificate);
    payload.extend_from_slice(&(certificate.len() as u16).to_le_bytes());
    payload.push(flags | FLAG_CERTIFICATE);
    true
}

/// Takes the certificate block off a genesis payload that has one (the certificate is
/// outside the signed part): the payload as a writer stores its genesis before it attached
/// one. False, and nothing changed, when there is none.
pub fn detach_certificate(payload: &mut Vec<u8>) -> bool {
    let Some(&flags) = payload.last() else { return false };
    if flags & FLAG_CERTIFICATE == 0 || payload.len() < 3 {
        return false;
    }
    let at = payload.len() - 3;
    let len = u16::from_le_bytes([payload[at], payload[at + 1]]) as usize;
    if at < len {
        return false;
    }
    payload.truncate(at - len);
    payload.push(flags & !FLAG_CERTIFICATE);
    true
}

/// The origin id a key and nonce make: the first 16 bytes of
/// SHA-256("feral-origin/1" | spki | nonce).
pub fn origin_of(spki: &[u8], nonce: &[u8; NONCE_BYTES]) -> Origin {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(ORIGIN_DOMAIN);
    ctx.update(spki);
    ctx.update(nonce);
    let digest = ctx.finish();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest.as_ref()[..16]);
    Origin(id)
}

/// The running digest of a run: each op's signed part, prefixed by its length.
#[derive(Clone)]
pub struct RunDigest {
    ctx: ring::digest::Context,
    ops: usize,
    bytes: usize,
}

impl fmt::Debug for RunDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RunDigest {{ ops: {}, bytes: {} }}", self.ops, self.bytes)
    }
}

impl Default for RunDigest {
    /// The digest of a run from seq 1 ([`LINK_NONE`]).
    fn default() -> Self {
        RunDigest::linked(&LINK_NONE)
    }
}

/// The link a run after `signed` starts from: SHA-256 of the signed part of the op before it.
pub fn link_of(signed: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, signed);
    let mut link = [0u8; 32];
    link.copy_from_slice(digest.as_ref());
    link
}

impl RunDigest {
    /// The digest of a run whose previous op has this link ([`link_of`]).
    pub fn linked(link: &[u8; 32]) -> RunDigest {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(link);
        RunDigest { ctx, ops: 0, bytes: 0 }
    }

    /// Adds one op's signed part.
    pub fn add(&mut self, signed: &[u8]) {
        self.ctx.update(&(signed.len() as u32).to_le_bytes());
        self.ctx.update(signed);
        self.ops += 1;
        self.bytes += signed.len();
    }

    /// Ops added so far.
    pub fn ops(&self) -> usize {
        self.ops
    }

    /// Signed bytes added so far.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// True once the run should close (by ops or bytes).
    pub fn full(&self) -> bool {
        self.ops >= SEAL_RUN_OPS_MAX || self.bytes >= SEAL_RUN_BYTES_MAX
    }

    /// The message a seal signs for this run of `origin` from `first` to `last`.
    pub fn message(self, origin: &Origin, first: u64, last: u64) -> Vec<u8> {
        let digest = self.ctx.finish();
        let mut msg = Vec::with_capacity(SEAL_DOMAIN.len() + 16 + 16 + 32);
        msg.extend_from_slice(SEAL_DOMAIN);
        msg.extend_from_slice(&origin.0);
        msg.extend_from_slice(&first.to_le_bytes());
        msg.extend_from_slice(&last.to_le_bytes());
        msg.extend_from_slice(digest.as_ref());
        msg
    }
}

/// A node's signing key (ECDSA P-256): seals the runs of the origins it owns.
pub struct Signer {
    pair: EcdsaKeyPair,
    spki: Vec<u8>,
    rng: SystemRandom,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signer { .. }")
    }
}

impl Signer {
    /// A signer from a PKCS#8 (DER) ECDSA P-256 private key and its SubjectPublicKeyInfo.
    pub fn from_pkcs8(pkcs8: &[u8], spki: &[u8]) -> Result<Signer, String> {
        let rng = SystemRandom::new();
        let pair =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
                .map_err(|e| format!("the node key is not a usable ECDSA P-256 key: {e}"))?;
        let key = VerifyingKey::from_spki(spki)?;
        if key.point != pair.public_key().as_ref() {
            return Err("the public key given does not match the private key".into());
        }
        Ok(Signer { pair, spki: spki.to_vec(), rng })
    }

    /// A signer with a new random key (tests and tools; a node signs with its node key).
    pub fn generate() -> Result<Signer, String> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| "generating a key failed".to_string())?;
        let pair = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.as_ref(),
            &rng,
        )
        .map_err(|e| format!("a generated key was refused: {e}"))?;
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(pair.public_key().as_ref());
        Ok(Signer { pair, spki, rng })
    }

    /// The key's SubjectPublicKeyInfo (DER).
    pub fn spki(&self) -> &[u8] {
        &self.spki
    }

    /// Signs `message` (fixed-form signature).
    pub fn sign(&self, message: &[u8]) -> Result<[u8; SIGNATURE_BYTES], String> {
        let sig = self.pair.sign(&self.rng, message).map_err(|_| "signing failed".to_string())?;
        let mut out = [0u8; SIGNATURE_BYTES];
        if sig.as_ref().len() != SIGNATURE_BYTES {
            return Err(format!("a signature of {} bytes", sig.as_ref().len()));
        }
        out.copy_from_slice(sig.as_ref());
        Ok(out)
    }
}

/// A public key that checks seals: from an origin's genesis.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    point: Vec<u8>,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VerifyingKey { .. }")
    }
}

impl VerifyingKey {
    /// The key of an ECDSA P-256 SubjectPublicKeyInfo (DER); any other key is refused.
    pub fn from_spki(spki: &[u8]) -> Result<VerifyingKey, String> {
        if spki.len() != SPKI_BYTES || spki[..P256_SPKI_PREFIX.len()] != P256_SPKI_PREFIX {
            return Err("not an ECDSA P-256 public key".into());
        }
        Ok(VerifyingKey { point: spki[P256_SPKI_PREFIX.len()..].to_vec() })
    }

    /// True when `signature` is this key's over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8; SIGNATURE_BYTES]) -> bool {
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &self.point)
            .verify(message, signature)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> (Vec<u8>, Vec<u8>) {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("generate");
        let pair = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.as_ref(),
            &rng,
        )
        .expect("pair");
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(pair.public_key().as_ref());
        (pkcs8.as_ref().to_vec(), spki)
    }

    #[test]
    fn a_trailer_reads_back_from_the_end() {
        let (_, spki) = key();
        let genesis = Genesis { spki, nonce: [7; NONCE_BYTES] };
        let seal = Seal { first_seq: 1, signature: [9; SIGNATURE_BYTES] };
        for (g, s) in [
            (None, None),
            (Some(&genesis), None),
            (None, Some(&seal)),
            (Some(&genesis), Some(&seal)),
        ] {
            let mut payload = b"op-bytes".to_vec();
            write_trailer(&mut payload, g, s);
            let t = parse_trailer(&payload).expect("parses");
            assert_eq!((t.genesis.as_ref(), t.seal.as_ref(), t.op_len), (g, s, 8));
            assert_eq!(is_sealed(&payload), s.is_some());
            assert_eq!(t.signed_len, payload.len() - 1 - if s.is_some() { SEAL_BYTES } else { 0 });
        }
    }

    #[test]
    fn a_certificate_attaches_beside_a_genesis_only_and_keeps_the_signed_part() {
        let (_, spki) = key();
        let genesis = Genesis { spki, nonce: [7; NONCE_BYTES] };
        let seal = Seal { first_seq: 1, signature: [9; SIGNATURE_BYTES] };
        let mut payload = b"op-bytes".to_vec();
        write_trailer(&mut payload, Some(&genesis), Some(&seal));
        let before = parse_trailer(&payload).expect("parses");
        assert!(attach_certificate(&mut payload, b"a certificate"));
        assert!(!attach_certificate(&mut payload, b"another"), "one certificate");
        let after = parse_trailer(&payload).expect("parses");
        assert_eq!(after.certificate.as_deref(), Some(&b"a certificate"[..]));
        assert_eq!((after.genesis, after.seal), (before.genesis, before.seal));
        assert_eq!((after.op_len, after.signed_len), (before.op_len, before.signed_len));
        assert_eq!(&payload[..after.signed_len], &payload[..before.signed_len]);
        let mut plain = b"op-bytes".to_vec();
        write_trailer(&mut plain, None, Some(&seal));
        assert!(!attach_certificate(&mut plain, b"a certificate"), "no genesis: nothing to bind");
        assert!(!attach_certificate(&mut payload, &[0; CERTIFICATE_BYTES_MAX + 1]));
    }

    #[test]
    fn a_bad_trailer_is_refused() {
        assert!(parse_trailer(&[]).is_err());
        assert!(parse_trailer(&[0x08]).is_err(), "unknown flag");
        assert!(parse_trailer(&[0, 0, FLAG_CERTIFICATE]).is_err(), "a certificate alone");
        assert!(parse_trailer(&[1, 2, FLAG_SEAL]).is_err(), "seal cut short");
        assert!(parse_trailer(&[0, 0, FLAG_GENESIS]).is_err(), "genesis cut short");
        let mut not_p256 = vec![0u8; SPKI_BYTES];
        not_p256.extend_from_slice(&[0; NONCE_BYTES]);
        not_p256.extend_from_slice(&(SPKI_BYTES as u16).to_le_bytes());
        not_p256.push(FLAG_GENESIS);
        assert!(parse_trailer(&not_p256).is_err(), "not a P-256 key");
    }

    #[test]
    fn a_seal_verifies_only_for_its_key_and_its_run() {
        let (pkcs8, spki) = key();
        let signer = Signer::from_pkcs8(&pkcs8, &spki).expect("signer");
        let origin = origin_of(&spki, &[1; NONCE_BYTES]);
        let run = |ops: &[&[u8]]| {
            let mut d = RunDigest::default();
            ops.iter().for_each(|o| d.add(o));
            d.message(&origin, 1, ops.len() as u64)
        };
        let sig = signer.sign(&run(&[b"a", b"b"])).expect("sign");
        let verifier = VerifyingKey::from_spki(&spki).expect("key");
        assert!(verifier.verify(&run(&[b"a", b"b"]), &sig));
        assert!(!verifier.verify(&run(&[b"a", b"c"]), &sig), "altered op");
        assert!(!verifier.verify(&run(&[b"ab"]), &sig), "ops re-cut");
        let mut after = RunDigest::linked(&link_of(b"another branch's op"));
        after.add(b"a");
        after.add(b"b");
        assert!(!verifier.verify(&after.message(&origin, 1, 2), &sig), "another link");
        let (_, other) = key();
        assert!(!VerifyingKey::from_spki(&other).expect("other").verify(&run(&[b"a", b"b"]), &sig));
        assert_ne!(origin, origin_of(&other, &[1; NONCE_BYTES]), "an origin belongs to one key");
    }
}
