//! Runs mock LLM providers on the given ports until killed:
//! `mock-provider 9001 9002`.

use llm_proxy_e2e::mock::MockProvider;

fn main() {
    let ports: Vec<u16> = std::env::args().skip(1).map(|p| p.parse().expect("a port number")).collect();
    let providers: Vec<MockProvider> = ports.iter().map(|&p| MockProvider::start(p).expect("bind")).collect();
    for p in &providers {
        println!("mock provider on 127.0.0.1:{}", p.port);
    }
    loop {
        std::thread::park();
    }
}
