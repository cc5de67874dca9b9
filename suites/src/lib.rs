//! Scenarios (stub).
