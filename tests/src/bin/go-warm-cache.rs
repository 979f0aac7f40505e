//! `go-warm-cache`: compiles the end-to-end suites' Go programs with each of
//! Debian's Go toolchains into the shared build cache, so that the tests'
//! own builds only link (`go::warm_build_cache`). `cargo xtask test` starts
//! it at the lowest priority next to the first suites. A failure here is
//! only reported: the tests' own builds then say what is wrong.

fn main() {
    let started = std::time::Instant::now();
    match std::panic::catch_unwind(llm_proxy_e2e::go::warm_build_cache) {
        Ok(versions) => eprintln!("go-warm-cache: {} warmed in {:.0?}", versions.join(", "), started.elapsed()),
        Err(_) => eprintln!("go-warm-cache: not warmed (see above); the tests build from a cold cache"),
    }
}
