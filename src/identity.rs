//! The node's key and the node id derived from it: the first 16 bytes of SHA-256 over the
//! key's SubjectPublicKeyInfo (SPEC 2), so renewing a certificate with the same key keeps the id.

use std::fmt;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The key file inside a data directory (PKCS#8 PEM, mode 0600).
pub const NODE_KEY_FILE: &str = "node.key";

/// The identity of a node's key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub [u8; 16]);

impl NodeId {
    /// The id of a SubjectPublicKeyInfo (DER).
    pub fn from_spki(spki_der: &[u8]) -> NodeId {
        let hash = Sha256::digest(spki_der);
        let mut id = [0u8; 16];
        id.copy_from_slice(&hash[..16]);
        NodeId(id)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

/// Loads the node key from `dir`, creating it (ECDSA P-256) on first use.
pub fn load_or_create(dir: &Path) -> Result<(rcgen::KeyPair, NodeId)> {
    let path = dir.join(NODE_KEY_FILE);
    let key = match std::fs::read_to_string(&path) {
        Ok(pem) => rcgen::KeyPair::from_pem(&pem)
            .map_err(|e| Error::Identity(format!("{}: not a usable key: {e}", path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(&path)?,
        Err(e) => return Err(Error::io(&path, e)),
    };
    let id = NodeId::from_spki(&rcgen::PublicKeyData::subject_public_key_info(&key));
    Ok((key, id))
}

/// The signer that seals this node's ops, from its key (ECDSA P-256 only).
pub fn signer(key: &rcgen::KeyPair) -> Result<feral_types::Signer> {
    let spki = rcgen::PublicKeyData::subject_public_key_info(key);
    feral_types::Signer::from_pkcs8(&key.serialize_der(), &spki)
        .map_err(|e| Error::Identity(format!("the node key cannot sign ops: {e}")))
}

fn create(path: &Path) -> Result<rcgen::KeyPair> {
    let key = rcgen::KeyPair::generate()
        .map_err(|e| Error::Identity(format!("generating the node key: {e}")))?;
    feral_log::private::write_atomic(path, key.serialize_pem().as_bytes())
        .map_err(|e| Error::io(path, e))?;
    Ok(key)
}
