//! closeloop: a self-hosted server that makes enterprise chat (WeCom, DingTalk, Feishu)
//! the place where a sales process is recorded, verified and coordinated.
//!
//! `main.rs` only parses the command line; everything else is here so tests run the
//! real server on `127.0.0.1:0`.
#![forbid(unsafe_code)]

pub mod access;
pub mod access_log;
pub mod antifraud;
pub mod app;
pub mod approvals;
pub mod audit_anchor;
pub mod cards;
pub mod chat;
pub mod cli;
pub mod clock;
pub mod collab;
pub mod config;
pub mod credibility;
pub mod customers;
pub mod db;
pub mod demo;
pub mod directory;
pub mod doctor;
pub mod documents;
pub mod emulator;
pub mod error;
pub mod gates;
pub mod http;
pub mod inbox;
pub mod jobs;
pub mod page;
pub mod personal_data;
pub mod pipeline;
pub mod platform;
pub mod policy;
pub mod rules;
pub mod security;
pub mod simulate;
pub mod storage;
pub mod telemetry;
pub mod text;
pub mod tracking;
pub mod validate;
pub mod verification;
pub mod webhooks;

pub use app::App;
pub use config::Config;
pub use error::{Error, Result};
