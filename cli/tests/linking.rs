//! The command never runs on a GPU, so it is linked without libtorch's CUDA part: it starts in
//! about half the time and a quarter of the memory (`build.rs`).

use std::process::Command;

#[test]
fn the_command_does_not_load_libtorchs_cuda_part() {
    let binary = env!("CARGO_BIN_EXE_tchprune");
    let output = Command::new("ldd").arg(binary).output().expect("ldd runs");
    let libraries = String::from_utf8_lossy(&output.stdout);
    assert!(libraries.contains("libtorch_cpu.so"), "{libraries}");
    assert!(!libraries.contains("libtorch_cuda"), "{libraries}");
    assert!(!libraries.contains("not found"), "{libraries}");
    // And it runs without help from the environment.
    let status = Command::new(binary)
        .arg("methods")
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("tchprune runs");
    assert!(status.status.success());
}
