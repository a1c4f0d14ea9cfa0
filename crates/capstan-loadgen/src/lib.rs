//! The load simulator's mesh, shared with the generation benchmark (`capstan-xds`'s
//! `benches/generate.rs`) so that both measure the same mesh.

pub mod mesh;
