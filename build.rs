//! Records the exact versions of the llama.cpp bindings from `Cargo.lock`, so that the engine
//! fingerprint names the llama.cpp build a result came from.

use std::fs;

fn locked_version(lock: &str, name: &str) -> String {
    let needle = format!("name = \"{name}\"\nversion = \"");
    lock.find(&needle)
        .and_then(|start| {
            let rest = &lock[start + needle.len()..];
            rest.find('"').map(|end| rest[..end].to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}

fn main() {
    println!("cargo:rerun-if-changed=Cargo.lock");
    let lock = fs::read_to_string("Cargo.lock").unwrap_or_default();
    for (name, var) in [
        ("llama-cpp-2", "TF_LLAMA_CPP_2_VERSION"),
        ("llama-cpp-sys-2", "TF_LLAMA_CPP_SYS_2_VERSION"),
    ] {
        println!("cargo:rustc-env={var}={}", locked_version(&lock, name));
    }
    let target = std::env::var("TARGET").unwrap_or_default();
    println!("cargo:rustc-env=TF_TARGET={target}");
}
