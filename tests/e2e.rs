//! Brook's end-to-end tests, one module per subject, in one test binary
//! (one link instead of one per file). They start real `brook` processes
//! on loopback ports with their own data directories (see `harness.rs`).
//!
//! Run one module: `cargo test -p brook --test e2e hostile::`; one test:
//! `cargo test -p brook --test e2e hostile::an_unused_producer_key`. The
//! Docker test is its own binary (`--test docker`): it builds an image
//! first, and nothing else should share the machine with that.

mod checker;
mod harness;

mod bad_input;
mod bench;
mod chaos;
mod cli;
mod cluster;
mod compression;
mod consumer_groups;
mod full_disk;
mod hostile;
mod idempotence;
mod internal_rpc;
mod kafka;
mod lost_data;
mod metrics;
mod producer_and_consumer;
mod readme;
mod recreated_topic;
mod replication;
mod rolling_restart;
mod single_node;
mod slow_disk;
mod standard_services;
