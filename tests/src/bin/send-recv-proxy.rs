//! A small thread-per-connection HTTP/1.1 reverse proxy written with Rust's
//! std `TcpStream`, which moves bytes with libc `send`/`recv` (nginx uses
//! `readv`/`writev`): the second proxy style the agent is tested against.
//!
//! `send-recv-proxy --listen 127.0.0.1:8080 --route /openai/=127.0.0.1:9001 ...`
//! Client connections are kept alive; each request gets a fresh upstream
//! connection; bodies are relayed as they arrive (streams included). Each
//! socket is used through one file descriptor (no `try_clone`, which dups).

use std::{
    io::{self, Write},
    net::{TcpListener, TcpStream},
    thread,
};

use llm_proxy_e2e::http1::{Framing, Reader};

fn main() {
    let mut listen = String::from("127.0.0.1:8080");
    let mut routes: Vec<(String, String)> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().expect("--listen ADDR"),
            "--route" => {
                let r = args.next().expect("--route PREFIX=HOST:PORT");
                let (p, u) = r.split_once('=').expect("--route PREFIX=HOST:PORT");
                routes.push((p.to_string(), u.to_string()));
            }
            other => panic!("unknown argument {other}"),
        }
    }
    let listener = TcpListener::bind(&listen).unwrap_or_else(|e| panic!("cannot listen on {listen}: {e}"));
    for conn in listener.incoming().flatten() {
        let routes = routes.clone();
        thread::spawn(move || {
            let _ = serve(conn, &routes);
        });
    }
}

fn serve(client: TcpStream, routes: &[(String, String)]) -> io::Result<()> {
    let mut to_client = &client;
    let mut from_client = Reader::new(&client);
    while let Some(head) = from_client.read_head()? {
        let body = from_client.read_exact_vec(head.content_length().unwrap_or(0) as usize)?;
        let target = head.first_line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let Some((prefix, upstream)) = routes.iter().find(|(p, _)| target.starts_with(p.as_str())) else {
            to_client.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")?;
            continue;
        };
        // Rewrite the request line (strip the route prefix) and ask the
        // upstream to close after its response.
        let method = head.first_line.split_whitespace().next().unwrap_or("GET");
        let path = format!("/{}", &target[prefix.len()..]);
        let mut req = format!("{method} {path} HTTP/1.1\r\n");
        for (k, v) in &head.headers {
            if !k.eq_ignore_ascii_case("connection") {
                req.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        req.push_str("connection: close\r\n\r\n");
        let up = TcpStream::connect(upstream.as_str())?;
        let mut to_up = &up;
        to_up.write_all(req.as_bytes())?;
        to_up.write_all(&body)?;
        let mut from_up = Reader::new(&up);
        let Some(resp) = from_up.read_head()? else { return Ok(()) };
        to_client.write_all(&resp.raw)?;
        let framing = from_up.relay_body(&resp, method == "HEAD", |bytes| to_client.write_all(bytes))?;
        if framing == Framing::Close {
            return Ok(()); // the client learns the end from the close
        }
        if head.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
            return Ok(());
        }
    }
    Ok(())
}
