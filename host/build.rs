//! Hands the libtorch directory that tch's `torch-sys` built against on to the build scripts
//! of crates that depend on tchprune (`DEP_TCHPRUNE_LIBTORCH_LIB`, read by `tchprune-build`),
//! and links this crate's own tests to it.

fn main() {
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .expect("torch-sys reports the libtorch directory it built against");
    println!("cargo:libtorch_lib={lib}");
    tchprune_build::link_libtorch();
}
