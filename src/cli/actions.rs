//! `autopilot actions`: review the journal (filled in with the store).
