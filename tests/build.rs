fn main() {
    tchprune_build::link_libtorch();
}
