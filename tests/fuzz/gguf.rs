//! GGUF headers, read by `models::gguf_info::inspect` (what `models show`, `models add` and
//! model loading use; llama.cpp's loader is not fuzzed here). Two sources:
//!
//! - the header of the smallest real model in `models/` (its first megabytes, up to where the
//!   tensor data starts), with a bit flipped, the end cut off, a length or count overwritten
//!   with a number parsers trip on, or bytes edited, mostly near the start where the counts and
//!   the first keys are;
//! - small GGUF files written by the test, with keys that `inspect` reads
//!   (`general.alignment`, `general.architecture`, `<arch>.context_length`,
//!   `general.file_type`, …) holding values of any type, and tensors of any shape and type.
//!
//! Properties: inspecting never panics; every error names the file; a summary never counts
//! more tensors or metadata keys than the file declares.

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Content;
use proptest::prelude::{any, prop, prop_assert, prop_oneof, Just, Strategy};
use proptest::sample::Index;
use tuningfork::models::gguf_info::inspect;

use crate::mutate::{byte_edit, bytes, key, ByteEdit};
use crate::{fuzz, no_panic, root, write};

/// Where an edit goes: most damage that matters is in the first kilobytes.
#[derive(Debug, Clone)]
enum Position {
    /// Within the first 4 KiB.
    Start(u16),
    /// Within the first 256 KiB.
    Early(u32),
    Anywhere(Index),
}

impl Position {
    fn resolve(&self, len: usize) -> usize {
        let p = match self {
            Position::Start(p) => usize::from(*p) % 4096,
            Position::Early(p) => *p as usize % (256 << 10),
            Position::Anywhere(i) => i.index(len.max(1)),
        };
        p.min(len)
    }
}

#[derive(Debug, Clone)]
enum HeaderEdit {
    FlipBit(Position, u8),
    Truncate(Position),
    /// Overwrites 4 (or, when `wide`, 8) bytes with a number, little-endian.
    Number {
        at: Position,
        value: u64,
        wide: bool,
    },
    Bytes(ByteEdit),
}

impl HeaderEdit {
    fn apply(&self, header: &[u8]) -> Vec<u8> {
        let mut out = header.to_vec();
        match self {
            HeaderEdit::FlipBit(at, bit) => {
                let p = at.resolve(out.len());
                if let Some(byte) = out.get_mut(p) {
                    *byte ^= 1u8 << (bit % 8);
                }
            }
            HeaderEdit::Truncate(at) => out.truncate(at.resolve(out.len())),
            HeaderEdit::Number { at, value, wide } => {
                let p = at.resolve(out.len());
                let bytes = value.to_le_bytes();
                let width = if *wide { 8 } else { 4 };
                for (slot, byte) in out.iter_mut().skip(p).zip(&bytes[..width]) {
                    *slot = *byte;
                }
            }
            HeaderEdit::Bytes(edit) => out = edit.apply(&out),
        }
        out
    }
}

/// A number that lengths and counts trip on: zero, one, the caps GGUF readers use, the edges
/// of 32 and 64 bits.
fn awkward_number() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => prop::sample::select(vec![
            0,
            1,
            2,
            3,
            4,
            31,
            32,
            255,
            65_535,
            (1 << 30) - 1,
            1 << 30,
            (1 << 30) + 1,
            (1 << 31) - 1,
            1 << 31,
            u64::from(u32::MAX),
            1 << 32,
            1 << 40,
            1 << 62,
            u64::MAX - 1,
            u64::MAX,
        ]),
        1 => any::<u64>(),
    ]
}

fn position() -> impl Strategy<Value = Position> {
    prop_oneof![
        3 => any::<u16>().prop_map(Position::Start),
        2 => any::<u32>().prop_map(Position::Early),
        1 => any::<Index>().prop_map(Position::Anywhere),
    ]
}

fn header_edit() -> impl Strategy<Value = HeaderEdit> {
    prop_oneof![
        3 => (position(), 0u8..8).prop_map(|(at, bit)| HeaderEdit::FlipBit(at, bit)),
        1 => position().prop_map(HeaderEdit::Truncate),
        2 => (position(), awkward_number(), any::<bool>())
            .prop_map(|(at, value, wide)| HeaderEdit::Number { at, value, wide }),
        1 => byte_edit().prop_map(HeaderEdit::Bytes),
    ]
}

/// A GGUF file written from parts, counts included (so they can lie).
#[derive(Debug, Clone)]
struct Synthetic {
    version: u32,
    /// Declared (tensor count, metadata count) when they differ from the real ones.
    counts: Option<(u64, u64)>,
    /// Key, value type, value bytes.
    metadata: Vec<(String, u32, Vec<u8>)>,
    tensors: Vec<Tensor>,
}

#[derive(Debug, Clone)]
struct Tensor {
    name: String,
    dims: Vec<u64>,
    dtype: u32,
    offset: u64,
}

/// GGUF value types: 0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32, 6 f32, 7 bool, 8 string,
/// 9 array, 10 u64, 11 i64, 12 f64.
const NUMERIC_TYPES: [u32; 10] = [0, 1, 2, 3, 4, 5, 6, 10, 11, 12];

fn width(value_type: u32) -> usize {
    match value_type {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        _ => 0,
    }
}

fn number(value_type: u32, value: u64) -> Vec<u8> {
    value.to_le_bytes()[..width(value_type)].to_vec()
}

/// A GGUF (version 2 and 3) string: a 64-bit length, then the bytes.
fn gguf_string(text: &str) -> Vec<u8> {
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out
}

fn metadata_entry() -> impl Strategy<Value = (String, u32, Vec<u8>)> {
    let numeric = prop::sample::select(NUMERIC_TYPES.to_vec());
    let named = |name: &'static str| {
        (
            prop::sample::select(NUMERIC_TYPES.to_vec()),
            awkward_number(),
        )
            .prop_map(move |(ty, v)| (name.to_string(), ty, number(ty, v)))
    };
    prop_oneof![
        // Only the integer types 0 to 5 are read as an alignment.
        3 => ((0u32..6), prop::sample::select(vec![0u64, 0, 0, 1, 7, 32, 64, 255, 65_535]))
            .prop_map(|(ty, v)| ("general.alignment".to_string(), ty, number(ty, v))),
        2 => prop::sample::select(vec!["llama", "gemma3", "", "x\u{0}y"])
            .prop_map(|arch| ("general.architecture".to_string(), 8u32, gguf_string(arch))),
        2 => named("llama.context_length"),
        2 => named("general.file_type"),
        1 => (key(), prop::sample::select(vec!["general.name", "tokenizer.chat_template"]))
            .prop_map(|(text, name)| (name.to_string(), 8u32, gguf_string(&text))),
        1 => (key(), numeric, awkward_number()).prop_map(|(k, ty, v)| (k, ty, number(ty, v))),
        1 => (key(), 0u32..14, bytes(24)),
        1 => (key(), prop::collection::vec(key(), 0..4), any::<bool>()).prop_map(|(k, items, lie)| {
            // An array of strings, its count sometimes wrong.
            let mut bytes = 8u32.to_le_bytes().to_vec();
            let count = items.len() as u64 + u64::from(lie);
            bytes.extend_from_slice(&count.to_le_bytes());
            for item in &items {
                bytes.extend_from_slice(&gguf_string(item));
            }
            (k, 9u32, bytes)
        }),
    ]
}

fn tensor() -> impl Strategy<Value = Tensor> {
    let dim = prop_oneof![
        3 => prop::sample::select(vec![0u64, 1, 2, 32, 576, 4096, 49_152]),
        1 => awkward_number(),
    ];
    let dtype = prop_oneof![
        7 => prop::sample::select(vec![0u32, 1, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 30]),
        1 => any::<u32>(),
    ];
    // At most 4 dimensions are valid; 5 now and then.
    let dims = prop_oneof![
        7 => prop::collection::vec(dim, 0..=4),
        1 => prop::collection::vec(awkward_number(), 5..=5),
    ];
    (key(), dims, dtype, awkward_number()).prop_map(|(name, dims, dtype, offset)| Tensor {
        name,
        dims,
        dtype,
        offset,
    })
}

fn synthetic() -> impl Strategy<Value = Synthetic> {
    (
        prop_oneof![6 => Just(3u32), 1 => Just(2u32), 1 => Just(1u32), 1 => any::<u32>()],
        proptest::option::weighted(0.2, (awkward_number(), awkward_number())),
        prop::collection::vec(metadata_entry(), 0..6),
        prop::collection::vec(tensor(), 0..3),
    )
        .prop_map(|(version, counts, metadata, tensors)| Synthetic {
            version,
            counts,
            metadata,
            tensors,
        })
}

impl Synthetic {
    fn bytes(&self) -> Vec<u8> {
        // Version 1 wrote 32-bit lengths and counts; later versions 64-bit ones.
        let long = self.version != 1;
        let length = |n: u64, out: &mut Vec<u8>| {
            if long {
                out.extend_from_slice(&n.to_le_bytes());
            } else {
                out.extend_from_slice(&(n as u32).to_le_bytes());
            }
        };
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&self.version.to_le_bytes());
        let (tensors, metadata) = self
            .counts
            .unwrap_or((self.tensors.len() as u64, self.metadata.len() as u64));
        length(tensors, &mut out);
        length(metadata, &mut out);
        for (key, value_type, value) in &self.metadata {
            length(key.len() as u64, &mut out);
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(&value_type.to_le_bytes());
            out.extend_from_slice(value);
        }
        for tensor in &self.tensors {
            length(tensor.name.len() as u64, &mut out);
            out.extend_from_slice(tensor.name.as_bytes());
            out.extend_from_slice(&(tensor.dims.len() as u32).to_le_bytes());
            for dim in &tensor.dims {
                length(*dim, &mut out);
            }
            out.extend_from_slice(&tensor.dtype.to_le_bytes());
            out.extend_from_slice(&tensor.offset.to_le_bytes());
        }
        out
    }

    /// How many tensors and metadata entries the file says it has.
    fn declared(&self) -> (u64, u64) {
        self.counts
            .unwrap_or((self.tensors.len() as u64, self.metadata.len() as u64))
    }
}

#[derive(Debug, Clone)]
enum Case {
    Real(HeaderEdit),
    Synthetic(Synthetic),
}

fn case() -> impl Strategy<Value = Case> {
    prop_oneof![
        3 => header_edit().prop_map(Case::Real),
        2 => synthetic().prop_map(Case::Synthetic),
    ]
}

/// The smallest `.gguf` file in `models/`; the test needs one and says how to get it.
fn smallest_model() -> PathBuf {
    let dir = root().join("models");
    let smallest = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "gguf"))
        .filter_map(|path| Some((std::fs::metadata(&path).ok()?.len(), path)))
        .min();
    match smallest {
        Some((_, path)) => path,
        None => panic!(
            "no .gguf model in {}: run scripts/fetch-models.sh (the GGUF fuzz test reads the \
             header of a real model)",
            dir.display()
        ),
    }
}

/// The bytes of `path` up to where its tensor data starts: the header and the tensor table.
fn header(path: &Path) -> Vec<u8> {
    let mut limit: u64 = 8 << 20;
    loop {
        let mut prefix = Vec::new();
        std::fs::File::open(path)
            .and_then(|file| file.take(limit).read_to_end(&mut prefix))
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        match Content::read(&mut Cursor::new(prefix.as_slice())) {
            Ok(content) => {
                let end = usize::try_from(content.tensor_data_offset)
                    .map_or(prefix.len(), |end| end.min(prefix.len()));
                prefix.truncate(end);
                return prefix;
            }
            // The header is longer than what was read: read more.
            Err(_) if prefix.len() as u64 == limit && limit < 1 << 30 => limit *= 4,
            Err(e) => panic!("{} has no readable GGUF header: {e}", path.display()),
        }
    }
}

#[test]
fn gguf_headers_never_panic_and_errors_name_the_file() {
    let model = smallest_model();
    let real = header(&model);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzzed model.gguf");
    let shown = path.display().to_string();
    std::fs::write(&path, &real).unwrap();
    if let Err(e) = inspect(&path) {
        panic!(
            "the header of {} alone does not inspect: {e}",
            model.display()
        );
    }
    fuzz("gguf", case(), |case| {
        let (bytes, declared) = match &case {
            Case::Real(edit) => (edit.apply(&real), None),
            Case::Synthetic(file) => (file.bytes(), Some(file.declared())),
        };
        write(&path, &bytes)?;
        match no_panic("gguf_info::inspect", || inspect(&path))? {
            Ok(summary) => {
                no_panic("GgufSummary::describe", || summary.describe(&path))?;
                if let Some((tensors, metadata)) = declared {
                    prop_assert!(
                        summary.tensors as u64 <= tensors,
                        "{} tensors of {tensors}",
                        summary.tensors
                    );
                    prop_assert!(
                        summary.metadata_keys as u64 <= metadata,
                        "{} metadata keys of {metadata}",
                        summary.metadata_keys
                    );
                }
            }
            Err(e) => {
                let message = e.to_string();
                prop_assert!(
                    message.contains(&shown),
                    "the error does not name {shown}: {message}"
                );
            }
        }
        Ok(())
    });
}

/// Found by reading candle's reader: `general.alignment = 0` divides by zero while the header is
/// read. Kept as a plain test so that it fails the same way on every run until it is fixed.
#[test]
fn a_zero_alignment_is_an_error_not_a_panic() {
    let file = Synthetic {
        version: 3,
        counts: None,
        metadata: vec![("general.alignment".to_string(), 4, number(4, 0))],
        tensors: Vec::new(),
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zero-alignment.gguf");
    std::fs::write(&path, file.bytes()).unwrap();
    let outcome =
        std::panic::catch_unwind(|| inspect(&path).map(|_| ()).map_err(|e| e.to_string()));
    match outcome {
        Ok(Err(message)) => assert!(message.contains("zero-alignment.gguf"), "{message}"),
        Ok(Ok(())) => panic!("a header with alignment 0 was accepted"),
        Err(_) => panic!("gguf_info::inspect panicked on a header with general.alignment = 0"),
    }
}
