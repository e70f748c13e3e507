//! Signatures of plugins, the way cosign stores them: for a manifest `sha256:HEX`, the same
//! repository holds a tag `sha256-HEX.sig` whose manifest has one layer per signature. A layer is
//! a "simple signing" payload (JSON that names the repository and the signed manifest digest)
//! with the signature in its annotation `dev.cosignproject.cosign/signature`: ECDSA P-256 over
//! SHA-256 of the payload, DER-encoded, base64.
//!
//! Keys are PEM files: public keys as cosign writes them (`cosign.pub`, SPKI), private keys for
//! `dray plugin push --sign-key` unencrypted PKCS#8 (`openssl genpkey -algorithm EC -pkeyopt
//! ec_paramgen_curve:P-256`); cosign's password-encrypted `cosign.key` is not read yet.

use base64::Engine as _;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{DerSignature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey};
use serde_json::{Value, json};

/// The media type of a signature layer.
pub const MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The annotation that carries a layer's signature.
pub const ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// The tag cosign keeps the signatures of manifest `digest` under.
pub fn tag(digest: &str) -> String {
    digest.replacen(':', "-", 1) + ".sig"
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
#[derive(Clone, Debug)]
pub struct PublicKey {
    /// Where it came from, for messages.
    pub name: String,
    key: VerifyingKey,
}

impl PublicKey {
    pub fn from_pem(name: &str, pem: &str) -> Result<PublicKey, String> {
        let key = VerifyingKey::from_public_key_pem(pem.trim()).map_err(|e| {
            format!("{name} is not an ECDSA P-256 public key in PEM (as `cosign generate-key-pair` writes cosign.pub): {e}")
        })?;
        Ok(PublicKey {
            name: name.to_string(),
            key,
        })
    }

    /// Whether `signature` (base64 DER) is this key's signature of `payload`.
    pub fn verifies(&self, payload: &[u8], signature: &str) -> bool {
        let Ok(der) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
            return false;
        };
        let Ok(signature) = DerSignature::from_bytes(&der) else {
            return false;
        };
        self.key.verify(payload, &signature).is_ok()
    }
}

/// Signs `payload` with a PKCS#8 PEM private key; the base64 DER signature.
pub fn sign(private_pem: &str, payload: &[u8]) -> Result<String, String> {
    let key = SigningKey::from_pkcs8_pem(private_pem.trim()).map_err(|e| {
        format!("the signing key is not an unencrypted PKCS#8 ECDSA P-256 key in PEM: {e}")
    })?;
    let signature: DerSignature = key.sign(payload);
    Ok(base64::engine::general_purpose::STANDARD.encode(signature.as_bytes()))
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
    use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};

    fn pair(seed: u8) -> (String, PublicKey) {
        let key = SigningKey::from_slice(&[seed; 32]).expect("a scalar");
        let private = key.to_pkcs8_pem(LineEnding::LF).expect("pem").to_string();
        let public = key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("pem");
        (
            private,
            PublicKey::from_pem("test.pub", &public).expect("a key"),
        )
    }

    #[test]
    fn a_signature_verifies_with_its_key_only() {
        let (private, public) = pair(1);
        let (_, other) = pair(2);
        let digest = format!("sha256:{}", "a".repeat(64));
        let payload = payload("127.0.0.1:5000/steps/render", &digest);
        let signature = sign(&private, &payload).expect("signed");
        assert!(public.verifies(&payload, &signature));
        assert!(!other.verifies(&payload, &signature), "another key");
        let mut changed = payload.clone();
        changed[10] ^= 1;
        assert!(!public.verifies(&changed, &signature), "another payload");
        assert!(!public.verifies(&payload, "not base64!"));
        assert!(names(&payload, &digest));
        assert!(!names(&payload, &format!("sha256:{}", "b".repeat(64))));
        assert_eq!(tag(&digest), format!("sha256-{}.sig", "a".repeat(64)));
    }

    #[test]
    fn keys_that_are_not_p256_are_refused_with_what_to_use() {
        let e = PublicKey::from_pem(
            "k.pub",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
        )
        .unwrap_err();
        assert!(e.contains("k.pub") && e.contains("P-256"), "{e}");
        assert!(sign("nope", b"x").is_err());
    }
}
