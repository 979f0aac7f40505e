//! Keeping credentials inside the process: URLs are shown with their
//! `user:password@` and secret query parameters redacted, header names that
//! carry credentials are known (so they are never used as identity
//! sources), and HTTP clients that send credentials follow no redirect to
//! another host.

/// What replaces a secret wherever one would be shown.
pub const REDACTED: &str = "<redacted>";

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

/// Redirects are followed only to the same scheme, host and port (at most
/// 5): a client carrying an API key or OTLP headers never hands them to
/// another host.
pub fn same_host_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let first = attempt.previous().first();
        let same = first.is_some_and(|first| {
            first.scheme() == attempt.url().scheme()
                && first.host_str() == attempt.url().host_str()
                && first.port_or_known_default() == attempt.url().port_or_known_default()
        });
        if !same {
            attempt.stop()
        } else if attempt.previous().len() > 5 {
            attempt.error("more than 5 redirects")
        } else {
            attempt.follow()
        }
    })
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

    /// A one-request HTTP server answering `answer`; returns its port and
    /// the request head it received, if any.
    async fn one_shot_server(answer: String) -> (u16, tokio::task::JoinHandle<Option<String>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let accepted = tokio::time::timeout(std::time::Duration::from_secs(3), listener.accept()).await;
            let (mut socket, _) = accepted.ok()?.ok()?;
            let mut head = vec![0u8; 4096];
            let n = socket.read(&mut head).await.ok()?;
            socket.write_all(answer.as_bytes()).await.ok()?;
            Some(String::from_utf8_lossy(&head[..n]).into_owned())
        });
        (port, task)
    }

    #[tokio::test]
    async fn credentials_do_not_follow_a_redirect_to_another_host() {
        let ok = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_string();
        let (elsewhere, stolen) = one_shot_server(ok).await;
        // 127.0.0.1 and localhost are different hosts to the policy.
        let redirect = format!(
            "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://localhost:{elsewhere}/steal\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
        let (endpoint, received) = one_shot_server(redirect).await;
        let client = reqwest::Client::builder().redirect(same_host_redirects()).build().unwrap();
        let response = client
            .post(format!("http://127.0.0.1:{endpoint}/api/v2/series"))
            .header("dd-api-key", "k-canary")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 307, "the redirect is handed back, not followed");
        assert!(received.await.unwrap().unwrap().contains("k-canary"), "the configured host got the key");
        assert_eq!(stolen.await.unwrap(), None, "the other host got nothing");
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
