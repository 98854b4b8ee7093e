//! `brook dev`: a local cluster in one command, for trying Brook out. It
//! starts N `brook serve` processes (this same binary) on consecutive
//! loopback ports with their own data directories, prints how to reach
//! them, and on Ctrl-C or SIGTERM stops them (SIGTERM, so they close
//! their logs). The brokers reach each other on internal ports 1000 above
//! their client ports, with a cluster secret generated once into
//! `DIR/cluster-secret`; Kafka clients reach them on ports 100 above
//! their client ports (9192, 9193, 9194 by default).

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// How many brokers.
    #[arg(long, default_value_t = 3)]
    nodes: u32,
    /// Where their data directories go (`DIR/broker-1`, ...).
    #[arg(long, default_value = "./data/dev")]
    data: PathBuf,
    /// The first broker's port; the others follow.
    #[arg(long, default_value_t = 9092)]
    base_port: u16,
}

impl DevArgs {
    /// How many brokers this `dev` cluster runs.
    pub fn nodes(&self) -> u32 {
        self.nodes
    }
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    anyhow::ensure!((1..=9).contains(&args.nodes), "--nodes must be between 1 and 9");
    let binary = std::env::current_exe().context("finding the brook binary")?;
    let addresses: Vec<String> =
        (0..args.nodes).map(|index| format!("127.0.0.1:{}", args.base_port + index as u16)).collect();
    let internal: Vec<String> = (0..args.nodes)
        .map(|index| {
            let port = args
                .base_port
                .checked_add(1000 + index as u16)
                .context("--base-port leaves no room for internal ports")?;
            Ok(format!("127.0.0.1:{port}"))
        })
        .collect::<anyhow::Result<_>>()?;
    let peers: String = internal
        .iter()
        .enumerate()
        .map(|(index, address)| format!("{}={address}", index + 1))
        .collect::<Vec<_>>()
        .join(",");
    let kafka: Vec<String> = (0..args.nodes)
        .map(|index| {
            let port =
                args.base_port.checked_add(100 + index as u16).context("--base-port leaves no room for Kafka ports")?;
            Ok(format!("127.0.0.1:{port}"))
        })
        .collect::<anyhow::Result<_>>()?;
    let secret_file = cluster_secret_file(&args.data)?;
    let mut children = Vec::new();
    for (index, address) in addresses.iter().enumerate() {
        let id = index + 1;
        let data_dir = args.data.join(format!("broker-{id}"));
        std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
        let mut command = tokio::process::Command::new(&binary);
        command.args(["serve", "--id", &id.to_string(), "--listen", address, "--kafka-listen", &kafka[index]]);
        command.arg("--data-dir").arg(&data_dir);
        if args.nodes > 1 {
            command.args(["--peers", &peers, "--internal-listen", &internal[index], "--cluster-secret-file"]);
            command.arg(&secret_file);
            // Every broker stops at once: there is nobody to hand
            // leaderships to (a rolling restart stops one at a time).
            command.args(["--controlled-shutdown-timeout-ms", "0"]);
        }
        let child =
            command.stdin(Stdio::null()).kill_on_drop(true).spawn().with_context(|| format!("starting broker {id}"))?;
        children.push(child);
    }
    let bootstrap = addresses.join(",");
    wait_until_formed(&bootstrap, args.nodes as usize).await;
    outln!("brook dev: {} broker(s) on {bootstrap}, data in {}", args.nodes, args.data.display());
    outln!("Kafka clients: {}", kafka.join(","));
    outln!("try:   export BROOK_BOOTSTRAP={bootstrap}");
    outln!("       brook topic create demo --partitions 3 --replication-factor {}", args.nodes.min(3));
    outln!("       seq 1 10 | brook produce demo && brook consume demo --from-beginning --max-messages 10");
    outln!("       brook cluster info");
    outln!("Ctrl-C stops the cluster.");
    // Ctrl-C, or SIGTERM (`kill`, a service manager): either way the
    // brokers go down with this process instead of outliving it.
    crate::serve::wait_for_signal().await;
    // stdout may be gone by now (a closed pipe): that must not stop the
    // shutdown, so this line's write error is ignored.
    let _ = writeln!(std::io::stdout(), "stopping {} broker(s)...", children.len());
    for child in &children {
        if let Some(pid) = child.id() {
            // SIGTERM: each broker closes its logs cleanly.
            let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
    }
    for mut child in children {
        let _ = child.wait().await;
    }
    Ok(())
}

/// Waits (at most 30 s) until every broker is registered and alive, so the
/// commands printed next work at once.
async fn wait_until_formed(bootstrap: &str, nodes: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if let Ok(admin) = brook_client::Admin::connect(bootstrap).await {
            if let Ok(cluster) = admin.describe_cluster().await {
                if cluster.brokers.iter().filter(|broker| broker.alive).count() == nodes && cluster.controller_id != 0 {
                    return;
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    eprintln!("warning: the cluster has not formed after 30 s; see the brokers' logs above");
}

/// The dev cluster's secret: made once (random) in `data/cluster-secret`,
/// readable by this user only, and reused by every later run.
fn cluster_secret_file(data: &std::path::Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let path = data.join("cluster-secret");
    if !path.exists() {
        let secret = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        file.write_all(secret.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(path)
}
