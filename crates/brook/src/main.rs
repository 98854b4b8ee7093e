//! The `brook` binary: `serve` runs a broker; `topic`, `produce` and
//! `consume` are its command-line clients. Errors print one line to stderr
//! and exit non-zero.

/// `println!` for what a command prints on stdout: when the reader has gone
/// (`brook cluster info | head -1`), the command ends quietly and
/// successfully, as `cat` does, instead of panicking on the broken pipe.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::write_stdout_line(format_args!($($arg)*))
    };
}

mod bench;
mod cluster;
mod consume;
mod dev;
mod group;
mod produce;
mod progress;
mod record_format;
mod serve;
mod topic;

use std::process::ExitCode;

/// jemalloc instead of the system allocator: glibc's gives freed memory
/// back to the kernel (trimming, dynamic mmap threshold) and takes it again
/// request after request, so the broker spent ~15% of its time in page
/// faults and page clearing when its produce requests vary in size (many
/// partitions); jemalloc keeps freed pages for reuse (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "brook", version, about = "Brook: a replicated, persistent message broker in the family of Kafka")]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Brokers that client commands contact first, `host:port[,host:port...]`.
    #[arg(long, env = "BROOK_BOOTSTRAP", default_value = "127.0.0.1:9092", global = true)]
    bootstrap: String,
    /// Logs (to stderr) as plain text, or as one JSON object per line
    /// (timestamp, level, target, message, fields, spans) for log shippers.
    #[arg(long, env = "BROOK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a broker until Ctrl-C or SIGTERM (then close its logs cleanly).
    ///
    /// Example: brook serve --id 1 --listen 127.0.0.1:9092 --data-dir ./data   (BROOK_* variables work too; --print-config shows the result)
    Serve(Box<serve::ServeArgs>),
    /// Run a local cluster of N brokers in one command, until Ctrl-C.
    ///
    /// Example: brook dev --nodes 3 --base-port 9092
    Dev(dev::DevArgs),
    /// Exit 0 if the broker at --bootstrap answers the gRPC health check as
    /// serving (it has caught up with the cluster and is not shutting
    /// down), 1 otherwise (for container health checks).
    ///
    /// Example: brook health --bootstrap 127.0.0.1:9092
    Health,
    /// Show the cluster: brokers, controller, partition leaders and ISRs.
    ///
    /// Example: brook cluster info; brook cluster health
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Create, list, describe and delete topics.
    ///
    /// Example: brook topic create orders --partitions 6 --replication-factor 3
    Topic {
        #[command(subcommand)]
        command: topic::TopicCommand,
    },
    /// List, describe (members, lag), reset and delete consumer groups.
    ///
    /// Example: brook group describe billing
    Group {
        #[command(subcommand)]
        command: group::GroupCommand,
    },
    /// Send each line of stdin as one record; exit 0 only once every line
    /// was acknowledged at the requested level.
    ///
    /// Example: seq 1 100 | brook produce orders --acks all --header source=seq
    Produce(produce::ProduceArgs),
    /// Print records of a topic, one per line.
    ///
    /// Example: brook consume orders --group billing --format json
    Consume(consume::ConsumeArgs),
    /// Print shell completions for bash, zsh, fish, elvish or powershell.
    ///
    /// Example: brook completions bash > /etc/bash_completion.d/brook;
    /// brook completions zsh > ~/.zfunc/_brook;
    /// brook completions fish > ~/.config/fish/completions/brook.fish
    Completions { shell: clap_complete::Shell },
    /// Measure throughput and latency (and the machine's own limits).
    ///
    /// Example: brook bench produce --records 1000000 --acks all
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Brokers, which is controller, and each partition's leader, epoch,
    /// replicas and ISR.
    ///
    /// Example: brook cluster info
    Info,
    /// Exit 0 only if every broker is alive and every partition has a
    /// leader and its full ISR; otherwise print what is wrong and exit 1.
    ///
    /// Example: brook cluster health || brook cluster info
    Health,
}

fn init_logging(default_level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => logs.json().with_current_span(true).with_span_list(false).init(),
        // Colours only on a terminal: a log file or pipe gets plain text.
        LogFormat::Text => logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
    }
}

/// Blocking-pool threads per broker in this process (see `main`).
const IO_THREADS_PER_BROKER: usize = 8;

/// Writes one line to stdout (see `outln!`). Any other failure to write
/// is reported, with a failing exit.
fn write_stdout_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing stdout: {error}");
        std::process::exit(1);
    }
}

/// Whether `error` comes from writing to a reader that has gone.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Serve(_) | Command::Dev(_)) { "info" } else { "warn" };
    init_logging(default_level, cli.log_format);
    // Log I/O runs on the blocking pool. Tokio's default cap (512 threads)
    // let every append and read wake a thread of its own: on 2 cores the
    // broker spent a third of its time switching between them, and
    // produce ran at 3.1 M records/s; capped at 8 per broker (Kafka's
    // num.io.threads default) busy threads take queued work back to back:
    // 4.0 M/s (BENCHMARKS.md).
    let blocking_threads = match &cli.command {
        Command::Dev(args) => IO_THREADS_PER_BROKER * args.nodes() as usize,
        _ => IO_THREADS_PER_BROKER,
    };
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().enable_all().max_blocking_threads(blocking_threads).build() {
            Ok(runtime) => runtime,
            Err(error) => {
                eprintln!("error: cannot start the async runtime: {error}");
                return ExitCode::FAILURE;
            }
        };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(*args).await,
            Command::Dev(args) => dev::run(args).await,
            Command::Cluster { command: ClusterCommand::Info } => cluster::info(&cli.bootstrap).await,
            Command::Cluster { command: ClusterCommand::Health } => cluster::health_of_cluster(&cli.bootstrap).await,
            Command::Health => cluster::health(&cli.bootstrap).await,
            Command::Topic { command } => topic::run(command, &cli.bootstrap).await,
            Command::Group { command } => group::run(command, &cli.bootstrap).await,
            Command::Completions { shell } => {
                let mut command = <Cli as clap::CommandFactory>::command();
                // Into a buffer first: clap_complete panics on a write error
                // (a closed pipe), this reports it.
                let mut script = Vec::new();
                clap_complete::generate(shell, &mut command, "brook", &mut script);
                std::io::Write::write_all(&mut std::io::stdout(), &script)
                    .map_err(|error| anyhow::anyhow!("writing the completions: {error}"))
            }
            Command::Produce(args) => produce::run(args, &cli.bootstrap).await,
            Command::Consume(args) => consume::run(args, &cli.bootstrap).await,
            Command::Bench { command } => bench::run(command, &cli.bootstrap).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `brook consume T | head -1`: the reader took what it wanted.
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
