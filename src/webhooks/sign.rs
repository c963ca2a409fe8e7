//! Standard Webhooks 1.0 signatures: `v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`,
//! with the key given as `whsec_<base64>`. Receivers verify with any
//! Standard Webhooks library, or the SDK's `verifyWebhook`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The signing key: the decoded bytes of `WEBHOOK_SECRET`. Its `Debug`
/// form never shows them, so no log can leak the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(…)")
    }
}

impl SigningKey {
    /// Parses `whsec_<base64 of 24 to 64 bytes>`.
    pub fn parse(secret: &str) -> Result<Self, String> {
        let encoded = secret
            .strip_prefix("whsec_")
            .ok_or("WEBHOOK_SECRET must start with whsec_ (Standard Webhooks form)")?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| "WEBHOOK_SECRET after whsec_ must be base64")?;
        if !(24..=64).contains(&key.len()) {
            return Err(format!(
                "WEBHOOK_SECRET must encode 24 to 64 bytes (got {})",
                key.len()
            ));
        }
        Ok(Self(key))
    }

    /// The `webhook-signature` header value for one attempt.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        format!("v1,{}", STANDARD.encode(self.mac(id, timestamp, body)))
    }

    /// Whether any `v1` signature of a header (space-separated) matches,
    /// compared in constant time: the receiver's side, for tests and tools.
    pub fn verify(&self, id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
        header.split(' ').any(|sig| {
            let Some(encoded) = sig.strip_prefix("v1,") else {
                return false;
            };
            let Ok(given) = STANDARD.decode(encoded) else {
                return false;
            };
            self.hmac(id, timestamp, body).verify_slice(&given).is_ok()
        })
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
        self.hmac(id, timestamp, body)
            .finalize()
            .into_bytes()
            .to_vec()
    }

    fn hmac(&self, id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks libraries' own test vector.
    const KEY: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const BODY: &[u8] = br#"{"test": 2432232314}"#;

    #[test]
    fn signs_as_the_standard_webhooks_libraries_do() {
        let key = SigningKey::parse(KEY).unwrap();
        assert_eq!(
            key.sign(ID, 1614265330, BODY),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn verifies_any_of_several_signatures_and_nothing_else() {
        let key = SigningKey::parse(KEY).unwrap();
        let good = key.sign(ID, 1614265330, BODY);
        let other = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=";
        assert!(key.verify(ID, 1614265330, BODY, &format!("{other} {good}")));
        assert!(
            !key.verify(ID, 1614265331, BODY, &good),
            "another timestamp"
        );
        assert!(!key.verify(ID, 1614265330, b"{}", &good), "another body");
        assert!(!key.verify(ID, 1614265330, BODY, other));
        assert!(!key.verify(ID, 1614265330, BODY, &good.replace("v1,", "v2,")));
        assert!(!key.verify(ID, 1614265330, BODY, "v1,"));
    }

    #[test]
    fn a_malformed_secret_is_refused_with_a_reason() {
        assert!(
            SigningKey::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
                .unwrap_err()
                .contains("whsec_")
        );
        assert!(
            SigningKey::parse("whsec_!!!")
                .unwrap_err()
                .contains("base64")
        );
        assert!(
            SigningKey::parse("whsec_c2hvcnQ=")
                .unwrap_err()
                .contains("24 to 64")
        );
        assert!(!format!("{:?}", SigningKey::parse(KEY).unwrap()).contains("MfKQ"));
    }
}
