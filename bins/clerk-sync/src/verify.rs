//! Is this request really from Clerk? The query secret (when configured), then the Svix
//! headers (read once, bounded, printable), then the signature over the raw body with every
//! configured secret (rotation).

use axum::http::HeaderMap;
use common::{ConfigError, ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use svix::webhooks::{Webhook, WebhookError};

/// Each Svix header under its two names (Svix's and the Standard Webhooks one).
const ID_HEADERS: [&str; 2] = ["svix-id", "webhook-id"];
const TIMESTAMP_HEADERS: [&str; 2] = ["svix-timestamp", "webhook-timestamp"];
const SIGNATURE_HEADERS: [&str; 2] = ["svix-signature", "webhook-signature"];

/// Longest `svix-id` and `svix-timestamp` accepted: Svix ids are ~30 characters, and these
/// values reach log lines before anything has verified them.
pub(crate) const MAX_ID_BYTES: usize = 256;
/// Longest `svix-signature`: several space-separated `v1,<base64>` entries while Svix rotates.
const MAX_SIGNATURE_BYTES: usize = 4096;

/// Why a request is not accepted as Clerk's.
#[derive(Debug, thiserror::Error)]
pub(crate) enum VerifyError {
    /// One or more of `svix-id`, `svix-timestamp`, `svix-signature` is absent.
    #[error("missing required header(s): {0}")]
    MissingHeaders(String),
    /// A Svix header is too long or holds characters it never does.
    #[error("the {name} header is {why}")]
    InvalidHeader {
        /// The header's name.
        name: &'static str,
        /// What is wrong, without the value.
        why: String,
    },
    /// No configured secret produced the signature.
    #[error("the webhook signature does not match any configured signing secret")]
    InvalidSignature,
    /// `svix-timestamp` is more than 5 minutes away from now.
    #[error("the webhook timestamp is outside the 5 minute tolerance")]
    TimestampOutOfTolerance,
    /// `?secret=` is missing or wrong.
    #[error("the `secret` query parameter is missing or wrong")]
    InvalidQuerySecret,
}

/// The three Svix headers of a request, each read once and checked to be short printable
/// ASCII, so they are safe to log.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SvixHeaders<'a> {
    /// `svix-id`: the event id.
    pub id: &'a str,
    /// Every header, for the svix crate, which reads the three (checked here) itself.
    all: &'a HeaderMap,
}

impl<'a> SvixHeaders<'a> {
    /// Reads the headers, naming every missing one, refusing over-long or non-printable
    /// values (by name and length, never by value).
    pub fn read(headers: &'a HeaderMap) -> Result<Self, VerifyError> {
        let mut missing = Vec::new();
        let mut bad = None;
        let mut find = |names: [&'static str; 2], max: usize, spaces: bool| {
            let Some(raw) = names.iter().find_map(|n| headers.get(*n)) else {
                missing.push(names[0]);
                return "";
            };
            let bytes = raw.as_bytes().trim_ascii();
            let why = if bytes.is_empty() {
                missing.push(names[0]);
                return "";
            } else if bytes.len() > max {
                format!("{} bytes long (at most {max})", bytes.len())
            } else if let Some(c) = bytes
                .iter()
                .find(|c| !(c.is_ascii_graphic() || (spaces && **c == b' ')))
            {
                format!("not printable ASCII (byte 0x{c:02x})")
            } else {
                // Checked above: printable ASCII is UTF-8.
                return std::str::from_utf8(bytes).unwrap_or_default();
            };
            bad.get_or_insert(VerifyError::InvalidHeader {
                name: names[0],
                why,
            });
            ""
        };
        let id = find(ID_HEADERS, MAX_ID_BYTES, false);
        find(TIMESTAMP_HEADERS, MAX_ID_BYTES, false);
        find(SIGNATURE_HEADERS, MAX_SIGNATURE_BYTES, true);
        if !missing.is_empty() {
            return Err(VerifyError::MissingHeaders(missing.join(", ")));
        }
        if let Some(bad) = bad {
            return Err(bad);
        }
        Ok(SvixHeaders { id, all: headers })
    }
}

/// Checks requests against the configured secrets.
pub(crate) struct Verifier {
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

    /// When a query secret is configured, `given` must equal it, compared in constant time
    /// (`subtle`: the time taken doesn't tell how much of a guess was right; the length may
    /// still show).
    pub fn check_query_secret(&self, given: Option<&str>) -> Result<(), VerifyError> {
        let Some(expected) = &self.query_secret else {
            return Ok(());
        };
        let expected = expected.expose_secret().as_bytes();
        match given {
            Some(given) if bool::from(given.as_bytes().ct_eq(expected)) => Ok(()),
            _ => Err(VerifyError::InvalidQuerySecret),
        }
    }

    /// Verifies the Svix signature of `body` under `svix` (read by [`SvixHeaders::read`]).
    pub fn verify(&self, svix: &SvixHeaders<'_>, body: &[u8]) -> Result<(), VerifyError> {
        let mut outcome = Err(VerifyError::InvalidSignature);
        for webhook in &self.webhooks {
            match webhook.verify(body, svix.all) {
                Ok(()) => return Ok(()),
                // The timestamp is checked before the signature, the same way for every
                // secret: no point trying the others.
                Err(
                    WebhookError::TimestampTooOldError
                    | WebhookError::FutureTimestampError
                    | WebhookError::InvalidTimestamp,
                ) => return Err(VerifyError::TimestampOutOfTolerance),
                Err(WebhookError::MissingHeader(h) | WebhookError::InvalidHeader(h)) => {
                    outcome = Err(VerifyError::InvalidHeader {
                        name: "svix-*",
                        why: format!("unreadable ({h})"),
                    });
                }
                Err(_) => {}
            }
        }
        outcome
    }
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

    fn check(v: &Verifier, h: &HeaderMap, body: &[u8]) -> Result<String, VerifyError> {
        let svix = SvixHeaders::read(h)?;
        v.verify(&svix, body)?;
        Ok(svix.id.to_string())
    }

    fn code(e: VerifyError) -> &'static str {
        crate::error::ApiError::from(e).code()
    }

    #[test]
    fn accepts_a_good_signature_and_returns_the_id() {
        let v = verifier(&[SECRET], None);
        let h = signed(SECRET, "msg_1", now(), b"{}");
        assert_eq!(check(&v, &h, b"{}").unwrap(), "msg_1");
    }

    #[test]
    fn over_long_or_unprintable_headers_are_refused_by_name_only() {
        let v = verifier(&[SECRET], None);
        let long = "m".repeat(600);
        let mut h = signed(SECRET, &long, now(), b"{}");
        let err = check(&v, &h, b"{}").unwrap_err();
        assert!(err.to_string().contains("svix-id") && err.to_string().contains("600"));
        assert!(!err.to_string().contains(&long));
        assert_eq!(code(err), "MISSING_HEADERS");
        h.insert("svix-id", HeaderValue::from_bytes(b"msg\tx").unwrap());
        let err = check(&v, &h, b"{}").unwrap_err();
        assert!(err.to_string().contains("printable"), "{err}");
        h.insert(
            "svix-id",
            HeaderValue::from_bytes("msg_\u{e9}".as_bytes()).unwrap(),
        );
        assert!(check(&v, &h, b"{}").is_err());
        let ok = "m".repeat(MAX_ID_BYTES);
        let h = signed(SECRET, &ok, now(), b"{}");
        assert_eq!(check(&v, &h, b"{}").unwrap(), ok);
    }

    #[test]
    fn rejects_a_changed_body() {
        let v = verifier(&[SECRET], None);
        let h = signed(SECRET, "msg_1", now(), b"{}");
        assert_eq!(
            code(check(&v, &h, b"{ }").unwrap_err()),
            "INVALID_SIGNATURE"
        );
    }

    #[test]
    fn names_missing_headers() {
        let v = verifier(&[SECRET], None);
        let mut h = signed(SECRET, "msg_1", now(), b"{}");
        h.remove("svix-signature");
        h.remove("svix-timestamp");
        let err = check(&v, &h, b"{}").unwrap_err();
        assert!(matches!(err, VerifyError::MissingHeaders(_)));
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
                code(check(&v, &h, b"{}").unwrap_err()),
                "TIMESTAMP_OUT_OF_TOLERANCE"
            );
        }
    }

    #[test]
    fn query_secret_in_constant_time() {
        let v = verifier(&[SECRET], Some("s3cret"));
        assert!(v.check_query_secret(Some("s3cret")).is_ok());
        for wrong in [Some("s3creT"), Some("s3cret2"), Some(""), None] {
            assert!(matches!(
                v.check_query_secret(wrong),
                Err(VerifyError::InvalidQuerySecret)
            ));
        }
        assert!(verifier(&[SECRET], None).check_query_secret(None).is_ok());
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

    /// Property tests; `PROPTEST_CASES` overrides the counts (scripts/fuzz.sh).
    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn cases(default: u32) -> ProptestConfig {
            let cases = std::env::var("PROPTEST_CASES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default);
            ProptestConfig {
                cases,
                failure_persistence: None,
                ..ProptestConfig::default()
            }
        }

        const CODES: [&str; 4] = [
            "MISSING_HEADERS",
            "INVALID_SIGNATURE",
            "TIMESTAMP_OUT_OF_TOLERANCE",
            "INVALID_QUERY_SECRET",
        ];

        fn header(value: &[u8]) -> Option<HeaderValue> {
            HeaderValue::from_bytes(value).ok()
        }

        proptest! {
            #![proptest_config(cases(15_000))]
            #[test]
            fn arbitrary_headers_and_bodies_map_to_a_contract_code(
                id in prop::collection::vec(any::<u8>(), 0..300),
                ts in prop::collection::vec(any::<u8>(), 0..24),
                sig in prop::collection::vec(any::<u8>(), 0..200),
                body in prop::collection::vec(any::<u8>(), 0..256),
                query in proptest::option::of(".{0,16}"),
            ) {
                let v = verifier(&[SECRET], Some("s3cret"));
                let mut h = HeaderMap::new();
                for (name, value) in [("svix-id", &id), ("svix-timestamp", &ts), ("svix-signature", &sig)] {
                    if let Some(value) = header(value) {
                        h.insert(name, value);
                    }
                }
                let outcome = v
                    .check_query_secret(query.as_deref())
                    .and_then(|()| check(&v, &h, &body));
                if let Err(e) = outcome {
                    prop_assert!(CODES.contains(&code(e)));
                } else {
                    prop_assert_eq!(query.as_deref(), Some("s3cret"));
                }
            }
        }

        proptest! {
            #![proptest_config(cases(15_000))]
            #[test]
            fn a_valid_signature_over_any_body_verifies_and_any_flipped_bit_fails(
                id in "msg_[A-Za-z0-9]{1,40}",
                // Any text (JSON bodies among it; Svix signs UTF-8 only).
                body in ".{0,200}".prop_map(String::into_bytes),
                flip in any::<prop::sample::Index>(),
                bit in 0u8..8,
            ) {
                let v = verifier(&[SECRET], None);
                let h = signed(SECRET, &id, now(), &body);
                prop_assert_eq!(check(&v, &h, &body).unwrap(), id.clone());

                // A flipped bit in the body…
                if !body.is_empty() {
                    let mut changed = body.clone();
                    changed[flip.index(body.len())] ^= 1 << bit;
                    prop_assert_eq!(code(check(&v, &h, &changed).unwrap_err()), "INVALID_SIGNATURE");
                }
                // …or in the signature's bytes fails.
                let signature = h.get("svix-signature").unwrap().as_bytes().to_vec();
                use base64::Engine;
                let b64 = base64::engine::general_purpose::STANDARD;
                let decoded = b64.decode(&signature[3..]).unwrap();
                let mut flipped = decoded.clone();
                flipped[flip.index(decoded.len())] ^= 1 << bit;
                let mut h2 = h.clone();
                h2.insert("svix-signature", HeaderValue::from_str(&format!("v1,{}", b64.encode(&flipped))).unwrap());
                prop_assert_eq!(code(check(&v, &h2, &body).unwrap_err()), "INVALID_SIGNATURE");
            }
        }
    }
}
