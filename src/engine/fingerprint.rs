//! The engine fingerprint: everything about the build that can change a model's output.
//!
//! Two runs with the same model file, prompt and sampling parameters give byte-identical output
//! when their fingerprints are equal. The fingerprint is stored with every run and is part of
//! every cache key, so a cached output is never served across builds that could disagree.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::sampling::SAMPLER_VERSION;

/// The build and backend a generation ran on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineFingerprint {
    pub tuningfork: String,
    pub llama_cpp_2: String,
    /// The llama.cpp sources are vendored by this crate version.
    pub llama_cpp_sys_2: String,
    /// `cpu`, `cuda`, `metal` or `vulkan`.
    pub backend: String,
    pub target: String,
    /// ggml's own report of the CPU features it was compiled with (`llama_print_system_info`).
    pub system_info: String,
    pub sampler_version: u32,
    pub flash_attention: bool,
    pub kv_unified: bool,
    pub swa_full: bool,
    /// ggml's tiled K-quant matrix product (see `engine::TILED_MATMUL_ENV`).
    pub tiled_matmul: bool,
    /// The tiled product forced onto every row count (see `engine::TILED_MATMUL_FORCE_ENV`).
    /// Left out of the JSON when off, so fingerprints without it keep their ids.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tiled_matmul_forced: bool,
}

impl EngineFingerprint {
    /// The fingerprint of this binary's engine.
    pub fn current() -> Self {
        // The backend decides the tiled-matmul setting; make sure it has.
        let _ = super::backend();
        EngineFingerprint {
            tuningfork: env!("CARGO_PKG_VERSION").to_string(),
            llama_cpp_2: env!("TF_LLAMA_CPP_2_VERSION").to_string(),
            llama_cpp_sys_2: env!("TF_LLAMA_CPP_SYS_2_VERSION").to_string(),
            backend: backend_name().to_string(),
            target: env!("TF_TARGET").to_string(),
            system_info: system_info(),
            sampler_version: SAMPLER_VERSION,
            flash_attention: false,
            kv_unified: false,
            swa_full: true,
            tiled_matmul: super::tiled_matmul_enabled(),
            tiled_matmul_forced: super::tiled_matmul_forced(),
        }
    }

    /// A short stable identifier: the first 16 hex digits of the sha256 of the canonical JSON.
    pub fn id(&self) -> String {
        let json = serde_json::to_vec(self).expect("fingerprint serializes");
        let digest = Sha256::digest(&json);
        hex::encode(&digest[..8])
    }

    /// The CPU feature flags ggml reports as enabled (`AVX2`, `F16C`, …).
    pub fn cpu_features(&self) -> Vec<String> {
        parse_enabled_features(&self.system_info)
    }

    /// Human-readable differences to `other`, one line per field.
    pub fn differences(&self, other: &EngineFingerprint) -> Vec<String> {
        let a = serde_json::to_value(self).expect("fingerprint serializes");
        let b = serde_json::to_value(other).expect("fingerprint serializes");
        let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
            return Vec::new();
        };
        a.iter()
            .filter(|(k, v)| b.get(*k) != Some(v))
            .map(|(k, v)| {
                format!(
                    "{k}: {v} vs {}",
                    b.get(k).unwrap_or(&serde_json::Value::Null)
                )
            })
            .collect()
    }
}

fn backend_name() -> &'static str {
    if cfg!(feature = "cuda") {
        "cuda"
    } else if cfg!(feature = "metal") {
        "metal"
    } else if cfg!(feature = "vulkan") {
        "vulkan"
    } else {
        "cpu"
    }
}

fn system_info() -> String {
    // llama.cpp rebuilds one static string on every call, so concurrent calls race: ask once.
    static INFO: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    INFO.get_or_init(|| {
        // SAFETY: `llama_print_system_info` takes no arguments and returns a pointer to a
        // static, NUL-terminated buffer owned by llama.cpp, valid until the next call; the
        // OnceLock makes this the only call, and the text is copied at once.
        let text = unsafe {
            let ptr = llama_cpp_sys_2::llama_print_system_info();
            if ptr.is_null() {
                return String::new();
            }
            std::ffi::CStr::from_ptr(ptr).to_string_lossy().into_owned()
        };
        text.trim().to_string()
    })
    .clone()
}

/// Extracts the `NAME = 1` entries of a ggml system-info string.
fn parse_enabled_features(info: &str) -> Vec<String> {
    info.split('|')
        .filter_map(|part| {
            let part = part.rsplit(':').next().unwrap_or(part);
            let (name, value) = part.split_once('=')?;
            (value.trim() == "1").then(|| name.trim().to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ggml_system_info() {
        let info = "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | AVX512 = 0 | F16C = 1 | OPENMP = 1 |";
        assert_eq!(
            parse_enabled_features(info),
            ["SSE3", "SSSE3", "AVX", "AVX2", "F16C", "OPENMP"]
        );
    }

    #[test]
    fn versions_come_from_the_lock_file() {
        let fp = EngineFingerprint::current();
        let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock"))
            .expect("Cargo.lock is committed");
        assert!(lock.contains(&format!(
            "name = \"llama-cpp-2\"\nversion = \"{}\"",
            fp.llama_cpp_2
        )));
        assert!(lock.contains(&format!(
            "name = \"llama-cpp-sys-2\"\nversion = \"{}\"",
            fp.llama_cpp_sys_2
        )));
    }

    #[test]
    fn id_changes_with_any_field() {
        let a = EngineFingerprint::current();
        let mut b = a.clone();
        b.system_info.push_str(" AVX512 = 1 |");
        assert_ne!(a.id(), b.id());
        assert_eq!(a.id(), a.clone().id());
        assert_eq!(a.differences(&b).len(), 1);
    }

    #[test]
    fn a_forced_tiled_product_changes_the_id_and_its_absence_keeps_old_ids() {
        let mut a = EngineFingerprint::current();
        a.tiled_matmul_forced = false;
        let json = serde_json::to_value(&a).unwrap();
        assert!(json.get("tiled_matmul_forced").is_none());
        let read: EngineFingerprint = serde_json::from_value(json).unwrap();
        assert_eq!(read.id(), a.id());
        let mut forced = a.clone();
        forced.tiled_matmul_forced = true;
        assert_ne!(forced.id(), a.id());
        assert_eq!(forced.differences(&a).len(), 1);
    }
}
