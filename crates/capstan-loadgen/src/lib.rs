//! The load simulator's parts: the mesh (shared with the generation benchmark, `capstan-xds`'s
//! `benches/generate.rs`, so that both measure the same mesh), the simulated proxy (a Delta xDS
//! client, also used by the load generator's end-to-end test) and its reports.

pub mod client;
pub mod mesh;
pub mod reports;
