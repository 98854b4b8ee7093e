//! The APIs this listener serves, at which versions, and the dispatch of a
//! decoded request to its handler.
//!
//! Versions: a client takes, for each API, the highest version both it and
//! the broker know. The minimums follow what clients test for: librdkafka
//! before 2.11 enables compression only if Produce v0 is advertised, so
//! Produce is advertised from v0, and a Produce below v3 (the old message
//! formats, which Brook does not store) is answered UNSUPPORTED_VERSION on
//! every partition. APIs left out (transactions, the group APIs for now)
//! make clients do without them.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::connection::Request;
use crate::{admin, configs, fetch, metadata, offsets, produce, Core, KafkaError};

/// (API, lowest advertised version, highest).
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 12),
    (ApiKey::Fetch, 4, 16),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::ApiVersions, 0, 4),
];

/// The versions of `api` this broker advertises, if it serves it.
pub fn advertised(api: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED.iter().find(|(key, _, _)| *key == api).map(|(_, min, max)| (*min, *max))
}

/// What a request gets.
#[derive(Debug)]
pub enum Answer {
    /// A whole response frame: size, header, body.
    Respond(Bytes),
    /// A frame in pieces, some sent from files (Fetch).
    Pieces(Vec<crate::fetch_frame::Piece>),
    /// Nothing (produce with acks=0).
    Silent,
}

/// Runs a request whose API and version were checked against
/// [`SUPPORTED`] (or an ApiVersions of any version).
pub async fn handle<C: Core>(core: &C, request: Request) -> Result<Answer, KafkaError> {
    let version = request.header.request_api_version;
    let mut body = request.body.clone();
    match request.api_key {
        ApiKey::ApiVersions => api_versions(&request),
        ApiKey::Metadata => respond(&request, &metadata::metadata(core, decode(&mut body, version)?, version)),
        ApiKey::Produce => match produce::produce(core, decode(&mut body, version)?, version).await {
            Some(response) => respond(&request, &response),
            None => Ok(Answer::Silent),
        },
        ApiKey::Fetch => {
            let answer = fetch::fetch(core, decode(&mut body, version)?, version).await;
            crate::fetch_frame::encode(request.header.correlation_id, version, answer).map(Answer::Pieces)
        }
        ApiKey::ListOffsets => respond(&request, &offsets::list_offsets(core, decode(&mut body, version)?).await),
        ApiKey::OffsetForLeaderEpoch => {
            respond(&request, &offsets::offset_for_leader_epoch(core, decode(&mut body, version)?).await)
        }
        ApiKey::InitProducerId => respond(&request, &admin::init_producer_id(core, decode(&mut body, version)?).await),
        ApiKey::CreateTopics => respond(&request, &admin::create_topics(core, decode(&mut body, version)?).await),
        ApiKey::DeleteTopics => respond(&request, &admin::delete_topics(core, decode(&mut body, version)?).await),
        ApiKey::CreatePartitions => {
            respond(&request, &admin::create_partitions(core, decode(&mut body, version)?).await)
        }
        ApiKey::DescribeConfigs => respond(&request, &configs::describe_configs(core, decode(&mut body, version)?)),
        ApiKey::IncrementalAlterConfigs => {
            respond(&request, &configs::incremental_alter_configs(core, decode(&mut body, version)?).await)
        }
        ApiKey::DescribeCluster => respond(&request, &metadata::describe_cluster(core)),
        other => Err(KafkaError::Frame(format!("{other:?} is not served"))),
    }
}

/// Whether a request of `api` at `version` is served; what is not closes
/// the connection (but ApiVersions, answered whatever its version).
pub fn check_version(api: ApiKey, version: i16) -> Result<(), KafkaError> {
    if api == ApiKey::ApiVersions {
        return Ok(());
    }
    match advertised(api) {
        Some((min, max)) if (min..=max).contains(&version) => Ok(()),
        Some((min, max)) => Err(KafkaError::Frame(format!("{api:?} v{version} is not served (v{min}-v{max} are)"))),
        None => Err(KafkaError::Frame(format!("{api:?} is not served by Brook"))),
    }
}

fn decode<T: Decodable>(body: &mut Bytes, version: i16) -> Result<T, KafkaError> {
    T::decode(body, version).map_err(|error| KafkaError::Frame(format!("the request body: {error}")))
}

/// ApiVersions: the table above. A version newer than ours is answered
/// at v0 with UNSUPPORTED_VERSION and the same table, so the client can
/// ask again at one we know (KIP-511). Its response header is always v0.
fn api_versions(request: &Request) -> Result<Answer, KafkaError> {
    let asked = request.header.request_api_version;
    let (_, max) = advertised(ApiKey::ApiVersions).unwrap_or((0, 0));
    let (version, error_code) = if (0..=max).contains(&asked) {
        (asked, 0)
    } else {
        (0, brook_record::ErrorCode::UnsupportedVersion.kafka_code())
    };
    let response = ApiVersionsResponse::default().with_error_code(error_code).with_api_keys(
        SUPPORTED
            .iter()
            .map(|(key, min, max)| {
                ApiVersion::default().with_api_key(*key as i16).with_min_version(*min).with_max_version(*max)
            })
            .collect(),
    );
    encode_frame(request.header.correlation_id, 0, &response, version).map(Answer::Respond)
}

/// A response at the request's version, with the header its API takes.
pub fn respond<R: Encodable>(request: &Request, response: &R) -> Result<Answer, KafkaError> {
    let version = request.header.request_api_version;
    let header_version = request.api_key.response_header_version(version);
    encode_frame(request.header.correlation_id, header_version, response, version).map(Answer::Respond)
}

/// Size, header, body, in one buffer.
pub fn encode_frame<R: Encodable>(
    correlation_id: i32,
    header_version: i16,
    response: &R,
    version: i16,
) -> Result<Bytes, KafkaError> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let size = header.compute_size(header_version).map_err(|error| KafkaError::Encode(error.to_string()))?
        + response.compute_size(version).map_err(|error| KafkaError::Encode(error.to_string()))?;
    let mut frame = BytesMut::with_capacity(4 + size);
    frame.put_i32(i32::try_from(size).map_err(|_| KafkaError::Encode(format!("a response of {size} bytes")))?);
    header.encode(&mut frame, header_version).map_err(|error| KafkaError::Encode(error.to_string()))?;
    response.encode(&mut frame, version).map_err(|error| KafkaError::Encode(error.to_string()))?;
    Ok(frame.freeze())
}
