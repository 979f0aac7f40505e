//! Keeping credentials inside the process: URLs are shown with their
//! `user:password@` and secret query parameters redacted, credentials are
//! held in `Secret` (never printed), header names that
//! carry credentials are known (so they are never used as identity
//! sources), and HTTP clients that send credentials follow no redirect to
//! another host.

/// What replaces a secret wherever one would be shown.
pub const REDACTED: &str = "<redacted>";

/// A credential held by the agent (the API token, an exporter's API key or
/// header value): its `Debug` output is `<redacted>`, so it never reaches a
/// log line or the printed configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Request headers whose values are credentials.
pub const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "dd-api-key",
    "dd-application-key",
    "cookie",
    "set-cookie",
    "openai-api-key",
    "anthropic-api-key",
];

/// Whether a header (any case) carries credentials.
pub fn is_secret_header(name: &str) -> bool {
    let name = name.trim().to_ascii_lowercase();
    SECRET_HEADERS.contains(&name.as_str()) || name.ends_with("-api-key") || name.ends_with("-token")
}

/// Whether a query parameter's name says its value is a secret
/// (`password`, `api_key`, `dd-api-key`, `sslpassword`, `access_token`, ...).
fn is_secret_parameter(name: &str) -> bool {
    let name = name.to_ascii_lowercase().replace('-', "_");
    ["password", "passwd", "pwd", "secret", "token", "api_key", "apikey", "key", "auth", "signature", "credential"]
        .iter()
        .any(|word| name == *word || name.ends_with(&format!("_{word}")) || name.contains(&format!("{word}_")))
        || name.contains("password")
        || name.contains("secret")
        || name.contains("token")
}

/// `url` as it may be shown: the password of `user:password@` and the
/// values of secret query parameters become `<redacted>`; the user name,
/// host, path and other parameters stay (they help to tell URLs apart).
pub fn redact_url(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[start..].find(['/', '?', '#']).map_or(url.len(), |i| start + i);
    let authority = &url[start..authority_end];
    let shown = match authority.rfind('@') {
        Some(at) => match authority[..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:{REDACTED}{}", &url[..start], &url[start + at..]),
            None => url.to_string(),
        },
        None => url.to_string(),
    };
    redact_query(&shown)
}

/// `url` with the values of its secret query parameters replaced by `<redacted>`.
pub fn redact_query(url: &str) -> String {
    let (before_fragment, fragment) = url.split_once('#').map_or((url, None), |(a, b)| (a, Some(b)));
    let Some((head, query)) = before_fragment.split_once('?') else { return url.to_string() };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret_parameter(name) => format!("{name}={REDACTED}"),
            _ => pair.to_string(),
        })
        .collect();
    let mut out = format!("{head}?{}", pairs.join("&"));
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_secrets_and_passwords_are_redacted() {
        let cases = [
            ("postgres://u:s3cret@h:5432/db", "postgres://u:<redacted>@h:5432/db"),
            (
                "postgres://u@h/db?password=s3cret&sslmode=require",
                "postgres://u@h/db?password=<redacted>&sslmode=require",
            ),
            (
                "postgresql://h/db?sslmode=require&sslpassword=x",
                "postgresql://h/db?sslmode=require&sslpassword=<redacted>",
            ),
            ("https://dd.example/api?dd-api-key=k&x=1", "https://dd.example/api?dd-api-key=<redacted>&x=1"),
            ("https://c:4318/v1?api_key=k#frag", "https://c:4318/v1?api_key=<redacted>#frag"),
            ("https://c:4318/v1?access_token=k", "https://c:4318/v1?access_token=<redacted>"),
            ("sqlite:///var/lib/x.db?mode=rwc", "sqlite:///var/lib/x.db?mode=rwc"),
            ("alice:pw@collector:4318", "alice:<redacted>@collector:4318"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn credential_headers_are_known() {
        for h in ["Authorization", "x-api-key", "X-Goog-Api-Key", "api-key", "cookie", "x-custom-api-key"] {
            assert!(is_secret_header(h), "{h}");
        }
        for h in ["x-session-id", "x-user-id", "x-application-id"] {
            assert!(!is_secret_header(h), "{h}");
        }
    }
}
