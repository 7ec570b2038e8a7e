//! The one integration-test binary. Every test starts the real server on 127.0.0.1:0
//! with a database of its own: a fresh SQLite file, or — when
//! `CLOSELOOP_TEST_POSTGRES_URL` is set — a fresh schema on that PostgreSQL server.

mod helpers;

mod api_directory;
mod api_events;
mod callbacks;
mod cards;
mod cli;
mod jobs;
mod ops;
mod signin;
mod verification;
mod webhooks;
mod wecom_api;
mod wecom_customers;
mod wecom_directory;
