//! The command only ever runs on the CPU: leaving libtorch's CUDA part out makes it start in
//! about half the time and memory.

fn main() {
    tchprune_build::Link::new().cpu_only().emit();
}
