//! Who a request belongs to: session, user and application ids taken from
//! configurable sources (request headers first, then JSON pointers into the
//! request body), and, only when the operator asks for per-key attribution,
//! a salted hash of the API key. The key itself never leaves this module:
//! it is read from the request head, hashed, and dropped.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::provider::{self, KeyHeader};

/// Longest id kept; longer values are cut (ids are labels, not payloads).
const MAX_ID_CHARS: usize = 128;

/// Where ids come from (`[identity]` in the config file).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// Request headers naming the session, first present wins.
    pub session_headers: Vec<String>,
    /// JSON pointers into the request body naming the session.
    pub session_body_fields: Vec<String>,
    /// Request headers naming the end user.
    pub user_headers: Vec<String>,
    /// JSON pointers into the request body naming the end user.
    pub user_body_fields: Vec<String>,
    /// Request headers naming the calling application; the target's fixed
    /// `application_id` is used when none is present.
    pub application_headers: Vec<String>,
    /// Salt for per-key attribution. When set, records carry
    /// `api_key_hash` = first 16 hex digits of SHA-256(salt || key); when
    /// unset, nothing derived from the key is kept.
    pub api_key_salt: Option<String>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            session_headers: vec!["x-session-id".into()],
            session_body_fields: vec!["/metadata/session_id".into()],
            user_headers: vec!["x-user-id".into()],
            user_body_fields: vec!["/user".into(), "/metadata/user_id".into()],
            application_headers: vec!["x-application-id".into()],
            api_key_salt: None,
        }
    }
}

impl IdentityConfig {
    /// Header names lower-cased (parsed heads keep them so), pointers checked.
    pub fn validated(mut self) -> anyhow::Result<Self> {
        let lists = [
            ("session_headers", &mut self.session_headers),
            ("user_headers", &mut self.user_headers),
            ("application_headers", &mut self.application_headers),
        ];
        for (key, list) in lists {
            for h in list.iter_mut() {
                *h = h.trim().to_ascii_lowercase();
                if crate::secrets::is_secret_header(h) {
                    anyhow::bail!(
                        "[identity] {key} lists {h:?}, which carries credentials and would put them into records: \
                         name a header holding an id (e.g. \"x-session-id\"), or set api_key_salt for per-key attribution"
                    );
                }
            }
        }
        for p in self.session_body_fields.iter().chain(&self.user_body_fields) {
            if !p.starts_with('/') {
                anyhow::bail!("identity body field {p:?} is not a JSON pointer: write it like \"/metadata/user_id\"");
            }
        }
        if self.api_key_salt.as_deref().is_some_and(|s| s.len() < 16) {
            anyhow::bail!("identity.api_key_salt is shorter than 16 characters: use a long random string");
        }
        Ok(self)
    }
}

/// The ids of one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ids {
    pub session: Option<String>,
    pub user: Option<String>,
    pub application: Option<String>,
    pub api_key_hash: Option<String>,
}

/// Resolves the ids of a request from its headers and parsed JSON body.
pub fn resolve<'a>(config: &IdentityConfig, header: impl Fn(&str) -> Option<&'a str>, body: &Value) -> Ids {
    let from = |headers: &[String], pointers: &[String]| {
        headers
            .iter()
            .find_map(|h| header(h).filter(|v| !v.is_empty()).map(str::to_string))
            .or_else(|| {
                pointers.iter().find_map(|p| match super::usage::pointer(body, p)? {
                    Value::String(s) if !s.is_empty() => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
            })
            .map(|v| v.chars().filter(|c| !c.is_control()).take(MAX_ID_CHARS).collect::<String>())
            .filter(|v| !v.is_empty())
    };
    Ids {
        session: from(&config.session_headers, &config.session_body_fields),
        user: from(&config.user_headers, &config.user_body_fields),
        application: from(&config.application_headers, &[]),
        api_key_hash: config.api_key_salt.as_deref().and_then(|salt| api_key(&header).map(|k| key_hash(salt, k))),
    }
}

/// The API key of a request, wherever the provider table says keys travel:
/// `Authorization: Bearer`, Anthropic's `x-api-key`, Gemini's
/// `x-goog-api-key`, Azure's `api-key`, AWS Signature V4's access key id.
fn api_key<'a>(header: &impl Fn(&str) -> Option<&'a str>) -> Option<&'a str> {
    provider::key_headers().find_map(|k| {
        match k {
            KeyHeader::Bearer => {
                header("authorization").and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            }
            KeyHeader::Plain(name) => header(name),
            KeyHeader::SigV4 => header("authorization")
                .and_then(|v| v.strip_prefix("AWS4-HMAC-SHA256 "))
                .and_then(|v| v.split_once("Credential="))
                .and_then(|(_, c)| c.split('/').next()),
        }
        .map(str::trim)
        .filter(|k| !k.is_empty())
    })
}

fn key_hash(salt: &str, key: &str) -> String {
    let digest = Sha256::new().chain_update(salt.as_bytes()).chain_update(key.as_bytes()).finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(config: &IdentityConfig, headers: &[(&str, &str)], body: &str) -> Ids {
        let body: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        resolve(config, |name| headers.iter().find(|(k, _)| *k == name).map(|(_, v)| *v), &body)
    }

    #[test]
    fn credential_headers_are_refused_as_id_sources() {
        for header in ["authorization", "X-Api-Key", "cookie"] {
            let config = IdentityConfig { session_headers: vec![header.into()], ..IdentityConfig::default() };
            let err = config.validated().unwrap_err().to_string();
            assert!(err.contains("carries credentials") && !err.contains('\n'), "{err}");
        }
        let config = IdentityConfig { user_headers: vec!["x-api-key".into()], ..IdentityConfig::default() };
        assert!(config.validated().unwrap_err().to_string().contains("user_headers"));
    }

    #[test]
    fn headers_win_over_body_fields_and_defaults_apply() {
        let c = IdentityConfig::default();
        let r = ids(&c, &[("x-session-id", "s1")], r#"{"user":"u1","metadata":{"session_id":"s2"}}"#);
        assert_eq!((r.session.as_deref(), r.user.as_deref()), (Some("s1"), Some("u1")));
        let r = ids(&c, &[], r#"{"metadata":{"user_id":"u2","session_id":"s2"}}"#);
        assert_eq!((r.session.as_deref(), r.user.as_deref()), (Some("s2"), Some("u2")));
        assert_eq!(r.api_key_hash, None, "no salt, no hash");
    }

    #[test]
    fn ids_carry_no_control_characters() {
        let c = IdentityConfig::default();
        let r = ids(&c, &[("x-session-id", "s\u{0}1")], r#"{"user":"\u0000"}"#);
        assert_eq!((r.session.as_deref(), r.user.as_deref()), (Some("s1"), None));
    }

    #[test]
    fn configured_sources_replace_the_defaults() {
        let c = IdentityConfig {
            session_headers: vec!["X-Conversation".into()],
            user_body_fields: vec!["/extra/customer".into()],
            application_headers: vec!["x-app".into()],
            ..IdentityConfig::default()
        }
        .validated()
        .unwrap();
        let r =
            ids(&c, &[("x-conversation", "c9"), ("x-app", "billing")], r#"{"user":"ignored","extra":{"customer":42}}"#);
        assert_eq!(
            (r.session.as_deref(), r.user.as_deref(), r.application.as_deref()),
            (Some("c9"), Some("42"), Some("billing"))
        );
    }

    #[test]
    fn the_key_is_hashed_with_the_salt_and_never_kept() {
        let c = IdentityConfig { api_key_salt: Some("0123456789abcdef-salt".into()), ..IdentityConfig::default() };
        let a = ids(&c, &[("authorization", "Bearer sk-canary-1")], "{}");
        let b = ids(&c, &[("x-api-key", "sk-canary-1")], "{}");
        let other = ids(&c, &[("x-goog-api-key", "sk-canary-2")], "{}");
        let azure = ids(&c, &[("api-key", "sk-canary-1")], "{}");
        assert_eq!(azure.api_key_hash, a.api_key_hash);
        let sigv4 = "AWS4-HMAC-SHA256 Credential=AKIDCANARY/20261130/us-east-1/bedrock/aws4_request, SignedHeaders=host, Signature=ab";
        let aws = ids(&c, &[("authorization", sigv4)], "{}");
        assert_eq!(aws.api_key_hash, ids(&c, &[("x-api-key", "AKIDCANARY")], "{}").api_key_hash, "the access key id");
        let hash = a.api_key_hash.clone().unwrap();
        assert_eq!(hash.len(), 16);
        assert_eq!(a.api_key_hash, b.api_key_hash, "the same key hashes the same through any header");
        assert_ne!(a.api_key_hash, other.api_key_hash);
        assert!(!format!("{a:?}").contains("canary"));
        let salted_differently = IdentityConfig { api_key_salt: Some("another-salt-of-16+".into()), ..c };
        assert_ne!(ids(&salted_differently, &[("x-api-key", "sk-canary-1")], "{}").api_key_hash, a.api_key_hash);
    }

    #[test]
    fn bad_sources_are_one_line_errors() {
        let c = IdentityConfig { user_body_fields: vec!["user".into()], ..IdentityConfig::default() };
        assert!(c.validated().unwrap_err().to_string().contains("JSON pointer"));
        let c = IdentityConfig { api_key_salt: Some("short".into()), ..IdentityConfig::default() };
        assert!(c.validated().unwrap_err().to_string().contains("16 characters"));
    }
}
