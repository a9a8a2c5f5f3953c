//! Makes `cargo test --workspace` build the `tokio-worker` binary that master-process's own
//! tests run (cargo builds a package's binaries only for its integration tests).

#[test]
fn the_binary_exists() {
    assert!(std::path::Path::new(env!("CARGO_BIN_EXE_tokio-worker")).exists());
}
