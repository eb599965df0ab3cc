//! `tspi channels serve` (being built).
