//! Hands the libtorch directory that tch's `torch-sys` built against on to the build scripts
//! of crates that depend on tchprune (`DEP_TCHPRUNE_LIBTORCH_LIB`, read by `tchprune-build`),
//! links this crate's own tests to it, and compiles the one C++ function tchprune needs:
//! `at::parallel_for`, for its own loops. On a compiler with AVX-512 intrinsics (Rust 1.89
//! or later) it enables the AVX-512 kernels (`cfg(tchprune_avx512)`); older ones, down to the
//! crate's minimum Rust version, build the AVX2 kernels only.

use std::path::Path;

fn main() {
    println!("cargo:rustc-check-cfg=cfg(tchprune_avx512)");
    if autocfg::new().probe_rustc_version(1, 89) {
        println!("cargo:rustc-cfg=tchprune_avx512");
    }
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .expect("torch-sys reports the libtorch directory it built against");
    println!("cargo:libtorch_lib={lib}");
    tchprune_build::link_libtorch();

    let include = Path::new(&lib).join("../include");
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned());
    println!("cargo:rerun-if-changed=src/parallel_for.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    cc::Build::new()
        .cpp(true)
        .file("src/parallel_for.cpp")
        .include(&include)
        .flag("-std=c++17")
        // at::parallel_for is inline OpenMP: without -fopenmp it would run serially.
        .flag("-fopenmp")
        .define("_GLIBCXX_USE_CXX11_ABI", abi.as_str())
        .warnings(false)
        .compile("tchprune_parallel_for");
    // The OpenMP runtime libtorch ships and loads (one runtime, one pool of threads).
    println!("cargo:rustc-link-search=native={lib}");
    println!("cargo:rustc-link-lib=dylib:+verbatim=libgomp.so.1");
}
