//! The browser side: sessions after a platform sign-in, CSRF protection, and the
//! endpoints the sidebar page's JavaScript calls.

pub mod collab;
pub mod dingtalk;
pub mod feishu;
pub mod health;
pub mod people;
pub mod session;
pub mod sidebar;
pub mod sidebar_tools;
pub mod timeline;
