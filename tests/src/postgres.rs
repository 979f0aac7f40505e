//! A private PostgreSQL server for tests: initdb'd in a temporary directory
//! (as the `postgres` user when running as root), on a free port, stopped
//! and removed when dropped. Unavailable PostgreSQL fails the test.

use std::{path::PathBuf, process::Command};

use crate::harness::{TempDir, free_port};

pub struct PgCluster {
    dir: TempDir,
    bin: PathBuf,
    pub port: u16,
}

fn server_bin() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (no /usr/lib/postgresql): run `cargo xtask setup`")
        .filter_map(|e| {
            let e = e.ok()?;
            Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("no PostgreSQL server in /usr/lib/postgresql: run `cargo xtask setup`").1
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl PgCluster {
    pub fn start() -> Self {
        let dir = TempDir::new("postgres");
        if is_root() {
            let ok = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir.0).status().unwrap();
            assert!(ok.success(), "chown postgres {}", dir.0.display());
        }
        let cluster = Self { dir, bin: server_bin(), port: free_port() };
        let data = cluster.data();
        cluster.run(&["initdb", "-D", &data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]);
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1", cluster.port, cluster.dir.0.display());
        let log = cluster.dir.0.join("server.log").display().to_string();
        cluster.run(&["pg_ctl", "-D", &data, "-o", &options, "-l", &log, "-w", "-t", "30", "start"]);
        cluster
    }

    fn data(&self) -> String {
        self.dir.0.join("data").display().to_string()
    }

    fn run(&self, args: &[&str]) {
        let program = self.bin.join(args[0]);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let out = cmd.args(&args[1..]).output().unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
        assert!(out.status.success(), "{} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let data = self.data();
        let args = ["-D", data.as_str(), "-m", "immediate", "-w", "stop"];
        let _ = if is_root() {
            Command::new("runuser").args(["-u", "postgres", "--"]).arg(&pg_ctl).args(args).output()
        } else {
            Command::new(&pg_ctl).args(args).output()
        };
    }
}
