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

/// Why a token may not be revoked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevokeRefused {
    #[error(
        "{name:?} is the last active admin token: revoking it would lock every admin out \
         until a restart. Create another admin token first (testfarm token create --role \
         admin), or replace the server's admin.token file and restart the server"
    )]
    LastAdmin { name: String },
}

/// The rule for revoking: anything may go except the last active admin token, since no
/// one could then manage tokens until the server is restarted with a new `admin.token`.
/// `active_admins` counts the active admin tokens, this one included.
pub fn check_revoke(
    name: &str,
    role: crate::Role,
    already_revoked: bool,
    active_admins: usize,
) -> Result<(), RevokeRefused> {
    if role == crate::Role::Admin && !already_revoked && active_admins <= 1 {
        return Err(RevokeRefused::LastAdmin {
            name: name.to_string(),
        });
    }
    Ok(())
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

    #[test]
    fn the_last_active_admin_stays() {
        use crate::Role;
        assert!(check_revoke("admin", Role::Admin, false, 1).is_err());
        assert!(check_revoke("admin", Role::Admin, false, 2).is_ok());
        // Revoking again what is already revoked changes nothing, and other roles go freely.
        assert!(check_revoke("admin", Role::Admin, true, 0).is_ok());
        assert!(check_revoke("ci", Role::User, false, 1).is_ok());
        let msg = check_revoke("admin", Role::Admin, false, 1)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("admin.token") && msg.contains("--role admin"),
            "{msg}"
        );
    }
}
