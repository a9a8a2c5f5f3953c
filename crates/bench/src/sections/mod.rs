//! The benchmark's sections, one module each; `main.rs` lists them in `SECTIONS`.

pub mod adoption;
pub mod detection;
pub mod metrics;
pub mod monitor;
pub mod naive;
pub mod peers;
pub mod queue;
pub mod scale;
pub mod storms;
pub mod throughput;
