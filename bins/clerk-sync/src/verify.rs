//! Is this request really from Clerk? The query secret (when configured), then the Svix
//! signature over the raw body, with every configured secret (rotation).

use axum::http::HeaderMap;
use common::{ConfigError, ExposeSecret, SecretString};
use svix::webhooks::{Webhook, WebhookError};

use crate::error::ApiError;

const ID_HEADERS: [&str; 2] = ["svix-id", "webhook-id"];
const TIMESTAMP_HEADERS: [&str; 2] = ["svix-timestamp", "webhook-timestamp"];
const SIGNATURE_HEADERS: [&str; 2] = ["svix-signature", "webhook-signature"];

/// Checks requests against the configured secrets.
pub struct Verifier {
    webhooks: Vec<Webhook>,
    query_secret: Option<SecretString>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("secrets", &self.webhooks.len())
            .field("query_secret", &self.query_secret.is_some())
            .finish()
    }
}

impl Verifier {
    /// Builds a verifier; fails when a secret is not a valid `whsec_` secret.
    pub fn new(
        secrets: &[SecretString],
        query_secret: Option<SecretString>,
    ) -> Result<Self, ConfigError> {
        let webhooks = secrets
            .iter()
            .enumerate()
            .map(|(i, s)| {
                Webhook::new(s.expose_secret()).map_err(|e| {
                    ConfigError::new(
                        "CLERK_WEBHOOK_SECRET",
                        format!(
                            "secret #{} is not a valid whsec_ signing secret: {e}",
                            i + 1
                        ),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Verifier {
            webhooks,
            query_secret,
        })
    }

    /// When a query secret is configured, `given` must equal it (compared in constant time).
    pub fn check_query_secret(&self, given: Option<&str>) -> Result<(), ApiError> {
        let Some(expected) = &self.query_secret else {
            return Ok(());
        };
        match given {
            Some(given)
                if constant_time_eq(given.as_bytes(), expected.expose_secret().as_bytes()) =>
            {
                Ok(())
            }
            _ => Err(ApiError::InvalidQuerySecret),
        }
    }

    /// Verifies the Svix signature of `body` and returns the event id (`svix-id`).
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<String, ApiError> {
        let mut missing = Vec::new();
        let mut find = |names: [&'static str; 2]| {
            let value = names
                .iter()
                .find_map(|n| headers.get(*n))
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty());
            if value.is_none() {
                missing.push(names[0]);
            }
            value
        };
        let id = find(ID_HEADERS);
        find(TIMESTAMP_HEADERS);
        find(SIGNATURE_HEADERS);
        let Some(id) = id.filter(|_| missing.is_empty()) else {
            return Err(ApiError::MissingHeaders(missing.join(", ")));
        };

        let mut outcome = Err(ApiError::InvalidSignature);
        for webhook in &self.webhooks {
            match webhook.verify(body, headers) {
                Ok(()) => return Ok(id.to_string()),
                // The timestamp is checked before the signature, the same way for every
                // secret: no point trying the others.
                Err(
                    WebhookError::TimestampTooOldError
                    | WebhookError::FutureTimestampError
                    | WebhookError::InvalidTimestamp,
                ) => return Err(ApiError::TimestampOutOfTolerance),
                Err(WebhookError::MissingHeader(h) | WebhookError::InvalidHeader(h)) => {
                    outcome = Err(ApiError::MissingHeaders(format!(
                        "svix-{h} (missing or not ASCII)"
                    )));
                }
                Err(_) => {}
            }
        }
        outcome
    }
}

/// Compares without returning early on the first difference, so the time taken doesn't
/// tell an attacker how much of a guess was right. (The length may still show.)
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    fn signed(secret: &str, id: &str, ts: i64, body: &[u8]) -> HeaderMap {
        let sig = Webhook::new(secret).unwrap().sign(id, ts, body).unwrap();
        let mut h = HeaderMap::new();
        h.insert("svix-id", HeaderValue::from_str(id).unwrap());
        h.insert(
            "svix-timestamp",
            HeaderValue::from_str(&ts.to_string()).unwrap(),
        );
        h.insert("svix-signature", HeaderValue::from_str(&sig).unwrap());
        h
    }

    fn verifier(secrets: &[&str], query: Option<&str>) -> Verifier {
        let secrets: Vec<SecretString> = secrets
            .iter()
            .map(|s| SecretString::from(s.to_string()))
            .collect();
        Verifier::new(&secrets, query.map(|q| SecretString::from(q.to_string()))).unwrap()
    }

    #[test]
    fn accepts_a_good_signature_and_returns_the_id() {
        let v = verifier(&[SECRET], None);
        let h = signed(SECRET, "msg_1", now(), b"{}");
        assert_eq!(v.verify(&h, b"{}").unwrap(), "msg_1");
    }

    #[test]
    fn rejects_a_changed_body() {
        let v = verifier(&[SECRET], None);
        let h = signed(SECRET, "msg_1", now(), b"{}");
        assert_eq!(
            v.verify(&h, b"{ }").unwrap_err().code(),
            "INVALID_SIGNATURE"
        );
    }

    #[test]
    fn names_missing_headers() {
        let v = verifier(&[SECRET], None);
        let mut h = signed(SECRET, "msg_1", now(), b"{}");
        h.remove("svix-signature");
        h.remove("svix-timestamp");
        let err = v.verify(&h, b"{}").unwrap_err();
        assert_eq!(err.code(), "MISSING_HEADERS");
        assert!(
            err.to_string().contains("svix-timestamp, svix-signature"),
            "{err}"
        );
    }

    #[test]
    fn old_and_future_timestamps() {
        let v = verifier(&[SECRET], None);
        for ts in [now() - 6 * 60, now() + 6 * 60] {
            let h = signed(SECRET, "msg_1", ts, b"{}");
            assert_eq!(
                v.verify(&h, b"{}").unwrap_err().code(),
                "TIMESTAMP_OUT_OF_TOLERANCE"
            );
        }
    }

    #[test]
    fn query_secret_in_constant_time() {
        let v = verifier(&[SECRET], Some("s3cret"));
        assert!(v.check_query_secret(Some("s3cret")).is_ok());
        assert_eq!(
            v.check_query_secret(Some("s3creT")).unwrap_err().code(),
            "INVALID_QUERY_SECRET"
        );
        assert_eq!(
            v.check_query_secret(None).unwrap_err().code(),
            "INVALID_QUERY_SECRET"
        );
        assert!(verifier(&[SECRET], None).check_query_secret(None).is_ok());
        assert!(!constant_time_eq(b"a", b"ab"));
    }

    #[test]
    fn debug_prints_no_secret() {
        let v = verifier(&[SECRET], Some("s3cret"));
        let printed = format!("{v:?}");
        assert!(
            !printed.contains("MfKQ9r8G") && !printed.contains("s3cret"),
            "{printed}"
        );
    }
}
