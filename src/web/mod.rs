//! The browser side: sessions after a platform sign-in, CSRF protection, and the
//! endpoints the sidebar page's JavaScript calls.

pub mod session;
