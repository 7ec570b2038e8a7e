//! Cross-role collaboration: quick-asks, handoff packages, SLA clocks with escalation,
//! responsibility anchors and acknowledgements.

pub mod assignments;
pub mod calendar;
pub mod calendar_feed;
pub mod health;
pub mod requests;
pub mod sla;
