//! Signed bearer tokens for fakes of platforms that authenticate their webhooks with an
//! RS256 JWT (Microsoft Bot Framework, Google Chat): two fixed 2048-bit test keys (never
//! used anywhere but tests), their JWKS entries, and signing.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

/// An RSA test key: signs tokens, and is published in a JWKS under `kid`.
pub struct TestKey {
    kid: String,
    pair: ring::signature::RsaKeyPair,
    n: &'static str,
}

impl std::fmt::Debug for TestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestKey").field("kid", &self.kid).finish()
    }
}

/// The PKCS#8 DER inside a `-----BEGIN PRIVATE KEY-----` PEM.
pub fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----"))
        .collect();
    STANDARD.decode(body).ok()
}

impl TestKey {
    /// The platform's signing key (published in the fake's JWKS).
    pub fn a(kid: &str) -> Self {
        Self::new(
            kid,
            include_str!("../keys/test-key-a.pem"),
            include_str!("../keys/test-key-a.n"),
        )
    }

    /// Another key: an attacker's, or one the platform has not published.
    pub fn b(kid: &str) -> Self {
        Self::new(
            kid,
            include_str!("../keys/test-key-b.pem"),
            include_str!("../keys/test-key-b.n"),
        )
    }

    fn new(kid: &str, pem: &'static str, n: &'static str) -> Self {
        let der = pem_to_der(pem).expect("test key PEM");
        let pair = ring::signature::RsaKeyPair::from_pkcs8(&der).expect("test key");
        Self {
            kid: kid.to_owned(),
            pair,
            n: n.trim(),
        }
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The PEM of the private key (what a service account's `private_key` holds).
    pub fn pem(which: char) -> &'static str {
        if which == 'b' {
            include_str!("../keys/test-key-b.pem")
        } else {
            include_str!("../keys/test-key-a.pem")
        }
    }

    /// The key's JWKS entry.
    pub fn jwk(&self) -> Value {
        json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid, "n": self.n, "e": "AQAB"})
    }

    /// A JWKS holding `keys`.
    pub fn jwks(keys: &[&TestKey]) -> Value {
        json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()})
    }

    /// `claims` signed with RS256 under this key's `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(
            &json!({"alg": "RS256", "typ": "JWT", "kid": self.kid}),
            claims,
        )
    }

    /// `claims` signed with RS256 under any header (to test what a verifier refuses).
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0; self.pair.public().modulus_len()];
        self.pair
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .expect("sign");
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

/// Verifies an RS256 token signed by `key` and returns its claims (for fakes that receive
/// tokens, e.g. a service account's JWT-bearer assertion). Checks only the signature.
pub fn verify_rs256(public_key_der: &[u8], token: &str) -> Option<Value> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let signature = URL_SAFE_NO_PAD.decode(s).ok()?;
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        public_key_der,
    )
    .verify(format!("{h}.{p}").as_bytes(), &signature)
    .ok()?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).ok()?).ok()
}

impl TestKey {
    /// The public key as DER `RSAPublicKey` (for [`verify_rs256`]).
    pub fn public_der(&self) -> Vec<u8> {
        use ring::signature::KeyPair as _;
        self.pair.public_key().as_ref().to_vec()
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
