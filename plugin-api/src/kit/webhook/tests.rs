//! Verifier tests: the platforms' published examples where they publish one (Slack, Svix,
//! RFC 8032), keys generated here otherwise, and a JWKS served on 127.0.0.1.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use abi_stable::std_types::Tuple2;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use serde_json::json;

use super::*;
use crate::kit::{hmac_sha1_hex, hmac_sha256_hex};

fn at(unix: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(unix)
}

fn request(headers: &[(&str, &str)], body: &[u8]) -> WebhookRequest {
    WebhookRequest {
        method: "POST".into(),
        headers: headers
            .iter()
            .map(|(k, v)| Tuple2((*k).into(), (*v).into()))
            .collect(),
        body: body.to_vec().into(),
        ..Default::default()
    }
}

// Slack's worked example ("Verifying requests from Slack").
const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const SLACK_TIMESTAMP: &str = "1531420618";
const SLACK_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
const SLACK_SIGNATURE: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

#[test]
fn slack_documented_example_and_replay_window() {
    let slack = SlackVerifier::new(Secret::new(SLACK_SECRET));
    let now = at(1_531_420_618);
    let body = SLACK_BODY.as_bytes();
    assert_eq!(
        slack.verify_at(SLACK_TIMESTAMP, SLACK_SIGNATURE, body, now),
        Ok(())
    );
    assert_eq!(
        slack.verify_at(SLACK_TIMESTAMP, SLACK_SIGNATURE, b"token=forged", now),
        Err(VerifyError::BadSignature)
    );
    assert_eq!(
        slack.verify_at("1531420619", SLACK_SIGNATURE, body, now),
        Err(VerifyError::BadSignature),
        "the timestamp is signed"
    );
    // Four minutes late is fine, six is a replay.
    assert_eq!(
        slack.verify_at(
            SLACK_TIMESTAMP,
            SLACK_SIGNATURE,
            body,
            at(1_531_420_618 + 240)
        ),
        Ok(())
    );
    assert!(matches!(
        slack.verify_at(
            SLACK_TIMESTAMP,
            SLACK_SIGNATURE,
            body,
            at(1_531_420_618 + 360)
        ),
        Err(VerifyError::OutsideWindow {
            age_secs: -360,
            window_secs: 300
        })
    ));
    assert!(matches!(
        slack.verify_at(SLACK_TIMESTAMP, "a2114d57", body, now),
        Err(VerifyError::Malformed(_))
    ));
    // Through a request: headers found case-insensitively; today is far outside the window.
    let req = request(
        &[
            ("X-Slack-Request-Timestamp", SLACK_TIMESTAMP),
            ("X-Slack-Signature", SLACK_SIGNATURE),
        ],
        body,
    );
    assert!(matches!(
        slack.verify(&req),
        Err(VerifyError::OutsideWindow { .. })
    ));
    assert_eq!(
        slack.verify(&request(&[], body)),
        Err(VerifyError::MissingHeader("x-slack-request-timestamp"))
    );
    assert_eq!(VerifyError::BadSignature.response().status, 401);
}

// Svix's documented example ("Verifying webhooks with the Svix libraries").
const SVIX_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SVIX_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const SVIX_TIMESTAMP: &str = "1614265330";
const SVIX_BODY: &str = r#"{"test": 2432232314}"#;
const SVIX_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

#[test]
fn svix_documented_example_rotation_and_window() {
    let svix = SvixVerifier::new(&Secret::new(SVIX_SECRET)).expect("secret");
    let now = at(1_614_265_330);
    let body = SVIX_BODY.as_bytes();
    assert_eq!(
        svix.verify_at(SVIX_ID, SVIX_TIMESTAMP, SVIX_SIGNATURE, body, now),
        Ok(())
    );
    // During a key rotation several entries are sent; any one may match.
    let rotated = format!("v1,bm90IHRoaXMgb25l {SVIX_SIGNATURE} v1a,ignored");
    assert_eq!(
        svix.verify_at(SVIX_ID, SVIX_TIMESTAMP, &rotated, body, now),
        Ok(())
    );
    assert_eq!(
        svix.verify_at("msg_other", SVIX_TIMESTAMP, SVIX_SIGNATURE, body, now),
        Err(VerifyError::BadSignature)
    );
    assert_eq!(
        svix.verify_at(SVIX_ID, SVIX_TIMESTAMP, "v1,bm90IHRoaXMgb25l", body, now),
        Err(VerifyError::BadSignature)
    );
    assert!(matches!(
        svix.verify_at(
            SVIX_ID,
            SVIX_TIMESTAMP,
            SVIX_SIGNATURE,
            body,
            at(1_614_265_330 + 600)
        ),
        Err(VerifyError::OutsideWindow { .. })
    ));
    // The prefix is optional; a key that is not base64 is refused at construction.
    assert!(SvixVerifier::new(&Secret::new("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")).is_ok());
    assert!(matches!(
        SvixVerifier::new(&Secret::new("whsec_not base64!")),
        Err(VerifyError::Malformed(_))
    ));
    assert!(!format!("{svix:?}").contains("MfKQ"));
    // Headers: `svix-*`, or the white-labelled `webhook-*`.
    let req = request(
        &[
            ("webhook-id", SVIX_ID),
            ("webhook-timestamp", SVIX_TIMESTAMP),
            ("webhook-signature", SVIX_SIGNATURE),
        ],
        body,
    );
    assert!(matches!(
        svix.verify(&req),
        Err(VerifyError::OutsideWindow { .. })
    ));
    assert_eq!(
        svix.verify(&request(&[], body)),
        Err(VerifyError::MissingHeader("svix-id"))
    );
}

/// RFC 8032, section 7.1, tests 1–3: (secret key, public key, message, signature).
const RFC8032: [(&str, &str, &str, &str); 3] = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
];

#[test]
fn ed25519_rfc8032_vectors() {
    for (secret, public, message, signature) in RFC8032 {
        let message = from_hex(message).unwrap_or_default();
        let verifier = Ed25519Verifier::from_hex(public).expect("public key");
        assert_eq!(verifier.verify_message(&message, signature), Ok(()));
        // The vector is self-consistent: its secret key makes that public key and signature.
        let pair = Ed25519KeyPair::from_seed_and_public_key(
            &from_hex(secret).expect("hex"),
            &from_hex(public).expect("hex"),
        )
        .expect("key pair");
        assert_eq!(
            super::super::signature::to_hex(pair.sign(&message).as_ref()),
            signature
        );
        let mut tampered = message.clone();
        tampered.push(0);
        assert_eq!(
            verifier.verify_message(&tampered, signature),
            Err(VerifyError::BadSignature)
        );
    }
    assert!(Ed25519Verifier::from_hex("abcd").is_err());
    let verifier = Ed25519Verifier::from_hex(RFC8032[0].1).expect("key");
    assert!(matches!(
        verifier.verify_message(b"", "00ff"),
        Err(VerifyError::Malformed(_))
    ));
}

#[test]
fn discord_interactions_sign_timestamp_and_body() {
    let rng = SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("generate");
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("pair");
    let public = super::super::signature::to_hex(pair.public_key().as_ref());
    let timestamp = unix_now(SystemTime::now()).to_string();
    let body = br#"{"type":1}"#;
    let mut message = timestamp.clone().into_bytes();
    message.extend_from_slice(body);
    let signature = super::super::signature::to_hex(pair.sign(&message).as_ref());
    let verifier = Ed25519Verifier::from_hex(&public).expect("key");
    let req = request(
        &[
            ("X-Signature-Ed25519", &signature),
            ("X-Signature-Timestamp", &timestamp),
        ],
        body,
    );
    assert_eq!(verifier.verify(&req), Ok(()));
    let forged = request(
        &[
            ("X-Signature-Ed25519", &signature),
            ("X-Signature-Timestamp", &timestamp),
        ],
        br#"{"type":2}"#,
    );
    assert_eq!(verifier.verify(&forged), Err(VerifyError::BadSignature));
    // A replay of an old, correctly signed request.
    let old = "1000000000";
    let mut message = old.as_bytes().to_vec();
    message.extend_from_slice(body);
    let old_signature = super::super::signature::to_hex(pair.sign(&message).as_ref());
    assert!(matches!(
        verifier.verify_at(old, body, &old_signature, SystemTime::now()),
        Err(VerifyError::OutsideWindow { .. })
    ));
    assert_eq!(
        verifier
            .clone()
            .window(None)
            .verify_at(old, body, &old_signature, SystemTime::now()),
        Ok(())
    );
}

#[test]
fn hub_and_spark_hmac_headers() {
    let secret = Secret::new("app-secret");
    let body = br#"{"object":"whatsapp_business_account"}"#;
    let good = format!("sha256={}", hmac_sha256_hex(b"app-secret", body));
    assert_eq!(
        verify_hub_signature_256(&secret, &request(&[("X-Hub-Signature-256", &good)], body)),
        Ok(())
    );
    let bare = hmac_sha256_hex(b"app-secret", body);
    assert!(matches!(
        verify_hub_signature_256(&secret, &request(&[("X-Hub-Signature-256", &bare)], body)),
        Err(VerifyError::Malformed(_))
    ));
    assert_eq!(
        verify_hub_signature_256(
            &Secret::new("other"),
            &request(&[("X-Hub-Signature-256", &good)], body)
        ),
        Err(VerifyError::BadSignature)
    );
    assert_eq!(
        verify_hub_signature_256(&secret, &request(&[], body)),
        Err(VerifyError::MissingHeader("x-hub-signature-256"))
    );

    let spark = hmac_sha1_hex(b"webex-secret", body);
    let webex = Secret::new("webex-secret");
    assert_eq!(
        verify_spark_signature(&webex, &request(&[("X-Spark-Signature", &spark)], body)),
        Ok(())
    );
    assert_eq!(
        verify_spark_signature(&webex, &request(&[("X-Spark-Signature", &spark)], b"{}")),
        Err(VerifyError::BadSignature)
    );
}

// ---------------------------------------------------------------------------------------------
// JWT against a JWKS on 127.0.0.1
// ---------------------------------------------------------------------------------------------

/// A key made for this test run.
struct TestKey {
    kid: String,
    pair: RsaKeyPair,
    n: Vec<u8>,
    e: Vec<u8>,
}

impl TestKey {
    fn generate(kid: &str) -> Self {
        use rsa::pkcs8::EncodePrivateKey as _;
        use rsa::traits::PublicKeyParts as _;
        let mut rng = rsa::rand_core::OsRng;
        let private = rsa::RsaPrivateKey::new(&mut rng, 2048).expect("generate an RSA key");
        let der = private.to_pkcs8_der().expect("pkcs8");
        Self {
            kid: kid.to_owned(),
            pair: RsaKeyPair::from_pkcs8(der.as_bytes()).expect("ring reads it"),
            n: private.n().to_bytes_be(),
            e: private.e().to_bytes_be(),
        }
    }

    fn jwk(&self) -> Value {
        json!({
            "kty": "RSA", "use": "sig", "kid": self.kid, "alg": "RS256",
            "n": URL_SAFE_NO_PAD.encode(&self.n),
            "e": URL_SAFE_NO_PAD.encode(&self.e),
        })
    }

    fn sign(&self, header: &Value, claims: &Value) -> String {
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0; self.pair.public().modulus_len()];
        self.pair
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signed.as_bytes(),
                &mut signature,
            )
            .expect("sign");
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    fn token(&self, claims: &Value) -> String {
        self.sign(
            &json!({"alg": "RS256", "typ": "JWT", "kid": self.kid}),
            claims,
        )
    }
}

/// Serves an OpenID configuration and a (changeable) JWKS on 127.0.0.1; counts JWKS fetches.
struct KeyServer {
    base: String,
    jwks: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
}

impl KeyServer {
    fn start(jwks: Value) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let jwks = Arc::new(Mutex::new(jwks.to_string()));
        let fetches = Arc::new(AtomicUsize::new(0));
        let config =
            json!({"issuer": "https://api.botframework.com", "jwks_uri": format!("{base}/keys")})
                .to_string();
        let (served, counter) = (Arc::clone(&jwks), Arc::clone(&fetches));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut line = String::new();
                let mut reader = BufReader::new(&stream);
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                // Skip the headers.
                let mut header = String::new();
                while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                    header.clear();
                }
                let body = if line.contains("/.well-known/openidconfiguration") {
                    config.clone()
                } else if line.contains("/keys") {
                    counter.fetch_add(1, Ordering::SeqCst);
                    served.lock().expect("jwks").clone()
                } else {
                    String::new()
                };
                let status = if body.is_empty() {
                    "404 Not Found"
                } else {
                    "200 OK"
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self {
            base,
            jwks,
            fetches,
        }
    }

    fn set_keys(&self, keys: &[&TestKey]) {
        let jwks = json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()});
        *self.jwks.lock().expect("jwks") = jwks.to_string();
    }
}

const ISSUER: &str = "https://api.botframework.com";
const APP_ID: &str = "5e3b7c1a-0000-4000-8000-000000000001";

fn claims(exp_from_now: i64) -> Value {
    let now = unix_now(SystemTime::now());
    json!({"iss": ISSUER, "aud": APP_ID, "exp": now + exp_from_now, "nbf": now - 10, "serviceurl": "https://smba.trafficmanager.net/emea/"})
}

#[test]
fn jwt_rs256_against_a_fetched_and_cached_jwks() {
    let first = TestKey::generate("key-1");
    let second = TestKey::generate("key-2");
    let server = KeyServer::start(json!({"keys": [first.jwk(), {"kty": "EC", "kid": "ec"}]}));
    let rt = crate::kit::runtime("jwt-test", 1).expect("runtime");
    rt.block_on(async {
        let client = crate::kit::http::ClientConfig::new("test", "1")
            .build()
            .expect("client");
        let verifier = JwtVerifier::new(
            client,
            KeySource::OpenIdConfiguration(format!(
                "{}/.well-known/openidconfiguration",
                server.base
            )),
            ISSUER,
            APP_ID,
        )
        .leeway(Duration::from_secs(60))
        .min_refresh(Duration::ZERO);

        // A good token, from the Authorization header; the claims come back.
        let token = first.token(&claims(3600));
        let req = request(&[("Authorization", &format!("Bearer {token}"))], b"{}");
        let got = verifier.verify_request(&req).await.expect("valid");
        assert_eq!(got["aud"], APP_ID);
        // Cached: a second token does not fetch again.
        verifier
            .verify(&first.token(&claims(1800)))
            .await
            .expect("valid");
        assert_eq!(server.fetches.load(Ordering::SeqCst), 1);

        // Claims: audience, issuer, expiry beyond the leeway; within it is fine.
        let mut wrong_aud = claims(3600);
        wrong_aud["aud"] = json!("someone-else");
        assert!(matches!(
            verifier.verify(&first.token(&wrong_aud)).await,
            Err(VerifyError::Claims(_))
        ));
        let mut listed_aud = claims(3600);
        listed_aud["aud"] = json!(["other", APP_ID]);
        assert!(verifier.verify(&first.token(&listed_aud)).await.is_ok());
        let mut wrong_iss = claims(3600);
        wrong_iss["iss"] = json!("https://evil.example");
        assert!(matches!(
            verifier.verify(&first.token(&wrong_iss)).await,
            Err(VerifyError::Claims(_))
        ));
        assert!(matches!(
            verifier.verify(&first.token(&claims(-120))).await,
            Err(VerifyError::Claims(_))
        ));
        assert!(
            verifier.verify(&first.token(&claims(-30))).await.is_ok(),
            "within the leeway"
        );
        let mut no_exp = claims(3600);
        no_exp.as_object_mut().expect("object").remove("exp");
        assert!(matches!(
            verifier.verify(&first.token(&no_exp)).await,
            Err(VerifyError::Claims(_))
        ));

        // Signature: a changed payload, another key under a known kid, other algorithms.
        let token = first.token(&claims(3600));
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged_claims = URL_SAFE_NO_PAD.encode({
            let mut c = claims(3600);
            c["aud"] = json!(APP_ID);
            c["admin"] = json!(true);
            c.to_string()
        });
        parts[1] = &forged_claims;
        assert_eq!(
            verifier.verify(&parts.join(".")).await,
            Err(VerifyError::BadSignature)
        );
        let impostor = second.sign(&json!({"alg": "RS256", "kid": "key-1"}), &claims(3600));
        assert_eq!(
            verifier.verify(&impostor).await,
            Err(VerifyError::BadSignature)
        );
        for alg in ["none", "HS256", "RS512"] {
            let other = first.sign(&json!({"alg": alg, "kid": "key-1"}), &claims(3600));
            assert!(
                matches!(
                    verifier.verify(&other).await,
                    Err(VerifyError::Malformed(_))
                ),
                "{alg}"
            );
        }
        assert!(matches!(
            verifier.verify("a.b").await,
            Err(VerifyError::Malformed(_))
        ));

        // Rotation: a token with a new kid makes the verifier fetch the keys again.
        let fetches = server.fetches.load(Ordering::SeqCst);
        assert_eq!(
            verifier.verify(&second.token(&claims(3600))).await,
            Err(VerifyError::UnknownKey("key-2".into()))
        );
        assert_eq!(server.fetches.load(Ordering::SeqCst), fetches + 1);
        server.set_keys(&[&first, &second]);
        verifier
            .verify(&second.token(&claims(3600)))
            .await
            .expect("rotated in");
        assert_eq!(server.fetches.load(Ordering::SeqCst), fetches + 2);
    });
}

#[test]
fn jwt_keys_expire_and_unknown_kids_are_rate_limited() {
    let key = TestKey::generate("only");
    let server = KeyServer::start(json!({"keys": [key.jwk()]}));
    let rt = crate::kit::runtime("jwt-test", 1).expect("runtime");
    rt.block_on(async {
        let client = crate::kit::http::ClientConfig::new("test", "1")
            .build()
            .expect("client");
        // Google Chat style: the JWKS URL directly.
        let verifier = JwtVerifier::new(
            client.clone(),
            KeySource::Jwks(format!("{}/keys", server.base)),
            ISSUER,
            APP_ID,
        )
        .max_age(Duration::ZERO);
        verifier
            .verify(&key.token(&claims(60)))
            .await
            .expect("valid");
        verifier
            .verify(&key.token(&claims(60)))
            .await
            .expect("valid");
        assert_eq!(
            server.fetches.load(Ordering::SeqCst),
            2,
            "max_age 0: fetched each time"
        );

        let limited = JwtVerifier::new(
            client.clone(),
            KeySource::Jwks(format!("{}/keys", server.base)),
            ISSUER,
            APP_ID,
        );
        let before = server.fetches.load(Ordering::SeqCst);
        limited
            .verify(&key.token(&claims(60)))
            .await
            .expect("valid");
        let stranger = TestKey::generate("stranger");
        for _ in 0..5 {
            assert!(matches!(
                limited.verify(&stranger.token(&claims(60))).await,
                Err(VerifyError::UnknownKey(_))
            ));
        }
        assert_eq!(
            server.fetches.load(Ordering::SeqCst),
            before + 1,
            "random kids cannot force fetches"
        );

        let missing = JwtVerifier::new(
            client,
            KeySource::Jwks(format!("{}/nothing", server.base)),
            ISSUER,
            APP_ID,
        );
        let err = missing
            .verify(&key.token(&claims(60)))
            .await
            .expect_err("no keys");
        assert!(matches!(err, VerifyError::Keys(_)), "{err:?}");
        assert_eq!(err.response().status, 503);
    });
}
