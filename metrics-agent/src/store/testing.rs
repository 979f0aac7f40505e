//! Test databases: a SQLite file in a temporary directory, or a PostgreSQL
//! database — a fresh database on the server named by
//! `METRICS_AGENT_TEST_POSTGRES_URL`, else a private cluster this process
//! initializes and starts (as the `postgres` user when running as root) and
//! removes when dropped. PostgreSQL being unavailable fails the test.
//! Also a counting allocator, to measure the heap a piece of code keeps.

use std::{
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use super::db::Store;

static NEXT: AtomicU32 = AtomicU32::new(0);

fn unique_dir(what: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("ma-{what}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The newest installed PostgreSQL's binaries (Debian layout).
fn pg_bin() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (no /usr/lib/postgresql): run `cargo xtask setup`")
        .filter_map(|e| {
            let e = e.ok()?;
            Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("no PostgreSQL server binaries in /usr/lib/postgresql: run `cargo xtask setup`").1
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A PostgreSQL server of our own: initdb'd in a temporary directory.
pub struct PgCluster {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
}

impl PgCluster {
    pub fn start() -> Self {
        let dir = unique_dir("pg");
        let bin = pg_bin();
        let as_root = unsafe { libc::geteuid() } == 0;
        if as_root {
            let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status().unwrap();
            assert!(status.success(), "chown postgres {}", dir.display());
        }
        let cluster = Self { dir, bin, port: free_port() };
        cluster.pg(&["initdb", "-D", &cluster.data(), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]);
        cluster.resume();
        cluster
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// Runs a PostgreSQL program (as `postgres` when we are root).
    fn pg(&self, args: &[&str]) {
        let program = self.bin.join(args[0]);
        let as_root = unsafe { libc::geteuid() } == 0;
        let output = if as_root {
            Command::new("runuser").args(["-u", "postgres", "--"]).arg(&program).args(&args[1..]).output()
        } else {
            Command::new(&program).args(&args[1..]).output()
        }
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
        assert!(
            output.status.success(),
            "{} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Starts (again) on the same port.
    pub fn resume(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log").display().to_string();
        self.pg(&["pg_ctl", "-D", &self.data(), "-o", &options, "-l", &log, "-w", "-t", "30", "start"]);
    }

    /// Stops the server (fast shutdown: clients are disconnected).
    pub fn stop(&self) {
        self.pg(&["pg_ctl", "-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "-w", "stop"])
            .output();
        let _ = Command::new(self.bin.join("pg_ctl")).args(["-D", &self.data(), "-m", "immediate", "stop"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A store for one test and what keeps it alive.
pub struct TestDb {
    pub store: Store,
    pub url: String,
    pub cluster: Option<PgCluster>,
    dir: Option<PathBuf>,
}

impl TestDb {
    pub async fn sqlite() -> Self {
        Self::sqlite_at(None).await
    }

    /// `sqlite()` migrated up to schema `version` only (`None`: the newest).
    pub async fn sqlite_at(version: Option<i64>) -> Self {
        let dir = unique_dir("sqlite");
        let url = format!("sqlite://{}", dir.join("nested/metrics.db").display());
        let store = Store::open(&url).await.unwrap();
        migrate(&store, version).await.unwrap();
        Self { store, url, cluster: None, dir: Some(dir) }
    }

    /// A fresh database on the configured server, else on a private cluster.
    pub async fn postgres() -> Self {
        Self::postgres_at(None).await
    }

    /// `postgres()` migrated up to schema `version` only (`None`: the newest).
    pub async fn postgres_at(version: Option<i64>) -> Self {
        match std::env::var("METRICS_AGENT_TEST_POSTGRES_URL") {
            Ok(server) if !server.is_empty() => {
                let name = format!("ma_test_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
                let admin = Store::open(&server).await.unwrap();
                let Store::Postgres(pool) = &admin else {
                    panic!("METRICS_AGENT_TEST_POSTGRES_URL is not postgres://")
                };
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name}")).execute(pool).await.unwrap();
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(pool)
                    .await
                    .unwrap_or_else(|e| panic!("PostgreSQL at METRICS_AGENT_TEST_POSTGRES_URL is unavailable: {e}"));
                let (base, _) = server.rsplit_once('/').unwrap();
                let url = format!("{base}/{name}");
                let store = Store::open(&url).await.unwrap();
                migrate(&store, version).await.unwrap();
                Self { store, url, cluster: None, dir: None }
            }
            _ => Self::private_postgres_at(version).await,
        }
    }

    /// Always a cluster of its own (for tests that stop the server).
    pub async fn private_postgres() -> Self {
        Self::private_postgres_at(None).await
    }

    async fn private_postgres_at(version: Option<i64>) -> Self {
        let cluster = PgCluster::start();
        let url = cluster.url();
        let store = Store::open(&url).await.unwrap();
        migrate(&store, version).await.unwrap_or_else(|e| panic!("PostgreSQL at {url} is unavailable: {e}"));
        Self { store, url, cluster: Some(cluster), dir: None }
    }
}

async fn migrate(store: &Store, version: Option<i64>) -> Result<(), super::db::StoreError> {
    match version {
        Some(v) => store.migrate_to(v).await,
        None => store.migrate().await,
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The system allocator, counting per thread the bytes allocated and not yet freed.
struct CountingAllocator;

thread_local! {
    static LIVE_BYTES: std::cell::Cell<isize> = const { std::cell::Cell::new(0) };
}

fn count(delta: isize) {
    let _ = LIVE_BYTES.try_with(|c| c.set(c.get() + delta));
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl std::alloc::GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        count(layout.size() as isize);
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        count(layout.size() as isize);
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        count(-(layout.size() as isize));
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// What `f` returns and the heap bytes this thread holds more after it.
pub fn heap_kept_by<T>(f: impl FnOnce() -> T) -> (T, isize) {
    let before = LIVE_BYTES.with(std::cell::Cell::get);
    let out = f();
    (out, LIVE_BYTES.with(std::cell::Cell::get) - before)
}
