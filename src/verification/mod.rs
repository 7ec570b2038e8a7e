//! Follow-up authenticity: claimed calls are checked against the platforms' official
//! records. Here: storing those records and linking them to reps and customers.

pub mod attest;
pub mod calls;
pub mod claims;
pub mod meetings;
