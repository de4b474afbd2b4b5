//! Values that must never be shown: client secrets, bearer tokens and signed (SAS) URLs.
//!
//! Every type here redacts itself in `Display` and `Debug`, so a secret that reaches a log line, an error
//! or a report prints as `***`. The raw value is only reachable through an explicitly named method
//! (`expose`), which keeps the places that handle plain secrets few and greppable.

use std::fmt;

/// A secret string (client secret, bearer token, federated assertion).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The plain value, for the one place that must send it (an HTTP header or form field).
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Query parameters whose values are credentials: the SAS signature, and a few that carry tokens.
const SENSITIVE_QUERY_KEYS: &[&str] = &[
    "sig",
    "signature",
    "token",
    "access_token",
    "client_secret",
    "code",
];

/// Returns `url` with the value of every sensitive query parameter replaced by `***`.
///
/// Works on any string, parsed or not, so it is safe to call on text that only looks like a URL
/// (a `nextLink` that failed to parse, an error message from a server).
pub fn redact_url(url: &str) -> String {
    let Some(q) = url.find('?') else {
        return url.to_owned();
    };
    let (head, query) = url.split_at(q + 1);
    let (query, fragment) = match query.find('#') {
        Some(h) => query.split_at(h),
        None => (query, ""),
    };
    let parts: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if is_sensitive_key(k) => format!("{k}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{head}{}{fragment}", parts.join("&"))
}

fn is_sensitive_key(key: &str) -> bool {
    SENSITIVE_QUERY_KEYS
        .iter()
        .any(|s| s.eq_ignore_ascii_case(key))
}

/// Redacts every URL-looking token and every `Bearer …` value in free text (server error messages,
/// transport errors), for the places where text of unknown origin is shown.
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("http") {
        out.push_str(&rest[..pos]);
        let end = rest[pos..]
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == ')' || c == '>')
            .map_or(rest.len(), |e| pos + e);
        out.push_str(&redact_url(&rest[pos..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    redact_bearer(&out)
}

fn redact_bearer(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("Bearer ") {
        let start = pos + "Bearer ".len();
        out.push_str(&rest[..start]);
        out.push_str("***");
        let end = rest[start..]
            .find(|c: char| c.is_whitespace() || c == '"')
            .map_or(rest.len(), |e| start + e);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// A signed download link (SAS URL). Fetched without the ARM bearer token; shown without its `sig`.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedUrl(String);

impl SignedUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SignedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignedUrl({})", redact_url(&self.0))
    }
}

impl fmt::Display for SignedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

impl<'de> serde::Deserialize<'de> for SignedUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(SignedUrl)
    }
}

impl serde::Serialize for SignedUrl {
    /// Serializes redacted: a signed URL written to a report or ledger must not carry its signature.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&redact_url(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sig_is_redacted_wherever_it_stands() {
        let u = "https://a.blob.core.windows.net/c/b?sv=2020&sig=AbC%2Bx&se=2026";
        assert_eq!(
            redact_url(u),
            "https://a.blob.core.windows.net/c/b?sv=2020&sig=***&se=2026"
        );
        assert_eq!(
            redact_url("http://x/y?SIG=1#frag"),
            "http://x/y?SIG=***#frag"
        );
        assert_eq!(redact_url("http://x/y"), "http://x/y");
        let s = SignedUrl::new(u);
        assert!(!format!("{s} {s:?}").contains("AbC"));
        assert!(
            !serde_json::to_string(&s)
                .unwrap_or_default()
                .contains("AbC")
        );
    }

    #[test]
    fn free_text_loses_urls_signatures_and_bearer_tokens() {
        let t = "error sending request for url (http://127.0.0.1:1/b?sig=SECRET1): Authorization: Bearer eyJ.abc.def done";
        let r = redact_text(t);
        assert!(!r.contains("SECRET1") && !r.contains("eyJ.abc"), "{r}");
        assert!(r.contains("sig=***") && r.contains("Bearer ***"));
    }

    #[test]
    fn secret_never_displays() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}{s:?}"), "***Secret(***)");
        assert_eq!(s.expose(), "hunter2");
    }
}
