//! `brook cluster info`: brokers, the controller, and for each partition
//! its leader, epoch, replicas and ISR; `brook cluster health`: whether
//! all of that is as it should be; `brook health`: one broker's own.

use brook_client::Admin;

pub async fn info(bootstrap: &str) -> anyhow::Result<()> {
    let admin = Admin::connect(bootstrap).await?;
    let cluster = admin.describe_cluster().await?;
    outln!("cluster {}", cluster.cluster_id);
    let controller = if cluster.controller_id == 0 { "none".to_string() } else { cluster.controller_id.to_string() };
    outln!("controller {controller}");
    for broker in &cluster.brokers {
        let state = if broker.alive { "alive" } else { "dead" };
        let role = if broker.id == cluster.controller_id { " (controller)" } else { "" };
        outln!("broker {}\t{}\t{state}{role}", broker.id, broker.address);
    }
    for summary in admin.list_topics().await? {
        let topic = admin.describe_topic(&summary.name).await?;
        for partition in topic.partitions {
            let leader = if partition.leader == 0 { "none".to_string() } else { partition.leader.to_string() };
            outln!(
                "{}-{}\tleader={leader}\tepoch={}\treplicas={:?}\tisr={:?}",
                topic.name,
                partition.partition,
                partition.leader_epoch,
                partition.replicas,
                partition.isr
            );
            if !partition.offline_reason.is_empty() {
                outln!("\toffline: {}", partition.offline_reason);
            }
        }
    }
    Ok(())
}

/// Exits 0 only if every registered broker is alive, a controller is
/// elected, and every partition has a leader and its full ISR (for
/// scripts: a rolling restart waits for this before the next broker).
/// Otherwise prints what is wrong, one line each, and fails.
pub async fn health_of_cluster(bootstrap: &str) -> anyhow::Result<()> {
    let admin = Admin::connect(bootstrap).await?;
    let cluster = admin.describe_cluster().await?;
    let mut problems = Vec::new();
    if cluster.controller_id == 0 {
        problems.push("no controller is elected".to_string());
    }
    for broker in cluster.brokers.iter().filter(|broker| !broker.alive) {
        problems.push(format!("broker {} ({}) is down", broker.id, broker.address));
    }
    let mut partitions = 0;
    for summary in admin.list_topics().await? {
        let topic = admin.describe_topic(&summary.name).await?;
        for partition in topic.partitions {
            partitions += 1;
            let name = format!("{}-{}", topic.name, partition.partition);
            if partition.leader == 0 {
                let reason = if partition.offline_reason.is_empty() { "" } else { ": " };
                problems.push(format!("{name} has no leader{reason}{}", partition.offline_reason));
            } else if partition.isr.len() < partition.replicas.len() {
                problems.push(format!(
                    "{name} is under-replicated: isr {:?} of replicas {:?}",
                    partition.isr, partition.replicas
                ));
            }
        }
    }
    if problems.is_empty() {
        outln!(
            "healthy: {} broker(s) alive, controller {}, {partitions} partition(s) led with full ISRs",
            cluster.brokers.len(),
            cluster.controller_id
        );
        return Ok(());
    }
    for problem in &problems {
        outln!("{problem}");
    }
    anyhow::bail!("the cluster is not healthy: {} problem(s)", problems.len())
}

/// The standard gRPC health check against the first bootstrap address:
/// SERVING only once the broker's metadata caught up, and not while it
/// shuts down.
pub async fn health(bootstrap: &str) -> anyhow::Result<()> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let address = bootstrap.split(',').next().unwrap_or(bootstrap).trim();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))?
        .connect_timeout(std::time::Duration::from_secs(2))
        .connect()
        .await
        .map_err(|error| anyhow::anyhow!("broker at {address} unreachable: {error}"))?;
    let mut request = tonic::Request::new(HealthCheckRequest { service: String::new() });
    request.set_timeout(std::time::Duration::from_secs(2));
    let status = HealthClient::new(channel).check(request).await?.into_inner().status;
    anyhow::ensure!(status == ServingStatus::Serving as i32, "broker at {address} is not serving (status {status})");
    outln!("serving");
    Ok(())
}
