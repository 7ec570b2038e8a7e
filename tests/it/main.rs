//! The one integration-test binary. Every test starts the real server on 127.0.0.1:0
//! with a database of its own: a fresh SQLite file, or — when
//! `CLOSELOOP_TEST_POSTGRES_URL` is set — a fresh schema on that PostgreSQL server.

mod helpers;

mod api_directory;
mod api_events;
mod architecture;
mod browser;
mod callbacks;
mod cards;
mod cli;
mod collab;
mod collab_adhoc;
mod collab_web;
mod credibility;
mod customer_import;
mod deal_outcomes;
mod demo;
mod demo_live;
mod dingtalk;
mod doctor;
mod documents;
mod feishu;
mod feishu_api;
mod freeze_flow;
mod golive;
mod hardening_api;
mod hardening_authority;
mod hardening_http;
mod hardening_pii;
mod hardening_platforms;
mod hardening_signin;
mod hardening_webhooks;
mod inbound;
mod jobs;
mod ledger;
mod ledger_points;
mod ledger_rules;
mod meetings;
mod ops;
mod parity;
mod people;
mod rules;
mod rules_admin;
mod sidebar;
mod sidebar_platforms;
mod sidebar_tools;
mod signin;
mod text_guard;
mod verification;
mod verified_loop;
mod webhook_filters;
mod webhooks;
mod wecom_api;
mod wecom_customers;
mod wecom_directory;
