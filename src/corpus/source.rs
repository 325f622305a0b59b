//! Corpus sources: the files a user adds to a retrieval corpus, read into passages.
//!
//! The extension decides the format: JSONL (`.jsonl`, `.ndjson`) holds one passage per line
//! with its own id and metadata; plain text (`.txt`) and Markdown (`.md`, `.markdown`) are cut
//! into passages by a [`Chunker`]. Every refusal names the file and, where there is one, the
//! line, and says how to fix it.
//!
//! Architecture Invariant: this module only reads files into [`SourcePassage`]s; it knows
//! nothing of the store, the index or embeddings.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::dataset::{duplicate_key, kind};

/// How plain-text and Markdown files are split into passages.
///
/// 1. The file is split into blocks at blank lines.
/// 2. In Markdown, a line of 1 to 6 `#` followed by a space is a heading. It ends the block
///    before it, is not passage text itself, and sets the heading path that the passages under
///    it carry as metadata, `{"heading": "Title > Section"}`; a heading replaces the headings
///    at its level and deeper. A fenced code block (from a line starting with three backticks
///    or `~~~` to the closing fence) is one block, blank lines and `#` lines in it included.
///    Plain text has neither headings nor fences.
/// 3. Consecutive blocks are packed into one passage while the passage (blocks joined by a
///    blank line) stays within `max_chars` characters. A heading always starts a new passage.
/// 4. A block longer than `max_chars` is cut into pieces of at most `max_chars` characters:
///    after the last sentence end (`.`, `!` or `?` before whitespace) in the second half of
///    the piece, else at the last whitespace there, else after exactly `max_chars` characters
///    (never inside a character). With `overlap_chars`, each piece after the first starts with
///    the last `overlap_chars` characters of the one before, from the first word boundary in
///    them.
/// 5. Passages are trimmed and empty ones dropped. Their ids are `<file name>#<n>`, n counting
///    from 1 in file order; their line is the file line where their text starts.
///
/// Characters are Unicode scalar values (`é` and `日` are one each), not bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Chunker {
    /// Longest passage, in characters (chars, not bytes). Default 600; at least 50.
    pub max_chars: usize,
    /// Characters of the previous passage's end repeated at the start of the next one when a
    /// long paragraph must be cut (0 = none). Default 0. Must be < max_chars / 2.
    pub overlap_chars: usize,
}

impl Default for Chunker {
    fn default() -> Self {
        Chunker {
            max_chars: 600,
            overlap_chars: 0,
        }
    }
}

impl Chunker {
    /// Checks the settings: `max_chars` at least 50, `overlap_chars` under half of it (so that
    /// every cut moves forward).
    pub fn validate(&self) -> Result<(), String> {
        if self.max_chars < 50 {
            return Err(format!(
                "max_chars is {}; it must be at least 50",
                self.max_chars
            ));
        }
        if self.overlap_chars >= self.max_chars / 2 {
            return Err(format!(
                "overlap_chars is {}; it must be less than half of max_chars ({})",
                self.overlap_chars, self.max_chars
            ));
        }
        Ok(())
    }
}

/// One passage read from a source file, before it is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SourcePassage {
    pub id: String,
    pub text: String,
    /// JSON object of extra fields (JSONL: every key besides `id` and `text`, with a
    /// `metadata` object's keys merged in; Markdown: `{"heading": "A > B"}` when under
    /// headings; plain text: none).
    pub metadata: Option<Map<String, Value>>,
    /// The file it came from, as given.
    pub file: PathBuf,
    /// 1-based line where the passage starts.
    pub line: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: not UTF-8 text; convert the file to UTF-8, e.g. `iconv -f latin1 -t utf-8 FILE > NEW`")]
    NotUtf8 { path: PathBuf, line: usize },
    #[error("{path}:{line}: not a JSON object ({message}); each line must be one object such as {{\"id\": \"p1\", \"text\": \"…\"}}")]
    Malformed {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}:{line}: the key `id` is missing; give every passage a unique `id` (a string or an integer)")]
    MissingId { path: PathBuf, line: usize },
    #[error("{path}:{line}: `id` must be a non-empty string or an integer")]
    BadId { path: PathBuf, line: usize },
    #[error("{path}:{line}: the key `text` is missing; give every passage its `text` as a string")]
    MissingText { path: PathBuf, line: usize },
    #[error("{path}:{line}: `text` must be a string, found {found}")]
    BadText {
        path: PathBuf,
        line: usize,
        found: &'static str,
    },
    #[error("{path}:{line}: `text` is empty; give the passage its text or remove the line")]
    EmptyText { path: PathBuf, line: usize },
    #[error("{path}:{line}: `metadata` must be a JSON object such as {{\"source\": \"manual\"}} (other keys of the line are kept as metadata too)")]
    BadMetadata { path: PathBuf, line: usize },
    #[error("{path}:{line}: the key `{key}` is given twice (at the top level or in `metadata`); keep one")]
    DuplicateKey {
        path: PathBuf,
        line: usize,
        key: String,
    },
    #[error("passage id `{id}` appears twice: {first_file} line {first_line} and {file} line {line}; ids must be unique in a corpus (change one, or rename one of two text files with the same name)")]
    DuplicateId {
        id: String,
        first_file: PathBuf,
        first_line: usize,
        file: PathBuf,
        line: usize,
    },
    #[error("{path}: no passages in the file (it is empty or holds only blank lines or headings); add text or leave the file out")]
    NoPassages { path: PathBuf },
    #[error("{path}: unknown file type; a corpus file must end in .jsonl, .ndjson, .txt, .md or .markdown")]
    UnknownFormat { path: PathBuf },
    #[error("invalid chunker settings: {0}")]
    BadChunker(String),
}

/// Reads one corpus file into passages, in file order. Ids must be unique within the file.
pub fn read_file(path: &Path, chunker: &Chunker) -> Result<Vec<SourcePassage>, SourceError> {
    chunker.validate().map_err(SourceError::BadChunker)?;
    let format = Format::of(path)?;
    let bytes = std::fs::read(path).map_err(|source| SourceError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let text = decode(path, &bytes)?;
    let passages = match format {
        Format::Jsonl => read_jsonl(path, text)?,
        Format::Text => chunk(path, text, chunker, false),
        Format::Markdown => chunk(path, text, chunker, true),
    };
    if passages.is_empty() {
        return Err(SourceError::NoPassages {
            path: path.to_path_buf(),
        });
    }
    check_unique(&passages)?;
    Ok(passages)
}

/// Reads each file in order, then refuses an id that two passages share, in one file or two.
pub fn read_files(paths: &[PathBuf], chunker: &Chunker) -> Result<Vec<SourcePassage>, SourceError> {
    let mut passages = Vec::new();
    for path in paths {
        passages.extend(read_file(path, chunker)?);
    }
    check_unique(&passages)?;
    Ok(passages)
}

/// A passage's content hash: hex sha256 of the JSON of its id, text and metadata, in that
/// order. Stable because serde_json is built here without `preserve_order`: map keys
/// serialize sorted.
pub fn passage_hash(id: &str, text: &str, metadata: Option<&Map<String, Value>>) -> String {
    #[derive(serde::Serialize)]
    struct Hashed<'a> {
        id: &'a str,
        text: &'a str,
        metadata: Option<&'a Map<String, Value>>,
    }
    let json = serde_json::to_vec(&Hashed { id, text, metadata })
        .expect("strings and a JSON map always serialize");
    hex::encode(Sha256::digest(&json))
}

/// The formats a corpus file may have.
enum Format {
    Jsonl,
    Text,
    Markdown,
}

impl Format {
    fn of(path: &Path) -> Result<Format, SourceError> {
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match extension.as_deref() {
            Some("jsonl" | "ndjson") => Ok(Format::Jsonl),
            Some("txt") => Ok(Format::Text),
            Some("md" | "markdown") => Ok(Format::Markdown),
            _ => Err(SourceError::UnknownFormat {
                path: path.to_path_buf(),
            }),
        }
    }
}

/// The file's text without a leading byte-order mark; not UTF-8 is an error naming the line of
/// the first bad byte.
fn decode<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a str, SourceError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    std::str::from_utf8(bytes).map_err(|e| SourceError::NotUtf8 {
        path: path.to_path_buf(),
        line: 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count(),
    })
}

/// Refuses the second passage with an id already seen, naming both.
fn check_unique(passages: &[SourcePassage]) -> Result<(), SourceError> {
    let mut seen: HashMap<&str, &SourcePassage> = HashMap::new();
    for passage in passages {
        if let Some(first) = seen.insert(&passage.id, passage) {
            return Err(SourceError::DuplicateId {
                id: passage.id.clone(),
                first_file: first.file.clone(),
                first_line: first.line,
                file: passage.file.clone(),
                line: passage.line,
            });
        }
    }
    Ok(())
}

/// One passage per non-blank line (`\n` or `\r\n` endings).
fn read_jsonl(path: &Path, text: &str) -> Result<Vec<SourcePassage>, SourceError> {
    let mut passages = Vec::new();
    for (index, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if !line.trim().is_empty() {
            passages.push(jsonl_passage(path, index + 1, line)?);
        }
    }
    Ok(passages)
}

/// The passage on one JSONL line.
fn jsonl_passage(path: &Path, line: usize, raw: &str) -> Result<SourcePassage, SourceError> {
    let path = path.to_path_buf();
    let parsed = match serde_json::from_str::<Value>(raw) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(other) => Err(format!("found {}", kind(&other))),
        Err(e) => Err(e.to_string()),
    };
    let mut object = match parsed {
        Ok(object) => object,
        Err(message) => {
            return Err(SourceError::Malformed {
                path,
                line,
                message,
            })
        }
    };
    // A JSON map keeps the last of two equal keys; look again for one that came twice.
    if let Some(key) = duplicate_key(raw) {
        return Err(SourceError::DuplicateKey { path, line, key });
    }
    let id = match object.remove("id") {
        None => return Err(SourceError::MissingId { path, line }),
        Some(Value::String(id)) if !id.trim().is_empty() => id,
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
        Some(_) => return Err(SourceError::BadId { path, line }),
    };
    let text = match object.remove("text") {
        None => return Err(SourceError::MissingText { path, line }),
        Some(Value::String(text)) if text.trim().is_empty() => {
            return Err(SourceError::EmptyText { path, line })
        }
        Some(Value::String(text)) => text.trim().to_string(),
        Some(other) => {
            let found = kind(&other);
            return Err(SourceError::BadText { path, line, found });
        }
    };
    // What is left of the object is metadata, with the `metadata` object's keys merged in.
    let mut metadata = object;
    match metadata.remove("metadata") {
        None => {}
        Some(Value::Object(nested)) => {
            for (key, value) in nested {
                if metadata.contains_key(&key) {
                    return Err(SourceError::DuplicateKey { path, line, key });
                }
                metadata.insert(key, value);
            }
        }
        Some(_) => return Err(SourceError::BadMetadata { path, line }),
    }
    Ok(SourcePassage {
        id,
        text,
        metadata: (!metadata.is_empty()).then_some(metadata),
        file: path,
        line,
    })
}

/// A run of lines between blank lines (or a whole code fence), under a heading path.
struct Block {
    text: String,
    line: usize,
    /// Counts the headings before the block: blocks of two sections never share a passage.
    section: usize,
    heading: String,
}

/// Collects blocks line by line.
#[derive(Default)]
struct Blocks<'a> {
    done: Vec<Block>,
    lines: Vec<&'a str>,
    first: usize,
    section: usize,
    /// The open headings: level and title.
    headings: Vec<(usize, &'a str)>,
}

impl<'a> Blocks<'a> {
    fn add(&mut self, number: usize, line: &'a str) {
        if self.lines.is_empty() {
            self.first = number;
        }
        self.lines.push(line);
    }

    fn end(&mut self) {
        if self.lines.is_empty() {
            return;
        }
        let text = self.lines.join("\n").trim_end().to_string();
        self.lines.clear();
        let titles: Vec<&str> = self
            .headings
            .iter()
            .map(|(_, title)| *title)
            .filter(|title| !title.is_empty())
            .collect();
        self.done.push(Block {
            text,
            line: self.first,
            section: self.section,
            heading: titles.join(" > "),
        });
    }

    fn heading(&mut self, level: usize, title: &'a str) {
        self.end();
        self.headings.retain(|(open, _)| *open < level);
        self.headings.push((level, title));
        self.section += 1;
    }
}

/// The blocks of a text or Markdown file (see [`Chunker`]).
fn blocks(text: &str, markdown: bool) -> Vec<Block> {
    let mut blocks = Blocks::default();
    let mut fence: Option<&'static str> = None;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if markdown {
            let marker = fence_marker(line);
            if let Some(open) = fence {
                blocks.add(number, line);
                if marker == Some(open) {
                    fence = None;
                    blocks.end();
                }
                continue;
            }
            if marker.is_some() {
                blocks.end();
                fence = marker;
                blocks.add(number, line);
                continue;
            }
            if let Some((level, title)) = heading(line) {
                blocks.heading(level, title);
                continue;
            }
        }
        if line.trim().is_empty() {
            blocks.end();
        } else {
            blocks.add(number, line);
        }
    }
    blocks.end();
    blocks.done
}

/// The fence a Markdown line opens or closes a code block with, if it does.
fn fence_marker(line: &str) -> Option<&'static str> {
    let line = line.trim_start();
    ["```", "~~~"].into_iter().find(|m| line.starts_with(*m))
}

/// A Markdown heading's level and title: 1 to 6 `#`, a space, the title (closing `#`s off).
fn heading(line: &str) -> Option<(usize, &str)> {
    let level = line.bytes().take_while(|b| *b == b'#').count();
    // `#` is one byte, so `level` is a character boundary.
    let rest = line[level..].strip_prefix(|c: char| c == ' ' || c == '\t')?;
    if !(1..=6).contains(&level) {
        return None;
    }
    let title = rest.trim();
    let unclosed = title.trim_end_matches('#');
    // `## Title ##` closes with `#`s after a space; `## C#` does not.
    let title = if unclosed.is_empty() || unclosed.ends_with(char::is_whitespace) {
        unclosed.trim_end()
    } else {
        title
    };
    Some((level, title))
}

/// A passage being put together.
struct Draft {
    text: String,
    chars: usize,
    line: usize,
    section: usize,
    heading: String,
}

/// The passages of a text or Markdown file (see [`Chunker`]).
fn chunk(path: &Path, text: &str, chunker: &Chunker, markdown: bool) -> Vec<SourcePassage> {
    let max = chunker.max_chars;
    let mut drafts: Vec<Draft> = Vec::new();
    // Whether the last draft may take more blocks: not when it is a piece of a cut block.
    let mut open = false;
    for block in blocks(text, markdown) {
        let chars = block.text.chars().count();
        if let Some(last) = drafts.last_mut() {
            if open && last.section == block.section && last.chars + 2 + chars <= max {
                last.text.push_str("\n\n");
                last.text.push_str(&block.text);
                last.chars += 2 + chars;
                continue;
            }
        }
        open = chars <= max;
        if open {
            drafts.push(Draft {
                text: block.text,
                chars,
                line: block.line,
                section: block.section,
                heading: block.heading,
            });
            continue;
        }
        for range in cut(&block.text, max, chunker.overlap_chars) {
            let piece = &block.text[range.clone()];
            let lead = piece.len() - piece.trim_start().len();
            drafts.push(Draft {
                text: piece.to_string(),
                chars: piece.chars().count(),
                line: block.line + block.text[..range.start + lead].matches('\n').count(),
                section: block.section,
                heading: block.heading.clone(),
            });
        }
    }
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |name| name.to_string_lossy().into_owned(),
    );
    drafts
        .into_iter()
        .filter(|draft| !draft.text.trim().is_empty())
        .enumerate()
        .map(|(n, draft)| SourcePassage {
            id: format!("{name}#{}", n + 1),
            text: draft.text.trim().to_string(),
            metadata: (!draft.heading.is_empty()).then(|| {
                let mut metadata = Map::new();
                metadata.insert("heading".to_string(), Value::String(draft.heading));
                metadata
            }),
            file: path.to_path_buf(),
            line: draft.line,
        })
        .collect()
}

/// The byte ranges of the pieces a block too long for one passage is cut into.
fn cut(text: &str, max: usize, overlap: usize) -> Vec<Range<usize>> {
    let mut pieces = Vec::new();
    let mut start = 0;
    while let Some(len) = cut_point(&text[start..], max) {
        pieces.push(start..start + len);
        start += overlap_start(&text[start..start + len], overlap);
    }
    pieces.push(start..text.len());
    pieces
}

/// Where, in bytes, the next piece of `rest` ends, or `None` when all of it fits in `max`
/// characters. Never in the first half of the piece, so that every piece moves forward.
fn cut_point(rest: &str, max: usize) -> Option<usize> {
    let max = max.max(1);
    let (mut sentence, mut space, mut previous) = (None, None, None);
    for (n, (i, c)) in rest.char_indices().enumerate() {
        if n >= (max / 2).max(1) && c.is_whitespace() {
            if matches!(previous, Some('.' | '!' | '?')) {
                sentence = Some(i);
            }
            space = Some(i);
        }
        if n == max {
            // `i` is where character number `max + 1` begins: a hard cut keeps `max`.
            return Some(sentence.or(space).unwrap_or(i));
        }
        previous = Some(c);
    }
    None
}

/// Where, in bytes, the piece after `piece` starts within it: at its last `overlap`
/// characters, moved to the first word boundary in them; at its end without overlap.
fn overlap_start(piece: &str, overlap: usize) -> usize {
    if overlap == 0 {
        return piece.len();
    }
    let from = match piece.char_indices().rev().nth(overlap - 1) {
        Some((from, _)) if from > 0 => from,
        // No room for an overlap: moving on matters more.
        _ => return piece.len(),
    };
    if piece[..from].ends_with(char::is_whitespace) {
        return from;
    }
    // The whitespace itself is trimmed from the passage.
    piece[from..]
        .find(char::is_whitespace)
        .map_or(from, |space| from + space)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Writes `content` as `name` in a fresh folder and reads it.
    fn read_as(
        name: &str,
        content: impl AsRef<[u8]>,
        chunker: &Chunker,
    ) -> Result<Vec<SourcePassage>, SourceError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        read_file(&path, chunker)
    }

    fn read(name: &str, content: impl AsRef<[u8]>) -> Vec<SourcePassage> {
        read_as(name, content, &Chunker::default()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The message refusing `content` as `name`, which must name the file and `line`.
    fn refused(name: &str, content: impl AsRef<[u8]>, line: usize) -> String {
        let err = read_as(name, content, &Chunker::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("{name}:{line}: ")), "{err}");
        err
    }

    fn chunker(max_chars: usize, overlap_chars: usize) -> Chunker {
        Chunker {
            max_chars,
            overlap_chars,
        }
    }

    fn texts(passages: &[SourcePassage]) -> Vec<&str> {
        passages.iter().map(|p| p.text.as_str()).collect()
    }

    fn heading(passage: &SourcePassage) -> Option<&str> {
        passage.metadata.as_ref()?.get("heading")?.as_str()
    }

    /// Each passage's id, text, heading and line.
    fn summary(passages: &[SourcePassage]) -> Vec<(&str, &str, Option<&str>, usize)> {
        passages
            .iter()
            .map(|p| (p.id.as_str(), p.text.as_str(), heading(p), p.line))
            .collect()
    }

    #[test]
    fn jsonl_lines_are_passages_with_their_ids_and_metadata() {
        let passages = read(
            "kb.jsonl",
            concat!(
                r#"{"id": 7, "text": "  Paris is in France. ", "lang": "en", "metadata": {"src": "atlas"}}"#,
                "\n\n",
                r#"{"id": "rome", "text": "Rome  is old.\nVery old."}"#,
                "\n",
            ),
        );
        assert_eq!(
            summary(&passages),
            [
                ("7", "Paris is in France.", None, 1),
                ("rome", "Rome  is old.\nVery old.", None, 3)
            ]
        );
        let metadata = json!({"lang": "en", "src": "atlas"});
        assert_eq!(passages[0].metadata.as_ref(), metadata.as_object());
        assert_eq!(passages[1].metadata, None);
        assert!(passages[0].file.ends_with("kb.jsonl"));
    }

    #[test]
    fn each_broken_jsonl_line_is_refused_naming_file_line_and_fix() {
        let good = r#"{"id": "ok", "text": "fine"}"#;
        let cases = [
            ("{not json", "not a JSON object"),
            ("[1, 2]", "found an array"),
            (r#"{"text": "x"}"#, "`id` is missing"),
            (
                r#"{"id": "", "text": "x"}"#,
                "`id` must be a non-empty string or an integer",
            ),
            (r#"{"id": 1.5, "text": "x"}"#, "`id` must be"),
            (r#"{"id": ["a"], "text": "x"}"#, "`id` must be"),
            (r#"{"id": "a"}"#, "`text` is missing"),
            (r#"{"id": "a", "text": " \n "}"#, "`text` is empty"),
            (
                r#"{"id": "a", "text": 3}"#,
                "`text` must be a string, found a number",
            ),
            (
                r#"{"id": "a", "text": "x", "metadata": [1]}"#,
                "`metadata` must be a JSON object",
            ),
            (
                r#"{"id": "a", "text": "x", "id": "b"}"#,
                "`id` is given twice",
            ),
            (
                r#"{"id": "a", "text": "x", "k": 1, "metadata": {"k": 2}}"#,
                "`k` is given twice",
            ),
        ];
        for (line, expected) in cases {
            let err = refused("bad.jsonl", format!("{good}\n\n{line}\n"), 3);
            assert!(err.contains(expected), "{line}: {err}");
        }
    }

    #[test]
    fn text_that_is_not_utf8_is_refused_at_the_line_of_the_first_bad_byte() {
        for name in ["latin1.jsonl", "latin1.txt", "latin1.md"] {
            let mut bytes = b"{\"id\": 1, \"text\": \"ok\"}\n\n".to_vec();
            bytes.extend(b"{\"id\": 2, \"text\": \"caf\xe9\"}\n");
            let err = refused(name, bytes, 3);
            assert!(
                err.contains("not UTF-8") && err.contains("iconv -f latin1 -t utf-8"),
                "{err}"
            );
        }
    }

    #[test]
    fn the_extension_picks_the_format_and_a_file_without_passages_is_refused() {
        let err = read_as("notes.pdf", "text", &Chunker::default()).unwrap_err();
        assert!(matches!(err, SourceError::UnknownFormat { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains("notes.pdf") && message.contains(".jsonl, .ndjson, .txt, .md"));
        assert_eq!(texts(&read("NOTES.MD", "# T\nBody")), ["Body"]);
        assert_eq!(texts(&read("rows.NDJSON", r#"{"id":1,"text":"x"}"#)), ["x"]);
        let empty = [
            ("a.txt", "\n \n"),
            ("b.jsonl", "\r\n\n"),
            ("c.md", "# Only\n## Headings\n"),
        ];
        for (name, content) in empty {
            let err = read_as(name, content, &Chunker::default()).unwrap_err();
            assert!(
                matches!(err, SourceError::NoPassages { .. }),
                "{name}: {err}"
            );
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn a_byte_order_mark_and_windows_line_endings_change_nothing() {
        let jsonl = "{\"id\": \"a\", \"text\": \"one\"}\n\n{\"id\": \"b\", \"text\": \"two\"}\n";
        let markdown = "# Title\n\nFirst.\n\n## Part\nSecond\nline.\n";
        for (name, plain) in [("c.jsonl", jsonl), ("c.md", markdown)] {
            let expected = read(name, plain);
            let crlf = plain.replace('\n', "\r\n");
            let passages = read(name, [b"\xEF\xBB\xBF".as_slice(), crlf.as_bytes()].concat());
            assert_eq!(summary(&passages), summary(&expected), "{name}");
        }
        assert_eq!(
            summary(&read("c.md", markdown)),
            [
                ("c.md#1", "First.", Some("Title"), 3),
                ("c.md#2", "Second\nline.", Some("Title > Part"), 6)
            ]
        );
    }

    #[test]
    fn markdown_headings_start_passages_and_give_their_path() {
        let text = "Preface.\n\n# Guide\nIntro.\n\n## Install\nRun it.\n\n### Linux\nUse apt.\n\n\
                    ## Use\nOpen it.\n\n# Appendix ##\nNotes.\n## C#\nSharp.\n";
        assert_eq!(
            summary(&read("guide.md", text)),
            [
                ("guide.md#1", "Preface.", None, 1),
                ("guide.md#2", "Intro.", Some("Guide"), 4),
                ("guide.md#3", "Run it.", Some("Guide > Install"), 7),
                (
                    "guide.md#4",
                    "Use apt.",
                    Some("Guide > Install > Linux"),
                    10
                ),
                ("guide.md#5", "Open it.", Some("Guide > Use"), 13),
                ("guide.md#6", "Notes.", Some("Appendix"), 16),
                ("guide.md#7", "Sharp.", Some("Appendix > C#"), 18),
            ]
        );
        // `#` lines are text in a plain-text file, and `#tag` is no heading in Markdown.
        assert_eq!(texts(&read("n.txt", "# Title\nBody")), ["# Title\nBody"]);
        assert_eq!(
            summary(&read("n.md", "#tag\nBody")),
            [("n.md#1", "#tag\nBody", None, 1)]
        );
    }

    #[test]
    fn code_fences_stay_whole_and_hash_lines_in_them_are_not_headings() {
        let text = "# Setup\n```sh\n# install\n\nmake install PREFIX=/opt\n```\nDone.\n";
        let fence = "```sh\n# install\n\nmake install PREFIX=/opt\n```";
        let packed = format!("{fence}\n\nDone.");
        assert_eq!(
            summary(&read("setup.md", text)),
            [("setup.md#1", packed.as_str(), Some("Setup"), 2)]
        );
        // The fence has 45 characters: with 50 at most, "Done." no longer fits beside it.
        let passages = read_as("setup.md", text, &chunker(50, 0)).unwrap();
        assert_eq!(
            summary(&passages),
            [
                ("setup.md#1", fence, Some("Setup"), 2),
                ("setup.md#2", "Done.", Some("Setup"), 7)
            ]
        );
    }

    #[test]
    fn blocks_are_packed_while_the_passage_stays_within_max_chars() {
        let (a, b, c) = ("a".repeat(24), "b".repeat(24), "c".repeat(24));
        // a and b joined by a blank line make exactly 50 characters.
        let text = format!("{a}\n\n{b}\n\n\n{c}\nmore c\n");
        let passages = read_as("notes.txt", text, &chunker(50, 0)).unwrap();
        let (first, second) = (format!("{a}\n\n{b}"), format!("{c}\nmore c"));
        assert_eq!(
            summary(&passages),
            [
                ("notes.txt#1", first.as_str(), None, 1),
                ("notes.txt#2", second.as_str(), None, 6)
            ]
        );
    }

    #[test]
    fn a_long_paragraph_is_cut_at_sentence_ends_with_overlap() {
        let text = "One two three four five six. Seven eight nine ten eleven. \
                    Twelve thirteen fourteen fifteen. Sixteen seventeen.";
        let plain = read_as("p.txt", text, &chunker(50, 0)).unwrap();
        assert_eq!(
            texts(&plain),
            [
                "One two three four five six.",
                "Seven eight nine ten eleven.",
                "Twelve thirteen fourteen fifteen.",
                "Sixteen seventeen."
            ]
        );
        let overlapping = read_as("p.txt", text, &chunker(50, 10)).unwrap();
        assert_eq!(
            texts(&overlapping),
            [
                "One two three four five six.",
                "five six. Seven eight nine ten eleven.",
                "eleven. Twelve thirteen fourteen fifteen.",
                "fifteen. Sixteen seventeen."
            ]
        );
        // Without sentence ends, at the last space; a piece on a later line says so.
        let words = format!("intro\n{}", "word ".repeat(30));
        let passages = read_as("w.txt", words, &chunker(50, 0)).unwrap();
        assert!(passages.iter().all(|p| p.text.chars().count() <= 50));
        let mut words = passages.iter().flat_map(|p| p.text.split_whitespace());
        assert!(words.all(|w| w == "word" || w == "intro"));
        assert_eq!(
            passages.iter().map(|p| p.line).collect::<Vec<_>>(),
            [1, 2, 2, 2]
        );
    }

    #[test]
    fn multibyte_characters_are_never_split() {
        // 120 characters and no whitespace: hard cuts after exactly 50.
        let text = "é日本".repeat(40);
        let chars: Vec<char> = text.chars().collect();
        let slice = |r: Range<usize>| chars[r].iter().collect::<String>();
        let passages = read_as("jp.txt", &text, &chunker(50, 0)).unwrap();
        assert_eq!(
            texts(&passages),
            [slice(0..50), slice(50..100), slice(100..120)]
        );
        let passages = read_as("jp.txt", &text, &chunker(50, 5)).unwrap();
        assert_eq!(
            texts(&passages),
            [slice(0..50), slice(45..95), slice(90..120)]
        );
    }

    #[test]
    fn an_id_twice_in_a_corpus_is_refused_naming_both_places() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, content: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            path
        };
        let a = write("a.jsonl", r#"{"id": "x", "text": "one"}"#);
        let b = write(
            "b.jsonl",
            "{\"id\": \"y\", \"text\": \"2\"}\n{\"id\": \"x\", \"text\": \"3\"}",
        );
        let err = read_files(&[a.clone(), b], &Chunker::default()).unwrap_err();
        let message = err.to_string();
        assert!(matches!(
            err,
            SourceError::DuplicateId {
                first_line: 1,
                line: 2,
                ..
            }
        ));
        assert!(
            message.contains("passage id `x` appears twice: "),
            "{message}"
        );
        assert!(message.contains("a.jsonl line 1 and ") && message.contains("b.jsonl line 2"));
        // Within one file (an integer id is its decimal string).
        let twice = write(
            "twice.jsonl",
            "{\"id\": 1, \"text\": \"a\"}\n{\"id\": \"1\", \"text\": \"b\"}",
        );
        let err = read_file(&twice, &Chunker::default()).unwrap_err();
        assert!(
            matches!(err, SourceError::DuplicateId { ref id, .. } if id == "1"),
            "{err}"
        );
        // Text files of the same name in two folders.
        std::fs::create_dir(dir.path().join("other")).unwrap();
        let notes = [
            write("notes.txt", "First."),
            write("other/notes.txt", "Second."),
        ];
        let err = read_files(&notes, &Chunker::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("`notes.txt#1`"), "{err}");
        // Distinct ids are read file after file.
        let c = write("c.txt", "Third.");
        let all = read_files(&[a, c], &Chunker::default()).unwrap();
        assert_eq!(
            all.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
            ["x", "c.txt#1"]
        );
    }

    #[test]
    fn chunker_settings_are_checked() {
        assert_eq!(Chunker::default(), chunker(600, 0));
        assert_eq!(Chunker::default().validate(), Ok(()));
        assert_eq!(chunker(50, 24).validate(), Ok(()));
        assert!(chunker(49, 0)
            .validate()
            .unwrap_err()
            .contains("at least 50"));
        assert!(chunker(600, 300)
            .validate()
            .unwrap_err()
            .contains("less than half"));
        let err = read_as("a.txt", "text", &chunker(10, 0)).unwrap_err();
        assert!(matches!(err, SourceError::BadChunker(_)), "{err}");
        // Settings left out take their defaults.
        let partial: Chunker = serde_json::from_str(r#"{"overlap_chars": 20}"#).unwrap();
        assert_eq!(partial, chunker(600, 20));
    }

    #[test]
    fn passage_hashes_are_stable_and_cover_id_text_and_metadata() {
        let hash = passage_hash("a", "b", None);
        // sha256 of `{"id":"a","text":"b","metadata":null}`: stored hashes depend on it.
        assert_eq!(
            hash,
            "5643944d648389b2559e62c2350f440ae61e64dad7923d2cb5823f7e58eb47e2"
        );
        let metadata = json!({"lang": "en"});
        let with = passage_hash("a", "b", metadata.as_object());
        assert_ne!(with, hash);
        assert_eq!(with, passage_hash("a", "b", metadata.as_object()));
        assert_ne!(passage_hash("a", "c", None), hash);
        assert_ne!(passage_hash("b", "b", None), hash);
    }
}
