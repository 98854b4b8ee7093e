//! The end-to-end harness: real `brook serve` processes on free loopback
//! ports with their own temporary data directories. A broker is killed
//! with SIGKILL (`Child::kill`) and restarted on the same directory; every
//! process the harness starts is killed and reaped when its handle drops.
//! Waiting is always "poll until true, or fail with what was seen".

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

pub const BROOK: &str = env!("CARGO_BIN_EXE_brook");

/// A port nothing listens on right now, below Linux's ephemeral range
/// (32768-60999): a port from that range, released and bound again later
/// (a broker's restart), may meanwhile be the local port of some outgoing
/// connection, and the bind fails. Each call in a process gets another
/// port (the end-to-end tests are one binary).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let seed = std::process::id().wrapping_mul(7919) % COUNT;
    let _ = NEXT.compare_exchange(u32::MAX, seed, Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..COUNT {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % COUNT) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + COUNT)
}

/// The module whose tests may run brokers now, and how many of its
/// brokers are up.
static TURN: Mutex<(Option<String>, usize)> = Mutex::new((None, 0));
static TURN_CHANGED: Condvar = Condvar::new();

/// A module's turn to run brokers. The end-to-end tests are one binary,
/// and its test threads would otherwise run brokers of two modules at
/// once: a chaos test beside a full-disk test, say, each timed for a
/// machine it has to itself. So tests of one module run beside each other
/// as they did when each file was its own binary, and a test of another
/// module waits, before its first broker starts, until the last broker of
/// the running module is gone. The module is the test thread's name up to
/// its first `::` (libtest names each test's thread after the test); a
/// broker started off a test thread takes no turn.
struct ModuleTurn(Option<String>);

impl ModuleTurn {
    fn take() -> ModuleTurn {
        let module =
            std::thread::current().name().and_then(|name| name.split_once("::")).map(|(module, _)| module.to_string());
        let Some(module) = module else {
            return ModuleTurn(None);
        };
        let mut turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        while turn.0.as_ref().is_some_and(|running| *running != module) {
            turn = TURN_CHANGED.wait(turn).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        turn.0 = Some(module.clone());
        turn.1 += 1;
        ModuleTurn(Some(module))
    }
}

impl Drop for ModuleTurn {
    fn drop(&mut self) {
        if self.0.is_none() {
            return;
        }
        let mut turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        turn.1 -= 1;
        if turn.1 == 0 {
            turn.0 = None;
            TURN_CHANGED.notify_all();
        }
    }
}

/// One broker process and its data directory.
pub struct Broker {
    child: Option<Child>,
    /// Extra `brook serve` flags, kept for restarts.
    extra_args: Vec<String>,
    /// Extra environment variables, kept for restarts.
    env: Vec<(String, String)>,
    pub address: String,
    /// Where Kafka clients reach it (`--kafka-listen`).
    pub kafka_address: String,
    pub data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    _turn: ModuleTurn,
}

impl Broker {
    /// Starts a broker on a free port with a fresh data dir, and waits
    /// until it answers.
    pub async fn start() -> Broker {
        Broker::start_with(&[]).await
    }

    /// Like `start`, with extra `brook serve` flags.
    pub async fn start_with(extra_args: &[&str]) -> Broker {
        Broker::start_at(format!("127.0.0.1:{}", free_port()), extra_args).await
    }

    /// A broker listening on `address`, with extra `brook serve` flags.
    pub async fn start_at(address: String, extra_args: &[&str]) -> Broker {
        Broker::start_prepared(address, extra_args, &[], |_| {}).await
    }

    /// Like `start_at`, after `prepare` was given the (not yet created)
    /// data directory: to mount a file system there, say.
    pub async fn start_prepared(
        address: String,
        extra_args: &[&str],
        env: &[(&str, &str)],
        prepare: impl FnOnce(&Path),
    ) -> Broker {
        let turn = ModuleTurn::take();
        let temp = tempfile::tempdir().expect("temp dir");
        let data_dir = temp.path().join("data");
        prepare(&data_dir);
        let mut broker = Broker {
            _turn: turn,
            child: None,
            extra_args: extra_args.iter().map(|arg| arg.to_string()).collect(),
            env: env.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect(),
            address,
            kafka_address: format!("127.0.0.1:{}", free_port()),
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
            .args(["serve", "--listen", &self.address, "--kafka-listen", &self.kafka_address, "--data-dir"])
            .arg(&self.data_dir)
            .args(&self.extra_args)
            .envs(self.env.iter().map(|(key, value)| (key, value)))
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

    /// SIGTERM, and waits (30 s at most) for the broker to stop: its
    /// controlled shutdown, then a clean close. Its exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("-TERM");
        let mut child = self.child.take().expect("broker running");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait for the broker") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("broker did not stop within 30 s of SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, then the disk is replaced: the data directory is gone
    /// (`restart` then starts the broker on an empty one).
    pub fn kill_and_lose_disk(&mut self) {
        self.kill();
        std::fs::remove_dir_all(&self.data_dir).expect("remove the data directory");
    }

    /// SIGKILL, then a power loss: the page cache is gone, so every segment
    /// file keeps only what its last fsync covered (the broker must run
    /// with `BROOK_FAULT_NOTE_SYNCED=1`; a segment never fsynced is empty),
    /// and what is written without fsync beside them (indexes, producer
    /// snapshots) is gone too; the broker rebuilds those. The number of
    /// bytes dropped.
    pub fn kill_and_lose_unsynced(&mut self) -> u64 {
        self.kill();
        let mut dropped = 0;
        let Ok(partitions) = std::fs::read_dir(self.data_dir.join("topics")) else { return 0 };
        for partition in partitions.flatten() {
            for file in std::fs::read_dir(partition.path()).into_iter().flatten().flatten() {
                let path = file.path();
                let name = path.file_name().and_then(|name| name.to_str()).unwrap_or_default().to_string();
                if name.ends_with(".index") || name.ends_with(".timeindex") || name.ends_with(".snapshot") {
                    std::fs::remove_file(&path).expect("drop an unsynced file");
                } else if name.ends_with(".log") {
                    let synced: u64 = std::fs::read_to_string(path.with_file_name(format!("{name}.synced")))
                        .ok()
                        .and_then(|text| text.trim().parse().ok())
                        .unwrap_or(0);
                    let segment = std::fs::OpenOptions::new().write(true).open(&path).expect("open a segment");
                    let length = segment.metadata().expect("segment size").len();
                    if synced < length {
                        segment.set_len(synced).expect("cut a segment to what was fsynced");
                        dropped += length - synced;
                    }
                }
            }
        }
        dropped
    }

    /// Sets an environment variable for the broker's next starts.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(existing, _)| existing != key);
        self.env.push((key.to_string(), value.to_string()));
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

    /// Sends `signal` (`-TERM`, `-STOP`, ...) to the broker process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("broker running").id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status().expect("run kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// The broker process's id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The broker process's peak resident memory so far (Linux's `VmHWM`), in bytes.
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
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

    /// The directory of this broker's replica of `topic`-`partition`
    /// (`<topic>-<partition>-<topic id>`), if it has one.
    pub fn partition_dir(&self, topic: &str, partition: u32) -> Option<PathBuf> {
        let prefix = format!("{topic}-{partition}-");
        std::fs::read_dir(self.data_dir.join("topics"))
            .ok()?
            .flatten()
            .find(|entry| entry.file_name().to_str().is_some_and(|name| name.starts_with(&prefix)))
            .map(|entry| entry.path())
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
        // A failing test keeps its brokers' logs: BROOK_KEEP_LOGS=DIR
        // copies each there before its temp dir goes.
        if let (true, Ok(keep)) = (std::thread::panicking(), std::env::var("BROOK_KEEP_LOGS")) {
            let name = self.address.replace([':', '.'], "_");
            let _ = std::fs::create_dir_all(&keep);
            let _ = std::fs::copy(self.log_path(), Path::new(&keep).join(format!("broker-{name}.log")));
        }
    }
}

/// Which bytes of a link a cut stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkDirection {
    /// What the calling broker sends (its requests).
    Requests,
    /// What comes back (the answers: the request was served, the caller
    /// never learns how).
    Answers,
}

/// A TCP proxy on one inter-broker link: broker `from`'s calls to broker
/// `to` (Raft, forwarding, replica fetches) go through it. Cutting a
/// direction holds its bytes (a blackhole: connections stay open, nothing
/// arrives, calls time out) until the cut heals, when they flow again, as
/// after a network partition. The proxy runs on the test's runtime.
pub struct LinkProxy {
    pub from: u32,
    pub to: u32,
    pub address: String,
    requests_cut: tokio::sync::watch::Sender<bool>,
    answers_cut: tokio::sync::watch::Sender<bool>,
    accepting: tokio::task::JoinHandle<()>,
}

impl LinkProxy {
    /// A proxy in front of `target` for a client: start a broker with
    /// `--advertised-address` set to the proxy's address, and its clients
    /// (which connect where the metadata says) go through it.
    pub async fn in_front_of(target: String) -> LinkProxy {
        LinkProxy::start(0, 0, target).await
    }

    async fn start(from: u32, to: u32, target: String) -> LinkProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a proxy");
        let address = listener.local_addr().expect("proxy address").to_string();
        let requests_cut = tokio::sync::watch::channel(false).0;
        let answers_cut = tokio::sync::watch::channel(false).0;
        let (requests, answers) = (requests_cut.subscribe(), answers_cut.subscribe());
        let accepting = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let (target, mut requests, answers) = (target.clone(), requests.clone(), answers.clone());
                tokio::spawn(async move {
                    // A connection made during a cut waits for it to heal.
                    if requests.wait_for(|cut| !*cut).await.is_err() {
                        return;
                    }
                    let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else { return };
                    let _ = (inbound.set_nodelay(true), outbound.set_nodelay(true));
                    let (inbound_read, inbound_write) = inbound.into_split();
                    let (outbound_read, outbound_write) = outbound.into_split();
                    tokio::spawn(pump(inbound_read, outbound_write, requests));
                    tokio::spawn(pump(outbound_read, inbound_write, answers));
                });
            }
        });
        LinkProxy { from, to, address, requests_cut, answers_cut, accepting }
    }

    /// Cuts (`true`) or heals (`false`) one direction.
    pub fn cut(&self, direction: LinkDirection, cut: bool) {
        let sender = match direction {
            LinkDirection::Requests => &self.requests_cut,
            LinkDirection::Answers => &self.answers_cut,
        };
        sender.send_replace(cut);
    }

    /// Heals both directions.
    pub fn heal(&self) {
        self.cut(LinkDirection::Requests, false);
        self.cut(LinkDirection::Answers, false);
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// Copies bytes from `from` to `to`, holding them while `cut` is set.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut cut: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0; 64 << 10];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if cut.wait_for(|cut| !*cut).await.is_err() || to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// An HTTP/1.1 GET of `path` from `address` (a broker's metrics endpoint):
/// the whole response, headers included.
pub fn http_get(address: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("connect to the metrics endpoint");
    // One request, then the server closes (HTTP/1.1 keeps a connection
    // open otherwise, and reading to the end would wait for it).
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    response
}

/// A raw `Records` client of the broker at `address` (to send batches
/// exactly as built, and read the answer's error name).
pub async fn records_client(
    address: &str,
) -> brook_client::proto::records_client::RecordsClient<tonic::transport::Channel> {
    let uri = format!("http://{address}");
    let channel = tonic::transport::Channel::from_shared(uri).expect("uri").connect().await.expect("connect");
    brook_client::proto::records_client::RecordsClient::new(channel)
}

/// A cluster of brokers with ids 1..=n, each on its own port and data dir,
/// reaching each other on internal ports of their own with a secret.
pub struct TestCluster {
    pub brokers: Vec<Broker>,
    /// With `start_proxied`: a proxy on every link between two brokers.
    pub links: Vec<LinkProxy>,
    /// Each broker's internal listener (`--internal-listen`).
    pub internal_addresses: Vec<String>,
    /// The cluster secret, and the directory of the file that holds it.
    pub secret: String,
    _secret_dir: tempfile::TempDir,
}

impl TestCluster {
    pub async fn start(nodes: u32) -> TestCluster {
        TestCluster::start_with(nodes, &[]).await
    }

    /// `start`, with `extra_args` for every `brook serve`.
    pub async fn start_with(nodes: u32, extra_args: &[&str]) -> TestCluster {
        TestCluster::start_inner(nodes, extra_args, false).await
    }

    /// `start`, with every link between two brokers through a [`LinkProxy`]
    /// (each broker's `--peers` names the proxies of its own links, so its
    /// calls to a peer pass them); clients still reach brokers directly.
    pub async fn start_proxied(nodes: u32) -> TestCluster {
        TestCluster::start_inner(nodes, &[], true).await
    }

    /// `start_proxied`, with `extra_args` for every `brook serve`.
    pub async fn start_proxied_with(nodes: u32, extra_args: &[&str]) -> TestCluster {
        TestCluster::start_inner(nodes, extra_args, true).await
    }

    /// `start`, after `prepare` was given each broker's id and (not yet
    /// created) data directory.
    pub async fn start_prepared(nodes: u32, prepare: &dyn Fn(u32, &Path)) -> TestCluster {
        TestCluster::start_inner_prepared(nodes, &[], &[], false, prepare).await
    }

    /// `start_proxied`, with extra environment variables for every `brook serve`.
    pub async fn start_proxied_with_env(nodes: u32, env: &[(&str, &str)]) -> TestCluster {
        TestCluster::start_inner_prepared(nodes, &[], env, true, &|_, _| {}).await
    }

    /// `start`, with extra environment variables for every `brook serve`.
    pub async fn start_with_env(nodes: u32, env: &[(&str, &str)]) -> TestCluster {
        TestCluster::start_inner_prepared(nodes, &[], env, false, &|_, _| {}).await
    }

    async fn start_inner(nodes: u32, extra_args: &[&str], proxied: bool) -> TestCluster {
        TestCluster::start_inner_prepared(nodes, extra_args, &[], proxied, &|_, _| {}).await
    }

    async fn start_inner_prepared(
        nodes: u32,
        extra_args: &[&str],
        env: &[(&str, &str)],
        proxied: bool,
        prepare: &dyn Fn(u32, &Path),
    ) -> TestCluster {
        let addresses: Vec<String> = (0..nodes).map(|_| format!("127.0.0.1:{}", free_port())).collect();
        let internal: Vec<String> = (0..nodes).map(|_| format!("127.0.0.1:{}", free_port())).collect();
        let secret = format!("test-secret-{}", free_port()).repeat(2);
        let secret_dir = tempfile::tempdir().expect("a temp dir for the secret");
        let secret_file = secret_dir.path().join("cluster-secret");
        std::fs::write(&secret_file, &secret).expect("write the secret");
        let secret_file = secret_file.to_string_lossy().to_string();
        let mut links = Vec::new();
        if proxied {
            for from in 1..=nodes {
                for to in (1..=nodes).filter(|to| *to != from) {
                    links.push(LinkProxy::start(from, to, internal[to as usize - 1].clone()).await);
                }
            }
        }
        let mut brokers = Vec::new();
        for (index, address) in addresses.iter().enumerate() {
            let me = index as u32 + 1;
            let peers: Vec<String> = internal
                .iter()
                .enumerate()
                .map(|(other, direct)| {
                    let other = other as u32 + 1;
                    let via = links.iter().find(|link| (link.from, link.to) == (me, other));
                    format!("{other}={}", via.map_or(direct, |link| &link.address))
                })
                .collect();
            let (id, peers) = (me.to_string(), peers.join(","));
            let mut args = vec![
                "--id",
                &id,
                "--peers",
                &peers,
                "--internal-listen",
                &internal[index],
                "--cluster-secret-file",
                &secret_file,
            ];
            args.extend_from_slice(extra_args);
            brokers.push(Broker::start_prepared(address.clone(), &args, env, |dir| prepare(me, dir)).await);
        }
        let cluster = TestCluster { brokers, links, internal_addresses: internal, secret, _secret_dir: secret_dir };
        cluster.wait_all_alive().await;
        cluster
    }

    /// The proxy of `from`'s calls to `to` (`start_proxied` only).
    pub fn link(&self, from: u32, to: u32) -> &LinkProxy {
        self.links.iter().find(|link| (link.from, link.to) == (from, to)).expect("a proxied link")
    }

    /// Cuts `a` and `b` apart, every direction of both links.
    pub fn cut_between(&self, a: u32, b: u32) {
        for (from, to) in [(a, b), (b, a)] {
            self.link(from, to).cut(LinkDirection::Requests, true);
            self.link(from, to).cut(LinkDirection::Answers, true);
        }
    }

    /// Heals every link.
    pub fn heal_links(&self) {
        for link in &self.links {
            link.heal();
        }
    }

    /// Waits until the first broker sees every broker registered and alive.
    pub async fn wait_all_alive(&self) {
        let (address, count) = (self.brokers[0].address.clone(), self.brokers.len());
        eventually("every broker registered and alive", Duration::from_secs(30), || {
            let address = address.clone();
            async move {
                let admin = brook_client::Admin::connect(&address).await.map_err(|e| e.to_string())?;
                let cluster = admin.describe_cluster().await.map_err(|e| e.to_string())?;
                let alive = cluster.brokers.iter().filter(|broker| broker.alive).count();
                if alive == count && cluster.controller_id != 0 {
                    Ok(())
                } else {
                    Err(format!("{cluster:?}"))
                }
            }
        })
        .await;
    }

    /// Broker `id` (1-based).
    pub fn broker(&mut self, id: u32) -> &mut Broker {
        &mut self.brokers[id as usize - 1]
    }

    pub fn address(&self, id: u32) -> String {
        self.brokers[id as usize - 1].address.clone()
    }

    /// Every broker's address: a client bootstrap list.
    pub fn bootstrap(&self) -> String {
        self.brokers.iter().map(|broker| broker.address.clone()).collect::<Vec<_>>().join(",")
    }

    /// The brokers' Kafka listeners, for Kafka clients.
    pub fn kafka_bootstrap(&self) -> Vec<String> {
        self.brokers.iter().map(|broker| broker.kafka_address.clone()).collect()
    }
}

/// The bytes of a replica's log in `dir`: its segment files in order.
/// (leader, leader epoch, ISR) of `topic`-`partition`, as the broker at
/// `address` sees it.
pub async fn partition_view(address: &str, topic: &str, partition: u32) -> Result<(u32, u32, Vec<u32>), String> {
    let admin = brook_client::Admin::connect(address).await.map_err(|e| e.to_string())?;
    let described = admin.describe_topic(topic).await.map_err(|e| e.to_string())?;
    let p = described.partitions.iter().find(|p| p.partition == partition).ok_or("no such partition")?;
    Ok((p.leader, p.leader_epoch, p.isr.clone()))
}

pub fn log_bytes(dir: &Path) -> Vec<u8> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("partition dir")
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "log"))
        .collect();
    segments.sort();
    segments.iter().flat_map(|segment| std::fs::read(segment).expect("read segment")).collect()
}

/// The partition directories under a broker's data dir, sorted.
pub fn partition_dirs(data_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data_dir.join("topics"))
        .expect("topics dir")
        .flatten()
        .filter_map(|entry| entry.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

/// Polls `check` until it returns `Some`, or panics after `limit` with the
/// last thing it saw.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(seen) if Instant::now() > deadline => panic!("{what}: not within {limit:?}; last seen: {seen}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A process the test started, SIGKILLed and reaped when dropped, so a
/// failing test leaves nothing running.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An acks=all producer that gives up on an answer after 1.5 s and
/// retries 100 ms later, in small batches: for tests that hold a broker's
/// answers (a cut `LinkProxy`) so that batches the broker appended are
/// sent again.
pub async fn retrying_producer(address: &str) -> brook_client::Producer {
    let config = brook_client::ProducerConfig {
        acks: brook_client::Acks::All,
        request_timeout: Duration::from_millis(1500),
        retry_backoff: Duration::from_millis(100),
        linger: Duration::from_millis(2),
        batch_size: 512,
        ..brook_client::ProducerConfig::default()
    };
    brook_client::Producer::connect(address, config).await.expect("producer")
}

/// The broker's error name of a refused call (its `brook-error` header),
/// or "" when it sent none; compare with `ErrorCode::X.name()`.
pub fn error_name(status: &tonic::Status) -> &str {
    status.metadata().get(brook_proto::ERROR_CODE_KEY).and_then(|value| value.to_str().ok()).unwrap_or("")
}
