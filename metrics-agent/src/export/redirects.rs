//! The exporters' HTTP client policy: a client carrying an API key or OTLP
//! headers follows redirects only to the host it was configured with.

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
}
