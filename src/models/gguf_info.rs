//! Reading a GGUF file's header without loading its weights (candle-core's GGUF reader).

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use serde::Serialize;

use super::ModelError;

/// What a GGUF header says about a model.
#[derive(Debug, Clone, Serialize)]
pub struct GgufSummary {
    pub gguf_version: String,
    pub architecture: Option<String>,
    pub name: Option<String>,
    pub parameters: u64,
    /// The file type llama.cpp records (`Q4_K_M`, …), when present.
    pub file_type: Option<String>,
    /// How many tensors have each storage type.
    pub tensor_types: BTreeMap<String, usize>,
    pub context_length: Option<u64>,
    pub chat_template: Option<String>,
    pub tensors: usize,
    pub metadata_keys: usize,
}

impl GgufSummary {
    /// The summary as a person reads it, for the file at `path`.
    pub fn describe(&self, path: &Path) -> String {
        let mut out = String::new();
        self.write(&mut out, path)
            .expect("writing to a String cannot fail");
        out
    }

    fn write(&self, out: &mut String, path: &Path) -> std::fmt::Result {
        use std::fmt::Write;
        let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_string());
        writeln!(out, "file            {}", path.display())?;
        writeln!(out, "gguf            {}", self.gguf_version)?;
        writeln!(out, "name            {}", or_none(&self.name))?;
        writeln!(out, "architecture    {}", or_none(&self.architecture))?;
        writeln!(
            out,
            "parameters      {} ({})",
            human_count(self.parameters),
            self.parameters
        )?;
        writeln!(out, "quantization    {}", or_none(&self.file_type))?;
        let types: Vec<String> = self
            .tensor_types
            .iter()
            .map(|(t, n)| format!("{t}×{n}"))
            .collect();
        writeln!(out, "tensor types    {}", types.join(", "))?;
        writeln!(
            out,
            "context length  {}",
            self.context_length
                .map_or("-".to_string(), |c| c.to_string())
        )?;
        match &self.chat_template {
            Some(t) => writeln!(out, "chat template   yes ({} chars)", t.len()),
            None => writeln!(
                out,
                "chat template   none (conversations use the plain format)"
            ),
        }?;
        Ok(())
    }
}

/// Reads the header and tensor table of `path`.
pub fn inspect(path: &Path) -> Result<GgufSummary, ModelError> {
    let gguf_error = |message: String| ModelError::Gguf {
        path: path.to_path_buf(),
        message,
    };
    let mut file = std::fs::File::open(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    // candle appends a backtrace to some messages; the first line is the user's part.
    // A damaged header can make candle's reader panic (an alignment of 0 divides by zero):
    // that is a bad file, reported like any other.
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Content::read(&mut std::io::BufReader::new(&mut file))
    }))
    .map_err(|_| gguf_error("the header is damaged (its reader gave up)".into()))?;
    let content = read.map_err(|e| {
        let text = e.to_string();
        gguf_error(
            text.lines()
                .next()
                .unwrap_or("unreadable header")
                .to_string(),
        )
    })?;
    let string = |key: &str| {
        content
            .metadata
            .get(key)
            .and_then(|v| v.to_string().ok())
            .cloned()
    };
    let architecture = string("general.architecture");
    let context_length = architecture.as_ref().and_then(|arch| {
        content
            .metadata
            .get(&format!("{arch}.context_length"))
            .and_then(value_as_u64)
    });
    let file_type = content
        .metadata
        .get("general.file_type")
        .and_then(value_as_u64)
        .map(file_type_name);
    let mut tensor_types = BTreeMap::new();
    let mut parameters = 0u64;
    for info in content.tensor_infos.values() {
        *tensor_types
            .entry(format!("{:?}", info.ggml_dtype))
            .or_insert(0) += 1;
        parameters += info.shape.elem_count() as u64;
    }
    Ok(GgufSummary {
        gguf_version: format!("{:?}", content.magic),
        architecture,
        name: string("general.name"),
        parameters,
        file_type,
        tensor_types,
        context_length,
        chat_template: string("tokenizer.chat_template"),
        tensors: content.tensor_infos.len(),
        metadata_keys: content.metadata.len(),
    })
}

fn value_as_u64(value: &Value) -> Option<u64> {
    value
        .to_u64()
        .ok()
        .or_else(|| value.to_u32().ok().map(u64::from))
        .or_else(|| value.to_i32().ok().and_then(|v| u64::try_from(v).ok()))
}

/// llama.cpp's `llama_ftype` names.
fn file_type_name(code: u64) -> String {
    let name = match code {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4",
        other => return format!("unknown ({other})"),
    };
    name.to_string()
}

/// A human-friendly parameter count (`134.5M`).
pub fn human_count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_a_gguf_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.gguf");
        std::fs::write(&path, b"definitely not gguf").unwrap();
        let err = inspect(&path).unwrap_err().to_string();
        assert!(err.contains("x.gguf"), "{err}");
        std::fs::write(&path, b"").unwrap();
        assert!(inspect(&path).is_err());
    }

    #[test]
    fn counts_read_naturally() {
        assert_eq!(human_count(134_515_008), "134.5M");
        assert_eq!(human_count(1_500_000_000), "1.50B");
        assert_eq!(file_type_name(15), "Q4_K_M");
        assert_eq!(file_type_name(999), "unknown (999)");
    }
}
