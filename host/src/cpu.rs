//! What the CPU can run, for the kernels that pick a vectorized path at run time.

/// True on an x86-64 CPU with AVX2 and FMA (the kernels' `target_feature` paths).
pub(crate) fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// True on an x86-64 CPU with AVX-512F, where this crate was built with its AVX-512 kernels
/// (a compiler that has AVX-512 intrinsics: Rust 1.89 or later).
#[cfg(all(target_arch = "x86_64", tchprune_avx512))]
pub(crate) fn has_avx512f() -> bool {
    std::is_x86_feature_detected!("avx512f")
}
