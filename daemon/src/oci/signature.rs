//! Signatures of plugins, the way cosign stores them. A signature is a "simple signing" payload
//! (JSON that names the repository and the signed manifest digest) in a layer whose annotation
//! `dev.cosignproject.cosign/signature` holds the signature of the payload, base64. For manifest
//! `sha256:HEX` it is found
//! - at the tag `sha256-HEX.sig` (cosign's default, and what `dray plugin push --sign-key` writes),
//! - or as a referrer of the manifest (cosign's OCI 1.1 mode: a manifest of artifact type
//!   [`ARTIFACT_TYPE`] whose `subject` is the signed one), listed by the registry's referrers API
//!   or, where the registry has none, in the index at the fallback tag `sha256-HEX`.
//!
//! Keys are read and used by the `sigstore` crate's crypto (on OpenSSL, which git2 links
//! too): public keys as cosign writes them (`cosign.pub`: ECDSA P-256/384/521, RSA or
//! Ed25519 in SPKI PEM); private keys as cosign's password-encrypted `cosign.key` (the password
//! from `COSIGN_PASSWORD`, as cosign reads it) or unencrypted PKCS#8 PEM.

use base64::Engine as _;
use serde_json::{Value, json};
use sigstore::crypto::signing_key::{
    COSIGN_PRIVATE_KEY_PEM_LABEL, SIGSTORE_PRIVATE_KEY_PEM_LABEL, SigStoreKeyPair, SigStoreSigner,
    ecdsa::ECDSAKeys,
};
use sigstore::crypto::{CosignVerificationKey, Signature, SigningScheme};

/// The media type of a signature layer.
pub const MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The annotation that carries a layer's signature.
pub const ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The artifact type of a signature stored as a referrer (cosign's OCI 1.1 mode).
pub const ARTIFACT_TYPE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
/// The environment variable that holds the password of an encrypted key (cosign's own).
pub const PASSWORD_VARIABLE: &str = "COSIGN_PASSWORD";

/// The tag cosign keeps the signatures of manifest `digest` under.
pub fn tag(digest: &str) -> String {
    referrers_tag(digest) + ".sig"
}

/// The tag of the referrers index of manifest `digest` on a registry without a referrers API
/// (the OCI distribution spec's fallback).
pub fn referrers_tag(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

/// The payload that says "this repository's manifest `digest`".
pub fn payload(repository: &str, digest: &str) -> Vec<u8> {
    json!({
        "critical": {
            "identity": {"docker-reference": repository},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": null,
    })
    .to_string()
    .into_bytes()
}

/// A public key, read from PEM.
#[derive(Clone)]
pub struct PublicKey {
    /// Where it came from, for messages.
    pub name: String,
    key: std::sync::Arc<CosignVerificationKey>,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("name", &self.name)
            .finish()
    }
}

impl PublicKey {
    pub fn from_pem(name: &str, pem: &str) -> Result<PublicKey, String> {
        let key = CosignVerificationKey::try_from_pem(pem.trim().as_bytes()).map_err(|e| {
            format!(
                "{name} is not a public key in PEM as cosign writes it (cosign.pub: ECDSA, RSA or Ed25519): {e}"
            )
        })?;
        Ok(PublicKey {
            name: name.to_string(),
            key: std::sync::Arc::new(key),
        })
    }

    /// Whether `signature` (base64) is this key's signature of `payload`.
    pub fn verifies(&self, payload: &[u8], signature: &str) -> bool {
        self.key
            .verify_signature(
                Signature::Base64Encoded(signature.trim().as_bytes()),
                payload,
            )
            .is_ok()
    }
}

/// A private key to sign with.
pub struct SigningKey(SigStoreSigner);

impl SigningKey {
    /// Reads cosign's encrypted `cosign.key` (with `password`) or an unencrypted PKCS#8 PEM key.
    pub fn from_pem(pem: &str, password: Option<&str>) -> Result<SigningKey, String> {
        let encrypted = [COSIGN_PRIVATE_KEY_PEM_LABEL, SIGSTORE_PRIVATE_KEY_PEM_LABEL]
            .iter()
            .any(|label| pem.contains(&format!("BEGIN {label}")));
        let pair = if encrypted {
            let password = password.ok_or_else(|| {
                format!("the signing key is encrypted (as cosign writes cosign.key); give its password in {PASSWORD_VARIABLE}")
            })?;
            SigStoreKeyPair::from_encrypted_pem(pem.trim().as_bytes(), password.as_bytes())
                .map_err(|_| {
                    format!("cannot decrypt the signing key: is {PASSWORD_VARIABLE} its password?")
                })?
        } else {
            SigStoreKeyPair::from_pem(pem.trim().as_bytes()).map_err(|e| {
                format!("the signing key is neither cosign's cosign.key nor a PKCS#8 PEM private key: {e}")
            })?
        };
        let scheme = match &pair {
            SigStoreKeyPair::ECDSA(ECDSAKeys::P256(_)) => SigningScheme::ECDSA_P256_SHA256_ASN1,
            SigStoreKeyPair::ECDSA(ECDSAKeys::P384(_)) => SigningScheme::ECDSA_P384_SHA384_ASN1,
            SigStoreKeyPair::ECDSA(ECDSAKeys::P521(_)) => SigningScheme::ECDSA_P521_SHA512_ASN1,
            SigStoreKeyPair::ED25519(_) => SigningScheme::ED25519,
            SigStoreKeyPair::RSA(_) => {
                return Err(
                    "signing with an RSA key is not supported; use an ECDSA key (cosign generate-key-pair) or Ed25519".into(),
                );
            }
        };
        pair.to_sigstore_signer(&scheme)
            .map(SigningKey)
            .map_err(|e| format!("cannot sign with this key: {e}"))
    }

    /// The base64 signature of `payload`.
    pub fn sign(&self, payload: &[u8]) -> Result<String, String> {
        let signature = self
            .0
            .sign(payload)
            .map_err(|e| format!("cannot sign: {e}"))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(signature))
    }

    /// The public key, in PEM.
    pub fn public_pem(&self) -> Result<String, String> {
        self.0
            .to_sigstore_keypair()
            .and_then(|pair| pair.public_key_to_pem())
            .map_err(|e| e.to_string())
    }
}

/// A new ECDSA P-256 key pair as cosign makes one: (the private key encrypted with `password`,
/// as `cosign.key`; the public key, as `cosign.pub`).
pub fn generate(password: &str) -> Result<(String, String), String> {
    use sigstore::crypto::signing_key::ecdsa::EllipticCurve;
    let pair = SigStoreKeyPair::ECDSA(
        ECDSAKeys::new(EllipticCurve::P256).map_err(|e| format!("cannot make a key: {e}"))?,
    );
    let private = pair
        .private_key_to_encrypted_pem(password.as_bytes())
        .map_err(|e| format!("cannot encrypt the key: {e}"))?;
    let public = pair.public_key_to_pem().map_err(|e| e.to_string())?;
    Ok((private.to_string(), public))
}

/// Whether `payload` is a simple-signing payload for manifest `digest`.
pub fn names(payload: &[u8], digest: &str) -> bool {
    serde_json::from_slice::<Value>(payload).is_ok_and(|p| {
        p["critical"]["image"]["docker-manifest-digest"] == digest
            && p["critical"]["type"] == "cosign container image signature"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(encrypted_with: Option<&str>) -> (String, PublicKey) {
        let pair = SigStoreKeyPair::ECDSA(
            ECDSAKeys::new(sigstore::crypto::signing_key::ecdsa::EllipticCurve::P256)
                .expect("a key"),
        );
        let private = match encrypted_with {
            Some(password) => pair.private_key_to_encrypted_pem(password.as_bytes()),
            None => pair.private_key_to_pem(),
        }
        .expect("pem")
        .to_string();
        let public = pair.public_key_to_pem().expect("pem");
        (
            private,
            PublicKey::from_pem("test.pub", &public).expect("a key"),
        )
    }

    #[test]
    fn a_signature_verifies_with_its_key_only() {
        let (private, public) = pair(None);
        let (_, other) = pair(None);
        let digest = format!("sha256:{}", "a".repeat(64));
        let payload = payload("127.0.0.1:5000/steps/render", &digest);
        let key = SigningKey::from_pem(&private, None).expect("a key");
        let signature = key.sign(&payload).expect("signed");
        assert!(public.verifies(&payload, &signature));
        assert!(!other.verifies(&payload, &signature), "another key");
        let mut changed = payload.clone();
        changed[10] ^= 1;
        assert!(!public.verifies(&changed, &signature), "another payload");
        assert!(!public.verifies(&payload, "not base64!"));
        assert!(names(&payload, &digest));
        assert!(!names(&payload, &format!("sha256:{}", "b".repeat(64))));
        assert_eq!(tag(&digest), format!("sha256-{}.sig", "a".repeat(64)));
        assert_eq!(referrers_tag(&digest), format!("sha256-{}", "a".repeat(64)));
    }

    #[test]
    fn an_encrypted_key_needs_its_password() {
        let (private, public) = pair(Some("hunter2"));
        assert!(private.contains("ENCRYPTED"), "{private}");
        let e = SigningKey::from_pem(&private, None)
            .err()
            .expect("no password");
        assert!(e.contains(PASSWORD_VARIABLE), "{e}");
        let e = SigningKey::from_pem(&private, Some("wrong"))
            .err()
            .expect("wrong password");
        assert!(e.contains("decrypt") && !e.contains("hunter2"), "{e}");
        let key = SigningKey::from_pem(&private, Some("hunter2")).expect("decrypted");
        let signed = key.sign(b"payload").expect("signed");
        assert!(public.verifies(b"payload", &signed));
        assert!(
            PublicKey::from_pem("again", &key.public_pem().expect("pem"))
                .expect("a key")
                .verifies(b"payload", &signed)
        );
    }

    #[test]
    fn what_is_not_a_key_is_refused_with_what_to_use() {
        let e = PublicKey::from_pem(
            "k.pub",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
        )
        .unwrap_err();
        assert!(e.contains("k.pub") && e.contains("cosign"), "{e}");
        assert!(SigningKey::from_pem("nope", None).is_err());
    }
}
