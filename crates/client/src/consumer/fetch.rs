//! The consumer's fetch side: one fetch in flight per leader, their
//! answers decoded into records (batches checked and, if compressed,
//! decompressed), buffered per partition until `poll` hands them out.

use super::*;

impl Consumer {
    pub(super) fn start_fetches(&mut self) {
        if self.buffered.len() >= self.config.max_buffered_records {
            return;
        }
        for (tp, state) in &mut self.partitions {
            let (Some(offset), false) = (state.fetch_position, state.in_flight) else { continue };
            state.in_flight = true;
            let request = FetchRequest {
                topic: tp.topic.to_string(),
                partition: tp.partition,
                offset: i64::try_from(offset.0).unwrap_or(i64::MAX),
                max_bytes: self.config.fetch_max_bytes,
                max_wait_ms: u32::try_from(self.config.fetch_max_wait.as_millis()).unwrap_or(u32::MAX),
                min_bytes: self.config.fetch_min_bytes,
                current_leader_epoch: None,
            };
            let cluster = Arc::clone(&self.cluster);
            let (tp, generation) = (tp.clone(), state.generation);
            let (fetched_epoch, checked_at) = (state.fetched_epoch, state.checked_at);
            self.fetches.spawn(async move {
                let mut checked = checked_at;
                let result = async {
                    let (channel, epoch) = cluster.leader_and_epoch(&tp.topic, tp.partition).await?;
                    let mut client = RecordsClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES);
                    // A new leadership since the position was last checked:
                    // does this leader's log still hold what was read?
                    if let (Some(read_epoch), Some(current)) = (fetched_epoch, epoch) {
                        if checked != Some(current) {
                            let check = OffsetForLeaderEpochRequest {
                                topic: tp.topic.to_string(),
                                partition: tp.partition,
                                current_leader_epoch: Some(current),
                                leader_epoch: read_epoch,
                            };
                            let end = client.offset_for_leader_epoch(check).await?.into_inner();
                            checked = Some(current);
                            if let Ok(end_offset) = u64::try_from(end.end_offset) {
                                if end_offset < offset.0 {
                                    return Ok(Fetched::Truncated { to: Offset(end_offset) });
                                }
                            }
                        }
                    }
                    let request = FetchRequest { current_leader_epoch: epoch, ..request };
                    // Decoded over the answer's frames: the records are not
                    // joined into one buffer first (`records_call`).
                    Ok(Fetched::Records(records_call::fetch(channel, &request, MAX_MESSAGE_BYTES).await?))
                }
                .await;
                (tp, generation, checked, result)
            });
        }
    }

    pub(super) fn take_buffered(&mut self) -> Vec<ConsumerRecord> {
        let count = self.buffered.len().min(self.config.max_poll_records);
        let records: Vec<ConsumerRecord> = self.buffered.drain(..count).collect();
        // Records come in runs of one partition (a fetch's worth): update
        // each partition's consumed position once per run.
        let mut run_ends = records
            .windows(2)
            .filter(|pair| pair[0].partition != pair[1].partition || !Arc::ptr_eq(&pair[0].topic, &pair[1].topic))
            .map(|pair| &pair[0])
            .collect::<Vec<_>>();
        run_ends.extend(records.last());
        for record in run_ends {
            if let Some(state) = self.partitions.get_mut(&TopicPartition::new(&*record.topic, record.partition)) {
                state.consumed = Some(record.offset.plus(1));
            }
        }
        records
    }

    pub(super) async fn complete_fetch(
        &mut self,
        tp: TopicPartition,
        generation: u64,
        checked: Option<u32>,
        result: Result<Fetched, ClientError>,
    ) -> Result<(), ClientError> {
        let Some(state) = self.partitions.get_mut(&tp) else { return Ok(()) };
        if state.generation != generation {
            return Ok(());
        }
        state.in_flight = false;
        state.checked_at = checked;
        let response = match result {
            Ok(Fetched::Records(response)) => response,
            Ok(Fetched::Truncated { to }) => {
                // Records past `to` that were read are gone from the log
                // (an unclean election); what the new leader wrote there is
                // read from `to` on, rather than skipped by a reset.
                let to = state.consumed.map_or(to, |consumed| consumed.min(to));
                tracing::warn!(topic = %tp.topic, partition = tp.partition, %to, "the new leader's log was cut below this consumer's position; going on from the cut");
                return self.seek(&tp, Seek::Offset(to)).await;
            }
            Err(error) if error.error_code() == Some(ErrorCode::OffsetOutOfRange) => {
                tracing::warn!(topic = %tp.topic, partition = tp.partition, %error, "position out of range; resetting");
                let to = match self.config.auto_offset_reset {
                    OffsetReset::Earliest => Seek::Beginning,
                    OffsetReset::Latest => Seek::End,
                };
                return self.seek(&tp, to).await;
            }
            Err(error) if error.is_retriable() || error.error_code() == Some(ErrorCode::UnknownTopicOrPartition) => {
                tracing::debug!(topic = %tp.topic, partition = tp.partition, %error, "fetch failed; retrying");
                self.cluster.invalidate(&tp.topic);
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Ok(());
            }
            Err(error) => return Err(error),
        };
        let Some(from) = state.fetch_position else { return Ok(()) };
        if let Ok(next) = u64::try_from(response.next_offset) {
            state.fetch_position = Some(Offset(next).max(from));
        }
        if let Some(epoch) = last_epoch(&response.records) {
            state.fetched_epoch = Some(epoch);
        }
        // Send the next fetch before decoding: the pipelining.
        let topic = Arc::clone(&state.topic);
        self.start_fetches();
        decode_into(&topic, tp.partition, from, &response.records, &mut self.buffered)
    }
}

/// The leader epoch of the last whole batch in `bytes`.
fn last_epoch(bytes: &Bytes) -> Option<u32> {
    Batches::new(bytes).map_while(Result::ok).last().and_then(|batch| batch.header.leader_epoch()).map(|epoch| epoch.0)
}

/// Decodes fetched batches into records at or after `from`; keys, values
/// and headers are slices of `bytes`, not copies.
fn decode_into(
    topic: &Arc<str>,
    partition: u32,
    from: Offset,
    bytes: &Bytes,
    out: &mut VecDeque<ConsumerRecord>,
) -> Result<(), ClientError> {
    for batch in Batches::new(bytes) {
        let batch = batch?;
        // A compressed batch's records are read from their decompressed
        // copy (shared by its records' keys and values); others in place.
        // One that does not decompress within what it may hold (a batch
        // stored before its leader bounded decompression) is skipped and
        // reported: the batches after it are still read.
        let area = match batch.decompressed(brook_record::MAX_DECOMPRESSED_BATCH_BYTES) {
            Ok(Some(records)) => Bytes::from(records),
            Ok(None) => bytes.slice_ref(batch.bytes).slice(brook_record::HEADER_BYTES..),
            Err(error) => {
                let (first, last) =
                    (batch.header.base_offset, batch.header.base_offset + i64::from(batch.header.last_offset_delta));
                tracing::error!(%topic, partition, first, last, %error, "skipping a batch whose records cannot be read");
                continue;
            }
        };
        let share = |slice: &[u8]| area.slice_ref(slice);
        for record in batch.records_in(&area) {
            let record = record?;
            if record.offset < from {
                continue;
            }
            let mut headers = Vec::new();
            for header in record.headers {
                let header = header?;
                headers.push((share(header.key), header.value.map(share)));
            }
            out.push_back(ConsumerRecord {
                topic: Arc::clone(topic),
                partition,
                offset: record.offset,
                timestamp_ms: record.timestamp_ms,
                key: record.key.map(share),
                value: record.value.map(share),
                headers,
            });
        }
    }
    Ok(())
}
