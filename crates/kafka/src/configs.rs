//! DescribeConfigs and IncrementalAlterConfigs, for topics. A topic's
//! configs are the effective ones the broker holds (set or default), all
//! reported as the topic's own (`config_source` 1). Broker resources are
//! described with no configs (Brook's broker settings are not Kafka's),
//! and altering them is refused.

use std::collections::BTreeMap;

use brook_record::ErrorCode;
use kafka_protocol::messages::describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{
    DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::core::CoreError;
use crate::Core;

/// Kafka's resource types.
const TOPIC: i8 = 2;
const BROKER: i8 = 4;
/// `config_source` of a topic's own config (DYNAMIC_TOPIC_CONFIG).
const TOPIC_CONFIG: i8 = 1;
/// IncrementalAlterConfigs operations.
const SET: i8 = 0;
const DELETE: i8 = 1;

pub fn describe_configs<C: Core>(core: &C, request: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let name = resource.resource_name.to_string();
            let outcome = match resource.resource_type {
                TOPIC => core.topic_configs(&name),
                BROKER => Ok(BTreeMap::new()),
                other => {
                    Err(CoreError::new(ErrorCode::InvalidRequest, format!("resource type {other} is not described")))
                }
            };
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name);
            match outcome {
                Ok(configs) => {
                    let wanted = resource
                        .configuration_keys
                        .map(|keys| keys.iter().map(|key| key.to_string()).collect::<Vec<_>>());
                    result.with_configs(
                        configs
                            .into_iter()
                            .filter(|(key, _)| wanted.as_ref().is_none_or(|wanted| wanted.contains(key)))
                            .map(|(key, value)| {
                                DescribeConfigsResourceResult::default()
                                    .with_name(StrBytes::from_string(key))
                                    .with_value(Some(StrBytes::from_string(value)))
                                    .with_config_source(TOPIC_CONFIG)
                            })
                            .collect(),
                    )
                }
                Err(error) => result
                    .with_error_code(error.code.kafka_code())
                    .with_error_message(Some(StrBytes::from_string(error.message))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

pub async fn incremental_alter_configs<C: Core>(
    core: &C,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let name = resource.resource_name.to_string();
        let outcome = alter(core, resource.resource_type, &name, &resource.configs, request.validate_only).await;
        let response = AlterConfigsResourceResponse::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name);
        responses.push(match outcome {
            Ok(()) => response,
            Err(error) => response
                .with_error_code(error.code.kafka_code())
                .with_error_message(Some(StrBytes::from_string(error.message))),
        });
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

async fn alter<C: Core>(
    core: &C,
    resource_type: i8,
    name: &str,
    configs: &[kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig],
    validate_only: bool,
) -> Result<(), CoreError> {
    if resource_type != TOPIC {
        return Err(CoreError::new(
            ErrorCode::InvalidRequest,
            format!("resource type {resource_type} cannot be altered here; only topics (2) can"),
        ));
    }
    let (mut set, mut delete) = (BTreeMap::new(), Vec::new());
    for config in configs {
        match (config.config_operation, &config.value) {
            (SET, Some(value)) => {
                set.insert(config.name.to_string(), value.to_string());
            }
            (DELETE, _) => delete.push(config.name.to_string()),
            (operation, _) => {
                return Err(CoreError::new(
                    ErrorCode::InvalidConfig,
                    format!("{}: operation {operation} is not taken (SET with a value, or DELETE)", config.name),
                ))
            }
        }
    }
    if validate_only {
        // Whether the topic exists; the values are the metadata group's
        // to check, at the change.
        return core.topic_configs(name).map(|_| ());
    }
    core.alter_topic_configs(name, set, delete).await
}
