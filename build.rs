//! Links the `motcua` binary with packed relative relocations on Linux (`-z pack-relative-relocs`,
//! GNU ld 2.38+, glibc 2.36+): the loader then applies its hundred thousand pointer fixes from
//! a compact bitmap instead of a table of 2.5 MB, at every start of every command.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=MOTCUA_NO_PACKED_RELOCS");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux");
    let gnu = std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    if linux && gnu && std::env::var_os("MOTCUA_NO_PACKED_RELOCS").is_none() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
