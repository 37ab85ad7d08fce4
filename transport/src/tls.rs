//! Certificates and TLS: a cluster CA (rcgen), node certificates issued for a node's own key
//! (so the node id, the hash of the key, survives renewal), and the rustls configurations quinn
//! uses: TLS 1.3 only, ALPN `feral-sync/1`, both sides' certificates checked against the
//! cluster CA(s), ring as the only crypto provider.

use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use feral_log::private;

use crate::error::TransportError;

/// The ALPN protocol of a sync connection.
pub const ALPN: &[u8] = b"feral-sync/1";
/// The DNS name every node certificate carries; clients connect with it.
pub const SERVER_NAME: &str = "feral-node";
/// The CA certificate file in a CA or data directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA key file in a CA directory (never copied to a node).
pub const CA_KEY_FILE: &str = "ca.key";
/// The node certificate file in a data directory.
pub const NODE_CERT_FILE: &str = "node.pem";
/// Lifetime of a new CA.
pub const CA_VALID_DAYS: i64 = 3650;
/// Lifetime of a new node certificate.
pub const NODE_CERT_VALID_DAYS: i64 = 397;
const CA_COMMON_NAME: &str = "feral-memory cluster CA";
/// Largest certificate signing request read.
pub const CSR_BYTES_MAX: usize = 64 * 1024;

fn tls_error(what: &str, e: impl std::fmt::Display) -> TransportError {
    TransportError::Tls(format!("{what}: {e}"))
}

/// A node id: the first 16 bytes of SHA-256 over the key's SubjectPublicKeyInfo.
pub fn node_id_of(spki_der: &[u8]) -> [u8; 16] {
    let hash = Sha256::digest(spki_der);
    let mut id = [0u8; 16];
    id.copy_from_slice(&hash[..16]);
    id
}

/// The cluster id: SHA-256 of the CA certificate (DER).
pub fn cluster_id_of(ca_der: &[u8]) -> [u8; 32] {
    Sha256::digest(ca_der).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The CA's parameters. Its name carries a hash of its key, so two clusters' CAs never share
/// a name (a verifier picks the issuer by name) and the name is rebuilt from the key alone.
fn ca_params(ca_key: &KeyPair) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    let id = node_id_of(&ca_key.subject_public_key_info());
    name.push(DnType::CommonName, format!("{CA_COMMON_NAME} {}", hex(&id[..8])));
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

/// A cluster certificate authority: its certificate and key (PEM).
#[derive(Debug, Clone)]
pub struct Ca {
    /// The CA certificate.
    pub cert_pem: String,
    key_pem: String,
}

impl Ca {
    /// A new CA valid from an hour ago for `CA_VALID_DAYS`.
    pub fn generate() -> Result<Ca, TransportError> {
        let key = KeyPair::generate().map_err(|e| tls_error("generating the CA key", e))?;
        let mut params = ca_params(&key);
        params.not_before = OffsetDateTime::now_utc() - Duration::hours(1);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(CA_VALID_DAYS);
        let cert = params.self_signed(&key).map_err(|e| tls_error("signing the CA", e))?;
        Ok(Ca { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// Writes `ca.pem` and `ca.key` (each 0600, in a 0700 directory) into `dir`. A directory
    /// that already holds a CA is refused ([`TransportError::CaExists`]) unless `replace`.
    pub fn save(&self, dir: &Path, replace: bool) -> Result<(), TransportError> {
        if !replace {
            for name in [CA_KEY_FILE, CA_CERT_FILE] {
                if dir.join(name).exists() {
                    return Err(TransportError::CaExists(dir.join(name)));
                }
            }
        }
        private::create_dir_all(dir).map_err(|e| TransportError::io(dir, e))?;
        write_file(&dir.join(CA_KEY_FILE), self.key_pem.as_bytes())?;
        write_file(&dir.join(CA_CERT_FILE), self.cert_pem.as_bytes())
    }

    /// Reads a CA saved by [`Ca::save`].
    pub fn load(dir: &Path) -> Result<Ca, TransportError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|e| TransportError::io(&path, e))
        };
        Ok(Ca { cert_pem: read(CA_CERT_FILE)?, key_pem: read(CA_KEY_FILE)? })
    }

    /// The cluster id.
    pub fn cluster_id(&self) -> Result<[u8; 32], TransportError> {
        Ok(cluster_id_of(&pem_certs(&self.cert_pem)?[0]))
    }

    /// The CA's key (it signs revocations as well as certificates).
    pub fn key_pair(&self) -> Result<KeyPair, TransportError> {
        KeyPair::from_pem(&self.key_pem).map_err(|e| tls_error("the CA key", e))
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, TransportError> {
        let ca_key = KeyPair::from_pem(&self.key_pem).map_err(|e| tls_error("the CA key", e))?;
        Ok(Issuer::new(ca_params(&ca_key), ca_key))
    }

    /// Issues a certificate for a node's own key, valid over `[not_before, not_after]`. The
    /// subject names the node id; the DNS name is [`SERVER_NAME`]; the serial is random, so a
    /// renewal is a new certificate with a new serial.
    pub fn issue(
        &self,
        node_key: &KeyPair,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<String, TransportError> {
        let node_id = node_id_of(&node_key.subject_public_key_info());
        let params = node_params(&node_id, not_before, not_after)?;
        let cert =
            params.signed_by(node_key, &self.issuer()?).map_err(|e| tls_error("issuing", e))?;
        Ok(cert.pem())
    }

    /// Issues a certificate from a node's certificate signing request (its signature is
    /// checked), so the CA key never has to be on the node. Only the request's public key is
    /// taken: subject, names, usages and validity are this CA's own. Returns the certificate
    /// (PEM) and the node id it proves.
    pub fn sign_request(&self, csr_pem: &str) -> Result<(String, [u8; 16]), TransportError> {
        if csr_pem.len() > CSR_BYTES_MAX {
            return Err(TransportError::Tls(format!(
                "a certificate signing request of {} bytes exceeds {CSR_BYTES_MAX}",
                csr_pem.len()
            )));
        }
        let request = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| tls_error("the certificate signing request", e))?;
        let node_id = node_id_of(&request.public_key.subject_public_key_info());
        let now = OffsetDateTime::now_utc();
        let params = node_params(
            &node_id,
            now - Duration::hours(1),
            now + Duration::days(NODE_CERT_VALID_DAYS),
        )?;
        let signed =
            rcgen::CertificateSigningRequestParams { params, public_key: request.public_key };
        let cert = signed.signed_by(&self.issuer()?).map_err(|e| tls_error("issuing", e))?;
        Ok((cert.pem(), node_id))
    }

    /// Issues a certificate valid from an hour ago for [`NODE_CERT_VALID_DAYS`].
    pub fn issue_default(&self, node_key: &KeyPair) -> Result<String, TransportError> {
        let now = OffsetDateTime::now_utc();
        self.issue(node_key, now - Duration::hours(1), now + Duration::days(NODE_CERT_VALID_DAYS))
    }
}

/// A node certificate's parameters: the node id as subject, [`SERVER_NAME`], client and
/// server use, a random serial.
fn node_params(
    node_id: &[u8; 16],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, TransportError> {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, hex(node_id));
    params.distinguished_name = name;
    params.subject_alt_names =
        vec![SanType::DnsName(SERVER_NAME.try_into().map_err(|e| tls_error("the DNS name", e))?)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages =
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = not_before;
    params.not_after = not_after;
    let mut serial = [0u8; 16];
    feral_log::op::random_bytes(&mut serial);
    serial[0] &= 0x7f; // a positive integer
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    Ok(params)
}

/// A certificate signing request (PEM) for a node's key, for `certs sign` where the CA is.
pub fn signing_request(node_key: &KeyPair) -> Result<String, TransportError> {
    let node_id = node_id_of(&node_key.subject_public_key_info());
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, hex(&node_id));
    params.distinguished_name = name;
    let request =
        params.serialize_request(node_key).map_err(|e| tls_error("the signing request", e))?;
    request.pem().map_err(|e| tls_error("the signing request", e))
}

/// Writes a file privately and atomically (0600, create_new, fsync, rename).
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), TransportError> {
    private::write_atomic(path, bytes).map_err(|e| TransportError::io(path, e))
}

/// Every certificate in a PEM text, as DER.
pub fn pem_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error("reading PEM", e))?;
    if certs.is_empty() {
        return Err(TransportError::Tls("no certificate in the PEM text".into()));
    }
    Ok(certs)
}

/// What a node presents and trusts.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// Its certificate (first) and any intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    /// Its key (PKCS#8 DER).
    pub key_der: Vec<u8>,
    /// The trusted CA certificates (two during a CA rotation).
    pub roots: Vec<CertificateDer<'static>>,
}

impl Credentials {
    /// From PEM texts: the node certificate, the node key, the CA certificate(s).
    pub fn from_pem(cert: &str, key: &KeyPair, ca: &str) -> Result<Credentials, TransportError> {
        Ok(Credentials {
            chain: pem_certs(cert)?,
            key_der: key.serialize_der(),
            roots: pem_certs(ca)?,
        })
    }

    /// Checks that the certificate is for this node's key and chains to a trusted CA now
    /// (what `certs install` checks before it replaces a node's certificate).
    pub fn verify_own(&self) -> Result<(), TransportError> {
        let key =
            KeyPair::try_from(self.key_der.as_slice()).map_err(|e| tls_error("the node key", e))?;
        let cert = &self.chain[0];
        if spki_of(cert).map(node_id_of) != Some(node_id_of(&key.subject_public_key_info())) {
            return Err(TransportError::Tls(
                "the certificate is not for this node's key (wrong node?)".into(),
            ));
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.root_store()?,
            provider(),
        )
        .build()
        .map_err(|e| tls_error("the verifier", e))?;
        verifier
            .verify_client_cert(cert, &self.chain[1..], rustls::pki_types::UnixTime::now())
            .map_err(|e| tls_error("the certificate does not chain to that CA", e))?;
        Ok(())
    }

    /// The cluster id (of the first trusted CA).
    pub fn cluster_id(&self) -> [u8; 32] {
        cluster_id_of(&self.roots[0])
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    fn root_store(&self) -> Result<Arc<rustls::RootCertStore>, TransportError> {
        let mut roots = rustls::RootCertStore::empty();
        for ca in &self.roots {
            roots.add(ca.clone()).map_err(|e| tls_error("a CA certificate", e))?;
        }
        Ok(Arc::new(roots))
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server side: TLS 1.3, ALPN, a client certificate from a trusted CA required.
pub fn server_crypto(creds: &Credentials) -> Result<rustls::ServerConfig, TransportError> {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        creds.root_store()?,
        provider(),
    )
    .build()
    .map_err(|e| tls_error("the client verifier", e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_error("TLS 1.3", e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(creds.chain.clone(), creds.key())
        .map_err(|e| tls_error("the node certificate", e))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// The client side: TLS 1.3, ALPN, the server's certificate checked against the trusted CAs;
/// presents `creds`' certificate unless `present_certificate` is false (tests of refusal).
pub fn client_crypto(
    creds: &Credentials,
    present_certificate: bool,
) -> Result<rustls::ClientConfig, TransportError> {
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        creds.root_store()?,
        provider(),
    )
    .build()
    .map_err(|e| tls_error("the server verifier", e))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_error("TLS 1.3", e))?
        .with_webpki_verifier(verifier);
    let mut config = if present_certificate {
        builder
            .with_client_auth_cert(creds.chain.clone(), creds.key())
            .map_err(|e| tls_error("the node certificate", e))?
    } else {
        builder.with_no_client_auth()
    };
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// The SubjectPublicKeyInfo of a DER certificate (a bounded walk of its first fields).
pub fn spki_of(cert_der: &[u8]) -> Option<&[u8]> {
    let (cert, _) = der_element(cert_der, 0x30)?;
    let (tbs, _) = der_element(cert.content, 0x30)?;
    let mut rest = tbs.content;
    if rest.first() == Some(&0xa0) {
        rest = der_element(rest, 0xa0)?.1; // version
    }
    for tag in [0x02, 0x30, 0x30, 0x30, 0x30] {
        rest = der_element(rest, tag)?.1; // serial, signature, issuer, validity, subject
    }
    let (spki, _) = der_element(rest, 0x30)?;
    Some(spki.whole)
}

/// The node id a certificate (DER) proves for its key, when one of `roots` issued it. The chain
/// is checked at a moment inside the certificate's own validity: what this answers is whether
/// the CA vouched for the key (an origin stays bound to its node after the certificate
/// expires; revocation is what cuts a node off).
pub fn verify_issued(cert_der: &[u8], roots: &[Vec<u8>]) -> Result<[u8; 16], TransportError> {
    let refused = |reason: String| TransportError::Certificate { code: "bad_certificate", reason };
    let (not_before, _) =
        validity_of(cert_der).ok_or_else(|| refused("an unreadable validity".into()))?;
    let spki = spki_of(cert_der).ok_or_else(|| refused("an unreadable public key".into()))?;
    let mut store = rustls::RootCertStore::empty();
    for ca in roots {
        store
            .add(CertificateDer::from(ca.clone()))
            .map_err(|e| tls_error("a CA certificate", e))?;
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider())
            .build()
            .map_err(|e| tls_error("the verifier", e))?;
    let at = rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        not_before.max(0) as u64 + 1,
    ));
    let cert = CertificateDer::from(cert_der.to_vec());
    verifier
        .verify_client_cert(&cert, &[], at)
        .map_err(|e| refused(format!("not issued by a trusted CA: {e}")))?;
    Ok(node_id_of(spki))
}

/// The validity of a DER certificate as unix seconds: (not before, not after).
pub fn validity_of(cert_der: &[u8]) -> Option<(i64, i64)> {
    let (cert, _) = der_element(cert_der, 0x30)?;
    let (tbs, _) = der_element(cert.content, 0x30)?;
    let mut rest = tbs.content;
    if rest.first() == Some(&0xa0) {
        rest = der_element(rest, 0xa0)?.1;
    }
    for tag in [0x02, 0x30, 0x30] {
        rest = der_element(rest, tag)?.1; // serial, signature, issuer
    }
    let (validity, _) = der_element(rest, 0x30)?;
    let (from, after) = der_time(validity.content)?;
    let (to, _) = der_time(after)?;
    Some((from, to))
}

/// A UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as unix seconds.
fn der_time(bytes: &[u8]) -> Option<(i64, &[u8])> {
    let tag = *bytes.first()?;
    let (element, rest) = der_element(bytes, tag)?;
    let text = std::str::from_utf8(element.content).ok()?.strip_suffix('Z')?;
    let (year, rest_text) = match tag {
        0x17 if text.len() == 12 => {
            let yy: i32 = text[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        0x18 if text.len() == 14 => (text[..4].parse().ok()?, &text[4..]),
        _ => return None,
    };
    let num = |r: std::ops::Range<usize>| rest_text.get(r)?.parse::<u8>().ok();
    let month = time::Month::try_from(num(0..2)?).ok()?;
    let date = time::Date::from_calendar_date(year, month, num(2..4)?).ok()?;
    let clock = time::Time::from_hms(num(4..6)?, num(6..8)?, num(8..10)?).ok()?;
    Some((date.with_time(clock).assume_utc().unix_timestamp(), rest))
}

struct DerElement<'a> {
    whole: &'a [u8],
    content: &'a [u8],
}

/// One DER element with the expected tag: (element, what follows it).
fn der_element(bytes: &[u8], tag: u8) -> Option<(DerElement<'_>, &[u8])> {
    if *bytes.first()? != tag {
        return None;
    }
    let first = *bytes.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let len = bytes.get(2..2 + n)?.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    let whole = bytes.get(..end)?;
    Some((DerElement { whole, content: &whole[header..] }, &bytes[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_names_its_keys_node_id_and_renewal_keeps_it() {
        let ca = Ca::generate().expect("ca");
        let key = KeyPair::generate().expect("key");
        let first = pem_certs(&ca.issue_default(&key).expect("issue")).expect("pem");
        let second = pem_certs(&ca.issue_default(&key).expect("renew")).expect("pem");
        let id = node_id_of(&key.subject_public_key_info());
        for cert in [&first[0], &second[0]] {
            assert_eq!(spki_of(cert).map(node_id_of), Some(id));
        }
        assert_ne!(first[0], second[0], "a renewal is a new certificate");
    }

    /// The serial number of a DER certificate (the first field after the version).
    fn serial_of(cert_der: &[u8]) -> Vec<u8> {
        let (cert, _) = der_element(cert_der, 0x30).expect("certificate");
        let (tbs, _) = der_element(cert.content, 0x30).expect("tbs");
        let mut rest = tbs.content;
        if rest.first() == Some(&0xa0) {
            rest = der_element(rest, 0xa0).expect("version").1;
        }
        der_element(rest, 0x02).expect("serial").0.content.to_vec()
    }

    #[test]
    fn a_renewal_has_a_new_serial_and_a_request_is_signed_for_its_key_only() {
        let ca = Ca::generate().expect("ca");
        let key = KeyPair::generate().expect("key");
        let first = pem_certs(&ca.issue_default(&key).expect("issue")).expect("pem").remove(0);
        let second = pem_certs(&ca.issue_default(&key).expect("renew")).expect("pem").remove(0);
        assert_ne!(serial_of(&first), serial_of(&second), "a renewal has a new serial");
        let request = signing_request(&key).expect("csr");
        let (cert, node_id) = ca.sign_request(&request).expect("sign");
        assert_eq!(node_id, node_id_of(&key.subject_public_key_info()));
        let creds = Credentials::from_pem(&cert, &key, &ca.cert_pem).expect("creds");
        creds.verify_own().expect("chains to the CA and is for the key");
        let other = KeyPair::generate().expect("other key");
        let wrong = Credentials::from_pem(&cert, &other, &ca.cert_pem).expect("creds");
        assert!(wrong.verify_own().is_err(), "not for another key");
        let foreign = Ca::generate().expect("another CA");
        let stranger = Credentials::from_pem(&cert, &key, &foreign.cert_pem).expect("creds");
        assert!(stranger.verify_own().is_err(), "not for another CA");
        let mut tampered = request.clone().into_bytes();
        let at = tampered.len() / 2;
        tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
        assert!(ca.sign_request(&String::from_utf8_lossy(&tampered)).is_err(), "a damaged request");
        assert!(ca.sign_request(&"x".repeat(CSR_BYTES_MAX + 1)).is_err(), "an oversized one");
    }

    #[test]
    fn validity_reads_back_what_was_issued() {
        let ca = Ca::generate().expect("ca");
        let key = KeyPair::generate().expect("key");
        let at = |y, m, d, h| {
            let date = time::Date::from_calendar_date(y, m, d).expect("date");
            date.with_hms(h, 4, 5).expect("time").assume_utc()
        };
        let from = at(2026, time::Month::January, 2, 3);
        let to = at(2061, time::Month::June, 7, 8);
        let cert = pem_certs(&ca.issue(&key, from, to).expect("issue")).expect("pem").remove(0);
        assert_eq!(validity_of(&cert), Some((from.unix_timestamp(), to.unix_timestamp())));
    }

    #[test]
    fn der_walk_refuses_truncated_input() {
        let ca = Ca::generate().expect("ca");
        let der = pem_certs(&ca.cert_pem).expect("pem").remove(0);
        for cut in 0..der.len() {
            let _ = spki_of(&der[..cut]);
            let _ = validity_of(&der[..cut]);
        }
        assert!(spki_of(&der).is_some());
        assert!(spki_of(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_none());
    }
}
