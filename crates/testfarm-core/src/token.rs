//! API token format and verification.
//!
//! A token reads `tf_<id>_<secret>`: the id is public and indexes the stored row, the
//! secret is 256 random bits of which only the SHA-256 is stored. A salted slow hash
//! (argon2) is for low-entropy passwords; for 256 random bits SHA-256 is already
//! preimage-proof, and verification stays fast on every request. The comparison is
//! constant-time so response timing says nothing about the stored hash.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A parsed token, before verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenParts<'a> {
    pub id: &'a str,
    pub secret: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed token: expected tf_<id>_<secret>")]
pub struct MalformedToken;

/// Builds a token string from an id and 32 random bytes supplied by the caller (the core
/// does no I/O, randomness included).
pub fn format(id: &str, random: &[u8; 32]) -> String {
    let mut secret = String::with_capacity(64);
    for b in random {
        secret.push_str(&std::format!("{b:02x}"));
    }
    std::format!("tf_{id}_{secret}")
}

/// Splits a presented token into id and secret.
pub fn parse(token: &str) -> Result<TokenParts<'_>, MalformedToken> {
    let rest = token.trim().strip_prefix("tf_").ok_or(MalformedToken)?;
    let (id, secret) = rest.split_once('_').ok_or(MalformedToken)?;
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.chars().all(|c| c.is_ascii_alphanumeric())
        && secret.len() == 64
        && secret.chars().all(|c| c.is_ascii_hexdigit());
    if ok {
        Ok(TokenParts { id, secret })
    } else {
        Err(MalformedToken)
    }
}

/// The stored form of a secret.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Constant-time check of a presented secret against a stored hash.
pub fn verify(secret: &str, stored: &[u8]) -> bool {
    let presented = hash_secret(secret);
    stored.len() == presented.len() && bool::from(presented.ct_eq(stored))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_verify() {
        let t = format("01abc", &[7u8; 32]);
        let p = parse(&t).unwrap();
        assert_eq!(p.id, "01abc");
        let h = hash_secret(p.secret);
        assert!(verify(p.secret, &h));
        assert!(!verify(&"0".repeat(64), &h));
        assert!(!verify(p.secret, &h[..31]));
    }

    #[test]
    fn malformed() {
        for bad in ["", "tf_", "tf_x", "tf_x_short", "xx_a_0000", "tf__aaaa"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
