//! The end-to-end harness: real `brook serve` processes on free loopback
//! ports with their own temporary data directories. A broker is killed
//! with SIGKILL (`Child::kill`) and restarted on the same directory; every
//! process the harness starts is killed and reaped when its handle drops.
//! Waiting is always "poll until true, or fail with what was seen".

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BROOK: &str = env!("CARGO_BIN_EXE_brook");

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// One broker process and its data directory.
pub struct Broker {
    child: Option<Child>,
    /// Extra `brook serve` flags, kept for restarts.
    extra_args: Vec<String>,
    pub address: String,
    pub data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl Broker {
    /// Starts a broker on a free port with a fresh data dir, and waits
    /// until it answers.
    pub async fn start() -> Broker {
        Broker::start_with(&[]).await
    }

    /// Like `start`, with extra `brook serve` flags.
    pub async fn start_with(extra_args: &[&str]) -> Broker {
        let temp = tempfile::tempdir().expect("temp dir");
        let data_dir = temp.path().join("data");
        let mut broker = Broker {
            child: None,
            extra_args: extra_args.iter().map(|arg| arg.to_string()).collect(),
            address: format!("127.0.0.1:{}", free_port()),
            data_dir,
            _temp: Some(temp),
        };
        broker.spawn().await;
        broker
    }

    fn log_path(&self) -> PathBuf {
        self.data_dir.with_file_name("broker.log")
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).expect("open broker log");
        let child = Command::new(BROOK)
            .args(["serve", "--listen", &self.address, "--data-dir"])
            .arg(&self.data_dir)
            .args(&self.extra_args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start brook serve");
        self.child = Some(child);
        self.wait_ready().await;
    }

    /// Polls the broker's metadata RPC until it answers (30 s at most).
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match brook_client::Admin::connect(&self.address).await {
                Ok(admin) if admin.list_topics().await.is_ok() => return,
                outcome => {
                    if let Some(status) = self.child.as_mut().and_then(|child| child.try_wait().ok().flatten()) {
                        panic!("broker exited with {status} before it was ready:\n{}", self.log());
                    }
                    if Instant::now() > deadline {
                        panic!("broker not ready after 30 s ({:?}):\n{}", outcome.err(), self.log());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL, no chance to close logs cleanly.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL the broker");
            child.wait().expect("reap the broker");
        }
    }

    /// Starts the broker again on the same port and data dir.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// SIGSTOP: the process stays, but answers nothing (a hung broker).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("broker running").id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status().expect("run kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|child| child.try_wait().ok().flatten().is_none())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        &self.data_dir
    }

    /// A `brook` client command aimed at this broker.
    pub fn command(&self) -> Command {
        let mut command = Command::new(BROOK);
        command.env("BROOK_BOOTSTRAP", &self.address).env_remove("RUST_LOG");
        command
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // A paused process is killed all the same: SIGKILL needs no CONT.
        self.kill();
    }
}
