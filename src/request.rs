//! Request helpers (placeholder, being built).
