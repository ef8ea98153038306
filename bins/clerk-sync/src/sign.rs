//! `clerk-sync sign`: sign a payload the way Svix does, so curl can send real webhooks.
//!
//! ```text
//! clerk-sync sign --secret whsec_… [--id msg_…] [--timestamp <unix seconds>] [FILE]
//! ```
//! Reads the payload from FILE (or stdin) and prints three `name: value` header lines.
//! The secret may also come from `CLERK_WEBHOOK_SECRET` (its first entry).

use std::io::Read;

use svix::webhooks::Webhook;

/// The three Svix headers for one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    /// `svix-id`
    pub id: String,
    /// `svix-timestamp` (Unix seconds)
    pub timestamp: i64,
    /// `svix-signature` (`v1,<base64>`)
    pub signature: String,
}

impl SignedHeaders {
    /// As `name: value` lines, the form curl's `-H` takes.
    pub fn lines(&self) -> String {
        format!(
            "svix-id: {}\nsvix-timestamp: {}\nsvix-signature: {}\n",
            self.id, self.timestamp, self.signature
        )
    }
}

/// Signs `payload` for `id` at `timestamp` with `secret` (`whsec_…`).
pub fn sign(
    secret: &str,
    id: &str,
    timestamp: i64,
    payload: &[u8],
) -> Result<SignedHeaders, String> {
    let webhook = Webhook::new(secret).map_err(|e| format!("invalid secret: {e}"))?;
    let signature = webhook
        .sign(id, timestamp, payload)
        .map_err(|e| format!("cannot sign: {e}"))?;
    Ok(SignedHeaders {
        id: id.to_string(),
        timestamp,
        signature,
    })
}

/// The `sign` subcommand: the headers for `payload`, as lines. Without `secret`, the first
/// entry of `CLERK_WEBHOOK_SECRET`; without `id`, a fresh `msg_…`; without `timestamp`, now.
pub fn cli(
    secret: Option<String>,
    id: Option<String>,
    timestamp: Option<i64>,
    payload: &[u8],
) -> Result<String, String> {
    let secret = secret
        .or_else(|| {
            std::env::var("CLERK_WEBHOOK_SECRET").ok().and_then(|s| {
                s.split([',', ' '])
                    .find(|s| !s.is_empty())
                    .map(str::to_string)
            })
        })
        .ok_or("--secret (or CLERK_WEBHOOK_SECRET) is required")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let id = id.unwrap_or_else(|| format!("msg_{:x}{:x}", now, std::process::id()));
    Ok(sign(&secret, &id, timestamp.unwrap_or(now), payload)?.lines())
}

/// The payload to sign: the file's bytes, or stdin's when there is no file.
pub fn read_payload(file: Option<&std::path::Path>) -> Result<Vec<u8>, String> {
    match file {
        Some(path) => std::fs::read(path).map_err(|e| format!("{}: {e}", path.display())),
        None => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| format!("stdin: {e}"))?;
            Ok(buf)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    #[test]
    fn signature_verifies_with_svix() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let s = sign(secret, "msg_abc", now, b"{\"a\":1}").unwrap();
        let mut h = HeaderMap::new();
        for line in s.lines().lines() {
            let (k, v) = line.split_once(": ").unwrap();
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        Webhook::new(secret)
            .unwrap()
            .verify(b"{\"a\":1}", &h)
            .unwrap();
        assert!(Webhook::new(secret)
            .unwrap()
            .verify(b"{\"a\":2}", &h)
            .is_err());
    }
}
