//! Webhook signature helpers (HMAC over the exact body bytes, hex encoded).
//!
//! Verification compares in constant time. Strip any scheme prefix (`sha256=`) before
//! calling; hex digits may be upper or lower case.

use hmac::{Hmac, Mac};

pub(crate) type HmacSha256 = Hmac<sha2::Sha256>;
pub(crate) type HmacSha1 = Hmac<sha1::Sha1>;

/// An HMAC-SHA256 under `key`. HMAC takes keys of any length, so this cannot fail.
pub(crate) fn hmac_sha256(key: &[u8]) -> HmacSha256 {
    <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!())
}

/// An HMAC-SHA1 under `key`.
pub(crate) fn hmac_sha1(key: &[u8]) -> HmacSha1 {
    <HmacSha1 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!())
}

/// Lowercase hex HMAC-SHA256 of `body` under `secret`.
pub fn hmac_sha256_hex(secret: &[u8], body: &[u8]) -> String {
    let mut mac = hmac_sha256(secret);
    mac.update(body);
    to_hex(&mac.finalize().into_bytes())
}

/// Lowercase hex HMAC-SHA1 of `body` under `secret`.
pub fn hmac_sha1_hex(secret: &[u8], body: &[u8]) -> String {
    let mut mac = hmac_sha1(secret);
    mac.update(body);
    to_hex(&mac.finalize().into_bytes())
}

/// True when `signature_hex` is the HMAC-SHA256 of `body` under `secret`.
pub fn verify_hmac_sha256_hex(secret: &[u8], body: &[u8], signature_hex: &str) -> bool {
    let Some(expected) = from_hex(signature_hex.trim()) else {
        return false;
    };
    let mut mac = hmac_sha256(secret);
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// True when `signature_hex` is the HMAC-SHA1 of `body` under `secret`.
pub fn verify_hmac_sha1_hex(secret: &[u8], body: &[u8], signature_hex: &str) -> bool {
    let Some(expected) = from_hex(signature_hex.trim()) else {
        return false;
    };
    let mut mac = hmac_sha1(secret);
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// True when `given` equals `expected` (a shared token or password a platform sends back in
/// a header or query parameter), compared in constant time: both are hashed first, so
/// neither their content nor their length shows in the timing.
pub fn secret_eq(given: &[u8], expected: &[u8]) -> bool {
    const KEY: &[u8] = b"nanoclaw kit secret_eq";
    let mut theirs = hmac_sha256(KEY);
    theirs.update(given);
    let theirs = theirs.finalize().into_bytes();
    let mut ours = hmac_sha256(KEY);
    ours.update(expected);
    ours.verify_slice(&theirs).is_ok()
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

pub(crate) fn from_hex(s: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    if bytes.is_empty() || !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_exactly() {
        assert!(secret_eq(b"s3cret-pass", b"s3cret-pass"));
        assert!(!secret_eq(b"s3cret-pasS", b"s3cret-pass"));
        assert!(!secret_eq(b"s3cret", b"s3cret-pass"));
        assert!(!secret_eq(b"", b"s3cret-pass"));
        assert!(secret_eq(b"", b""));
    }

    // RFC 4231 test case 2 and RFC 2202 test case 2.
    const KEY: &[u8] = b"Jefe";
    const DATA: &[u8] = b"what do ya want for nothing?";
    const SHA256: &str = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
    const SHA1: &str = "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79";

    #[test]
    fn known_vectors() {
        assert_eq!(hmac_sha256_hex(KEY, DATA), SHA256);
        assert_eq!(hmac_sha1_hex(KEY, DATA), SHA1);
        assert!(verify_hmac_sha256_hex(KEY, DATA, SHA256));
        assert!(verify_hmac_sha256_hex(KEY, DATA, &SHA256.to_uppercase()));
        assert!(verify_hmac_sha1_hex(KEY, DATA, SHA1));
    }

    #[test]
    fn rejects_wrong_or_malformed_signatures() {
        assert!(!verify_hmac_sha256_hex(b"other", DATA, SHA256));
        assert!(!verify_hmac_sha256_hex(KEY, b"tampered", SHA256));
        assert!(!verify_hmac_sha256_hex(KEY, DATA, &SHA256[..62]));
        assert!(!verify_hmac_sha256_hex(KEY, DATA, ""));
        assert!(!verify_hmac_sha256_hex(KEY, DATA, "zz"));
        assert!(!verify_hmac_sha256_hex(KEY, DATA, &format!("{SHA256}00")));
        assert!(!verify_hmac_sha1_hex(KEY, DATA, SHA256));
    }
}
