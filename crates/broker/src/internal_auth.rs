//! The internal listener's one check: a call carries the cluster secret
//! (`ClusterSecret::admits`), or it is refused as UNAUTHENTICATED. Used by
//! the interceptor in front of the internal services and by the replica
//! fetch fast path, which runs before them.

use brook_metadata::ClusterSecret;

/// The call (its metadata) if it carries the cluster secret; else the
/// refusal.
pub(crate) fn check_secret(
    secret: &ClusterSecret,
    request: tonic::Request<()>,
) -> Result<tonic::Request<()>, tonic::Status> {
    if secret.admits(&request) {
        Ok(request)
    } else {
        Err(lacks_cluster_secret())
    }
}

/// The refusal of an internal call without the cluster secret.
pub(crate) fn lacks_cluster_secret() -> tonic::Status {
    tonic::Status::unauthenticated(
        "this is the internal listener, for brokers of the cluster: the call lacks the cluster secret",
    )
}
