//! The data directory's identity (Kafka's `meta.properties`, KIP-858):
//! which broker it belongs to, which cluster, and its own random id.
//!
//! ```text
//! data_dir/meta.properties   version, node.id, directory.id, cluster.id
//! data_dir/boot-id           the machine's boot id when the broker last started
//! data_dir/metadata/         the metadata group's sled database
//! data_dir/topics/           one directory per partition replica
//! ```
//!
//! A directory without `meta.properties` is new (or was lost and replaced):
//! it gets a fresh directory id, and the broker registers with it, so the
//! metadata group knows this broker holds none of the replicas it held
//! before (see `brook_metadata::CommandV1::RegisterBroker`). A directory
//! of another broker id is refused at start; one of another cluster is
//! refused by the metadata group when the broker registers. The cluster id
//! is written in once the broker has joined.
//!
//! The boot id (Linux's `/proc/sys/kernel/random/boot_id`, new at every
//! boot) tells whether the machine restarted since the broker last ran:
//! if it did, a log that was not closed cleanly may have lost what it had
//! not fsynced with the page cache (a power loss). Where no boot id can be
//! read, the broker cannot tell, and takes the machine as not restarted.
//!
//! Invariant: the identity file is replaced atomically (temporary file, fsync,
//! rename, fsync of the directory), so a crash leaves the old or the new.

use std::path::{Path, PathBuf};

use brook_metadata::{ClusterId, DirectoryId};
use brook_record::BrokerId;

use crate::error::BrokerError;

/// The identity file's name in the data directory.
pub const META_PROPERTIES: &str = "meta.properties";
/// Where the boot id of the broker's last start is kept.
const BOOT_ID_FILE: &str = "boot-id";
/// The kernel's id of this boot.
const KERNEL_BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";
/// Fault injection for tests: a boot id to use instead of the kernel's
/// (a test "reboots" a broker by starting it with another one).
pub const FAULT_BOOT_ID_VARIABLE: &str = "BROOK_FAULT_BOOT_ID";
/// What the single-node catalog of earlier versions left in a data
/// directory: its presence means the directory is in the old format.
const OLD_CATALOG_DIR: &str = "catalog";
const VERSION: &str = "1";

/// What `meta.properties` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectoryIdentity {
    pub broker_id: BrokerId,
    pub directory_id: DirectoryId,
    /// `None` until the broker has joined a cluster.
    pub cluster_id: Option<ClusterId>,
}

/// Creates the data directory if needed, and reads its identity, or gives
/// a new directory one. Refuses a directory of another broker, one whose
/// identity file cannot be read, and one in the old single-node format.
pub fn open(data_dir: &Path, broker_id: BrokerId) -> Result<DirectoryIdentity, BrokerError> {
    let refuse = |reason: String| BrokerError::DataDir { path: data_dir.to_path_buf(), reason };
    if data_dir.join(OLD_CATALOG_DIR).is_dir() {
        return Err(refuse(format!(
            "it is in the old single-node format (it has a '{OLD_CATALOG_DIR}' directory); this version keeps \
             topics in the metadata group even on a single broker and cannot read it: start with an empty \
             data directory"
        )));
    }
    std::fs::create_dir_all(data_dir).map_err(|error| refuse(format!("cannot create it: {error}")))?;
    let path = data_dir.join(META_PROPERTIES);
    let identity = match std::fs::read_to_string(&path) {
        Ok(text) => parse(&text).map_err(|reason| refuse(format!("{META_PROPERTIES} is unreadable: {reason}")))?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let identity = DirectoryIdentity { broker_id, directory_id: DirectoryId::random(), cluster_id: None };
            write(data_dir, &identity)?;
            tracing::info!(dir = %data_dir.display(), directory_id = %identity.directory_id, "a new data directory: it holds no replica yet");
            identity
        }
        Err(error) => return Err(refuse(format!("cannot read {META_PROPERTIES}: {error}"))),
    };
    if identity.broker_id != broker_id {
        return Err(refuse(format!(
            "it belongs to broker {} (its {META_PROPERTIES} says so), not to broker {broker_id}: start broker \
             {broker_id} with its own data directory, or an empty one",
            identity.broker_id
        )));
    }
    Ok(identity)
}

/// Whether the machine restarted since the broker last started on this
/// directory (its boot id changed), and notes this boot's id for the next
/// start. `false` when either id is unknown (a new directory, or no boot
/// id to read).
pub fn rebooted_since_last_start(data_dir: &Path) -> bool {
    let current = std::env::var(FAULT_BOOT_ID_VARIABLE)
        .ok()
        .or_else(|| std::fs::read_to_string(KERNEL_BOOT_ID).ok())
        .map(|id| id.trim().to_string());
    let Some(current) = current.filter(|id| !id.is_empty()) else { return false };
    let path = data_dir.join(BOOT_ID_FILE);
    let previous = std::fs::read_to_string(&path).ok().map(|id| id.trim().to_string());
    if previous.as_deref() != Some(current.as_str()) {
        // Not synced: a torn or lost note reads as another boot, which only
        // makes the next start more careful.
        if let Err(error) = std::fs::write(&path, &current) {
            tracing::warn!(path = %path.display(), %error, "cannot note this boot's id");
        }
    }
    previous.is_some_and(|previous| previous != current)
}

/// Writes the cluster's id into the directory's identity, once it joined.
pub fn record_cluster_id(
    data_dir: &Path,
    identity: &DirectoryIdentity,
    cluster_id: ClusterId,
) -> Result<(), BrokerError> {
    if identity.cluster_id == Some(cluster_id) {
        return Ok(());
    }
    write(data_dir, &DirectoryIdentity { cluster_id: Some(cluster_id), ..*identity })
}

fn parse(text: &str) -> Result<DirectoryIdentity, String> {
    let mut fields = std::collections::BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#')) {
        let (key, value) = line.split_once('=').ok_or_else(|| format!("line '{line}' is not key=value"))?;
        fields.insert(key.trim(), value.trim());
    }
    let field = |key: &str| fields.get(key).copied().ok_or_else(|| format!("it has no {key}"));
    let version = field("version")?;
    if version != VERSION {
        return Err(format!("version {version} is not one this broker knows ({VERSION})"));
    }
    let broker_id = field("node.id")?.parse().map(BrokerId).map_err(|_| "node.id is not a number".to_string())?;
    let directory_id = field("directory.id")?.parse().map_err(|error| format!("directory.id is not an id: {error}"))?;
    let cluster_id = match fields.get("cluster.id") {
        Some(text) => Some(text.parse().map_err(|error| format!("cluster.id is not an id: {error}"))?),
        None => None,
    };
    Ok(DirectoryIdentity { broker_id, directory_id, cluster_id })
}

fn write(data_dir: &Path, identity: &DirectoryIdentity) -> Result<(), BrokerError> {
    let mut text = format!(
        "# This data directory's identity, written by brook: do not edit or copy it.\nversion={VERSION}\nnode.id={}\ndirectory.id={}\n",
        identity.broker_id, identity.directory_id
    );
    if let Some(cluster_id) = identity.cluster_id {
        text.push_str(&format!("cluster.id={cluster_id}\n"));
    }
    let failed = |what: &str, path: &PathBuf, error: std::io::Error| BrokerError::DataDir {
        path: data_dir.to_path_buf(),
        reason: format!("{what} {}: {error}", path.display()),
    };
    let (path, temporary) = (data_dir.join(META_PROPERTIES), data_dir.join(format!("{META_PROPERTIES}.tmp")));
    let file = std::fs::File::create(&temporary).map_err(|error| failed("cannot create", &temporary, error))?;
    std::io::Write::write_all(&mut &file, text.as_bytes())
        .map_err(|error| failed("cannot write", &temporary, error))?;
    file.sync_all().map_err(|error| failed("cannot sync", &temporary, error))?;
    std::fs::rename(&temporary, &path).map_err(|error| failed("cannot rename", &temporary, error))?;
    let dir = std::fs::File::open(data_dir).map_err(|error| failed("cannot open", &data_dir.to_path_buf(), error))?;
    dir.sync_all().map_err(|error| failed("cannot sync", &data_dir.to_path_buf(), error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_directory_gets_an_identity_that_it_keeps_and_later_its_cluster() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = open(dir.path(), BrokerId(2)).expect("new");
        assert_eq!((first.broker_id, first.cluster_id), (BrokerId(2), None));
        assert_eq!(open(dir.path(), BrokerId(2)).expect("again"), first, "the identity is kept");
        let cluster = ClusterId::random();
        record_cluster_id(dir.path(), &first, cluster).expect("record");
        let joined = open(dir.path(), BrokerId(2)).expect("joined");
        assert_eq!(joined, DirectoryIdentity { cluster_id: Some(cluster), ..first });
    }

    #[test]
    fn a_reboot_is_seen_once_between_two_starts_with_different_boot_ids() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join(BOOT_ID_FILE), "boot-a").expect("an earlier start");
        // The kernel's boot id differs from "boot-a" (tests never set the
        // fault variable for this process).
        if std::env::var(FAULT_BOOT_ID_VARIABLE).is_err() && std::fs::read_to_string(KERNEL_BOOT_ID).is_ok() {
            assert!(rebooted_since_last_start(dir.path()), "another boot");
            assert!(!rebooted_since_last_start(dir.path()), "the same boot again");
        }
        let fresh = tempfile::tempdir().expect("temp dir");
        assert!(!rebooted_since_last_start(fresh.path()), "a new directory has nothing to lose");
    }

    #[test]
    fn a_directory_of_another_broker_or_an_unreadable_one_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("temp dir");
        open(dir.path(), BrokerId(1)).expect("broker 1's");
        let refused = open(dir.path(), BrokerId(3)).expect_err("not broker 3's").to_string();
        assert!(refused.contains("belongs to broker 1") && refused.contains("not to broker 3"), "{refused}");
        std::fs::write(dir.path().join(META_PROPERTIES), "version=1\nnode.id=x\n").expect("write");
        let refused = open(dir.path(), BrokerId(1)).expect_err("unreadable").to_string();
        assert!(refused.contains("node.id is not a number"), "{refused}");
    }
}
